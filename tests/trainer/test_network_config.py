"""[network]: loading a zoo network or a user's file, and every refusal naming its key."""
import re
import textwrap

import pytest

from trainer.config import ConfigError, load_config
from trainer.network import load
from trainer.network.layout import ParamLayout

MINIMAL = """
name = "m"
data_root = "data"
model_dir = "model"
[columns]
slots = ["a", "b"]
dense = ["d"]
[train]
batch_size = 16
"""

GOOD_NETWORK = """
import jax.numpy as jnp

class Linear:
    def __init__(self, spec, scale):
        self.spec, self.scale = spec, scale

    def init(self, key):
        return {"w": jnp.zeros((self.spec.num_fields * self.spec.dim + self.spec.dense_dim,), jnp.float32)}

    def apply(self, params, inputs):
        x = jnp.concatenate([inputs.pooled.reshape(inputs.wide.shape[0], -1), inputs.dense], 1)
        return OUTPUT

def factory(spec, scale=1.0):
    return Linear(spec, scale)
"""


def config(tmp_path, network: str, code: str | None = None, output="x @ params['w'] * self.scale"):
    if code is not None:
        (tmp_path / "models").mkdir(exist_ok=True)
        (tmp_path / "models" / "net.py").write_text(textwrap.dedent(code).replace("OUTPUT", output))
    path = tmp_path / "m.toml"
    path.write_text(MINIMAL + network)
    return path


