"""A/B of the dense step in one process: the JAX step against the numpy step of a git revision.

The numpy CTR-DNN with hand-written backward (``trainer/model.py`` until the networks came) is
loaded from git revision ``--rev`` (default: the last one that has it, :data:`NUMPY_REV`) into
a temporary module, as
``bench/pstable_ab.py`` builds old tables. Both steps run the same MLP on the same in-memory
batches with the same random table rows, each followed by the servers' dense update
(``DenseOptimizer`` on the flat vector), turn by turn, ``--repeats`` times; medians of
examples per second of wall time and per second of CPU time (what the step costs when other
processes share the cores), and of the per-repeat ratios.

Also measured: the per-hour fixed cost JAX adds to a worker, in fresh processes with a warm
persistent compilation cache: ``import jax`` + the step module, building and checking the
network (``jax.eval_shape``), and loading the compiled step.

    .venv/bin/python bench/dense_ab.py                 # 40 batches of 512, MLP 400-400-400
    .venv/bin/python bench/dense_ab.py --batches 20 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from revisions import module_at  # noqa: E402
from trainer.network import load  # noqa: E402
from trainer.network.api import InputSpec  # noqa: E402
from trainer.network.optimizer import DenseOptimizer  # noqa: E402
from trainer.reader import Batch, dedup  # noqa: E402

SLOTS, DENSE, DIM, HIDDEN, BATCH = 26, 13, 8, (400, 400, 400), 512
NUMPY_REV = "26267214912964015e4e0f1766af29d094cf7b65"  # the last commit with trainer/model.py


def numpy_model(rev: str):
    """``trainer/model.py`` of git revision ``rev`` as a module."""
    return module_at(rev, "trainer/model.py", "numpy_model")


def batches(count: int, seed: int = 0):
    """Criteo-shaped batches (one id per slot, Zipf ids) with random pulled rows."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        example = np.repeat(np.arange(BATCH), SLOTS).astype(np.int32)
        field = np.tile(np.arange(SLOTS), BATCH).astype(np.int32)
        keys = (rng.zipf(1.2, BATCH * SLOTS) % 10**6).astype(np.uint64)
        batch = Batch(labels=rng.integers(0, 2, BATCH).astype(np.float32),
                      shows=np.ones(BATCH, np.float32),
                      dense=rng.normal(size=(BATCH, DENSE)).astype(np.float32),
                      keys=keys, slots=field.copy(), field=field, example=example)
        features = dedup(batch)
        rows = rng.normal(0, 0.01, (len(features.keys), DIM + 1)).astype(np.float32)
        out.append((batch, features, rows))
    return out


class _Speed:
    """Examples per second of wall time and per second of this process's CPU time (all its
    threads: XLA runs beside the Python thread). On a shared machine the CPU time counts the
    work, the wall time also the waits for a core."""

    def __init__(self, data):
        self.examples = sum(b.num_rows for b, _, _ in data)

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.per_second = self.examples / (time.perf_counter() - self.wall)
        self.per_cpu_second = self.examples / (time.process_time() - self.cpu)


class NumpyStep:
    """The old step + the dense update of the whole vector, as one server would."""

    def __init__(self, model, optimizer: DenseOptimizer):
        self.m = model
        self.layout = model.DenseLayout(SLOTS, DIM, DENSE, HIDDEN)
        self.params = model.init_dense(self.layout, 1)
        self.flat = model.flatten(self.params, self.layout)
        self.grad = np.empty_like(self.flat)
        self.optimizer, self.workspace = optimizer, {}
        self.state = optimizer.init_state({"all": self.flat})

    def run(self, data) -> tuple[float, float]:
        with _Speed(data) as speed:
            params = self.m.unflatten(self.flat, self.layout)
            for batch, features, rows in data:
                step = self.m.train_step(params, batch, features, rows, SLOTS, self.workspace)
                self.m.flatten(step.dense_grads, self.layout, out=self.grad)
                self.optimizer.apply({"all": self.flat}, {"all": self.grad}, self.state)
        return speed.per_second, speed.per_cpu_second


