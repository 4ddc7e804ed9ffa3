"""The hour's calibration (COPC, reliability bins, ECE) reaches the donefile and ``chain``, and
neither ever holds a bare NaN."""
import json

import numpy as np
import pytest

from tests.store.store_helpers import H0, commit, make_cols
from trainer.metrics import ProgressiveMetrics
from trainer.store import StoreLayout, publish, read_donefile
from trainer.store.verify import format_versions, list_versions


def _metrics(labels, preds) -> dict:
    m = ProgressiveMetrics(1024)
    m.update(labels, preds)
    return m.get()


def _strict(line: bytes):
    def refuse(name):
        raise AssertionError(f"bare {name} in JSON")
    return json.loads(line, parse_constant=refuse)


@pytest.fixture
def model_dir(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.random(400) * 0.2
    y = (rng.random(400) < p).astype(float)
    commit(tmp_path, H0, "full", None, make_cols(50, seed=1), metrics=_metrics(y, p))
    # an hour without a click: its AUC is NaN, its COPC 0
    commit(tmp_path, H0 + 1, "delta", "v000001", make_cols(50, seed=2),
           metrics=_metrics(np.zeros(10), np.full(10, 0.02)))
    for v in ("v000001", "v000002"):
        publish(tmp_path, v)
    return tmp_path, _metrics(y, p)


def test_donefile_lines_carry_calibration_and_no_nan(model_dir):
    path, first = model_dir
    raw = StoreLayout(path).donefile.read_bytes().splitlines()
    lines = [_strict(line) for line in raw]
    assert lines == read_donefile(path)
    rel = lines[0]["metrics"]["reliability"]
    assert lines[0]["metrics"]["copc"] == pytest.approx(first["copc"])
    assert rel["shows"] == first["reliability"]["shows"] and len(rel["edges"]) == 11
    assert rel["ece"] == pytest.approx(first["reliability"]["ece"])
    assert lines[1]["metrics"]["auc"] is None and lines[1]["metrics"]["copc"] == 0.0
    assert lines[1]["metrics"]["reliability"]["pred_ctr"][3] == pytest.approx(0.02)


def test_chain_json_and_text_show_calibration(model_dir):
    path, first = model_dir
    rows = list_versions(path)
    cal = rows[0]["calibration"]
    assert cal["copc"] == pytest.approx(first["copc"])
    assert cal["pred_ctr"] == pytest.approx(first["pred_ctr"])
    assert cal["reliability"]["actual_ctr"] == first["reliability"]["actual_ctr"]
    _strict(json.dumps(rows[1]["calibration"]))
    text = format_versions(rows).splitlines()
    assert text[0].split()[6:11] == ["auc", "pred_ctr", "act_ctr", "copc", "ece"]
    assert f"{first['copc']:.3f}" in text[1] and f"{first['reliability']['ece']:.5f}" in text[1]
    assert text[2].split()[6] == "-"  # the NaN AUC of a click-less hour
