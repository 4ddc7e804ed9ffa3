"""The model config: one TOML or YAML file = one model = one Airflow DAG.

Every key, its default and its rule is declared here, once, as a dataclass field; `docs/config.md`
documents them for users. Loading refuses unknown keys and bad values with the key named::

    >>> cfg = load_config("examples/demo.toml")
    >>> cfg.name, cfg.mpi.servers, cfg.table.dim
    ('demo', 1, 8)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pstable


class ConfigError(ValueError):
    """A config file or key is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class ColumnsConfig:
    label: str = "label"
    show: str = ""  # "" = every row shows once
    slots: tuple[str, ...] = ()
    dense: tuple[str, ...] = ()
    dense_fill: float = 0.0
    bad_rows: str = "fail"  # "fail" | "quarantine"
    shared_tables: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.slots:
            raise ConfigError("columns.slots: at least one sparse slot column is required")
        _one_of("columns.bad_rows", self.bad_rows, ("fail", "quarantine"))
        names = [self.label, *self.slots, *self.dense] + ([self.show] if self.show else [])
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f"columns: column(s) {duplicated} named more than once")
        seen: set[str] = set()
        for group, members in self.shared_tables.items():
            for slot in members:
                if slot not in self.slots:
                    raise ConfigError(
                        f"columns.shared_tables.{group}: {slot!r} is not one of columns.slots")
                if slot in seen:
                    raise ConfigError(f"columns.shared_tables: slot {slot!r} is in two groups")
                seen.add(slot)


