"""The train task's order guard: every hour between the head and H must be settled."""
from trainer import store
from trainer.config import load_config
from trainer.hours import hour_index

from tests.airflow.airflow_support import write_tiny_config
from streamtrain_airflow.store_view import order_problem

H0 = hour_index("2026-01-01T00")


def commit_base(cfg, hour):
    """A minimal committed full version of `hour` (an empty table, no dense parameters)."""
    import numpy as np

    empty = {"key": np.zeros(0, np.uint64), "slot": np.zeros(0, np.int32),
             "state": np.zeros(0, np.uint8), "show": np.zeros(0, np.float32),
             "click": np.zeros(0, np.float32), "last_seen": np.zeros(0, np.int32),
             "weights": np.zeros((0, 1 + cfg.table.dim), np.float32),
             "opt_state": np.zeros((0, 2), np.float32)}
    stage = store.Stage.open(cfg.model_dir, hour, "full", None, num_shards=cfg.table_num_shards,
                             dim=cfg.table.dim, opt_width=2)
    files = [stage.write_shard(s, empty) for s in range(cfg.table_num_shards)]
    files.append(stage.write_dense({"params": np.zeros(3, np.float32)}))
    stage.finish(files)
    store.save(cfg.model_dir, hour)


def test_failed_then_missing_hour_blocks_later_hours(tmp_path):
    cfg = load_config(write_tiny_config(tmp_path / "configs", tmp_path))
    assert order_problem(cfg, H0 + 5) == ""  # empty chain: the first hour may be any hour
    commit_base(cfg, H0)
    assert order_problem(cfg, H0 + 1) == ""  # the next hour
    store.mark_missing(cfg.model_dir, H0 + 2, "never landed")
    # hour 1 failed (neither trained nor missing), hour 2 missing: hour 3 must wait for hour 1
    problem = order_problem(cfg, H0 + 3)
    assert "1 earlier hour(s) since the head v000001" in problem
    assert "the first 2026-01-01T01" in problem and "mark-missing --hour 2026-01-01T01" in problem
    store.mark_empty(cfg.model_dir, H0 + 1, "no rows")  # an empty hour settles it as well
    assert order_problem(cfg, H0 + 3) == ""
    for hour in (H0 + 3, H0 + 4):
        store.mark_missing(cfg.model_dir, hour, "never landed")
    assert "the first 2026-01-01T05" in order_problem(cfg, H0 + 6)
    store.mark_missing(cfg.model_dir, H0 + 5, "abandoned")
    assert order_problem(cfg, H0 + 6) == ""
    assert order_problem(cfg, H0) == ""  # a late hour (not after the head) is never blocked
