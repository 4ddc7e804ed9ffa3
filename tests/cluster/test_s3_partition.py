"""``s3://`` data roots against a real S3 server (moto over HTTP, signatures checked): the
``_SUCCESS`` check, listing with sizes and checksums, the schema check on footers, reads, and the
one-line errors of a missing bucket and refused credentials."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from trainer.config import ColumnsConfig, ConfigError, load_config
from trainer.gendata import generate_hours
from trainer.partition import (EXIT_BAD_INPUT, SUCCESS, StorageError, assign_work, check_schema,
                               is_complete, list_files, locate)
from trainer.reader import BatchReader

pytestmark = pytest.mark.cluster

HOUR = 498805  # 2026-11-26T13
COLUMNS = ColumnsConfig(slots=("user_id", "item_id", "category", "tags"), dense=("d0", "d1", "d2"))


def config_for(tmp_path: Path, server, data_root: str, secret_key: str | None = None):
    path = tmp_path / "s3model.toml"
    path.write_text(f'name = "s3model"\ndata_root = "{data_root}"\nmodel_dir = "{tmp_path}/model"\n'
                    f'[columns]\nslots = {list(COLUMNS.slots)}\ndense = {list(COLUMNS.dense)}\n'.replace("'", '"')
                    + server.config_toml(secret_key))
    return load_config(path)


@pytest.fixture
def uploaded(tmp_path, s3):
    """One partition written locally and uploaded to ``s3://bucket/stream``, with its config."""
    generate_hours(COLUMNS, str(tmp_path / "local"), HOUR, 1, 3000, seed=3)
    s3.upload(tmp_path / "local", tmp_path.name)
    return tmp_path / "local", config_for(tmp_path, s3, f"s3://{s3.bucket}/{tmp_path.name}")


def test_listing_sizes_checksums_and_footers_match_the_local_copy(uploaded):
    local_root, cfg = uploaded
    remote = locate(cfg.data_root, HOUR, cfg.s3)
    local = locate(str(local_root), HOUR)
    assert isinstance(remote.fs, pafs.S3FileSystem) and is_complete(remote)
    assert remote.location == f"{cfg.data_root}/dt=2026-11-26/hour=13"
    files = list_files(remote)
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet"]
    for f in files:
        raw = (local_root / "dt=2026-11-26" / "hour=13" / f.name).read_bytes()
        assert f.bytes == len(raw) and f.sha256 == hashlib.sha256(raw).hexdigest()
    checked, dense_dim = check_schema(remote, files, COLUMNS)
    expected, _ = check_schema(local, list_files(local), COLUMNS)
    assert [f.row_groups for f in checked] == [f.row_groups for f in expected] and dense_dim == 3


def test_training_reads_the_same_batches_as_from_local_disk(uploaded):
    local_root, cfg = uploaded
    batches = {}
    for name, part in (("s3", locate(cfg.data_root, HOUR, cfg.s3)),
                       ("local", locate(str(local_root), HOUR))):
        files, _ = check_schema(part, list_files(part, checksums=False), COLUMNS)
        units = assign_work(files, 1)[0]
        batches[name] = list(BatchReader(units, COLUMNS, 512, filesystem=part.fs))
    assert len(batches["s3"]) == len(batches["local"]) == 6
    for a, b in zip(batches["s3"], batches["local"]):
        np.testing.assert_array_equal(a.keys, b.keys)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.dense, b.dense)


def test_a_half_uploaded_partition_is_not_complete(uploaded, s3):
    _, cfg = uploaded
    part = locate(cfg.data_root, HOUR, cfg.s3)
    part.fs.delete_file(part.file_path(SUCCESS))
    assert list_files(part)  # the files are there ...
    assert not is_complete(part)  # ... but the hour is not


