"""bench/models_bench.py: its planted stream and its table (the job itself runs in the bench)."""
import sys
import tomllib
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import models_bench  # noqa: E402

from trainer.config import ColumnsConfig  # noqa: E402
from trainer.partition import check_schema, list_files, locate  # noqa: E402


def test_stream_matches_the_config_and_the_table_prints(tmp_path):
    stream = models_bench.make_stream(tmp_path, hours=2, rows=3000)
    assert [h["status"] for h in stream] == ["written"] * 2 and all(h["bayes_auc"] > 0.8 for h in stream)
    config = models_bench.write_config(tmp_path, "din", models_bench.MODELS["din"])
    raw = tomllib.loads(config.read_text())
    assert raw["network"]["model"] == "din" and raw["network"]["options"] == models_bench.MODELS["din"]
    columns = ColumnsConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["columns"].items()})
    columns.validate()
    part = locate(raw["data_root"], models_bench.START)
    files, dense_dim = check_schema(part, list_files(part), columns)  # history is a list column
    assert dense_dim == 3 and sum(f.rows for f in files) == 3000
    rows = {"dnn": {"examples_per_s": 12345.6, "auc_last": 0.71, "auc_mean": 0.7},
            "din": {"examples_per_s": 9876.0, "auc_last": 0.75, "auc_mean": 0.73}}
    table = models_bench.format_table(rows, stream).splitlines()
    assert table[0].split()[:2] == ["model", "examples/s"] and len(table) == 4
    assert table[1].split()[:3] == ["dnn", "12,346", "0.7100"] and table[3].startswith("Bayes")
