"""The Donjon demo: a small web app showing every layer at work (the ``demo`` extra).

Run it with ``donjon demo`` (or ``python -c "import donjon.demo as d; d.run()"``)
and open http://127.0.0.1:8000. It has:

* log-in and log-out with demo users (alice and bob of the ``user`` class,
  root of the ``admin`` class), showing the id regenerated at log-in;
* a page describing the session and the verdict of the cookie that came in;
* an attack lab that crafts forged, tampered, expired, guessed, revoked,
  retired-key and wrong-binding cookies with the real codec and runs them
  through the real engine, plus a guessing campaign that ends in a lock-out;
* a live dashboard (verdicts, lock-outs, sessions) drawn as server-side SVG;
* admin actions for root: kill a class, rotate a key, list and revoke sessions.

Sessions live in SQLite and keys in a key file, both in the data folder.
"""

from __future__ import annotations

from ._app import create_app as create_app
from ._server import run as run

__all__ = ["create_app", "run"]
