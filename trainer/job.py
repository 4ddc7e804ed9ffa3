"""One data hour as one MPI job: ``mpiexec -n S+W python -m trainer train --config C --hour H``.

Phases (the only barriers are load, end of data and save; workers never wait for each other)::

    rank 0 plans the hour (already in chain? kind? partition files)  -> broadcast
    servers load the chain head into their table / dense slice       -> all agree
    workers train their share, servers serve                         -> end of data
    metrics and counters reduced to rank 0
    servers: day boundary (before a full save), export, stage shards -> rank 0 stages dense + meta

Any exception on any rank aborts every rank (``MPI_Abort``) after printing rank, host and cause.
The job never commits: ``streamtrain save`` does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI
from threadpoolctl import threadpool_limits

import pstable
import trainer
from trainer import partition, store
from trainer.comm import Backoff, Roles, Watchdog, fail_job, under_launcher
from trainer.outcome import exit_code_of, result_line
from trainer.config import ModelConfig
from trainer.hours import hour_of_day, hour_str
from trainer.metrics import ProgressiveMetrics
from trainer.model import DenseLayout, DenseOptimizer, flatten, init_dense
from trainer.server import DenseSlice, Server, dense_bounds
from trainer.sharding import shard_of
from trainer.worker import Worker


def log(message: str) -> None:
    print(f"[streamtrain] {message}", flush=True)


@dataclass
class HourPlan:
    """What rank 0 decided for the hour; broadcast to every rank."""

    hour: int
    skip: str = ""  # non-empty: nothing to train, and why
    kind: str = "delta"
    parent: str | None = None
    day_boundary: bool = False  # decay + evict before staging (a scheduled full save)
    partition: dict = field(default_factory=dict)  # path + files with sizes and checksums
    work: list = field(default_factory=list)  # work[w] = list of WorkUnit for worker w
    dense_dim: int = 0
    claim: str | None = None  # the token of this job's claim on staging/<hour>
    outcome: dict = field(default_factory=dict)  # the result line of a skipped / empty hour


def run_train(cfg: ModelConfig, hour: int, force: bool = False,
              run_info: dict | None = None, claim: str | None = None) -> int:
    """Train `hour` on this rank; `run_info` is recorded in the staged version's meta.json.

    `claim`: the token of the launcher's claim on the hour's staging (``run-hour``); without
    it rank 0 claims the staging itself. A failed job removes its staging and its claim.
    """
    comm = MPI.COMM_WORLD
    watchdog = Watchdog(comm, cfg.mpi.timeout_seconds, watch_launcher=under_launcher())
    job = _JobState(claim)
    try:
        with threadpool_limits(limits=cfg.mpi.blas_threads, user_api="blas"):
            return _run(comm, cfg, hour, force, run_info or {}, job, watchdog)
    except BaseException as err:  # noqa: BLE001 - any failure must take every rank down
        job.give_up(cfg, hour)
        if comm.size == 1:
            raise
        fail_job(comm, err, exit_code_of(err))
        return 1
    finally:
        watchdog.stop()


@dataclass
class _JobState:
    """The claim this job holds on its hour's staging (known on every rank once planned)."""

    claim: str | None = None

    def give_up(self, cfg: ModelConfig, hour: int, clean_staging: bool = True) -> None:
        if self.claim is not None:
            try:
                store.release_claim(cfg.model_dir, hour, self.claim, clean_staging=clean_staging)
            except OSError:
                pass  # the failure being reported matters more than its leftovers
            self.claim = None


def report(outcome: dict) -> None:
    """Print the job's one structured line (``trainer.outcome`` describes it)."""
    print(result_line(outcome), flush=True)