class JaxStep:
    """The JAX step (the worker's) + the dense update of the flat vector (the server's)."""

    def __init__(self, optimizer: DenseOptimizer, cache: str):
        import jax

        from trainer.network.step import Step, use_compile_cache

        use_compile_cache(cache)
        spec = InputSpec(slots=tuple(f"c{i}" for i in range(SLOTS)), dim=DIM, dense_dim=DENSE)
        built = load.build(load.resolve("dnn", {"hidden": list(HIDDEN)}, REPO), spec, BATCH)
        self.step = Step(built, BATCH)
        self.step.compiled("train")
        params = built.network.init(jax.random.PRNGKey(1))
        self.flat = built.layout.flatten({k: np.asarray(v) for k, v in params.items()})
        self.optimizer = optimizer
        self.state = optimizer.init_state({"all": self.flat})

    def run(self, data) -> tuple[float, float]:
        with _Speed(data) as speed:
            for batch, features, rows in data:
                step = self.step.train(self.flat, batch, features, rows)
                self.optimizer.apply({"all": self.flat}, {"all": step.dense_grads}, self.state)
        return speed.per_second, speed.per_cpu_second


FIXED_COST = """
import json, sys, time
marks = [(time.perf_counter(), time.process_time())]
from trainer.network import load, step as S
import jax
marks.append((time.perf_counter(), time.process_time()))
S.use_compile_cache(sys.argv[1])
from trainer.network.api import InputSpec
spec = InputSpec(slots=tuple(f"c{i}" for i in range(%d)), dim=%d, dense_dim=%d)
built = load.build(load.resolve("dnn", {"hidden": %s}, None), spec, %d)
marks.append((time.perf_counter(), time.process_time()))
step = S.Step(built, %d)
step.compiled("train")
marks.append((time.perf_counter(), time.process_time()))
out = {}
for clock, suffix in ((0, ""), (1, "_cpu")):
    for name, (a, b) in zip(("import", "build", "compile"), zip(marks, marks[1:])):
        out[name + suffix] = b[clock] - a[clock]
    out["total" + suffix] = marks[-1][clock] - marks[0][clock]
print(json.dumps(out))
""" % (SLOTS, DIM, DENSE, list(HIDDEN), BATCH, BATCH)


