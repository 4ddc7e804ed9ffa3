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

import json
import os

from ..metrics import json_safe
from .errors import MissingVersionError, StoreError
from .jsonsafe import strict_dumps
from .layout import StoreLayout, fsync_dir, naming, store_lock, utc_now
from .ledger import read_state
from .load import check_version


def _read(path) -> tuple[list[dict], int]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    good = len(data) if data.endswith(b"\n") or not data else data.rfind(b"\n") + 1
    out = []
    for i, line in enumerate(data[:good].split(b"\n")[:-1] if good else [], 1):
        try:
            out.append(json.loads(line))
        except ValueError as e:
            raise StoreError(f"{path}: line {i} is not JSON: {e}") from None
    return out, good


def read_donefile(model_dir) -> list[dict]:
    """Published versions, oldest first (a torn, never-acknowledged last line is ignored)."""
    return _read(StoreLayout(model_dir).donefile)[0]


def publish(model_dir, version: str, *, hook=None) -> bool:
    """Append ``version`` to the donefile if it is committed and not yet listed.

    Returns True if a line was appended, False if it was already there.
    """
    layout = StoreLayout(model_dir)
    with store_lock(layout):
        return _publish_locked(layout, version, hook=hook)


def _publish_locked(layout: StoreLayout, version: str, *, hook=None) -> bool:
    state = read_state(layout)
    if version not in state.versions:
        raise MissingVersionError(f"cannot publish {version}: it is {state.why_absent(version)}")
    lines, good = _read(layout.donefile)
    if any(d.get("version") == version for d in lines):
        return False
    _append(layout, good, _line(layout, state, version))
    if hook:
        hook("published")
    return True


def _fall_back_locked(layout: StoreLayout, hook=None) -> bool:
    """If the newest donefile line is a version rolled back since, list the head again (see the
    module docstring). Idempotent; False when nothing was appended (also when the rollback
    emptied the chain: there is nothing to fall back to)."""
    state = read_state(layout)
    lines, good = _read(layout.donefile)
    newest = lines[-1].get("version") if lines else None
    if newest is None or newest not in state.rolled_back or state.head is None:
        return False
    _append(layout, good, {**_line(layout, state, state.head), "after_rollback": newest})
    if hook:
        hook("fell_back")
    return True


def _line(layout: StoreLayout, state, version: str) -> dict:
    rec = state.versions[version]
    meta = check_version(layout, rec).meta
    return {"version": version, "kind": rec.kind, "hour": rec.hour, "hour_str": rec.hour_str,
            "path": str(layout.version_dir(version).resolve()),
            "metrics": json_safe(meta.get("metrics", {})),
            "published_at": utc_now()}


def _append(layout: StoreLayout, good: int, line: dict) -> None:
    """Write ``line`` after the first ``good`` bytes (dropping a torn, never-acknowledged tail)."""
    data = (strict_dumps(line, separators=(",", ":")) + "\n").encode()
    created = not layout.donefile.exists()
    with naming(layout.donefile), open(layout.donefile, "wb" if created else "r+b") as f:
        f.truncate(good)
        f.seek(good)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if created:
        fsync_dir(layout.root)
