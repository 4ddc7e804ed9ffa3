"""The ``streamtrain`` command line: every command, one-line errors, and a day of the chain."""
import json
import os

import pyarrow.parquet as pq
import pytest

from tests.support import streamtrain
from trainer import store
from trainer.config import load_config
from trainer.gendata import generate_hours
from trainer.hours import hour_index, hour_str, partition_relpath

H0 = hour_index("2026-11-26T22")


def test_help_lists_every_command():
    proc = streamtrain("--help")
    assert proc.returncode == 0
    for command in ("gen-data", "train", "save", "mark-missing", "publish", "run-hour", "chain",
                    "predict", "prune", "demo"):
        assert command in proc.stdout


def test_demo_comes_from_the_plugin_package_and_parses_its_own_arguments():
    proc = streamtrain("demo", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: streamtrain demo") and "--keep-running" in proc.stdout
    from trainer.cli import added_commands
    assert added_commands()["demo"].value == "streamtrain_airflow.demo:main"


@pytest.mark.parametrize("args, reason", [
    (["chain", "--config", "/nonexistent.toml"], "/nonexistent.toml: cannot read config"),
    (["save", "--config", "examples/demo.toml", "--hour", "2026-13-01T00"], "2026-13-01T00"),
])
def test_failures_exit_non_zero_with_a_one_line_reason(args, reason):
    proc = streamtrain(*args)
    assert proc.returncode != 0
    assert reason in proc.stderr.splitlines()[-1]


def test_save_without_a_staged_version_names_the_hour(model_config):
    path = model_config()
    proc = streamtrain("save", "--config", str(path), "--hour", hour_str(H0))
    assert proc.returncode == 1
    assert proc.stderr.startswith("streamtrain: error: hour 2026-11-26T22: nothing staged")


@pytest.mark.slow
def test_hours_across_midnight_evict_save_full_and_predict(model_config, tmp_path):
    """22:00 full (first), 23:00 delta, missing 00:00 recorded, 01:00 ... and the next day's
    00:00 full after the day boundary evicts rows unseen for more than 2 days."""
    path = model_config(servers=2, workers=1)
    cfg = load_config(path)
    generate_hours(cfg, cfg.data_root, H0, 2, 3000, seed=3)
    late = hour_index("2026-11-30T00")  # 3 days after 23:00: unseen days 3 > 2, evicted
    generate_hours(cfg, cfg.data_root, late, 1, 3000, seed=4)
    kinds = []
    for h in (H0, H0 + 1, late):
        if h == late:  # hours train in order: the 72 hours between are recorded missing first
            missing = streamtrain("mark-missing", "--config", str(path), "--hour", hour_str(h - 72))
            assert missing.returncode == 0 and "recorded as missing" in missing.stdout
            for gap in range(h - 71, h):
                store.mark_missing(cfg.model_dir, gap, "test: a three-day gap")
        proc = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(h))
        assert proc.returncode == 0, proc.stderr
        result = json.loads(next(l for l in proc.stdout.splitlines() if "] result " in l)
                            .split("] result ", 1)[1])
        kinds.append((result["kind"], result["rows_evicted"]))
    assert kinds[0] == ("full", 0) and kinds[1] == ("delta", 0)
    assert kinds[2][0] == "full" and kinds[2][1] > 0

    chain = store.load_chain(cfg.model_dir, verify=True)
    assert [v.kind for v in chain.versions] == ["full"]  # a full base starts the chain anew
    listing = streamtrain("chain", "--config", str(path), "--verify", "--json")
    assert listing.returncode == 0
    listed = json.loads(listing.stdout.split("\nchain verified")[0])
    assert [r["kind"] for r in listed["versions"]] == ["full", "delta", "full"]
    assert listed["head"] == "v000003" and "logloss" in listed["versions"][0]["metrics"]
    assert len(listed["missing_hours"]) == 72 and listed["empty_hours"] == []
    assert len(store.read_state(store.StoreLayout(cfg.model_dir)).missing) == 72

    sample = f"{cfg.data_root}/{partition_relpath(late)}/part-00000.parquet"
    out = tmp_path / "pred.parquet"
    proc = streamtrain("predict", "--config", str(path), "--input", sample, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    scored = pq.read_table(out)
    assert scored.num_rows == pq.read_metadata(sample).num_rows
    preds = scored.column("pred").to_numpy()
    assert ((preds > 0) & (preds < 1)).all()
    summary = json.loads(proc.stdout)
    assert summary["labelled"] is True and 0 < summary["metrics"]["auc"] < 1
    # the whole partition folder, with the version written short; then the rows without labels
    folder = f"{cfg.data_root}/{partition_relpath(late)}"
    proc = streamtrain("predict", "--config", str(path), "--version", "v3", "--input", folder,
                       "--output", str(tmp_path / "folder.parquet"))
    assert proc.returncode == 0, proc.stderr
    data_files = sorted(p for p in os.listdir(folder) if not p.startswith(("_", ".")))
    assert json.loads(proc.stdout)["files"] == len(data_files)
    rows = sum(pq.read_metadata(f"{folder}/{p}").num_rows for p in data_files)
    assert pq.read_table(tmp_path / "folder.parquet").num_rows == rows
    pq.write_table(pq.read_table(sample).drop_columns([cfg.columns.label]), tmp_path / "nolabel.parquet")
    proc = streamtrain("predict", "--config", str(path), "--version", "v000003", "--input",
                       str(tmp_path / "nolabel.parquet"), "--output", str(tmp_path / "nl.parquet"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["labelled"] is False
    unlabelled = pq.read_table(tmp_path / "nl.parquet")
    assert unlabelled.column("pred").to_numpy().tolist() == preds.tolist()
    assert unlabelled.column("label").null_count == unlabelled.num_rows

    published = [json.loads(l) for l in open(f"{cfg.model_dir}/donefile")]
    assert [p["version"] for p in published] == ["v000001", "v000002", "v000003"]


@pytest.mark.slow  # real mpiexec (make test-mpi), not the fast tier
def test_run_hour_places_ranks_by_the_hostfile(model_config, tmp_path):
    """MPICH hands out ranks host by host in the order of ``mpi.hostfile``: with room for all 3
    ranks on the first line the unreachable second host is never contacted; with room for 2,
    rank 2 goes there and the hour fails cleanly, nothing committed."""
    enough, short = tmp_path / "hosts-enough", tmp_path / "hosts-short"
    enough.write_text("localhost:3\nno-such-host.invalid:1\n")
    short.write_text("localhost:2\nno-such-host.invalid:2\n")
    failing = model_config(servers=1, workers=2, extra=f'hostfile = "{short}"\n')
    cfg = load_config(failing)
    generate_hours(cfg, cfg.data_root, H0, 1, 1000, seed=5)
    proc = streamtrain("run-hour", "--config", str(failing), "--hour", hour_str(H0))
    assert proc.returncode != 0 and "mpiexec exited with code" in proc.stderr, proc.stderr[-2000:]
    assert store.read_state(store.StoreLayout(cfg.model_dir)).head is None

    working = failing.with_name("enough.toml")
    working.write_text(failing.read_text().replace(str(short), str(enough)))
    proc = streamtrain("run-hour", "--config", str(working), "--hour", hour_str(H0))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"-f {enough}" in proc.stdout or f"-f {enough}" in proc.stderr
    assert store.load_chain(cfg.model_dir, verify=True).head == "v000001"
    gone = failing.with_name("gone.toml")
    gone.write_text(failing.read_text().replace(str(short), str(tmp_path / "nope")))
    proc = streamtrain("run-hour", "--config", str(gone), "--hour", hour_str(H0 + 1))
    assert proc.returncode != 0 and f"mpi.hostfile: {tmp_path / 'nope'} does not exist" in proc.stderr


def _strict_json(text: str):
    """json.loads that refuses NaN / Infinity, as strict parsers do."""
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def _partition(cfg, hour):
    from pathlib import Path
    return Path(cfg.data_root) / partition_relpath(hour)


def _ledger_events(cfg):
    return store.Ledger(store.StoreLayout(cfg.model_dir).ledger).read()


@pytest.mark.slow
def test_run_hour_refuses_an_hour_after_an_unsettled_one(model_config):
    path = model_config()
    cfg = load_config(path)
    generate_hours(cfg, cfg.data_root, H0, 3, 2000, seed=5)
    assert streamtrain("run-hour", "--config", str(path), "--hour", hour_str(H0)).returncode == 0
    refused = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(H0 + 2))
    assert refused.returncode == 4, refused.stderr
    [line] = refused.stderr.splitlines()  # one line: the cause, named once
    assert line.startswith("streamtrain: error: mpiexec exited with code 4")
    assert f"the first {hour_str(H0 + 1)}" in line
    assert f"streamtrain mark-missing --hour {hour_str(H0 + 1)}" in line
    assert "Traceback" not in refused.stdout
    assert [e["event"] for e in _ledger_events(cfg)] == ["commit"]
    assert list(store.StoreLayout(cfg.model_dir).staging.iterdir()) == []
    assert streamtrain("mark-missing", "--config", str(path), "--hour",
                       hour_str(H0 + 1)).returncode == 0
    done = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(H0 + 2))
    assert done.returncode == 0 and "committed as v000002 (full, parent v000001)" in done.stdout


@pytest.mark.slow
def test_an_empty_hour_is_recorded_and_later_hours_go_on(model_config):
    path = model_config()
    cfg = load_config(path)
    generate_hours(cfg, cfg.data_root, H0, 4, 2000, seed=6)
    files = sorted(_partition(cfg, H0 + 2).glob("*.parquet"))
    schema = pq.read_schema(files[0])
    for f in files + sorted(_partition(cfg, H0 + 1).glob("*.parquet")):
        f.unlink()
    pq.write_table(schema.empty_table(), files[0])  # hour 2: one file of 0 rows
    for hour in range(H0, H0 + 4):
        proc = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(hour))
        assert proc.returncode == 0, proc.stderr
    events = [(e["event"], e["hour"]) for e in _ledger_events(cfg)]
    assert events == [("commit", H0), ("empty", H0 + 1), ("empty", H0 + 2), ("commit", H0 + 3)]
    assert store.read_state(store.StoreLayout(cfg.model_dir)).head == "v000002"
    listing = streamtrain("chain", "--config", str(path), "--json")
    listed = _strict_json(listing.stdout)
    assert [h["hour"] for h in listed["empty_hours"]] == [H0 + 1, H0 + 2]
    assert "no data files" in listed["empty_hours"][0]["reason"]
    text = streamtrain("chain", "--config", str(path)).stdout
    assert f"empty hours: {hour_str(H0 + 1)}, {hour_str(H0 + 2)}" in text
    again = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(H0 + 1))
    assert again.returncode == 0 and "recorded empty" in again.stdout
    assert len(_ledger_events(cfg)) == 4  # re-running an empty hour records nothing twice
    assert len((store.StoreLayout(cfg.model_dir).donefile).read_text().splitlines()) == 2


