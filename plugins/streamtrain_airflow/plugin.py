"""The streamtrain Airflow plugin: the model UI inside the Airflow 3 API server.

* ``fastapi_apps``: :mod:`streamtrain_airflow.ui.app` mounted at ``/streamtrain`` (pages and
  JSON, see ``docs/ui.md``); it enforces Airflow's authentication itself (:mod:`.ui.auth`).
* ``external_views``: a "streamtrain" entry in the UI navigation (the models list, shown in the
  Airflow UI's frame at ``/plugin/streamtrain``) and a "streamtrain" tab on every DAG run
  (that run's hour, ``{DAG_ID}``/``{RUN_ID}`` filled in by the UI).

* ``fastapi_root_middlewares``: :class:`~.sqlite_guard.SqliteBackfillGuard`, which refuses the
  backfill dialog's create call on a SQLite metadata DB (it is unsafe there, see that module).

``href`` values are relative (no leading slash) so they follow ``[api] base_url``.
"""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from streamtrain_airflow.sqlite_guard import SqliteBackfillGuard
from streamtrain_airflow.ui.app import URL_PREFIX, app

_PREFIX = URL_PREFIX.strip("/")


class StreamtrainPlugin(AirflowPlugin):
    name = "streamtrain"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "streamtrain UI"}]
    fastapi_root_middlewares = [{"middleware": SqliteBackfillGuard, "args": [], "kwargs": {},
                                 "name": "streamtrain: no backfill creation on SQLite"}]
    external_views = [
        {
            "name": "streamtrain",
            "href": f"{_PREFIX}/",
            "url_route": "streamtrain",
            "destination": "nav",
            "nav_top_level": True,
        },
        {
            "name": "streamtrain",
            "href": f"{_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "url_route": "streamtrain-run",
            "destination": "dag_run",
        },
    ]
