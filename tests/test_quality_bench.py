"""bench/quality_bench.py runs end to end on small sizes (real mpiexec per hour) and its
MovieLens reader maps a RecBole-format log to hourly partitions by its own timestamps.

Numbers are not asserted (they are the benchmark's: docs/benchmarks.md); what is asserted is
that every predictor is scored on every hour and the table and JSON come out whole."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import quality_bench  # noqa: E402

DAY = 86_400


def _fake_recbole_wheel(path: Path) -> Path:
    """A wheel holding only the three MovieLens files, in RecBole's atomic format: 3 rated days
    (the second empty day must be left out), 30 ratings."""
    t0 = 880_000_000 - 880_000_000 % DAY
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for i in range(30):
        day = (0, 2, 3)[i % 3]
        inter.append(f"{1 + i % 4}\t{10 + i % 5}\t{1 + i % 5}\t{t0 + day * DAY + i}")
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    item += [f"{10 + j}\tTitle {j}\t1995\t{'Comedy Drama' if j % 2 else 'Action'}" for j in range(5)]
    user = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    user += [f"{1 + u}\t{20 + 9 * u}\t{'MF'[u % 2]}\t{'other' if u else 'writer'}\t0" for u in range(4)]
    with zipfile.ZipFile(path, "w") as z:
        for suffix, lines in ((".inter", inter), (".item", item), (".user", user)):
            z.writestr(quality_bench.ML_PREFIX + suffix, "\n".join(lines) + "\n")
    return path


def test_movielens_days_become_consecutive_hours(tmp_path):
    wheel = _fake_recbole_wheel(tmp_path / "recbole-0-py3-none-any.whl")
    cols = quality_bench.movielens_rows(wheel)
    assert cols["label"].sum() == sum(1 for i in range(30) if 1 + i % 5 >= 4)
    assert list(cols["timestamp"]) == sorted(cols["timestamp"])
    hours = quality_bench.write_movielens(tmp_path / "data", 10, str(wheel))
    assert hours == 3  # days 0, 2, 3: the empty day 1 is left out
    first = quality_bench.hour_index(quality_bench.START)
    rows = [quality_bench.read_hour(tmp_path / "data", first + h)[0] for h in range(3)]
    assert [t.num_rows for t in rows] == [10, 10, 10]
    assert rows[0].column("genres").type.value_type == "int64"


@pytest.mark.slow
def test_quality_bench_runs_small(tmp_path):
    wheel = _fake_recbole_wheel(tmp_path / "recbole-0-py3-none-any.whl")
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "quality_bench.py"), "--streams", "gen500,rare,ml100k",
         "--hours", "3", "--rows-scale", "0.2", "--movielens-wheel", str(wheel),
         "--work", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table[2:]] == ["gen500", "rare", "ml100k"]
    results = json.loads(out.read_text())  # strict JSON: no NaN
    for r in results:
        assert r["hours"] == 3 and len(r["per_hour"]["streamtrain_logloss"]) == 3
        assert len(r["per_hour"]["lr_logloss"]) == 3 and r["per_hour"]["const_logloss"][0] is None
        assert 0 < r["streamtrain"]["logloss"] and 0 < r["const"]["logloss"]
    assert results[0]["bayes_auc"] > 0.5 and results[2]["bayes_auc"] is None
    assert results[1]["ctr"] < 0.02  # the rare-click stream