def refused(path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "m.toml" in str(err.value)
    return str(err.value)


def test_default_is_the_dnn_with_its_default_widths(tmp_path):
    cfg = load_config(config(tmp_path, ""))
    assert cfg.network.model == "dnn" and cfg.network.options == {}
    assert cfg.network_source.kind == "zoo" and cfg.network_source.factory == "network"
    built = load.build(cfg.network_source, load.input_spec(cfg), 16)
    assert built.layout.shapes["h0.w"] == (2 * 8 + 1, 64) and built.layout.shapes["h1.w"] == (64, 32)


def test_a_file_relative_to_the_config_with_options(tmp_path):
    cfg = load_config(config(tmp_path, '[network]\nmodel = "models/net.py:factory"\n'
                                       '[network.options]\nscale = 2.0\n', GOOD_NETWORK))
    assert cfg.network_source.path == str(tmp_path / "models" / "net.py")
    assert cfg.network_source.options == {"scale": 2.0}


@pytest.mark.parametrize("network, code, output, key, message", [
    ('model = "wide_and_shallow"', None, None, "network.model", r"unknown network 'wide_and_shallow' \(the zoo has: dcn_v2, deepfm, din, dnn"),
    ('model = "models/absent.py:factory"', None, None, "network.model", "absent.py does not exist"),
    ('model = "models/net.py"', GOOD_NETWORK, None, "network.model", "expected 'path/to/file.py:factory'"),
    ('model = "models/net.py:nope"', GOOD_NETWORK, None, "network.model", "defines no 'nope'"),
    ('model = "models/net.py:Linear.scale"', GOOD_NETWORK, None, "network.model", "expected 'path"),
    ('model = "models/net.py:jnp"', GOOD_NETWORK, None, "network.model", "'jnp' is not callable"),
    ('model = "models/net.py:factory"', "import not_a_module\n", None, "network.model",
     "importing .*net.py failed: ModuleNotFoundError: No module named 'not_a_module'"),
    ('model = "models/net.py:factory"', "def factory(spec):\n    return 3\n", None,
     "network.model", "the factory returned int, not a Network"),
    ('model = "models/net.py:factory"\n[network.options]\nsize = 3', GOOD_NETWORK, None,
     "network.options", "does not take these options: .*unexpected keyword argument 'size'"),
    ('model = "models/net.py:factory"', GOOD_NETWORK, "x", "network.model",
     r"apply must return float32 logits of shape \(16,\), got float32 of shape \(16, 17\)"),
    ('model = "models/net.py:factory"', GOOD_NETWORK, "(x @ params['w']).astype(jnp.int32)",
     "network.model", r"float32 logits of shape \(16,\), got int32 of shape \(16,\)"),
    ('model = "models/net.py:factory"', GOOD_NETWORK, "x @ params['missing']", "network.model",
     "apply failed on a dummy batch of 16 rows: KeyError"),
    ('model = "models/net.py:factory"', GOOD_NETWORK.replace("jnp.float32)}", "jnp.int32)}"), None,
     "network.model", "parameter 'w' must be a float32 array, got int32"),
    ('model = "models/net.py:factory"', GOOD_NETWORK.replace("return {", "return [{").replace(
        "jnp.float32)}", "jnp.float32)}]"), None, "network.model", "init must return a dict"),
    ('[network.options]\nhidden = [8, 0]', None, None, "network.options",
     r"dnn refused its options: hidden: widths must be integers >= 1, got \[8, 0\]"),
    ('hidden = [64, 32]', None, None, "network.hidden", "moved to network.options.hidden"),
    ('optimizer = "lbfgs"', None, None, "network.optimizer", "must be one of"),
    ('model = 3', None, None, "network.model", "must be a string"),
    ('options = 3', None, None, "network.options", "must be a table"),
])
def test_refusals_name_the_key(tmp_path, network, code, output, key, message):
    text = network if network.startswith("[") else "[network]\n" + network
    path = config(tmp_path, text + "\n", code, output or "x @ params['w'] * self.scale")
    error = refused(path)
    assert f"{key}:" in error
    assert re.search(message, error), error


def test_server_ranks_skip_the_network_check_but_hash_the_file(tmp_path):
    path = config(tmp_path, '[network]\nmodel = "models/net.py:factory"\n', GOOD_NETWORK, "x")
    refused(path)  # a wrong output shape ...
    cfg = load_config(path, check_network=False)  # ... is not looked at without the check
    assert len(cfg.network_source.sha256) == 64


def test_config_hash_covers_the_network_code_and_options(tmp_path):
    network = '[network]\nmodel = "models/net.py:factory"\n'
    a = load_config(config(tmp_path, network, GOOD_NETWORK)).config_hash()
    b = load_config(config(tmp_path, network, GOOD_NETWORK + "\n# edited\n")).config_hash()
    c = load_config(config(tmp_path, network + "[network.options]\nscale = 3.0\n",
                           GOOD_NETWORK + "\n# edited\n")).config_hash()
    assert len({a, b, c}) == 3


def test_compile_cache_default_configured_and_off(tmp_path):
    assert load_config(config(tmp_path, "")).compile_cache_dir == str(tmp_path / "model" / "jax_cache")
    got = load_config(config(tmp_path, '[network]\ncompile_cache = "cache"\n')).compile_cache_dir
    assert got == str(tmp_path / "cache")
    assert load_config(config(tmp_path, '[network]\ncompile_cache = "off"\n')).compile_cache_dir == ""


def _built_record(model="dnn", options=None, shapes=None):
    shapes = shapes or {"h0.w": (3, 4), "out.w": (4, 1)}
    return {"model": model, "options": options or {}, "sha256": "a" * 64,
            "parameters": ParamLayout(shapes).record()}


def test_a_chain_of_another_network_is_refused_naming_what_differs():
    from trainer.store import ChainError

    mine = _built_record()
    assert load.check_saved(_built_record(), mine, "version v000003") == []
    with pytest.raises(ChainError, match="v000003: made by network model 'deepfm', the config has 'dnn'"):
        load.check_saved(_built_record("deepfm"), mine, "version v000003")
    with pytest.raises(ChainError, match=r"made by network options \{'hidden': \[8\]\}"):
        load.check_saved(_built_record(options={"hidden": [8]}), mine, "version v000003")
    with pytest.raises(ChainError, match=r"parameter 'h0.w' has shape \(3, 4\) here, \(5, 4\) in the chain"):
        load.check_saved(_built_record(shapes={"h0.w": (5, 4), "out.w": (4, 1)}), mine, "v")
    with pytest.raises(ChainError, match="records no network"):
        load.check_saved(None, mine, "version v000001")
    edited = dict(_built_record(), sha256="b" * 64)
    assert "changed since" in load.check_saved(edited, mine, "v")[0]
