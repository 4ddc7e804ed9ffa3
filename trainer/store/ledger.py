"""The append-only ledger: one JSON object per line, written with write + flush + fsync.

The ledger is the single source of truth of the chain: a version folder whose commit line is
not in the ledger does not exist for any reader (the next ``save`` completes or removes it).

Events (every line has ``seq`` 1, 2, 3... and ``event``)::

    commit    version, kind, hour, hour_str, parent, base, meta_sha256, committed_at
    missing   hour, hour_str, reason, recorded_at          (the partition never landed)
    empty     hour, hour_str, reason, recorded_at          (complete, but no rows to train)
    rollback  version, hour, hour_str, parent (the new head), reason, recorded_at
    prune     versions (removed), keep_bases, recorded_at

A crash while appending can leave a last line without its newline: that line was never
acknowledged (``durable.JsonLines``), so readers ignore it and the next append cuts it off.
Any other unreadable line is a ``LedgerError`` naming its number.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import (ChainOrderError, DuplicateVersionError, LedgerError, MissingVersionError,
                     RollbackError)
from .durable import JsonLines
from .layout import StoreLayout, hour_str, is_version_name, utc_now, version_name, \
    version_number

KINDS = ("full", "delta")


class Ledger:
    """Read and append ``ledger.jsonl`` (a :class:`~.durable.JsonLines` log). Appending must
    happen under ``store_lock``."""

    def __init__(self, path):
        self.log = JsonLines(path, LedgerError)
        self.path = self.log.path

    def read(self) -> list[dict]:
        events, _ = self.log.read()
        for i, ev in enumerate(events, 1):
            if not isinstance(ev, dict) or "event" not in ev or "seq" not in ev:
                raise LedgerError(f"{self.path}: line {i} has no 'seq'/'event': {str(ev)[:200]!r}")
        return events

    def append(self, record: dict, *, hook=None) -> dict:
        """Append one event with the next ``seq``; durable when this returns.

        ``hook(step)`` is for crash-injection tests only (see :meth:`JsonLines.append`).
        """
        lines, good = self.log.read_lines()
        seq = 1
        if lines:
            try:
                seq = int(self.log.parse(lines[-1], len(lines))["seq"]) + 1
            except (LedgerError, KeyError, TypeError, ValueError):
                raise LedgerError(f"{self.path}: last line {len(lines)} unreadable") from None
        rec = {"seq": seq, **{k: v for k, v in record.items() if k != "seq"}}
        self.log.append(rec, good, hook=hook)
        return rec


@dataclass
class VersionRecord:
    """A committed version as the ledger knows it."""

    version: str
    seq: int
    kind: str
    hour: int
    hour_str: str
    parent: str | None
    base: str
    meta_sha256: str
    committed_at: str = ""

    @property
    def number(self) -> int:
        return version_number(self.version)


@dataclass
class ChainState:
    """The ledger replayed: which versions are visible, the head, missing hours.

    Replay enforces the rules, so a hand-edited or damaged ledger is refused with the version
    named: seq strictly 1, 2, 3...; a commit's parent is the head at that point; version numbers
    only grow and never repeat; a data hour is committed at most once (unless rolled back); the
    first version of a chain is a full base; only the head can be rolled back.
    """

    events: list = field(default_factory=list)
    versions: dict = field(default_factory=dict)  # visible committed versions, insertion = order
    head: str | None = None
    max_number: int = 0
    rolled_back: dict = field(default_factory=dict)  # version -> seq of the rollback event
    pruned: dict = field(default_factory=dict)  # version -> seq of the prune event
    pruned_hours: dict = field(default_factory=dict)  # hour -> record of its pruned version
    missing: list = field(default_factory=list)
    empty: list = field(default_factory=list)  # hours complete with no rows (``empty`` events)
    by_hour: dict = field(default_factory=dict)  # hour -> visible version
    records: dict = field(default_factory=dict)  # every version ever committed -> VersionRecord

    @classmethod
    def replay(cls, events, *, source="ledger") -> "ChainState":
        st = cls(events=list(events))
        expected_seq = 1
        for ev in events:
            seq = ev.get("seq")
            if seq != expected_seq:
                raise LedgerError(f"{source}: seq {seq} where {expected_seq} was expected "
                                  f"(lines lost, duplicated or reordered)")
            expected_seq += 1
            kind_ev = ev.get("event")
            if kind_ev == "commit":
                st._apply_commit(ev, source)
            elif kind_ev == "missing":
                st.missing.append(ev)
            elif kind_ev == "empty":
                st.empty.append(ev)
            elif kind_ev == "rollback":
                v = ev.get("version")
                if v != st.head:
                    raise ChainOrderError(f"{source}: seq {seq} rolls back {v} but the head is {st.head}")
                rec = st.versions.pop(v)
                st.by_hour.pop(rec.hour, None)
                st.rolled_back[v] = seq
                st.head = rec.parent
            elif kind_ev == "prune":
                for v in ev.get("versions", []):
                    if v not in st.versions:
                        raise LedgerError(f"{source}: seq {seq} prunes {v}, which is not a visible version")
                    if v == st.head:
                        raise ChainOrderError(f"{source}: seq {seq} prunes the head {v}")
                    rec = st.versions.pop(v)
                    st.by_hour.pop(rec.hour, None)
                    st.pruned[v] = seq
                    st.pruned_hours[rec.hour] = rec  # trained once: never again
            else:
                raise LedgerError(f"{source}: seq {seq} has unknown event {kind_ev!r}")
        return st

    def _apply_commit(self, ev, source):
        seq = ev["seq"]
        v = ev.get("version")
        if not isinstance(v, str) or not is_version_name(v):
            raise LedgerError(f"{source}: seq {seq} commit has a bad version name {v!r}")
        if v in self.records:
            raise DuplicateVersionError(f"{source}: version {v} committed twice "
                                        f"(seq {self.records[v].seq} and seq {seq})")
        n = version_number(v)
        if n <= self.max_number:
            raise ChainOrderError(f"{source}: version {v} (seq {seq}) is out of order: "
                                  f"{version_name(self.max_number)} was already committed")
        kind = ev.get("kind")
        if kind not in KINDS:
            raise LedgerError(f"{source}: version {v} has kind {kind!r}, expected one of {KINDS}")
        parent = ev.get("parent")
        if parent != self.head:
            raise ChainOrderError(f"{source}: version {v} has parent {parent} but the head was "
                                  f"{self.head} when it was committed (wrong parent / out of order)")
        if kind == "delta" and parent is None:
            raise ChainOrderError(f"{source}: version {v} is a delta with no parent (no base)")
        hour = ev.get("hour")
        if not isinstance(hour, int):
            raise LedgerError(f"{source}: version {v} has a bad hour {hour!r}")
        if hour in self.by_hour:
            raise DuplicateVersionError(f"{source}: version {v} commits hour {hour_str(hour)} "
                                        f"already committed as {self.by_hour[hour]}")
        base = v if kind == "full" else self.versions[parent].base
        rec = VersionRecord(version=v, seq=seq, kind=kind, hour=hour,
                            hour_str=ev.get("hour_str") or hour_str(hour), parent=parent, base=base,
                            meta_sha256=ev.get("meta_sha256", ""),
                            committed_at=ev.get("committed_at", ""))
        self.records[v] = rec
        self.versions[v] = rec
        self.by_hour[hour] = v
        self.head = v
        self.max_number = n

    # -- queries ---------------------------------------------------------------------------
    def next_version(self) -> str:
        """Name of the next version: numbers are never reused (not even after a rollback)."""
        return version_name(self.max_number + 1)

    def why_absent(self, version: str) -> str:
        if version in self.pruned:
            return f"pruned (ledger seq {self.pruned[version]})"
        if version in self.rolled_back:
            return f"rolled back (ledger seq {self.rolled_back[version]})"
        return "not in the ledger"

    def chain_of(self, version: str | None = None) -> list[VersionRecord]:
        """The versions a load of ``version`` (default: the head) reads: its base, then deltas."""
        v = self.head if version is None else version
        if v is None:
            return []
        out = []
        while True:
            rec = self.versions.get(v)
            if rec is None:
                who = f" (needed by {out[0].version})" if out else ""
                raise MissingVersionError(f"version {v}{who} is {self.why_absent(v)}")
            out.append(rec)
            if rec.kind == "full":
                break
            v = rec.parent
        out.reverse()
        return out

    def check_rollback(self, version: str) -> VersionRecord:
        if version != self.head:
            raise RollbackError(f"cannot roll back {version}: only the head ({self.head}) can be "
                                f"rolled back")
        rec = self.versions[version]
        if rec.parent is not None and rec.parent not in self.versions:
            raise RollbackError(f"cannot roll back {version}: its parent {rec.parent} is "
                                f"{self.why_absent(rec.parent)}")
        return rec


def read_state(layout: StoreLayout) -> ChainState:
    """Replay ``layout.ledger`` (an absent ledger is an empty chain)."""
    return ChainState.replay(Ledger(layout.ledger).read(), source=str(layout.ledger))


def now() -> str:
    return utc_now()
