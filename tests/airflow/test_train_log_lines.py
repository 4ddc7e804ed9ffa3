"""One Airflow log entry per line of every rank: the train operator, in-process, over a real
``mpiexec`` job whose two workers print a progress line per batch, with ``PYTHONUNBUFFERED=1``
(Airflow's task processes and CI often set it; Python then writes a print's text and its newline
in two calls, and another rank's line could land in between)."""
from __future__ import annotations

import logging
import re
import subprocess
import sys

import pendulum
import pytest

from tests.airflow.airflow_support import streamtrain, write_tiny_config
from tests.support import REPO

pytestmark = pytest.mark.slow

ONE_LINE = re.compile(r"^\[streamtrain\] worker [01]: \d+ rows, [\d,]+ rows/s, running auc [\d.na]+$")


def test_every_rank_line_is_one_log_entry(tmp_path, monkeypatch):
    from streamtrain_airflow.operators import TrainOperator

    config = write_tiny_config(tmp_path / "configs", tmp_path)
    text = config.read_text()
    text = re.sub(r"^workers = 1", "workers = 2", text, flags=re.M)
    text = re.sub(r"^batch_size = 512", "batch_size = 32", text, flags=re.M)
    text = re.sub(r"^progress_seconds = .*", "progress_seconds = 0.001", text, flags=re.M)
    config.write_text(text)
    streamtrain("gen-data", "--config", str(config), "--start", "2026-01-01T00", "--hours", "1",
                "--rows-per-hour", "12000")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")

    op = TrainOperator(task_id="train", config_path=str(config))
    entries: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            entries.append(record.getMessage())

    log = logging.getLogger("streamtrain.test.train")  # one call of op.log.info = one entry
    log.addHandler(Collect())
    monkeypatch.setattr(TrainOperator, "log", property(lambda self: log))
    context = {"logical_date": pendulum.datetime(2026, 1, 1, 0, tz="UTC"),
               "run_id": "manual__t", "dag": type("Dag", (), {"dag_id": "streamtrain_tiny"})}
    out = op.execute(context)
    assert out["status"] == "trained", out
    progress = [e for e in entries if "running auc" in e]
    assert {e.split(":")[0] for e in progress} == {"[streamtrain] worker 0",
                                                   "[streamtrain] worker 1"}
    assert len(progress) > 100, len(progress)  # both workers printed a line per batch
    merged = [e for e in entries if e.count("[streamtrain]") > 1 or "\n" in e]
    assert merged == [], merged[:5]
    assert [e for e in progress if not ONE_LINE.match(e)] == []


def test_a_rank_writes_each_line_in_one_call(tmp_path):
    """The cause, seen directly: with PYTHONUNBUFFERED=1 each line of ``python -m trainer`` leaves
    the process in one ``write``, newline included (strace)."""
    trace = tmp_path / "trace"
    code = ("import sys; from trainer.cli import whole_line_writes; whole_line_writes(); "
            "print('[streamtrain] worker 0: a'); print('[streamtrain] worker 0: b', flush=True); "
            "print('err line', file=sys.stderr)")
    done = subprocess.run(["strace", "-f", "-e", "trace=write", "-e", "write=1,2", "-o", str(trace),
                           sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    writes = re.findall(r'write\([12], "(.*?)", \d+\)', trace.read_text())
    assert writes == [r"[streamtrain] worker 0: a\n", r"[streamtrain] worker 0: b\n",
                      r"err line\n"], writes
