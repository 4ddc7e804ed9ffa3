"""Fixtures of the UI tests: a real Airflow auth manager (SimpleAuthManager) issuing real JWTs,
and the UI app over synthetic model stores."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
try:  # before `pip install -e .` has run (e.g. while the extension is being built)
    import streamtrain_airflow  # noqa: F401
except ImportError:
    sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

JWT_SECRET = "streamtrain-ui-test-secret-" + "0123456789abcdef" * 4


@pytest.fixture(scope="session")
def auth_manager():
    """Airflow's SimpleAuthManager as the API server would have it, with a known JWT secret.

    Token validation also asks the metadata DB whether the token was revoked (logout); these
    in-process tests have no DB, so that one lookup answers "not revoked". The browser test runs
    the whole path against a real API server and DB."""
    from airflow.api_fastapi import app as airflow_app
    from airflow.configuration import conf
    from airflow.models.revoked_token import RevokedToken

    saved = {}
    settings = {("api_auth", "jwt_secret"): JWT_SECRET,
                ("core", "auth_manager"):
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
                ("core", "simple_auth_manager_all_admins"): "False"}
    for (section, key), value in settings.items():
        saved[(section, key)] = conf.get(section, key, fallback=None)
        conf.set(section, key, value)
    previous = airflow_app._AuthManagerState.instance
    airflow_app._AuthManagerState.instance = None
    am = airflow_app.create_auth_manager()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RevokedToken, "is_revoked", classmethod(lambda cls, jti, session=None: False))
        yield am
    airflow_app._AuthManagerState.instance = previous
    for (section, key), value in saved.items():
        if value is None:
            conf.remove_option(section, key)
        else:
            conf.set(section, key, value)


@pytest.fixture(scope="session")
def token(auth_manager):
    """A valid JWT of user ``alice`` (role viewer)."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return auth_manager.generate_jwt(SimpleAuthManagerUser(username="alice", role="viewer"))
