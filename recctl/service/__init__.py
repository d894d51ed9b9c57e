"""`recctl serve`: the HTTP service (FastAPI + uvicorn, the ``serve`` extra).

- ``snapshot.py``: the warehouse copy and promoted run a server answers from, swapped on change;
- ``app.py``: the routes, each calling the same ``recctl.serving`` function as the CLI;
- ``limits.py``, ``metrics.py``: request body limits and ``/metrics``;
- ``run.py``: what the CLI calls (uvicorn).
"""
