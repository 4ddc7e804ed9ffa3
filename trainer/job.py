"""One data hour as one MPI job: ``mpiexec -n S+W python -m trainer train --config C --hour H``.

Phases (the only barriers are load, end of data and save; workers never wait for each other)::

    rank 0 plans the hour (already in chain? kind? partition files)  -> broadcast
    servers load the chain head into their table / dense slice       -> all agree
    workers train their share, servers serve                         -> end of data
    metrics and counters reduced to rank 0
    servers: day boundary (before a full save), export, stage shards -> rank 0 stages dense + meta

The network: worker ranks import JAX (in a thread from the job's start, so it overlaps the
planning), build and check the configured network for the partition's dense width, and compile
the step (a read of JAX's persistent cache after the first hour). The first worker broadcasts
the parameter layout, the network record and, for a new chain, the initial parameters
(``network.init`` with ``train.seed``): servers never import JAX.

Any exception on any rank aborts every rank (``MPI_Abort``) after printing rank, host and cause.
The job never commits: ``streamtrain save`` does.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI
from threadpoolctl import threadpool_limits

import pstable
import trainer
from trainer import partition, store
from trainer.comm import Backoff, Roles, Watchdog, fail_job, under_launcher
from trainer.outcome import exit_code_of, ranks_line, result_line
from trainer.config import ModelConfig
from trainer.hours import hour_of_day, hour_str
from trainer.metrics import ProgressiveMetrics
from trainer.network import load as network_load
from trainer.network.layout import ParamLayout
from trainer.network.optimizer import DenseOptimizer
from trainer.server import DenseSlice, Server, dense_bounds
from trainer.sharding import shard_of, shards_of_server
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
    initial_ctr: float = 0.0  # a new chain's first prediction (network.initial_ctr, resolved)
    prior_logit: float = 0.0  # added to the network's logits for the life of the chain
    claim: str | None = None  # the token of this job's claim on staging/<hour>
    outcome: dict = field(default_factory=dict)  # the result line of a skipped / empty hour


@dataclass
class NetworkInfo:
    """What the first worker tells every rank about the network (servers never import JAX)."""

    record: dict  #: meta.json's "network" (trainer.network.load.Built.record)
    initial: np.ndarray | None  #: the flat initial parameters, for a new chain

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout.from_record(self.record["parameters"])


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

    jax_import = None if roles.is_server else _import_in_background("trainer.network.step")
    with watchdog.waiting("every rank's pid and host"):
        ranks = comm.gather(("server" if roles.is_server else "worker", os.getpid(),
                             socket.gethostname()), root=0)
    if roles.rank == 0:
        print(ranks_line(ranks), flush=True)  # names a rank mpiexec later reports lost by pid
    plan = _plan_hour(cfg, hour, roles, force, job) if roles.rank == 0 else None
    with watchdog.waiting("the hour's plan from rank 0"):
        plan = comm.bcast(plan, root=0)
    job.claim = plan.claim
    if plan.skip:
        if roles.rank == 0:
            log(f"{hour_str(hour)}: {plan.skip}")
            job.give_up(cfg, hour, clean_staging=False)
            report(plan.outcome)
        if jax_import is not None:  # exiting while jaxlib initialises aborts the process
            jax_import.join()
        return 0
    if roles.rank == 0:
        log(f"{hour_str(hour)}: training as {plan.kind} on parent {plan.parent or '(none)'}; "
            f"{roles.servers} server(s), {roles.workers} worker(s), "
            f"{sum(len(w) for w in plan.work)} row groups")

    table = dense = chain = step = None
    network_seconds = 0.0
    if roles.is_server:
        table, chain = _load_table(cfg, plan, roles)  # meanwhile the workers compile
        with watchdog.waiting("the network's layout from the first worker"):
            network = comm.bcast(None, root=roles.servers)
        dense = _load_dense(cfg, plan, roles, network, chain)
    else:
        started_network = time.perf_counter()
        step, network = _prepare_network(comm, cfg, plan, roles, jax_import, watchdog)
        network_seconds = time.perf_counter() - started_network
    backoff.barrier(comm, "the end of the load on every rank")  # a failed load aborted the job
    seconds["load"] = time.perf_counter() - started
    seconds["network"] = comm.reduce(network_seconds, op=MPI.MAX, root=0)

    started = time.perf_counter()
    metrics = ProgressiveMetrics()
    stats = None
    if roles.is_server:
        stats = Server(comm, table, dense, hour, roles.workers, backoff).serve()
    else:
        bounds = dense_bounds(network.layout.num_params, roles.servers)
        units = plan.work[roles.worker_index]
        worker = Worker(comm, _with_hour_batch(cfg, units), roles, step, bounds, hour, backoff,
                        metrics)
        worker.run(units)
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
        dense_state = _gather_dense(comm, roles, dense)
    if roles.rank == 0:
        seconds["stage"] = time.perf_counter() - started
        result = _finish_stage(stage, plan, all_infos, dense_state, totals, evicted, seconds, cfg,
                               {**run_info, "network": network.record})
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
    part = partition.locate(cfg.data_root, hour, cfg.s3)
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
    initial_ctr = 0.0
    if decision.parent is None:
        initial_ctr = cfg.network.initial_ctr or _partition_ctr(part, files, cfg.columns)
        prior_logit = math.log(initial_ctr / (1.0 - initial_ctr))
        log(f"{hs}: new model; first predictions at CTR {initial_ctr:.4g}"
            + ("" if cfg.network.initial_ctr else " (network.initial_ctr = 0: this hour's CTR)"))
    else:
        prior_logit = network_load.prior_logit_of(
            store.read_version_meta(cfg.model_dir, decision.parent).get("network"))
    if decision.rollback:
        store.rollback_head(cfg.model_dir, decision.rollback, reason="train --force")
        log(f"rolled back {decision.rollback} to retrain {hs}")
    return HourPlan(
        hour=hour, kind=decision.kind, parent=decision.parent,
        day_boundary=decision.kind == "full" and decision.parent is not None
        and hour_of_day(hour) == cfg.save.full_save_hour,
        partition=record, work=partition.assign_work(files, roles.workers), dense_dim=dense_dim,
        initial_ctr=initial_ctr, prior_logit=prior_logit)


_CTR_CLIP = 1e-4  # a prior CTR of exactly 0 or 1 would be an infinite bias


def _partition_ctr(part, files, columns) -> float:
    """Show-weighted CTR of the partition, from its label (and show) columns only (rows whose
    label is not 0/1 are left to the reader to refuse or quarantine).

    The one number a new model takes from its first hour before training it: that hour's
    calibration is then in-sample by one scalar (docs/training.md); its ranking is not."""
    import pyarrow.parquet as pq

    clicks = shows = 0.0
    names = [columns.label] + ([columns.show] if columns.show else [])
    for f in files:
        table = pq.read_table(f.path, columns=names, filesystem=part.fs)
        label = _as_float(table.column(columns.label))
        show = _as_float(table.column(columns.show)) if columns.show else np.ones(label.size)
        good = ((label == 0) | (label == 1)) & (show >= 1)
        clicks += float((label * show)[good].sum())
        shows += float(show[good].sum())
    ctr = clicks / shows if shows > 0 else 0.5
    return min(max(ctr, _CTR_CLIP), 1 - _CTR_CLIP)


def _as_float(column) -> np.ndarray:
    """A label or show column as float64, nulls as NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), np.float64)


