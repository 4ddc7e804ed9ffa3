"""Learning end to end: on the synthetic stream (a planted model whose Bayes AUC the generator
reports), a few hours of real MPI training get the progressive AUC within 0.03 of the Bayes AUC."""
import json

import pytest

from tests.support import streamtrain
from trainer.config import load_config
from trainer.gendata import generate_hours
from trainer.hours import hour_index, hour_str

pytestmark = pytest.mark.slow


def test_a_few_hours_approach_the_bayes_auc(model_config):
    path = model_config(servers=1, workers=1)  # one worker: deterministic, so not flaky
    text = path.read_text().replace("dim = 4", "dim = 8").replace("[16]", "[32]")
    path.write_text(text)
    cfg = load_config(path)
    start = hour_index("2026-11-26T00")
    hours = generate_hours(cfg, cfg.data_root, start, 6, 50_000, seed=1)
    aucs = []
    for h in range(start, start + 6):
        proc = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(h), timeout=600)
        assert proc.returncode == 0, proc.stderr
        result = next(line for line in proc.stdout.splitlines() if "] result " in line)
        aucs.append(json.loads(result.split("] result ", 1)[1])["auc"])
    bayes = [h["bayes_auc"] for h in hours]
    assert aucs[-1] > aucs[0] + 0.02, aucs  # it learns (from a first hour started at its CTR)
    print("progressive AUC", aucs, "Bayes AUC", bayes)
    assert aucs[-1] >= bayes[-1] - 0.03, (aucs, bayes)
