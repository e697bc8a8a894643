"""A small Flask app whose ``flask.session`` is a donjon session.

Run it with any WSGI server, e.g.::

    DONJON_COOKIE_SECURE=0 python -m waitress --listen=127.0.0.1:8000 examples.flask_app:app

Routes: ``GET /count`` counts visits in the session, ``POST /login`` (form
field ``user``) logs in and regenerates the session id, ``POST /logout``
ends the session, ``GET /whoami`` shows the user and the verdict of the
cookie that came with the request.
"""

from __future__ import annotations

from flask import Flask, jsonify, request, session
from flask.typing import ResponseReturnValue

from donjon.adapters.flask import current_session, init_app
from donjon.engine import Engine

from ._config import sync_engine


def create_app(engine: Engine) -> Flask:
    """Build the example app around ``engine``."""
    app = Flask(__name__)
    init_app(app, engine)

    @app.get("/count")
    def count() -> ResponseReturnValue:
        session["n"] = session.get("n", 0) + 1
        return jsonify(n=session["n"])

    @app.post("/login")
    def login() -> ResponseReturnValue:
        user = request.form.get("user", "").strip()
        if not user:
            return jsonify(error="form field 'user' is required"), 400
        # A real app checks a password first. login() regenerates the id.
        current_session().login(user)
        return jsonify(user=user)

    @app.post("/logout")
    def logout() -> ResponseReturnValue:
        current_session().destroy()
        return jsonify(user=None)

    @app.get("/whoami")
    def whoami() -> ResponseReturnValue:
        s = current_session()
        return jsonify(user=s.user_id, verdict=s.verdict.value)

    return app


app = create_app(sync_engine())
