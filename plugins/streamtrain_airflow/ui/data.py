"""The UI's read layer: which models exist, and what their chains hold.

A thin, read-only view of the model store (``docs/design.md``, "Model store layout"): the
append-only ``ledger.jsonl`` and each committed version's immutable ``meta.json``, both read
through ``trainer.store`` (the ledger replayed by its rules, a ``meta.json`` checked against the
sha256 its ledger line pins). It never reads ``staging/`` (uncommitted data is invisible to
readers) and never writes.

Everything here is cached on file identity (size, mtime): the ledger is re-read only when it
grows, and a version's ``meta.json`` is read once (versions are immutable), so a page over a
chain of thousands of versions reads the ledger plus the few ``meta.json`` it shows.

>>> import json, pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "ledger.jsonl").write_text(json.dumps({"seq": 1, "event": "commit",
...     "version": "v000001", "kind": "full", "hour": 498805, "parent": None}) + "\\n")
>>> chain = read_chain(d)
>>> [v.version for v in chain.versions], chain.head.hour_str
(['v000001'], '2026-11-26T13')
"""
from __future__ import annotations

import datetime as _dt
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from trainer.hours import hour_of_datetime, hour_str as _hour_str

from streamtrain_airflow.dagconf import config_files, dag_id_for

#: metric keys of ``meta.json`` ``metrics`` (design.md), in table order.
METRIC_KEYS = ("auc", "logloss", "pred_ctr", "actual_ctr", "copc", "ece", "rows", "rows_per_s", "table_rows",
               "ids_admitted", "ids_filtered", "rows_evicted", "bytes_saved", "bad_rows",
               "dense_nulls", "truncated_ids")
#: phases of ``metrics.seconds``, in table order (unknown extra phases are shown after these).
PHASES = ("load", "train", "stage", "commit")


class StoreReadError(ValueError):
    """A ledger line or a ``meta.json`` cannot be read; the message names the file."""


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelRef:
    """One model = one config file. ``error`` is set (and ``model_dir`` may be empty) when the
    config does not load; the UI lists such a model with its error instead of hiding it."""

    name: str
    config_path: str
    model_dir: str
    dag_id: str
    error: str = ""


def _load_config(path: Path) -> tuple[str, str]:
    from trainer.config import load_config

    cfg = load_config(path)
    return cfg.name, cfg.model_dir


def discover_models(config_dir: Path | None = None) -> list[ModelRef]:
    """One :class:`ModelRef` per config file in `config_dir` (default: the DAG file's folder,
    ``dagconf.config_dir()``), sorted by name: the models the UI shows are the DAGs' models."""
    models = []
    for path in config_files(config_dir):
        try:
            name, model_dir = _load_config(path)
            models.append(ModelRef(name, str(path), model_dir, dag_id_for(path)))
        except Exception as err:  # a broken config is shown, not fatal to the page
            models.append(ModelRef(path.stem, str(path), "", dag_id_for(path),
                                   error=f"{type(err).__name__}: {err}"))
    models.sort(key=lambda m: m.name)
    return models


# --------------------------------------------------------------------------- chain


@dataclass
class Version:
    """A committed version as the ledger records it (``meta`` is read on demand)."""

    seq: int
    version: str
    kind: str
    hour: int
    hour_str: str
    parent: str | None
    committed_at: str
    event: dict = field(repr=False)
    record: Any = field(repr=False)  #: the ``trainer.store.VersionRecord`` its meta is checked against


@dataclass
class Missing:
    seq: int
    hour: int
    hour_str: str
    reason: str
    event: dict = field(repr=False)


