"""The donefile: one JSON line per published version, for serving systems.

A line is appended only for a committed version, once (``publish`` is idempotent)::

    {"version": "v000007", "kind": "delta", "hour": 493597, "hour_str": "2026-04-23T13",
     "path": "/abs/model_dir/versions/v000007", "metrics": {...}, "published_at": "...Z"}
"""
from __future__ import annotations

import json
import os

from .errors import MissingVersionError, StoreError
from .layout import StoreLayout, fsync_dir, store_lock, utc_now
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
    rec = state.versions.get(version)
    if rec is None:
        raise MissingVersionError(f"cannot publish {version}: it is {state.why_absent(version)}")
    lines, good = _read(layout.donefile)
    if any(d.get("version") == version for d in lines):
        return False
    meta = check_version(layout, rec).meta
    line = {"version": version, "kind": rec.kind, "hour": rec.hour, "hour_str": rec.hour_str,
            "path": str(layout.version_dir(version).resolve()), "metrics": meta.get("metrics", {}),
            "published_at": utc_now()}
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
    created = not layout.donefile.exists()
    with open(layout.donefile, "wb" if created else "r+b") as f:
        f.truncate(good)
        f.seek(good)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if created:
        fsync_dir(layout.root)
    if hook:
        hook("published")
    return True