def _with_hour_batch(cfg: ModelConfig, units) -> ModelConfig:
    """``cfg`` with this worker's batch size for the hour (``train.min_batches_per_hour``)."""
    size = cfg.train.hour_batch_size(sum(u.rows for u in units))
    if size == cfg.train.batch_size:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=size))


def _skipped(hour: int, message: str, **outcome) -> HourPlan:
    return HourPlan(hour=hour, skip=message,
                    outcome={"hour": hour_str(hour), "message": message, **outcome})


def _import_in_background(module: str) -> threading.Thread:
    """Start importing `module` (JAX: about a second) while rank 0 plans the hour."""
    thread = threading.Thread(target=importlib.import_module, args=(module,),
                              name="import-jax", daemon=True)
    thread.start()
    return thread


def _prepare_network(comm, cfg, plan: HourPlan, roles: Roles, jax_import: threading.Thread,
                     watchdog: Watchdog):
    """A worker: build + check the network, share its layout, compile the step."""
    jax_import.join()
    from trainer.network import step as network_step  # the import error, if any, raises here

    if cfg.compile_cache_dir:
        network_step.use_compile_cache(cfg.compile_cache_dir)
    spec = network_load.input_spec(cfg, plan.dense_dim)
    built = network_load.build(cfg.network_source, spec, cfg.train.batch_size)
    first = roles.rank == roles.servers
    info = None
    if first:
        initial = None
        if plan.parent is None:
            import jax
            params = built.network.init(jax.random.PRNGKey(cfg.train.seed))
            initial = built.layout.flatten({k: np.asarray(v) for k, v in params.items()})
        info = NetworkInfo(built.record(plan.prior_logit), initial)
    with watchdog.waiting("the network's layout from the first worker"):
        info = comm.bcast(info, root=roles.servers)
    step = network_step.Step(built, cfg.train.batch_size, prior_logit=plan.prior_logit)
    step.compiled("train")
    if first:
        log(f"network {cfg.network.model!r}: {built.layout.num_params:,} parameters in "
            f"{len(built.layout.names)} arrays; step compiled in {step.compile_seconds:.2f} s")
    return step, info


