"""The donefile: one JSON line per published version, for serving systems.

A line is appended only for a committed version, once (``publish`` is idempotent)::

    {"version": "v000007", "kind": "delta", "hour": 493597, "hour_str": "2026-04-23T13",
     "path": "/abs/model_dir/versions/v000007", "metrics": {...}, "published_at": "...Z"}

``metrics`` are the hour's (``meta.json``), calibration included: ``copc`` (actual / predicted
clicks) and ``reliability`` (predicted vs actual CTR in 10 fixed bins, and ``ece``); a value that
is not a finite number (the AUC of an hour with one label) is ``null``, never a bare NaN.

The newest line is the version to serve. When the newest listed version is rolled back (a forced
retrain of its hour), its folder goes, so the version it was trained on (the head after the
rollback) is listed again, with ``"after_rollback": "<rolled-back version>"``: serving that
follows the newest line falls back to it at once, not only once the hour is retrained.
"""
from __future__ import annotations

from .durable import JsonLines
from .errors import MissingVersionError
from .layout import StoreLayout, store_lock, utc_now
from .ledger import read_state
from .load import check_version


def _log(layout: StoreLayout) -> JsonLines:
    return JsonLines(layout.donefile)


def read_donefile(model_dir) -> list[dict]:
    """Published versions, oldest first (a torn, never-acknowledged last line is ignored)."""
    return _log(StoreLayout(model_dir)).read()[0]


def publish(model_dir, version: str, *, hook=None) -> bool:
    """Append ``version`` to the donefile if it is committed and not yet listed.

    Returns True if a line was appended, False if it was already there.
    """
    layout = StoreLayout(model_dir)
    with store_lock(layout):
        return publish_locked(layout, version, hook=hook)


def publish_locked(layout: StoreLayout, version: str, *, hook=None) -> bool:
    """:func:`publish` for a caller that holds ``store_lock`` already (the save)."""
    state = read_state(layout)
    if version not in state.versions:
        raise MissingVersionError(f"cannot publish {version}: it is {state.why_absent(version)}")
    lines, good = _log(layout).read()
    if any(d.get("version") == version for d in lines):
        return False
    _log(layout).append(_line(layout, state, version), good)
    if hook:
        hook("published")
    return True


def fall_back_locked(layout: StoreLayout, hook=None) -> bool:
    """If the newest donefile line is a version rolled back since, list the head again (see the
    module docstring). Idempotent; False when nothing was appended (also when the rollback
    emptied the chain: there is nothing to fall back to)."""
    state = read_state(layout)
    lines, good = _log(layout).read()
    newest = lines[-1].get("version") if lines else None
    if newest is None or newest not in state.rolled_back or state.head is None:
        return False
    _log(layout).append({**_line(layout, state, state.head), "after_rollback": newest}, good)
    if hook:
        hook("fell_back")
    return True


def _line(layout: StoreLayout, state, version: str) -> dict:
    rec = state.versions[version]
    meta = check_version(layout, rec).meta
    return {"version": version, "kind": rec.kind, "hour": rec.hour, "hour_str": rec.hour_str,
            "path": str(layout.version_dir(version).resolve()),
            "metrics": meta.get("metrics", {}),  # non-finite values: null (strict JSON)
            "published_at": utc_now()}
