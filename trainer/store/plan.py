"""Planning one hour at job start: skip, train as full or delta, roll back first (force)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import RollbackError
from .layout import StoreLayout, hour_str
from .ledger import read_state
from .load import check_version


@dataclass
class Plan:
    """What the job does for ``hour``.

    ``action``: ``"skip"`` (already in the chain; exit 0 and print ``message``) or ``"train"``.
    ``rollback``: with force, the head version rank 0 must roll back before loading
    (``rollback_head(model_dir, plan.rollback, reason=...)``), else None.
    ``parent``: the version to load and train on (the head after any rollback; None = empty).
    ``kind``: "full" or "delta" for the staged version. ``version``: the name it will get.
    ``committed_as``: the version already holding ``hour`` (if any).
    ``partition_changed``: the partition differs from the one recorded for ``hour`` (reported,
    with ``partition_diff``); None when there is nothing to compare.
    """

    hour: int
    hour_str: str
    action: str
    kind: str | None
    parent: str | None
    version: str | None
    rollback: str | None = None
    committed_as: str | None = None
    partition_changed: bool | None = None
    partition_diff: list = field(default_factory=list)
    message: str = ""

    @property
    def skip(self) -> bool:
        return self.action == "skip"


def _file_sig(f: dict):
    ck = f.get("checksum") or f.get("sha256") or f.get("crc32")
    return (f.get("bytes"), ck)


def partition_diff(recorded: dict | None, current: dict | None) -> list[str]:
    """Differences between two partition records ``{"path", "files": [{"name", "bytes", ...}]}``."""
    a = {f["name"]: _file_sig(f) for f in (recorded or {}).get("files", [])}
    b = {f["name"]: _file_sig(f) for f in (current or {}).get("files", [])}
    out = [f"removed {n}" for n in sorted(a.keys() - b.keys())]
    out += [f"added {n}" for n in sorted(b.keys() - a.keys())]
    out += [f"changed {n}: {a[n]} -> {b[n]}" for n in sorted(a.keys() & b.keys()) if a[n] != b[n]]
    return out


def plan_hour(model_dir, hour: int, *, full_save_hour: int = 0, partition: dict | None = None,
              force: bool = False) -> Plan:
    """Decide what to do with ``hour`` given the committed chain. Reads only; changes nothing.

    - ``hour`` already committed: ``skip`` ("already in chain, nothing to do"), unless ``force``;
      with force only if it is the head (``RollbackError`` otherwise), then ``rollback`` = head.
    - kind: ``full`` if ``hour % 24 == full_save_hour`` or there is no base to build on, else delta.
    - a late hour (older than the head's) is simply appended on the current head.
    """
    layout = StoreLayout(model_dir)
    state = read_state(layout)
    hs = hour_str(hour)
    head = state.head
    committed = state.by_hour.get(hour)
    if committed is None and hour in state.pruned_hours:
        pruned = state.pruned_hours[hour].version
        if force:
            raise RollbackError(f"hour {hs} was trained in {pruned}, since pruned: only the head "
                                f"can be retrained (force)")
        return Plan(hour, hs, "skip", None, head, None, committed_as=pruned,
                    message=f"hour {hs} already trained in {pruned} (since pruned), nothing to do")
    rollback = None
    changed, diff = None, []
    if committed is not None:
        if partition is not None:
            rec_part = check_version(layout, state.versions[committed]).meta.get("partition")
            diff = partition_diff(rec_part, partition)
            changed = bool(diff)
        note = (f"; its partition changed since ({', '.join(diff[:5])})" if changed else "")
        if not force:
            return Plan(hour, hs, "skip", None, head, None, committed_as=committed,
                        partition_changed=changed, partition_diff=diff,
                        message=f"hour {hs} already in chain as {committed}, nothing to do{note}")
        if committed != head:
            raise RollbackError(f"hour {hs} is in {committed} but the head is {head}: only the "
                                f"head can be retrained (force)")
        state.check_rollback(committed)
        rollback = committed
        head = state.versions[committed].parent
    kind = "full" if head is None or hour % 24 == full_save_hour else "delta"
    version = state.next_version()
    msg = (f"hour {hs}: train {kind} {version} on "
           f"{head or 'an empty model'}" + (f" after rolling back {rollback}" if rollback else ""))
    return Plan(hour, hs, "train", kind, head, version, rollback=rollback, committed_as=committed,
                partition_changed=changed, partition_diff=diff, message=msg)
