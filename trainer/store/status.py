"""Where a data hour stands, and the order rule: the one place that decides both.

The job (rank 0's plan), the command line, the Airflow sensor and operators, and the UI all ask
:func:`hour_status` / :func:`order_problem`; nothing else reads the ledger to answer "may this
hour train?".

An hour is

==============  ================================================================================
``committed``   a visible version holds it
``pruned``      it was committed, its version since pruned (trained once: never again)
``missing``     recorded missing (its partition never landed): the chain goes on without it
``empty``       recorded empty (complete, no rows): no version, the chain goes on without it
``staged``      not settled, but a complete staged version waits for ``streamtrain save``
``unsettled``   none of the above
==============  ================================================================================

The order rule (CONTRACT §3.1): no hour trains while an earlier hour *since the head* is neither
committed nor recorded (missing or empty). A late hour, older than the head's, trains on the head
and is appended (§3.4); the first hour of an empty chain may be any hour.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .layout import META, StoreLayout, hour_str
from .ledger import ChainState, read_state

#: Hours whose fate is recorded: a later hour may train after them.
SETTLED = ("committed", "pruned", "missing", "empty")


@dataclass(frozen=True)
class HourStatus:
    """Where ``hour`` stands (see the module docstring for ``state``)."""

    hour: int
    state: str
    version: str | None = None  #: the version holding it (committed / pruned)
    kind: str | None = None  #: its kind (committed / pruned)
    head: str | None = None  #: the head of the chain
    reason: str = ""  #: why it was recorded missing / empty
    staged_hours: tuple[str, ...] = field(default=())  #: every hour with a staging folder

    @property
    def settled(self) -> bool:
        return self.state in SETTLED

    @property
    def hour_str(self) -> str:
        return hour_str(self.hour)


def _recorded(state: ChainState, hour: int, event: str) -> dict | None:
    events = state.missing if event == "missing" else state.empty
    return next((ev for ev in reversed(events) if ev.get("hour") == hour), None)


def staged_hours(layout: StoreLayout) -> tuple[str, ...]:
    """Hours with a staging folder (complete or not), oldest first."""
    if not layout.staging.is_dir():
        return ()
    return tuple(sorted(p.name for p in layout.staging.iterdir()
                        if p.is_dir() and not p.name.startswith(".")))


def status_in(state: ChainState, layout: StoreLayout, hour: int) -> HourStatus:
    """:func:`hour_status` on an already replayed ledger."""
    staged = staged_hours(layout)
    version = state.by_hour.get(hour)
    if version is not None:
        return HourStatus(hour, "committed", version, state.versions[version].kind, state.head,
                          staged_hours=staged)
    if hour in state.pruned_hours:
        rec = state.pruned_hours[hour]
        return HourStatus(hour, "pruned", rec.version, rec.kind, state.head, staged_hours=staged)
    for event in ("empty", "missing"):
        ev = _recorded(state, hour, event)
        if ev is not None:
            return HourStatus(hour, event, head=state.head, reason=str(ev.get("reason", "")),
                              staged_hours=staged)
    complete = (layout.staging_dir(hour) / META).is_file()
    return HourStatus(hour, "staged" if complete else "unsettled", head=state.head,
                      staged_hours=staged)


def hour_status(model_dir, hour: int) -> HourStatus:
    """Replay the ledger of ``model_dir`` and say where ``hour`` stands."""
    layout = StoreLayout(model_dir)
    return status_in(read_state(layout), layout, hour)


def unsettled_before(state: ChainState, hour: int) -> list[int]:
    """Hours after the head's and before ``hour`` that are neither committed nor recorded."""
    if state.head is None:
        return []
    head_hour = state.versions[state.head].hour
    settled = set(state.by_hour) | set(state.pruned_hours)
    settled |= {ev.get("hour") for ev in state.missing} | {ev.get("hour") for ev in state.empty}
    return [h for h in range(head_hour + 1, hour) if h not in settled]


def settle_command(hour: int) -> str:
    """The commands that settle ``hour``."""
    hs = hour_str(hour)
    return (f"train it (`streamtrain run-hour --hour {hs}`, or clear its Airflow run), or record "
            f"it missing (`streamtrain mark-missing --hour {hs}`)")


def order_problem_in(state: ChainState, hour: int) -> str:
    """:func:`order_problem` on an already replayed ledger."""
    unsettled = unsettled_before(state, hour)
    if not unsettled:
        return ""
    first = unsettled[0]
    head_hour = state.versions[state.head].hour
    return (f"hour {hour_str(hour)} may not train yet: {len(unsettled)} earlier hour(s) since the "
            f"head {state.head} (hour {hour_str(head_hour)}) are neither committed nor recorded, "
            f"the first {hour_str(first)}; hours train in order. Settle {hour_str(first)} first: "
            f"{settle_command(first)}")


def order_problem(model_dir, hour: int) -> str:
    """Why ``hour`` may not train yet, naming the first unsettled hour and the command that
    settles it; "" if it may (see the module docstring for the rule)."""
    return order_problem_in(read_state(StoreLayout(model_dir)), hour)