@dataclass
class Chain:
    """The live chain in training order, plus missing and empty hours and rolled-back versions."""

    model_dir: str
    versions: list[Version]
    missing: list[Missing]
    rolled_back: list[Version]
    stamp: tuple
    #: ``{"missing_hours", "empty_hours"}`` not trained since, as ``streamtrain chain`` lists them
    #: (``trainer.store.verify.settled_hours``)
    unversioned: dict = field(default_factory=lambda: {"missing_hours": [], "empty_hours": []})

    @property
    def head(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    def find(self, version: str) -> Version | None:
        for v in self.versions:
            if v.version == version:
                return v
        for v in self.rolled_back:
            if v.version == version:
                return v
        return None


def _hs(event: dict) -> str:
    text = event.get("hour_str")
    if isinstance(text, str) and text:
        return text
    try:
        return _hour_str(int(event["hour"]))
    except (KeyError, TypeError, ValueError):
        return "?"


def _file_stamp(path: Path) -> tuple:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (None, None)
    return (st.st_size, st.st_mtime_ns)


_chain_cache: "OrderedDict[str, Chain]" = OrderedDict()
_meta_cache: "OrderedDict[tuple, dict]" = OrderedDict()
_lock = threading.Lock()
_CHAIN_CACHE_SIZE = 64
_META_CACHE_SIZE = 50_000


def read_chain(model_dir: str | os.PathLike) -> Chain:
    """The model's chain as the store's ledger replay sees it (cached until the ledger changes).

    Live versions in training order (rolled-back and pruned ones left out), rolled-back
    versions, and missing hours. A model that has not committed anything yet is an empty chain;
    a damaged ledger raises :class:`StoreReadError` naming the file and the problem.
    """
    from trainer import store
    from trainer.store.verify import settled_hours_in

    ledger = Path(model_dir) / "ledger.jsonl"
    stamp = _file_stamp(ledger)
    key = str(ledger)
    with _lock:
        hit = _chain_cache.get(key)
        if hit is not None and hit.stamp == stamp:
            _chain_cache.move_to_end(key)
            return hit
    try:
        state = store.read_state(store.StoreLayout(model_dir))
    except store.StoreError as err:
        raise StoreReadError(str(err)) from None
    commits = {ev["version"]: ev for ev in state.events if ev.get("event") == "commit"}

    def version(name: str) -> Version:
        ev, rec = commits[name], state.records[name]
        return Version(seq=rec.seq, version=name, kind=rec.kind, hour=rec.hour,
                       hour_str=rec.hour_str, parent=rec.parent, committed_at=rec.committed_at,
                       event=ev, record=rec)

    chain = Chain(
        str(model_dir), [version(v) for v in state.versions],
        [Missing(seq=int(ev["seq"]), hour=int(ev["hour"]), hour_str=_hs(ev),
                 reason=str(ev.get("reason", "")), event=ev) for ev in state.missing],
        [version(v) for v in state.rolled_back], stamp, unversioned=settled_hours_in(state))
    with _lock:
        _chain_cache[key] = chain
        _chain_cache.move_to_end(key)
        while len(_chain_cache) > _CHAIN_CACHE_SIZE:
            _chain_cache.popitem(last=False)
    return chain


def read_meta(model_dir: str | os.PathLike, version: str) -> dict | None:
    """``versions/<version>/meta.json`` of a version the ledger committed, checked against its
    ledger line by ``trainer.store`` (the sha256 the ledger pins, and its fields); ``None`` if
    the ledger never committed it or its folder is gone (pruned, rolled back).

    Committed versions are immutable, so a checked meta is cached for good (bounded LRU).
    """
    v = read_chain(model_dir).find(version)
    return None if v is None else _checked_meta(model_dir, v)


def _checked_meta(model_dir, v: "Version") -> dict | None:
    from trainer import store

    key = (str(model_dir), v.version, v.record.meta_sha256)
    with _lock:
        hit = _meta_cache.get(key)
        if hit is not None:
            _meta_cache.move_to_end(key)
            return hit
    try:
        meta = store.read_checked_meta(store.StoreLayout(model_dir), v.record)
    except store.MissingVersionError:
        return None
    except store.StoreError as err:
        raise StoreReadError(str(err)) from None
    with _lock:
        _meta_cache[key] = meta
        while len(_meta_cache) > _META_CACHE_SIZE:
            _meta_cache.popitem(last=False)
    return meta


def clear_caches() -> None:
    with _lock:
        _chain_cache.clear()
        _meta_cache.clear()


# --------------------------------------------------------------------------- rows


def _num(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def version_row(model_dir: str, v: Version, *, rolled_back: bool = False) -> dict:
    """One chain-table row: the ledger entry joined with its ``meta.json`` (documented in
    ``docs/ui.md``; numbers are ``null`` when the meta is gone or lacks them)."""
    error = ""
    try:
        meta = _checked_meta(model_dir, v)
    except StoreReadError as err:
        meta, error = None, str(err)
    if meta is None and not error:
        error = "meta.json not found (pruned?)"
    meta = meta or {}
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    reliability = metrics.get("reliability") if isinstance(metrics.get("reliability"), dict) else {}
    metrics = {**metrics, "ece": reliability.get("ece")}  # the reliability bins in one number
    files = meta.get("files") if isinstance(meta.get("files"), list) else []
    seconds = metrics.get("seconds") if isinstance(metrics.get("seconds"), dict) else {}
    rows = meta.get("rows") if isinstance(meta.get("rows"), dict) else {}
    file_bytes = sum(int(f.get("bytes", 0)) for f in files if isinstance(f, dict)) if files else None
    airflow = meta.get("airflow") if isinstance(meta.get("airflow"), dict) else {}
    return {
        "seq": v.seq,
        "version": v.version,
        "kind": v.kind,
        "hour": v.hour,
        "hour_str": v.hour_str,
        "parent": v.parent,
        "committed_at": v.committed_at,
        "rolled_back": rolled_back,
        "rows": {k: _num(rows.get(k)) for k in ("admitted", "pending", "tombstones")},
        "bytes": _num(metrics.get("bytes_saved")) if file_bytes is None else file_bytes,
        "metrics": {k: _num(metrics.get(k)) for k in METRIC_KEYS},
        "seconds": {str(k): _num(s) for k, s in _ordered_phases(seconds)},
        "airflow": {"dag_id": airflow.get("dag_id"), "run_id": airflow.get("run_id")},
        "error": error,
    }


def _ordered_phases(seconds: dict) -> Iterable[tuple[str, Any]]:
    for p in PHASES:
        if p in seconds:
            yield p, seconds[p]
    for p, s in seconds.items():
        if p not in PHASES:
            yield p, s


def page_of(chain: Chain, page: int, per_page: int) -> tuple[list[Version], int]:
    """Newest-first page ``page`` (1-based) of the live chain, and the number of pages."""
    total = len(chain.versions)
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    end = total - (page - 1) * per_page
    start = max(0, end - per_page)
    return list(reversed(chain.versions[start:end])), pages


def series(chain: Chain, hours: int, end_hour: int | None = None) -> dict:
    """Per-data-hour points of the window ``(end_hour - hours, end_hour]`` (default: ending at the
    newest data hour), sorted by data hour, with the missing and the empty hours of the same
    window. The window never starts before the chain's first hour."""
    candidates = ([v.hour for v in chain.versions] + [m.hour for m in chain.missing]
                  + [h["hour"] for h in chain.unversioned["empty_hours"]])
    if end_hour is None:
        end_hour = max(candidates) if candidates else 0
    start_hour = end_hour - hours + 1
    if candidates and min(candidates) <= end_hour:
        start_hour = max(start_hour, min(candidates))  # no empty stretch before the first hour
    # late (backfilled) hours may sit anywhere in the chain: data hours decide membership.
    picked = [v for v in chain.versions if start_hour <= v.hour <= end_hour]
    picked.sort(key=lambda v: (v.hour, v.seq))
    points = []
    for v in picked:
        row = version_row(chain.model_dir, v)
        points.append({"hour": v.hour, "hour_str": v.hour_str, "version": v.version,
                       "kind": v.kind, "bytes": row["bytes"], **row["metrics"],
                       "seconds": row["seconds"]})
    trained = {p["hour"] for p in points}
    return {"start_hour": start_hour, "end_hour": end_hour, "start": _safe_hs(start_hour),
            "end": _safe_hs(end_hour), "points": points,
            **{kind: [{k: h[k] for k in ("hour", "hour_str", "reason")}
                      for h in chain.unversioned[f"{kind}_hours"]
                      if start_hour <= h["hour"] <= end_hour and h["hour"] not in trained]
               for kind in ("missing", "empty")}}


def _safe_hs(h: int) -> str:
    try:
        return _hour_str(h)
    except ValueError:
        return "?"


def now_hour() -> int:
    """The wall clock's hour index (the UI's freshness is the one place that asks it)."""
    return hour_of_datetime(_dt.datetime.now(_dt.timezone.utc))


def freshness(head_hour: int | None, now: int | None = None) -> dict:
    """Lag of the head's data hour behind the wall clock, in hours. Hour ``h`` is complete at
    ``h + 1``, so a chain that is fully up to date has ``lag_hours == 1``."""
    now = now_hour() if now is None else now
    if head_hour is None:
        return {"now_hour": now, "now": _safe_hs(now), "lag_hours": None, "state": "empty"}
    lag = now - head_hour
    state = "fresh" if lag <= 2 else ("late" if lag <= 24 else "stale")
    return {"now_hour": now, "now": _safe_hs(now), "lag_hours": lag, "state": state}


def find_run(model: ModelRef, dag_id: str, run_id: str) -> tuple[list[dict], list[dict]]:
    """Versions (live and rolled back) and missing events made by Airflow run ``run_id``."""
    chain = read_chain(model.model_dir)
    found = []
    for v, rb in [(v, True) for v in chain.rolled_back] + [(v, False) for v in chain.versions]:
        ev_af = v.event.get("airflow") or {}
        if ev_af.get("run_id") == run_id:
            found.append(version_row(model.model_dir, v, rolled_back=rb))
            continue
        try:
            meta = _checked_meta(model.model_dir, v)
        except StoreReadError:
            continue
        af = (meta or {}).get("airflow") or {}
        if af.get("run_id") == run_id and af.get("dag_id", dag_id) == dag_id:
            found.append(version_row(model.model_dir, v, rolled_back=rb))
    missing = [{"hour": m.hour, "hour_str": m.hour_str, "reason": m.reason}
               for m in chain.missing if (m.event.get("airflow") or {}).get("run_id") == run_id]
    return found, missing
