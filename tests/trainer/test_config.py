"""The model config: defaults, validation errors that name the key, TOML and YAML."""
import pytest

from trainer.config import ConfigError, load_config

EXAMPLE = "examples/demo.toml"


def write(tmp_path, text, name="m.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = """
name = "m"
data_root = "data"
model_dir = "model"
[columns]
slots = ["a", "b"]
dense = ["d"]
"""


def test_example_loads_with_documented_values():
    cfg = load_config(EXAMPLE)
    assert cfg.name == "demo"
    assert cfg.columns.slots == ("user_id", "item_id", "category", "tags")
    assert cfg.table.dim == 8 and cfg.table_num_shards == 8
    assert cfg.table.optimizer.rule == "adagrad"
    assert cfg.mpi.world_size == 3
    assert cfg.data_root.endswith("var/demo/data")


def test_minimal_config_gets_defaults_and_relative_paths(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.save.full_save_hour == 0
    assert cfg.train.batch_size == 512
    assert cfg.model_dir == str(tmp_path / "model")


@pytest.mark.parametrize("patch, key", [
    ("[train]\nbatch_size = 0\n", "train.batch_size"),
    ("[train]\nbatchsize = 5\n", "train.batchsize"),
    ("[save]\nfull_save_hour = 24\n", "save.full_save_hour"),
    ("[network]\noptimizer = 'lbfgs'\n", "network.optimizer"),
    ("[mpi]\nservers = 'two'\n", "mpi.servers"),
    ("surprise = 1\n", "surprise"),
    ("[table]\nnum_shards = 0\n", "table.num_shards"),
    ("[table]\nsharding = 3\n", "table.sharding"),
    ("[table.optimizer]\nrule = 'rmsprop'\n", "rule"),
    ("[table.admission]\npolicy = 'maybe'\n", "policy"),
])
def test_bad_values_are_refused_with_the_key_named(tmp_path, patch, key):
    # section tables must come after the top-level keys in TOML
    text = MINIMAL + patch if patch.startswith("[") else patch + MINIMAL
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert key in str(err.value)
    assert "m.toml" in str(err.value)


def test_shared_tables_must_name_configured_slots(tmp_path):
    with pytest.raises(ConfigError, match="shared_tables.ids"):
        load_config(write(tmp_path, MINIMAL.replace(
            'dense = ["d"]', 'dense = ["d"]\nshared_tables = { ids = ["a", "zzz"] }')))


@pytest.mark.parametrize("sequences, message", [
    ("{c = 5}", "columns.sequences.c: not one of columns.slots"),
    ("{b = 0}", "columns.sequences.b: max_len must be >= 1, got 0"),
    ("{b = '5'}", "columns.sequences.b: must be an integer"),
    ("['b']", "columns.sequences: must be a table of keys"),
])
def test_sequences_must_name_slots_with_a_max_len(tmp_path, sequences, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, MINIMAL.replace('dense = ["d"]', f'dense = ["d"]\nsequences = {sequences}')))


def test_sequence_slots_are_not_pooled(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL.replace('slots = ["a", "b"]', 'slots = ["a", "h", "b"]\nsequences = {h = 20}')))
    assert cfg.columns.sequences == {"h": 20} and cfg.columns.pooled_slots == ("a", "b")


def test_yaml_config_equals_toml(tmp_path):
    yaml_text = """
name: m
data_root: data
model_dir: model
columns: {slots: [a, b], dense: [d]}
"""
    from_yaml = load_config(write(tmp_path, yaml_text, "m.yaml"))
    from_toml = load_config(write(tmp_path, MINIMAL))
    assert from_yaml.config_hash() == from_toml.config_hash()
    assert from_yaml.columns == from_toml.columns


def test_config_hash_ignores_locations_but_not_hyperparameters(tmp_path):
    a = load_config(write(tmp_path, MINIMAL))
    b = load_config(write(tmp_path, MINIMAL.replace('"model"', '"elsewhere"'), "b.toml"))
    c = load_config(write(tmp_path, MINIMAL + "[table]\ndim = 4\n", "c.toml"))
    assert a.config_hash() == b.config_hash() != c.config_hash()


def test_config_hash_covers_the_effective_show_scale(tmp_path):
    """The default is on: a file without the key is the file that says true, not false."""
    omitted = load_config(write(tmp_path, MINIMAL))
    on = load_config(write(tmp_path, MINIMAL + "[table.optimizer]\nshow_scale = true\n", "on.toml"))
    off = load_config(write(tmp_path, MINIMAL + "[table.optimizer]\nshow_scale = false\n", "off.toml"))
    assert omitted.table.optimizer.show_scale and not off.table.optimizer.show_scale
    assert omitted.config_hash() == on.config_hash() != off.config_hash()
    with pytest.raises(ConfigError, match="table.optimizer.show_scale: must be true or false"):
        load_config(write(tmp_path, MINIMAL + "[table.optimizer]\nshow_scale = 1\n", "bad.toml"))


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "name = ["))
