"""Refuse backfill creation through the REST API (the UI's backfill dialog) on SQLite.

Reported in issue #18 on Airflow 3.3.2 with the embedded default (SQLite, LocalExecutor): the
dialog's two calls, ``PATCH /api/v2/dags/<id>`` (unpause) and ``POST /api/v2/backfills`` 35 ms
later, next to a running scheduler, answered 503 "Database is locked"; a run was marked
successful with no tasks, then the scheduler died with ``StaleDataError``. Airflow's code
(``models/backfill.py``) commits the backfill row first, creates its runs after, and on a lock
error deletes the runs it had made, which the scheduler may already be processing. Nothing
makes that path safe on SQLite, so this root middleware answers ``409`` with what to do instead
before Airflow touches the database; the dry run (``POST /api/v2/backfills/dry_run``) still works. PostgreSQL (``make demo DB=postgres``)
takes the request as usual.
"""
from __future__ import annotations

import json

#: The create-backfill route of the public API (what the UI's dialog posts to).
CREATE_PATHS = ("/api/v2/backfills", "/api/v2/backfills/")

REFUSAL = (
    "streamtrain: backfill creation through the API/UI is refused on SQLite: next to a running "
    "scheduler it can fail half-way ('database is locked') and crash the scheduler. Use "
    "PostgreSQL (make demo DB=postgres; docs/airflow.md, 'Which metadata database'), or create "
    "the backfill with the scheduler stopped: airflow dags reserialize; airflow backfill create "
    "--dag-id <dag> --from-date <first hour> --to-date <last hour> --reprocess-behavior failed "
    "--max-active-runs 1; airflow dags unpause <dag>. Nothing was created.")


def metadata_is_sqlite() -> bool:
    from airflow.configuration import conf

    return conf.get("database", "sql_alchemy_conn", fallback="sqlite").startswith("sqlite")


class SqliteBackfillGuard:
    """ASGI middleware: ``POST /api/v2/backfills`` on a SQLite metadata DB -> 409 + the reason."""

    def __init__(self, app, sqlite: bool | None = None) -> None:
        self.app = app
        self.sqlite = metadata_is_sqlite() if sqlite is None else sqlite

    async def __call__(self, scope, receive, send):
        if (self.sqlite and scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] in CREATE_PATHS):
            body = json.dumps({"detail": REFUSAL}).encode()
            await send({"type": "http.response.start", "status": 409,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