@dataclass(frozen=True)
class NetworkConfig:
    hidden: tuple[int, ...] = (64, 32)
    optimizer: str = "adam"  # dense rule on the servers: "sgd" | "adagrad" | "adam"
    learning_rate: float = 0.001
    initial_ctr: float = 0.0  # a new model's first predictions; 0 = the first hour's CTR

    def validate(self) -> None:
        _one_of("network.optimizer", self.optimizer, ("sgd", "adagrad", "adam"))
        _positive("network.learning_rate", self.learning_rate)
        if not 0 <= self.initial_ctr < 1:
            raise ConfigError(f"network.initial_ctr: must be in (0, 1), or 0 for the first "
                              f"hour's CTR; got {self.initial_ctr!r}")
        for width in self.hidden:
            if width < 1:
                raise ConfigError(f"network.hidden: widths must be >= 1, got {list(self.hidden)}")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 512
    min_batches_per_hour: int = 16  # smaller batches for small hours (0 = always batch_size)
    seed: int = 7
    max_pushes_in_flight: int = 4  # bounded asynchrony: a worker waits when this many are unanswered
    dense_pull_every: int = 1  # pull fresh dense parameters every N batches
    progress_seconds: float = 5.0
    bad_rows_dir: str = ""  # quarantine files go here ("" = <model_dir>/quarantine)

    def hour_batch_size(self, worker_rows: int) -> int:
        """Rows per batch for a worker with `worker_rows` rows this hour: ``batch_size``, or the
        largest power of two that still gives ``min_batches_per_hour`` batches (a power of two
        so a compiled step is reused across hours).

        >>> TrainConfig().hour_batch_size(100_000), TrainConfig().hour_batch_size(470)
        (512, 16)
        """
        if not self.min_batches_per_hour or worker_rows < 1:
            return self.batch_size
        fit = max(1, worker_rows // self.min_batches_per_hour)
        return min(self.batch_size, 1 << (fit.bit_length() - 1))

    def validate(self) -> None:
        _positive("train.batch_size", self.batch_size)
        if self.min_batches_per_hour < 0:
            raise ConfigError(f"train.min_batches_per_hour: must be >= 0 (0 = off), got "
                              f"{self.min_batches_per_hour!r}")
        _positive("train.max_pushes_in_flight", self.max_pushes_in_flight)
        _positive("train.dense_pull_every", self.dense_pull_every)
        _positive("train.progress_seconds", self.progress_seconds)


@dataclass(frozen=True)
class SaveConfig:
    full_save_hour: int = 0  # hour of day (UTC) whose save is a full base
    keep_bases: int = 3  # prune keeps the newest N bases and all they need

    def validate(self) -> None:
        if not 0 <= self.full_save_hour <= 23:
            raise ConfigError(f"save.full_save_hour: must be 0..23, got {self.full_save_hour}")
        _positive("save.keep_bases", self.keep_bases)


@dataclass(frozen=True)
class MpiConfig:
    servers: int = 1
    workers: int = 1
    mpiexec: str = ""  # "" = the mpiexec beside this Python interpreter
    hostfile: str = ""  # "" = all ranks on this machine
    extra_args: tuple[str, ...] = ()
    blas_threads: int = 1  # BLAS threads per rank: ranks share the cores, oversubscription is slow
    wait_spins: int = 50  # polls before a waiting rank starts to sleep
    wait_backoff_min_us: float = 20.0  # first sleep; doubles up to the max
    wait_backoff_max_us: float = 500.0
    timeout_seconds: float = 600.0  # a rank waiting longer than this for a peer fails the job

    @property
    def world_size(self) -> int:
        return self.servers + self.workers

    def validate(self) -> None:
        _positive("mpi.servers", self.servers)
        _positive("mpi.workers", self.workers)
        _positive("mpi.blas_threads", self.blas_threads)
        _positive("mpi.wait_backoff_min_us", self.wait_backoff_min_us)
        if self.wait_backoff_max_us < self.wait_backoff_min_us:
            raise ConfigError("mpi.wait_backoff_max_us: must be >= mpi.wait_backoff_min_us")
        _positive("mpi.timeout_seconds", self.timeout_seconds)


@dataclass(frozen=True)
class SensorConfig:
    poke_seconds: float = 30.0
    timeout_seconds: float = 7200.0  # then the hour is recorded as missing and skipped

    def validate(self) -> None:
        _positive("sensor.poke_seconds", self.poke_seconds)
        _positive("sensor.timeout_seconds", self.timeout_seconds)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    data_root: str
    model_dir: str
    columns: ColumnsConfig
    table: pstable.TableConfig
    table_num_shards: int
    network: NetworkConfig
    train: TrainConfig
    save: SaveConfig
    mpi: MpiConfig
    sensor: SensorConfig
    path: str = ""  # the file this config was loaded from
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    def config_hash(self) -> str:
        """sha256 of the canonical config (what was trained, not where files live)."""
        canonical = {k: v for k, v in self.raw.items() if k not in ("data_root", "model_dir")}
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


_TOP_KEYS = {"name", "data_root", "model_dir", "columns", "table", "network", "train", "save",
             "mpi", "sensor"}
_SECTIONS = {"columns": ColumnsConfig, "network": NetworkConfig, "train": TrainConfig,
             "save": SaveConfig, "mpi": MpiConfig, "sensor": SensorConfig}


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> ModelConfig:
    """Read, validate and return the model config at `path` (``.toml``, ``.yaml`` or ``.yml``).

    Relative ``data_root`` / ``model_dir`` are relative to the config file. `overrides` is a
    nested dict merged over the file (tests and the demo use it to point at temporary folders).
    """
    path = Path(path)
    raw = _read_file(path)
    if overrides:
        raw = _merge(raw, overrides)
    try:
        return _build(raw, path)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _read_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: config must be .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {err}") from None
    except Exception as err:  # yaml.YAMLError is only importable once yaml is
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of keys")
    return data


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build(raw: dict, path: Path) -> ModelConfig:
    _refuse_unknown("", raw, _TOP_KEYS)
    for key in ("name", "data_root", "model_dir"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{key}: a non-empty string is required")
    name = raw["name"]
    if not all(c.isalnum() or c in "_-." for c in name):
        raise ConfigError(f"name: {name!r} may only hold letters, digits, '_', '-' and '.'")
    sections = {}
    for key, cls in _SECTIONS.items():
        section = _section(raw, key)
        sections[key] = _dataclass_from(cls, section, key)
        sections[key].validate()
    table_raw = dict(_section(raw, "table"))
    num_shards = table_raw.pop("num_shards", 8)
    if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
        raise ConfigError(f"table.num_shards: must be an integer >= 1, got {num_shards!r}")
    table = _table_config(table_raw)
    base = path.parent
    return ModelConfig(
        name=name,
        data_root=_resolve(base, raw["data_root"]),
        model_dir=_resolve(base, raw["model_dir"]),
        table=table,
        table_num_shards=num_shards,
        path=str(path.resolve()),
        raw=raw,
        **sections,
    )


def _table_config(table_raw: dict) -> pstable.TableConfig:
    optimizer = _dataclass_from(pstable.OptimizerConfig, table_raw.pop("optimizer", {}) or {},
                                "table.optimizer")
    admission = _dataclass_from(pstable.AdmissionConfig, table_raw.pop("admission", {}) or {},
                                "table.admission")
    fields = {f.name for f in dataclasses.fields(pstable.TableConfig)} - {"optimizer", "admission"}
    _refuse_unknown("table", table_raw, fields | set())
    try:
        return pstable.TableConfig(optimizer=optimizer, admission=admission, **table_raw)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"table: {err}") from None


def _resolve(base: Path, location: str) -> str:
    if "://" in location or os.path.isabs(location):
        return location
    return str((base / location).resolve())


def _section(raw: dict, key: str) -> dict:
    section = raw.get(key, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{key}: must be a table of keys, got {type(section).__name__}")
    return section


def _refuse_unknown(prefix: str, given: dict, known: set[str]) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")


def _dataclass_from(cls, section: dict, prefix: str):
    """Build dataclass `cls` from `section`, converting lists to tuples and checking types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    _refuse_unknown(prefix, section, fields)
    values = {}
    for key, value in section.items():
        values[key] = _coerce(f"{prefix}.{key}", value, hints[key])
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix}: {err}") from None


def _coerce(key: str, value, hint):
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a table of keys, got {value!r}")
        item = typing.get_args(hint)[1]
        return {k: _coerce(f"{key}.{k}", v, item) for k, v in value.items()}
    return value  # a pstable field typed as Literal/enum: pstable validates it


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: must be one of {', '.join(allowed)}; got {value!r}")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}: must be > 0, got {value!r}")