def _run(comm: MPI.Comm, cfg: ModelConfig, hour: int, force: bool, run_info: dict,
         job: _JobState, watchdog: Watchdog) -> int:
    roles = Roles.decide(comm, cfg.mpi.servers)
    backoff = Backoff(cfg.mpi.wait_spins, cfg.mpi.wait_backoff_min_us,
                      cfg.mpi.wait_backoff_max_us, cfg.mpi.timeout_seconds)
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    plan = _plan_hour(cfg, hour, roles, force, job) if roles.rank == 0 else None
    with watchdog.waiting("the hour's plan from rank 0"):
        plan = comm.bcast(plan, root=0)
    job.claim = plan.claim
    if plan.skip:
        if roles.rank == 0:
            log(f"{hour_str(hour)}: {plan.skip}")
            job.give_up(cfg, hour, clean_staging=False)
            report(plan.outcome)
        return 0
    if roles.rank == 0:
        log(f"{hour_str(hour)}: training as {plan.kind} on parent {plan.parent or '(none)'}; "
            f"{roles.servers} server(s), {roles.workers} worker(s), "
            f"{sum(len(w) for w in plan.work)} row groups")

    layout = DenseLayout(num_fields=len(cfg.columns.slots), dim=cfg.table.dim,
                         dense_dim=plan.dense_dim, hidden=cfg.network.hidden)
    bounds = dense_bounds(layout.num_params, roles.servers)
    table = dense = None
    if roles.is_server:
        table, dense = _load_server_state(cfg, plan, roles, layout, bounds)
    backoff.barrier(comm, "the end of the load on every rank")  # a failed load aborted the job
    seconds["load"] = time.perf_counter() - started

    started = time.perf_counter()
    metrics = ProgressiveMetrics()
    stats = None
    if roles.is_server:
        stats = Server(comm, table, dense, hour, roles.workers, backoff).serve()
    else:
        worker = Worker(comm, cfg, roles, layout, bounds, hour, backoff, metrics)
        worker.run(plan.work[roles.worker_index])
        stats = worker.stats
    seconds["train"] = time.perf_counter() - started

    with watchdog.waiting("the metrics reduction"):
        totals = _reduce_totals(comm, roles, metrics, stats, table)
    started = time.perf_counter()
    evicted = 0
    if roles.is_server and plan.day_boundary:
        evicted = len(table.end_day(hour)["key"])
    with watchdog.waiting("the eviction count"):
        evicted = comm.allreduce(evicted, op=MPI.SUM)
    stage, infos = _stage_shards(cfg, plan, roles, table) if roles.is_server else (None, [])
    with watchdog.waiting("the staged shards and dense state"):
        all_infos = comm.gather(infos, root=0)
        dense_state = _gather_dense(comm, roles, dense, layout)
    if roles.rank == 0:
        seconds["stage"] = time.perf_counter() - started
        result = _finish_stage(stage, plan, all_infos, dense_state, totals, evicted, seconds, cfg,
                               run_info)
        report(result)
    # no rank exits before rank 0 has written meta.json (a failure aborted all)
    backoff.barrier(comm, "rank 0 to write meta.json")
    return 0


def _plan_hour(cfg: ModelConfig, hour: int, roles: Roles, force: bool, job: _JobState) -> HourPlan:
    """Rank 0: claim the hour's staging, then decide (the order rule, empty, skip, kind)."""
    job.claim = store.take_claim(cfg.model_dir, hour, token=job.claim).token
    plan = _decide(cfg, hour, roles, force)
    plan.claim = job.claim
    return plan


def _decide(cfg: ModelConfig, hour: int, roles: Roles, force: bool) -> HourPlan:
    hs = hour_str(hour)
    status = store.hour_status(cfg.model_dir, hour)
    if status.state == "empty":
        return _skipped(hour, f"hour {hs} is recorded empty ({status.reason}), nothing to do",
                        status="empty", reason=status.reason)
    if not (status.state in ("committed", "pruned") and not force):
        problem = store.order_problem(cfg.model_dir, hour)
        if problem:
            raise store.OrderError(problem)
    part = partition.locate(cfg.data_root, hour)
    if not partition.is_complete(part):
        raise partition.InputError(f"partition {part.location} is not complete (no _SUCCESS)")
    files = partition.list_files(part)
    record = {"path": part.location, "files": [f.record() for f in files]}
    decision = store.plan_hour(cfg.model_dir, hour, full_save_hour=cfg.save.full_save_hour,
                               partition=record, force=force)
    if decision.skip:
        return _skipped(hour, decision.message, status="skipped",
                        reason="pruned" if status.state == "pruned" else "committed",
                        version=decision.committed_as)
    if decision.partition_changed:
        log(f"warning: {hs}: partition changed since it was trained: "
            f"{', '.join(decision.partition_diff)}")
    files, dense_dim = (partition.check_schema(part, files, cfg.columns) if files else ([], 0))
    if sum(f.rows for f in files) == 0:
        reason = (f"{len(files)} data file(s), 0 rows" if files else "no data files")
        store.mark_empty(cfg.model_dir, hour, f"partition {part.location} has _SUCCESS and {reason}")
        return _skipped(hour, f"hour {hs} recorded empty: {reason}; the chain goes on without it",
                        status="empty", reason=reason)
    store.check_room(cfg.model_dir, decision.kind)
    if decision.rollback:
        store.rollback_head(cfg.model_dir, decision.rollback, reason="train --force")
        log(f"rolled back {decision.rollback} to retrain {hs}")
    return HourPlan(
        hour=hour, kind=decision.kind, parent=decision.parent,
        day_boundary=decision.kind == "full" and decision.parent is not None
        and hour_of_day(hour) == cfg.save.full_save_hour,
        partition=record, work=partition.assign_work(files, roles.workers), dense_dim=dense_dim)


def _skipped(hour: int, message: str, **outcome) -> HourPlan:
    return HourPlan(hour=hour, skip=message,
                    outcome={"hour": hour_str(hour), "message": message, **outcome})


def _my_shards(cfg: ModelConfig, roles: Roles) -> list[int]:
    return [s for s in range(cfg.table_num_shards) if s % roles.servers == roles.rank]


