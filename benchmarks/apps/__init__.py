"""Bench target apps for ``benchmarks/adapters.py``: one endpoint, several session layers.

Every app serves the same Starlette routes (see :mod:`apps._routes`):

* ``GET /count`` reads one session key and writes a counter back (the measured
  endpoint);
* ``GET /peek`` reads one key and writes nothing (the forged-cookie flood);
* ``GET /health`` answers ``ok`` (start-up probe).

Each module has ``build(...)`` (explicit arguments, for in-process runs) and
``create_app()`` (reads ``BENCH_*`` variables, for ``uvicorn --factory``).
"""