def fixed_cost(cache: str, repeats: int) -> dict:
    """Medians over fresh processes with the cache warm (a first run warms it and is not
    counted); ``cold_*``: one run with an empty cache (a model's first hour)."""
    def once(directory):
        out = subprocess.run([sys.executable, "-c", FIXED_COST, directory], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory(prefix="jax-cold-") as empty:
        cold = once(empty)
    once(cache)
    runs = [once(cache) for _ in range(repeats)]
    return {**{k: statistics.median(r[k] for r in runs) for k in runs[0]},
            **{f"cold_{k}": v for k, v in cold.items()}}


def gemm_ab(repeats: int, calls: int = 20) -> dict:
    """CPU milliseconds of the step's three kinds of matrix product at the MLP's widest layer
    (batch x 400 by 400 x 400: forward, input gradient, weight gradient), numpy (OpenBLAS, one
    thread) against XLA (one jitted product each), interleaved; medians. The steps are bound
    by these products, so this is the ceiling of what the JAX step can gain by itself."""
    import jax

    rng = np.random.default_rng(0)
    x, w, d = (rng.random(shape, np.float32) for shape in ((BATCH, 400), (400, 400), (BATCH, 400)))
    on_device = [jax.device_put(a) for a in (x, w, d)]
    xla = {"forward x @ w": jax.jit(lambda x, w, d: x @ w),
           "input grad d @ w.T": jax.jit(lambda x, w, d: d @ w.T),
           "weight grad x.T @ d": jax.jit(lambda x, w, d: x.T @ d)}
    numpy = {"forward x @ w": lambda: x @ w, "input grad d @ w.T": lambda: d @ w.T,
             "weight grad x.T @ d": lambda: x.T @ d}
    times = {(kind, name): [] for name in xla for kind in ("numpy", "xla")}
    for name, f in xla.items():
        f(*on_device).block_until_ready()
    for _ in range(repeats):
        for name in xla:
            for kind, call in (("numpy", numpy[name]),
                               ("xla", lambda: xla[name](*on_device).block_until_ready())):
                started = time.process_time()
                for _ in range(calls):
                    call()
                times[kind, name].append((time.process_time() - started) / calls * 1e3)
    return {key: statistics.median(v) for key, v in times.items()}


def measure(rev: str, count: int, repeats: int, cache: str, data=None) -> dict:
    """Interleaved runs of both steps on ``data`` (default: ``count`` generated batches).

    Returns medians: examples/s of wall time (``numpy``, ``jax``) and of CPU time
    (``numpy_cpu``, ``jax_cpu``), and the median of the per-repeat jax / numpy ratios
    (``ratio``, ``ratio_cpu``: the two steps of one repeat ran back to back, under about the
    same load)."""
    data = data or batches(count)
    optimizer = DenseOptimizer("adam", 0.0005)
    old, new = NumpyStep(numpy_model(rev), optimizer), JaxStep(optimizer, cache)
    old.run(data[:2]), new.run(data[:2])  # warm-up
    runs = {"numpy": [], "jax": []}
    for _ in range(repeats):
        runs["numpy"].append(old.run(data))
        runs["jax"].append(new.run(data))
    out = {}
    for clock, suffix in ((0, ""), (1, "_cpu")):
        for side, speeds in runs.items():
            out[side + suffix] = statistics.median(s[clock] for s in speeds)
        out["ratio" + suffix] = statistics.median(
            j[clock] / n[clock] for j, n in zip(runs["jax"], runs["numpy"]))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=NUMPY_REV, help="git revision with trainer/model.py")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", default=str(REPO / "var" / "bench" / "jax_cache"))
    args = parser.parse_args(argv)
    print(f"dense_ab: CTR-DNN {SLOTS} slots x dim {DIM} + {DENSE} dense, MLP "
          f"{'-'.join(map(str, HIDDEN))}, batch {BATCH}, {args.batches} batches, "
          f"{args.repeats} repeats, {machine()}, one thread each; medians")
    speeds = measure(args.rev, args.batches, args.repeats, args.cache)
    print(f"{'':28} {'examples/s':>12} {'per CPU-s':>12}")
    print(f"{'numpy step (' + args.rev[:10] + ')':28} {speeds['numpy']:12,.0f} "
          f"{speeds['numpy_cpu']:12,.0f}")
    print(f"{'jax step':28} {speeds['jax']:12,.0f} {speeds['jax_cpu']:12,.0f}")
    print(f"{'jax / numpy':28} {speeds['ratio']:11.2f}x {speeds['ratio_cpu']:11.2f}x  "
          f"(target >= 1.2x)")
    gemm = gemm_ab(args.repeats)
    for name in ("forward x @ w", "input grad d @ w.T", "weight grad x.T @ d"):
        print(f"matrix product {name:20} CPU ms: numpy {gemm['numpy', name]:.3f}, XLA "
              f"{gemm['xla', name]:.3f} ({gemm['numpy', name] / gemm['xla', name]:.2f}x numpy)")
    print_fixed_cost(fixed_cost(args.cache, args.repeats))
    return 0


def machine() -> str:
    """Cores and load average, for the header line (the machine is shared)."""
    return f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


def print_fixed_cost(cost: dict) -> None:
    """The fixed cost line, wall and CPU seconds (target: <= 1 s)."""
    for clock, suffix in (("wall", ""), ("CPU", "_cpu")):
        print(f"jax fixed cost per hour (warm cache), {clock}: import {cost['import' + suffix]:.2f} s"
              f" + network check {cost['build' + suffix]:.2f} s + compile "
              f"{cost['compile' + suffix]:.2f} s = {cost['total' + suffix]:.2f} s (target <= 1 s)")
    print(f"jax fixed cost with an empty cache (a model's first hour): compile "
          f"{cost['cold_compile']:.2f} s, total {cost['cold_total']:.2f} s wall; compile "
          f"{cost['cold_compile_cpu']:.2f} s, total {cost['cold_total_cpu']:.2f} s CPU")


if __name__ == "__main__":
    raise SystemExit(main())
