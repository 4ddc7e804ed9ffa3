"""Airflow's own authentication and authorization, enforced on every streamtrain UI route.

A plugin's FastAPI app is mounted inside the Airflow API server but is *not* behind its login
(checked with Airflow 3.3.2), so this module applies exactly what the core API routes apply:

* identity: ``airflow.api_fastapi.core_api.security.get_user`` -- a ``Authorization: Bearer``
  JWT, else the ``_token`` session cookie the Airflow UI sets at login (already validated by the
  API server's ``JWTRefreshMiddleware`` when present). No credential -> 401, a bad or expired
  one -> 401/403, as in ``/api/v2``.
* authorization: the configured auth manager's ``is_authorized_dag(method="GET",
  access_entity=RUN)`` for the model's DAG (``streamtrain_<name>``): the same right that lets a
  user read that DAG's runs in the Airflow UI. Models a user may not read are left out of lists
  and answer 403 when asked for by name.

Airflow is imported lazily, inside the calls, so importing the plugin (which every Airflow
component does) stays cheap.
"""
from __future__ import annotations

from fastapi import HTTPException, Request, status


async def current_user(request: Request):
    """FastAPI dependency: the authenticated Airflow user, or ``HTTPException`` 401/403."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    user = await get_user(request, None, credentials)
    request.state.streamtrain_user = user
    return user


def can_read_dag(user, dag_id: str) -> bool:
    """Whether `user` may read the runs of DAG `dag_id` (the auth manager decides)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )
    from airflow.configuration import conf

    team_name = None
    if conf.getboolean("core", "multi_team", fallback=False):
        from airflow.models.dag import DagModel

        team_name = DagModel.get_team_name(dag_id)
    return get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=dag_id, team_name=team_name), user=user)


def require_dag(user, dag_id: str) -> None:
    if not can_read_dag(user, dag_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")


def login_url(request: Request) -> str | None:
    """The auth manager's login page, coming back to this page after login."""
    try:
        from airflow.api_fastapi.app import get_auth_manager

        return get_auth_manager().get_url_login(next_url=str(request.url))
    except Exception:  # the 401 page must render even if the auth manager cannot say
        return None