def _load_table(cfg, plan: HourPlan, roles: Roles):
    """This server's shards of the chain head (or an empty table); also returns the chain."""
    table = pstable.SparseTable(cfg.table)
    if plan.parent is None:
        return table, None
    chain = store.load_chain(cfg.model_dir, head=plan.parent, num_shards=cfg.table_num_shards)
    chain.load_into(table, shards_of_server(roles.rank, cfg.table_num_shards, roles.servers))
    table.mark_saved()
    return table, chain


def _load_dense(cfg, plan: HourPlan, roles: Roles, network: NetworkInfo, chain) -> DenseSlice:
    """This server's slice of the dense vector: initial, or the chain head's (same network)."""
    bounds = dense_bounds(network.layout.num_params, roles.servers)
    lo, hi = int(bounds[roles.rank]), int(bounds[roles.rank + 1])
    optimizer = DenseOptimizer.from_config(cfg.network)
    if plan.parent is None:
        return DenseSlice(network.initial[lo:hi].copy(), optimizer)
    saved_network = chain.get(plan.parent).meta.get("network")
    for warning in network_load.check_saved(saved_network, network.record, f"version {plan.parent}"):
        if roles.rank == 0:
            log(f"warning: {warning}")
    saved = chain.read_dense()
    if saved["params"].size != network.layout.num_params:
        raise store.ChainError(f"{plan.parent}: dense has {saved['params'].size} parameters, "
                               f"the network has {network.layout.num_params}")
    state = {k[len("state."):]: (v if k == "state.step" else v[lo:hi].copy())
             for k, v in saved.items() if k.startswith("state.")}
    return DenseSlice(saved["params"][lo:hi].copy(), optimizer, state)


def _reduce_totals(comm, roles: Roles, metrics: ProgressiveMetrics, stats, table) -> dict:
    """Sum metrics and counters of every rank onto rank 0 (exact: histograms and counts add)."""
    merged = np.zeros_like(metrics.state())
    comm.Reduce(metrics.state(), merged, op=MPI.SUM, root=0)
    names = ("ids_admitted", "ids_filtered", "table_rows", "pending_ids", "bad_rows",
             "dense_nulls", "rows_read", "truncated_ids")
    counters = np.zeros(len(names), dtype=np.int64)
    if roles.is_server:
        counters[:4] = [stats.created, stats.filtered, len(table), table.num_pending]
    else:
        counters[4:] = [stats.read.bad_rows, stats.read.dense_nulls, stats.read.rows_read,
                        stats.read.truncated_ids]
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
    mine = shards_of_server(roles.rank, cfg.table_num_shards, roles.servers)
    infos = stage.write_shards(split_by_shard(columns, owner, mine))
    return stage, infos


def _gather_dense(comm, roles: Roles, dense: DenseSlice | None):
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
                        "day_boundary": {"ran": plan.day_boundary, "evicted": int(evicted)},
                        **({"initial_ctr": plan.initial_ctr} if plan.parent is None else {})})
    return {"status": "staged", "hour": hour_str(plan.hour), "kind": plan.kind,
            "parent": plan.parent, **totals}