def _load_server_state(cfg, plan: HourPlan, roles: Roles, layout: DenseLayout, bounds):
    table = pstable.SparseTable(cfg.table)
    lo, hi = int(bounds[roles.rank]), int(bounds[roles.rank + 1])
    optimizer = DenseOptimizer.from_config(cfg.network)
    if plan.parent is None:
        flat = flatten(init_dense(layout, cfg.train.seed), layout)
        return table, DenseSlice(flat[lo:hi].copy(), optimizer)
    chain = store.load_chain(cfg.model_dir, head=plan.parent, num_shards=cfg.table_num_shards)
    mine = _my_shards(cfg, roles)
    table.reserve(chain.admitted_rows(mine))  # the base's rows: no rehash while loading them
    # per shard: base, then deltas in order; the next files are read, checked and decoded on
    # threads while this one is loaded (SparseTable.load releases the GIL)
    for _shard, _version, columns in chain.iter_shards(mine):
        table.load(columns)
    table.mark_saved()
    saved = chain.read_dense()
    if saved["params"].size != layout.num_params:
        raise store.ChainError(f"{plan.parent}: dense has {saved['params'].size} parameters, "
                               f"the config's network has {layout.num_params}")
    state = {k[len("state."):]: (v if k == "state.step" else v[lo:hi].copy())
             for k, v in saved.items() if k.startswith("state.")}
    return table, DenseSlice(saved["params"][lo:hi].copy(), optimizer, state)


def _reduce_totals(comm, roles: Roles, metrics: ProgressiveMetrics, stats, table) -> dict:
    """Sum metrics and counters of every rank onto rank 0 (exact: histograms and counts add)."""
    merged = np.zeros_like(metrics.state())
    comm.Reduce(metrics.state(), merged, op=MPI.SUM, root=0)
    names = ("ids_admitted", "ids_filtered", "table_rows", "pending_ids", "bad_rows",
             "dense_nulls", "rows_read")
    counters = np.zeros(len(names), dtype=np.int64)
    if roles.is_server:
        counters[:4] = [stats.created, stats.filtered, len(table), table.num_pending]
    else:
        counters[4:] = [stats.read.bad_rows, stats.read.dense_nulls, stats.read.rows_read]
    total = np.zeros_like(counters)
    comm.Reduce(counters, total, op=MPI.SUM, root=0)
    if roles.rank != 0:
        return {}
    out = ProgressiveMetrics.from_state(merged).get()
    out["rows"] = int(out["rows"])
    out.update({name: int(value) for name, value in zip(names, total)})
    return out


def _stage_shards(cfg, plan: HourPlan, roles: Roles, table) -> list:
    from trainer.store.columns import split_by_shard

    stage = store.Stage.open(cfg.model_dir, plan.hour, plan.kind, plan.parent,
                             num_shards=cfg.table_num_shards, dim=cfg.table.dim,
                             opt_width=pstable.opt_state_width(cfg.table.optimizer.rule,
                                                               cfg.table.dim),
                             optimizer_rule=cfg.table.optimizer.rule, claim=plan.claim)
    columns = table.export(changed_only=plan.kind == "delta")
    owner = shard_of(columns["key"], columns["slot"], cfg.table_num_shards)
    # one sort by shard, then each shard is gathered while the previous ones are encoded,
    # checksummed, written and fsync'd on a small thread pool
    infos = stage.write_shards(split_by_shard(columns, owner, _my_shards(cfg, roles)))
    return stage, infos


def _gather_dense(comm, roles: Roles, dense: DenseSlice | None, layout: DenseLayout):
    """Rank 0 gets the full flat parameters and optimizer state, in server order."""
    mine = None
    if roles.is_server:
        mine = {"params": dense.params, **{f"state.{k}": v for k, v in dense.state.items()}}
    parts = comm.gather(mine, root=0)
    if roles.rank != 0:
        return None
    parts = [p for p in parts if p is not None]
    merged = {}
    for key in parts[0]:
        if key == "state.step":
            merged[key] = parts[0][key]
        else:
            merged[key] = np.concatenate([p[key] for p in parts])
    return merged


def _finish_stage(stage, plan: HourPlan, all_infos, dense_state, totals, evicted, seconds,
                  cfg, run_info: dict) -> dict:
    infos = [info for server_infos in all_infos for info in server_infos]
    infos.append(stage.write_dense(dense_state))
    totals = dict(totals, rows_evicted=int(evicted), seconds=seconds,
                  bytes_saved=int(sum(i.bytes for i in infos)))
    totals["rows_per_s"] = totals.get("rows", 0) / max(seconds.get("train", 0.0), 1e-9)
    stage.finish(infos, partition=plan.partition, metrics=totals,
                 config_hash=cfg.config_hash(), code_version=trainer.__version__,
                 extra={**run_info,
                        "day_boundary": {"ran": plan.day_boundary, "evicted": int(evicted)}})
    return {"status": "staged", "hour": hour_str(plan.hour), "kind": plan.kind,
            "parent": plan.parent, **totals}