def test_a_missing_bucket_fails_naming_the_uri(tmp_path, s3):
    cfg = config_for(tmp_path, s3, "s3://no-such-bucket/stream")
    part = locate(cfg.data_root, HOUR, cfg.s3)
    with pytest.raises(StorageError, match="^s3://no-such-bucket/stream/dt=2026-11-26/hour=13: "
                                           "no such bucket 'no-such-bucket'$"):
        is_complete(part)
    with pytest.raises(StorageError, match="^s3://no-such-bucket/stream/.*: no such bucket"):
        list_files(part)


def test_refused_credentials_fail_naming_the_uri(tmp_path, uploaded, s3):
    cfg = config_for(tmp_path, s3, f"s3://{s3.bucket}/{tmp_path.name}", secret_key="not-the-secret")
    part = locate(cfg.data_root, HOUR, cfg.s3)
    for check in (is_complete, list_files):
        with pytest.raises(StorageError, match=f"^{cfg.data_root}/dt=2026-11-26/hour=13: "
                                               "access denied") as err:
            check(part)
        assert "\n" not in str(err.value) and "not-the-secret" not in str(err.value)


def test_credentials_stay_out_of_repr_and_config_hash(tmp_path, s3):
    cfg = config_for(tmp_path, s3, f"s3://{s3.bucket}/stream")
    other = config_for(tmp_path, s3, f"s3://{s3.bucket}/stream", secret_key="rotated")
    assert s3.secret_key not in repr(cfg) and s3.secret_key not in repr(cfg.s3)
    assert cfg.config_hash() == other.config_hash()


def test_environment_credentials_are_used_when_the_config_has_none(tmp_path, uploaded, s3,
                                                                   monkeypatch):
    path = tmp_path / "env.toml"
    path.write_text(f'name = "env"\ndata_root = "s3://{s3.bucket}/{tmp_path.name}"\n'
                    f'model_dir = "{tmp_path}/m"\n[columns]\nslots = ["user_id"]\n'
                    f'[s3]\nendpoint = "{s3.endpoint}"\nregion = "us-east-1"\n')
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    cfg = load_config(path)
    assert is_complete(locate(cfg.data_root, HOUR, cfg.s3))


def test_the_sensor_trigger_checks_success_on_s3(uploaded, s3):
    from streamtrain_airflow.triggers import PartitionTrigger

    _, cfg = uploaded
    trigger = PartitionTrigger(data_root=cfg.data_root, hour=HOUR, poke_interval=1.0,
                               deadline=0.0, config_path=cfg.path)
    assert s3.secret_key not in str(trigger.serialize())
    assert trigger._check() == (f"{cfg.data_root}/dt=2026-11-26/hour=13", True)
    part = locate(cfg.data_root, HOUR, cfg.s3)
    part.fs.delete_file(part.file_path(SUCCESS))
    assert trigger._check()[1] is False


@pytest.mark.parametrize("section, message", [
    ('endpoint = "localhost:9000"', "s3.endpoint: must start with http://"),
    ('access_key = "a"', "give both s3.access_key and s3.secret_key"),
    ('session_token = "t"', "s3.session_token: needs"),
    ('bucket = "x"', "s3.bucket: unknown key"),
])
def test_bad_s3_settings_are_refused(tmp_path, section, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'name = "bad"\ndata_root = "s3://b/p"\nmodel_dir = "{tmp_path}/m"\n'
                    f'[columns]\nslots = ["u"]\n[s3]\n{section}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.slow
def test_a_job_with_refused_credentials_fails_in_one_line_naming_the_uri(tmp_path, uploaded, s3):
    from tests.support import streamtrain

    cfg = config_for(tmp_path, s3, f"s3://{s3.bucket}/{tmp_path.name}", secret_key="not-the-secret")
    done = streamtrain("train", "--config", cfg.path, "--hour", "2026-11-26T13", mpi_ranks=2,
                       timeout=120)
    assert done.returncode == EXIT_BAD_INPUT, done.stdout + done.stderr
    first = next(ln for ln in done.stderr.splitlines() if ln.startswith("[streamtrain] error:"))
    assert f"StorageError: {cfg.data_root}/dt=2026-11-26/hour=13: access denied" in first
    assert "not-the-secret" not in done.stdout + done.stderr
