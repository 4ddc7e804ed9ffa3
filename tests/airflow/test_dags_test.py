"""``airflow dags test`` of the full DAG on tiny generated data with the real mpiexec."""
from __future__ import annotations

import subprocess

import pytest

from tests.airflow.airflow_support import ledger, streamtrain
from streamtrain_airflow.airflow_home import airflow_bin

pytestmark = pytest.mark.slow


def dags_test(af, logical: str) -> str:
    done = subprocess.run([airflow_bin(), "dags", "test", af.dag_id, logical], env=af.env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "DagRun Finished" in out and "state=success" in out, out[-4000:]
    return out


def test_full_then_missing_then_delta_then_noop(af):
    streamtrain("gen-data", "--config", str(af.config), "--start", "2026-01-01T00", "--hours", "3",
                "--rows-per-hour", "1500", "--skip", "2026-01-01T01")

    out = dags_test(af, "2026-01-01T00:00:00+00:00")  # hour 0 = full_save_hour
    assert "Skipping tasks [('save_delta', -1)]" in out
    [v1] = ledger(af.model_dir)
    assert (v1["event"], v1["kind"], v1["hour_str"], v1["version"]) == ("commit", "full", "2026-01-01T00", "v000001")

    out = dags_test(af, "2026-01-01T01:00:00+00:00")  # never lands: sensor times out (4 s)
    assert "recorded as missing" in out
    missing = ledger(af.model_dir)[-1]
    assert (missing["event"], missing["hour_str"]) == ("missing", "2026-01-01T01")

    out = dags_test(af, "2026-01-01T02:00:00+00:00")
    assert "Skipping tasks [('save_full', -1)]" in out
    v2 = ledger(af.model_dir)[-1]
    assert (v2["kind"], v2["hour_str"], v2["parent"]) == ("delta", "2026-01-01T02", "v000001")
    donefile = (af.model_dir / "donefile").read_text().splitlines()
    assert len(donefile) == 2

    before = (af.model_dir / "ledger.jsonl").read_text()
    out = dags_test(af, "2026-01-01T00:00:00+00:00")  # re-run a finished hour: a clean no-op
    assert "already in the chain as v000001" in out and "not training it again" in out
    assert "mpiexec" not in out.split("not training it again")[1].split("DagRun Finished")[0]
    assert (af.model_dir / "ledger.jsonl").read_text() == before
    assert len((af.model_dir / "donefile").read_text().splitlines()) == 2


def _empty_partitions(af, hours_without_files, hours_with_zero_rows):
    """Leave `_SUCCESS` with no data file in the first hours, one 0-row file in the others."""
    import pyarrow.parquet as pq

    data = af.data_root
    for hh in hours_without_files + hours_with_zero_rows:
        part = data / "dt=2026-01-01" / f"hour={hh}"
        files = sorted(part.glob("*.parquet"))
        schema = pq.read_schema(files[0])
        for f in files:
            f.unlink()
        if hh in hours_with_zero_rows:
            pq.write_table(schema.empty_table(), part / "part-00000.parquet")


def test_empty_hours_are_recorded_and_later_hours_go_on_in_order(af):
    streamtrain("gen-data", "--config", str(af.config), "--start", "2026-01-01T00", "--hours", "6",
                "--rows-per-hour", "1500")
    _empty_partitions(af, ["01"], ["02"])
    dags_test(af, "2026-01-01T00:00:00+00:00")
    for hh, reason in (("01", "no data files"), ("02", "1 data file(s), 0 rows")):
        out = dags_test(af, f"2026-01-01T{hh}:00:00+00:00")
        assert "recorded empty" in out, out[-4000:]
        event = ledger(af.model_dir)[-1]
        assert (event["event"], event["hour_str"]) == ("empty", f"2026-01-01T{hh}")
        assert reason in event["reason"]
    dags_test(af, "2026-01-01T03:00:00+00:00")
    v2 = ledger(af.model_dir)[-1]
    assert (v2["event"], v2["hour_str"], v2["parent"]) == ("commit", "2026-01-01T03", "v000001")
    assert len((af.model_dir / "donefile").read_text().splitlines()) == 2  # empty: not published

    # hour 04 never ran: hour 05 is refused at once (no retry), naming 04 and how to settle it
    done = subprocess.run([airflow_bin(), "dags", "test", af.dag_id, "2026-01-01T05:00:00+00:00"],
                          env=af.env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert "state=failed" in out, out[-4000:]
    assert "the first 2026-01-01T04" in out and "mark-missing --hour 2026-01-01T04" in out
    assert ledger(af.model_dir)[-1]["hour_str"] == "2026-01-01T03"
    streamtrain("mark-missing", "--config", str(af.config), "--hour", "2026-01-01T04")
    dags_test(af, "2026-01-01T05:00:00+00:00")
    assert ledger(af.model_dir)[-1]["hour_str"] == "2026-01-01T05"
    chain = streamtrain("chain", "--config", str(af.config), "--json").stdout
    import json
    listed = json.loads(chain)
    assert [h["hour_str"] for h in listed["empty_hours"]] == ["2026-01-01T01", "2026-01-01T02"]
    assert [h["hour_str"] for h in listed["missing_hours"]] == ["2026-01-01T04"]
