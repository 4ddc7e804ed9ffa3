"""The benchmarks run, and the pstable benchmark's dict baseline does what the table does.

Benchmark numbers are not asserted (they belong to an idle machine, see docs/benchmarks.md);
what is asserted is that each script runs end to end on a small size and prints its table, and
that the baseline the table's speed is compared with computes the same push.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pstable import AdmissionConfig, OptimizerConfig, SparseTable, TableConfig

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import pstable_bench  # noqa: E402
import rowgroup_bench  # noqa: E402
import store_bench  # noqa: E402
import train_bench  # noqa: E402
import ui_bench  # noqa: E402


def result_lines(out):
    return [line for line in out.splitlines() if line and not line.startswith(("#", "-", " dim"))]


def test_dict_baseline_push_matches_the_table():
    """Merged duplicates, counters, last-seen hour, changed mark and adagrad: the same results."""
    rng = np.random.default_rng(3)
    dim, n_rows, batch = 8, 500, 2000
    table = SparseTable(TableConfig(dim=dim, optimizer=OptimizerConfig(rule="adagrad"),
                                    admission=AdmissionConfig(policy="none"), seed=1))
    keys = rng.integers(0, 2**64 - 1, n_rows, dtype=np.uint64, endpoint=True)
    pstable_bench.push_new_keys(table, keys, 128)
    table.mark_saved()
    start = table.export()
    order = np.argsort(start["key"])
    assert np.array_equal(start["key"][order], np.sort(keys))

    base = pstable_bench.DictBaseline(keys, dim + 1)
    at = np.searchsorted(start["key"][order], keys)     # table export row of each baseline row
    base.w[:] = start["weights"][order][at]
    base.g2[:] = start["opt_state"][order][at]
    base.show[:] = start["show"][order][at]
    base.click[:] = start["click"][order][at]

    q = keys[rng.integers(0, n_rows // 4, batch)]       # many duplicates
    shows = rng.integers(1, 3, batch).astype(np.float32)
    clicks = (rng.random(batch) < 0.3).astype(np.float32)
    grads = (rng.standard_normal((batch, dim + 1)) * 0.1).astype(np.float32)
    table.push(q, None, shows, clicks, grads, 7)
    base.push(q, shows, clicks, grads, 7)

    end = table.export()
    e = np.argsort(end["key"])
    at = np.searchsorted(end["key"][e], keys)
    got = {name: end[name][e][at] for name in ("weights", "opt_state", "show", "click", "last_seen")}
    np.testing.assert_allclose(base.w, got["weights"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(base.g2, got["opt_state"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(base.show, got["show"], rtol=1e-6)
    np.testing.assert_allclose(base.click, got["click"], rtol=1e-6)
    touched = np.isin(keys, q)
    assert np.array_equal(base.last_seen[touched], got["last_seen"][touched])
    assert np.array_equal(base.changed, touched)
    assert len(table.export(changed_only=True)["key"]) == touched.sum()

    np.testing.assert_allclose(base.pull(q), table.pull(q), rtol=1e-5, atol=1e-6)
    unknown = np.array([2**64 - 1], np.uint64)
    assert not np.isin(unknown, keys).any()
    assert not base.pull(unknown).any() and not table.pull(unknown).any()


def test_dict_baseline_refuses_what_the_table_refuses():
    base = pstable_bench.DictBaseline(np.arange(4, dtype=np.uint64), 3)
    keys, ones, zeros = np.arange(2, dtype=np.uint64), np.ones(2, np.float32), np.zeros(2, np.float32)
    nan_grads = np.zeros((2, 3), np.float32)
    nan_grads[1, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        base.push(keys, ones, zeros, nan_grads, 1)
    with pytest.raises(ValueError, match=">= 0"):
        base.push(keys, -ones, zeros, np.zeros((2, 3), np.float32), 1)
    with pytest.raises(ValueError, match="existing rows"):
        base.push(np.array([1, 99], np.uint64), ones, zeros, np.zeros((2, 3), np.float32), 1)
    assert not base.changed.any() and (base.show == 1).all()


def test_pstable_bench_prints_every_case(capsys):
    assert pstable_bench.main(["--dims", "4", "--sizes", "3000", "--batch", "1000",
                               "--repeats", "1"]) == 0
    lines = result_lines(capsys.readouterr().out)
    assert [line.split()[2] for line in lines] == ["uniform", "zipf"]
    for line in lines:
        pull, push = (float(x) for x in line.split("|")[1].split())
        pull_vs_dict = float(line.split("|")[3].split()[2].rstrip("x"))
        assert pull > 0 and push > 0 and pull_vs_dict > 0


def test_store_bench_prints_every_measure(tmp_path, capsys):
    store_bench.main(["--rows", "20000", "--repeat", "1", "--table", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "== 20,000 rows" in out
    for measure in ("full save", "job save", "full load", "load into SparseTable",
                    "5% delta save", "base+delta load"):
        assert f"  {measure} " in out, measure


@pytest.mark.slow
def test_train_bench_prints_both_layouts(tmp_path, capsys):
    """Runs real mpiexec jobs (1 server + 1 and + 2 workers) on a small generated partition."""
    assert train_bench.main(["--rows", "6000", "--repeats", "1", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for layout in ("dense-only bound", "1 server + 1 worker(s)", "1 server + 2 worker(s)"):
        line = next(line for line in out.splitlines() if line.startswith(layout))
        assert float(line[len(layout):].split()[0].replace(",", "")) > 0, line


@pytest.mark.slow
def test_rowgroup_bench_prints_every_measure(tmp_path, capsys):
    """Real mpiexec jobs on one file of one-row row groups and on the same rows in one."""
    assert rowgroup_bench.main(["--rows", "100", "--repeats", "1", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for measure in ("read, this tree", "read, cdecb27", "pyarrow alone", "train phase"):
        line = next(line for line in out.splitlines() if line.startswith(measure))
        large, tiny = (float(x.rstrip("s")) for x in line[len(measure):].split()[:2])
        assert large > 0 and tiny > 0, line


def test_ui_bench_prints_every_case(tmp_path, capsys):
    assert ui_bench.main(["--quick", "--root", str(tmp_path)]) == 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "---" not in line and "case" not in line}
    assert set(rows) == {"page cold", "page warm", "page 40 cold", "baseline, whole chain cold"}
    assert all(float(line.split(" | ")[1]) > 0 for line in rows.values()), rows
    assert list(tmp_path.iterdir()) == [], "the synthetic store was left behind"


def test_row_layout_probe_layouts_read_the_same_rows(tmp_path):
    """The C probe checks every layout returns the rows the pstable layout returns (exit 1 if not)."""
    exe = tmp_path / "row_layout_probe"
    subprocess.run([shutil.which("cc") or "gcc", "-O2", "-o", str(exe), str(BENCH / "row_layout_probe.c"),
                    "-lm"], check=True)
    run = subprocess.run([str(exe), "20000", "5000"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]]
            for line in run.stdout.splitlines() if line.startswith(("uniform", "zipf"))}
    assert set(rows) == {"uniform", "zipf"}
    assert all(len(speeds) == 3 and min(speeds) > 0 for speeds in rows.values())
