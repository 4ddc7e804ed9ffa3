"""The network in real ``mpiexec`` hours: a user's file trains and stages, a NaN fails the hour,
a chain never loads into another network, predict equals the training forward pass, replays are
bit-identical."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.support import REPO, streamtrain
from tests.trainer.test_job_mpi import H0, hstr, result_of, train, write_partition
from trainer import store
from trainer.config import load_config

pytestmark = pytest.mark.slow

NAN_NETWORK = """
import jax.numpy as jnp

class Exploding:
    def init(self, key):
        return {"b": jnp.zeros((1,), jnp.float32)}

    def apply(self, params, inputs):
        return jnp.where(inputs.dense[:, 0] > 1.5, jnp.nan, 0.0) + params["b"][0] + inputs.wide

def factory(spec):
    return Exploding()
"""


def custom_config(root: Path) -> Path:
    """examples/custom.toml on folders under `root`, its network file named absolutely."""
    text = (REPO / "examples" / "custom.toml").read_text()
    for pattern, repl in [(r"^data_root = .*", f'data_root = "{root}/data"'),
                          (r"^model_dir = .*", f'model_dir = "{root}/model"'),
                          (r'^model = "models/', f'model = "{REPO}/examples/models/')]:
        text, n = re.subn(pattern, repl, text, flags=re.M)
        assert n == 1, pattern
    root.mkdir(parents=True, exist_ok=True)
    (root / "custom.toml").write_text(text)
    return root / "custom.toml"


def staged_meta(cfg, hour) -> dict:
    return json.loads((store.StoreLayout(cfg.model_dir).staging_dir(hour) / "meta.json").read_text())


def test_the_custom_example_network_trains_stages_and_continues(tmp_path):
    path = custom_config(tmp_path)
    cfg = load_config(path)
    rows = write_partition(cfg, H0)
    write_partition(cfg, H0 + 1)
    first = train(path, H0, cfg.mpi.world_size)
    assert first.returncode == 0, first.stderr
    got = result_of(first)
    assert got["rows"] == rows and 0.5 < got["auc"] < 1 and got["seconds"]["network"] > 0
    network = staged_meta(cfg, H0)["network"]
    assert network["model"].endswith("examples/models/ipnn.py:build")
    assert network["options"] == {"hidden": [32], "product_scale": 1.0}
    assert network["sha256"] == cfg.network_source.sha256 and network["kind"] == "file"
    names = [name for name, _shape in network["parameters"]]
    assert names == ["layer0.b", "layer0.w", "layer1.b", "layer1.w"]
    assert streamtrain("save", "--config", str(path), "--hour", hstr(H0)).returncode == 0
    second = train(path, H0 + 1, cfg.mpi.world_size)
    assert second.returncode == 0, second.stderr
    assert result_of(second)["parent"] == "v000001"


def test_a_network_returning_nan_fails_the_hour_and_stages_nothing(model_config, tmp_path):
    (tmp_path / "nan.py").write_text(NAN_NETWORK)
    path = model_config(extra="")
    text = path.read_text().replace("[network]\n", f'[network]\nmodel = "{tmp_path}/nan.py:factory"\n')
    path.write_text(text.replace("[network.options]\nhidden = [16]\n", ""))
    cfg = load_config(path)
    write_partition(cfg, H0)
    proc = train(path, H0, 2)
    assert proc.returncode != 0
    assert re.search(r"network output \d+ of the batch starting at \S+part-\d\.parquet row \d+ "
                     r"\(\d+ rows\) is nan", proc.stderr), proc.stderr[-2000:]
    layout = store.StoreLayout(cfg.model_dir)
    assert not layout.staging_dir(H0).exists() and not layout.ledger.exists()


def test_a_chain_never_loads_into_another_network(model_config):
    path = model_config()
    cfg = load_config(path)
    write_partition(cfg, H0)
    write_partition(cfg, H0 + 1)
    assert train(path, H0, 2).returncode == 0
    assert streamtrain("save", "--config", str(path), "--hour", hstr(H0)).returncode == 0
    path.write_text(path.read_text().replace("hidden = [16]", "hidden = [12]"))
    proc = train(path, H0 + 1, 2)
    assert proc.returncode != 0
    assert ("version v000001: made by network options {'hidden': [16]}, the config has "
            "{'hidden': [12]}") in proc.stderr
    assert not store.StoreLayout(cfg.model_dir).staging_dir(H0 + 1).exists()


def test_predict_equals_the_training_forward_pass(model_config, tmp_path):
    import pstable
    from trainer import partition
    from trainer.network import load
    from trainer.network.step import Step
    from trainer.reader import BatchReader, dedup
    from trainer.store.predict import predict

    path = model_config()
    cfg = load_config(path)
    write_partition(cfg, H0)
    write_partition(cfg, H0 + 1)
    assert train(path, H0, 2).returncode == 0
    assert streamtrain("save", "--config", str(path), "--hour", hstr(H0)).returncode == 0
    part = partition.locate(cfg.data_root, H0 + 1)
    file = partition.list_files(part, checksums=False)[0]
    predict(cfg, None, file.path, str(tmp_path / "pred.parquet"))
    got = pq.read_table(tmp_path / "pred.parquet").column("pred").to_numpy()
    # the training side: the table as a server loads it, the step as a worker runs it
    chain = store.load_chain(cfg.model_dir, num_shards=cfg.table_num_shards)
    table = pstable.SparseTable(cfg.table)
    for _shard, _version, columns in chain.iter_shards(range(cfg.table_num_shards)):
        table.load(columns)
    flat = chain.read_dense()["params"]
    files, dense_dim = partition.check_schema(part, [file], cfg.columns)
    built = load.build(cfg.network_source, load.input_spec(cfg, dense_dim), cfg.train.batch_size)
    prior = load.prior_logit_of(chain.get(chain.head).meta["network"])
    assert prior != 0.0  # the chain's cold-start prior (network.initial_ctr = 0: hour 0's CTR)
    step = Step(built, cfg.train.batch_size, prior_logit=prior)
    want = []
    for batch in BatchReader(partition.assign_work(files, 1)[0], cfg.columns, cfg.train.batch_size):
        features = dedup(batch)
        want.append(step.train(flat, batch, features, table.pull(features.keys, features.slots)).probs)
    want = np.concatenate(want)
    assert got.shape == want.shape and len(want) == 1500
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("network", ["dnn", "custom"])
def test_one_worker_fixed_seed_stages_bit_identical_versions(model_config, tmp_path, network):
    path = model_config() if network == "dnn" else custom_config(tmp_path / "c")
    cfg = load_config(path)
    write_partition(cfg, H0)
    staged = store.StoreLayout(cfg.model_dir).staging_dir(H0)
    runs = []
    for _ in range(2):
        proc = train(path, H0, cfg.mpi.servers + 1)
        assert proc.returncode == 0, proc.stderr
        runs.append({p.name: p.read_bytes() for p in sorted(staged.iterdir()) if p.name != "meta.json"})
        runs[-1]["network"] = json.dumps(staged_meta(cfg, H0)["network"]).encode()
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) == cfg.table_num_shards + 2
    for name in runs[0]:
        assert runs[0][name] == runs[1][name], name
