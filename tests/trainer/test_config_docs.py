"""docs/config.md documents every config key (and no key that does not exist)."""
import dataclasses
import re
from pathlib import Path

import pstable
from trainer import config

DOC = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()


def documented(section: str) -> set[str]:
    """Keys in the first column of the table under heading `section`."""
    body = DOC.split(f"`{section}`", 1)[1].split("\n#", 1)[0]
    keys = set()
    for cell in re.findall(r"^\| (`[^|]+`) \|", body, flags=re.M):
        keys.update(re.findall(r"`([a-z_0-9]+)`", cell))
    return keys


def fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_section_key_is_documented():
    expected = {
        "[columns]": fields(config.ColumnsConfig),
        "[network]": fields(config.NetworkConfig),
        "[train]": fields(config.TrainConfig),
        "[save]": fields(config.SaveConfig),
        "[mpi]": fields(config.MpiConfig),
        "[sensor]": fields(config.SensorConfig),
        "[s3]": fields(config.S3Config),
        "[table.optimizer]": fields(pstable.OptimizerConfig),
        "[table.admission]": fields(pstable.AdmissionConfig),
        "[table]": fields(pstable.TableConfig) - {"optimizer", "admission"} | {"num_shards"},
    }
    for section, keys in expected.items():
        assert documented(section) == keys, section