@pytest.mark.slow
def test_run_hour_passes_the_bad_input_exit_code_through(model_config):
    path = model_config()
    cfg = load_config(path)
    generate_hours(cfg, cfg.data_root, H0, 1, 2000, seed=7)
    f = sorted(_partition(cfg, H0).glob("*.parquet"))[0]
    table = pq.read_table(f)
    labels = table.column("label").to_pylist()
    labels[5] = 2
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label",
                                    pa_array(labels, table.schema.field("label").type)), f)
    proc = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(H0))
    assert proc.returncode == 3, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("streamtrain: error: mpiexec exited with code 3") and "label" in line
    assert list(store.StoreLayout(cfg.model_dir).staging.iterdir()) == []  # cleaned


def pa_array(values, type_):
    import pyarrow as pa
    return pa.array(values, type_)


@pytest.mark.slow
def test_a_one_class_hour_writes_strict_json_everywhere(model_config):
    path = model_config()
    cfg = load_config(path)
    generate_hours(cfg, cfg.data_root, H0, 1, 2000, seed=8)
    for f in sorted(_partition(cfg, H0).glob("*.parquet")):
        table = pq.read_table(f)
        zeros = pa_array([0] * table.num_rows, table.schema.field("label").type)
        pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", zeros), f)
    proc = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(H0))
    assert proc.returncode == 0, proc.stderr
    result = next(ln for ln in proc.stdout.splitlines() if ln.startswith("[streamtrain] result "))
    assert _strict_json(result.split(" ", 2)[2])["auc"] is None
    [published] = (store.StoreLayout(cfg.model_dir).donefile).read_text().splitlines()
    assert _strict_json(published)["metrics"]["auc"] is None
    version_dir = store.StoreLayout(cfg.model_dir).version_dir("v000001")
    _strict_json((version_dir / "meta.json").read_text())
    listing = streamtrain("chain", "--config", str(path), "--json")
    assert _strict_json(listing.stdout)["versions"][0]["metrics"]["auc"] is None
