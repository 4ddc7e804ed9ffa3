"""A/B of the dense step in one process: the JAX step against the numpy step of a git revision.

The numpy CTR-DNN with hand-written backward (``trainer/model.py`` until the networks came) is
loaded from git revision ``--rev`` (default: the last one that has it, :data:`NUMPY_REV`) into
a temporary module, as
``bench/pstable_ab.py`` builds old tables. Both steps run the same MLP on the same in-memory
batches with the same random table rows, each followed by the servers' dense update
(``DenseOptimizer`` on the flat vector), turn by turn, ``--repeats`` times; medians.

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

    def run(self, data) -> float:
        started = time.perf_counter()
        params = self.m.unflatten(self.flat, self.layout)
        for batch, features, rows in data:
            step = self.m.train_step(params, batch, features, rows, SLOTS, self.workspace)
            self.m.flatten(step.dense_grads, self.layout, out=self.grad)
            self.optimizer.apply({"all": self.flat}, {"all": self.grad}, self.state)
        return sum(b.num_rows for b, _, _ in data) / (time.perf_counter() - started)


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

    def run(self, data) -> float:
        started = time.perf_counter()
        for batch, features, rows in data:
            step = self.step.train(self.flat, batch, features, rows)
            self.optimizer.apply({"all": self.flat}, {"all": step.dense_grads}, self.state)
        return sum(b.num_rows for b, _, _ in data) / (time.perf_counter() - started)


FIXED_COST = """
import json, sys, time
t0 = time.perf_counter()
from trainer.network import load, step as S
import jax
t1 = time.perf_counter()
S.use_compile_cache(sys.argv[1])
from trainer.network.api import InputSpec
spec = InputSpec(slots=tuple(f"c{i}" for i in range(%d)), dim=%d, dense_dim=%d)
built = load.build(load.resolve("dnn", {"hidden": %s}, None), spec, %d)
t2 = time.perf_counter()
step = S.Step(built, %d)
step.compiled("train")
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "build": t2 - t1, "compile": t3 - t2, "total": t3 - t0}))
""" % (SLOTS, DIM, DENSE, list(HIDDEN), BATCH, BATCH)


def fixed_cost(cache: str, repeats: int) -> dict:
    """Medians over fresh processes (the first run warms the cache and is not counted)."""
    def once():
        out = subprocess.run([sys.executable, "-c", FIXED_COST, cache], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    once()
    runs = [once() for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def measure(rev: str, count: int, repeats: int, cache: str, data=None) -> dict:
    """Interleaved runs of both steps on ``data`` (default: ``count`` generated batches);
    medians of examples/s."""
    data = data or batches(count)
    optimizer = DenseOptimizer("adam", 0.0005)
    old, new = NumpyStep(numpy_model(rev), optimizer), JaxStep(optimizer, cache)
    old.run(data[:2]), new.run(data[:2])  # warm-up
    speeds = {"numpy": [], "jax": []}
    for _ in range(repeats):
        speeds["numpy"].append(old.run(data))
        speeds["jax"].append(new.run(data))
    return {k: statistics.median(v) for k, v in speeds.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=NUMPY_REV, help="git revision with trainer/model.py")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", default=str(REPO / "var" / "bench" / "jax_cache"))
    args = parser.parse_args(argv)
    print(f"dense_ab: CTR-DNN {SLOTS} slots x dim {DIM} + {DENSE} dense, MLP "
          f"{'-'.join(map(str, HIDDEN))}, batch {BATCH}, {args.batches} batches, "
          f"{args.repeats} repeats, {os.cpu_count()} cores, one thread each; medians")
    speeds = measure(args.rev, args.batches, args.repeats, args.cache)
    print(f"{'numpy step (' + args.rev[:10] + ')':28} {speeds['numpy']:12,.0f} examples/s")
    print(f"{'jax step':28} {speeds['jax']:12,.0f} examples/s  "
          f"{speeds['jax'] / speeds['numpy']:.2f}x numpy")
    cost = fixed_cost(args.cache, args.repeats)
    print(f"jax fixed cost per hour (warm cache): import {cost['import']:.2f} s + build "
          f"{cost['build']:.2f} s + compile {cost['compile']:.2f} s = {cost['total']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
