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
    sequences: dict[str, int] = field(default_factory=dict)  # list slot -> max_len, fed unpooled

    @property
    def pooled_slots(self) -> tuple[str, ...]:
        """The slots the network gets sum-pooled (``slots`` minus ``sequences``), in config order."""
        return tuple(s for s in self.slots if s not in self.sequences)

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
        for slot, max_len in self.sequences.items():
            if slot not in self.slots:
                raise ConfigError(f"columns.sequences.{slot}: not one of columns.slots "
                                  f"(a sequence slot is a list slot fed unpooled)")
            if max_len < 1:
                raise ConfigError(f"columns.sequences.{slot}: max_len must be >= 1, got {max_len}")


@dataclass(frozen=True)
class NetworkConfig:
    model: str = "dnn"  # a zoo name or "path/to/file.py:factory" (relative to the config file)
    options: dict[str, typing.Any] = field(default_factory=dict)  # keyword arguments of the factory
    optimizer: str = "adam"  # dense rule on the servers: "sgd" | "adagrad" | "adam"
    learning_rate: float = 0.001
    compile_cache: str = ""  # JAX compilation cache: "" = <model_dir>/jax_cache, "off" = none
    initial_ctr: float = 0.0  # a new model's first predictions; 0 = the first hour's CTR

    def validate(self) -> None:
        _one_of("network.optimizer", self.optimizer, ("sgd", "adagrad", "adam"))
        _positive("network.learning_rate", self.learning_rate)
        if not 0 <= self.initial_ctr < 1:
            raise ConfigError(f"network.initial_ctr: must be in (0, 1), or 0 for the first "
                              f"hour's CTR; got {self.initial_ctr!r}")


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


#: Hydra launchers ``mpi.launcher`` may name ("" = mpiexec's own choice).
LAUNCHERS = ("", "ssh", "rsh", "fork", "slurm", "lsf", "sge", "pbs")


@dataclass(frozen=True)
class MpiConfig:
    servers: int = 1
    workers: int = 1
    mpiexec: str = ""  # "" = the mpiexec beside this Python interpreter
    hosts: tuple[str, ...] = ()  # () = all ranks on this machine (or mpi.hostfile)
    ranks_per_host: tuple[int, ...] = ()  # ranks on each of `hosts`, in rank order; () = 1 each
    hostfile: str = ""  # "" = all ranks on this machine (or mpi.hosts)
    launcher: str = ""  # "" = mpiexec's default (ssh for remote hosts)
    launcher_exec: str = ""  # "" = the launcher found on PATH
    iface: str = ""  # network interface the ranks talk over ("" = mpiexec's choice)
    env: dict[str, str] = field(default_factory=dict)  # set on every rank (mpiexec -genv)
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
        _one_of("mpi.launcher", self.launcher, LAUNCHERS)
        self._validate_hosts()

    def _validate_hosts(self) -> None:
        if self.hosts and self.hostfile:
            raise ConfigError("mpi.hosts: give mpi.hosts or mpi.hostfile, not both")
        for host in self.hosts:
            if not host or any(c.isspace() or c in ",:" for c in host):
                raise ConfigError(f"mpi.hosts: {host!r} is not a host name or address")
        if len(set(self.hosts)) != len(self.hosts):
            raise ConfigError(f"mpi.hosts: a host is listed twice in {list(self.hosts)}")
        if self.ranks_per_host:
            if len(self.ranks_per_host) != len(self.hosts):
                raise ConfigError(f"mpi.ranks_per_host: one count per host of mpi.hosts "
                                  f"({len(self.hosts)}), got {list(self.ranks_per_host)}")
            if min(self.ranks_per_host) < 1 or sum(self.ranks_per_host) != self.world_size:
                raise ConfigError(f"mpi.ranks_per_host: counts >= 1 summing to servers + workers "
                                  f"({self.world_size}), got {list(self.ranks_per_host)}")
        elif self.hosts and len(self.hosts) != self.world_size:
            raise ConfigError(f"mpi.hosts: {len(self.hosts)} hosts for {self.world_size} ranks "
                              f"need mpi.ranks_per_host (one count per host)")
        for name in self.env:
            if not name or not all(c.isalnum() or c == "_" for c in name):
                raise ConfigError(f"mpi.env: {name!r} is not an environment variable name")


@dataclass(frozen=True)
class SensorConfig:
    poke_seconds: float = 30.0
    timeout_seconds: float = 7200.0  # then the hour is recorded as missing and skipped
    # hour H's partition lands this long after H starts, at the latest (the hour + the producer's
    # delay); the sensor never waits past H + producer_lag_seconds + timeout_seconds
    producer_lag_seconds: float = 3600.0

    def validate(self) -> None:
        _positive("sensor.poke_seconds", self.poke_seconds)
        _positive("sensor.timeout_seconds", self.timeout_seconds)
        if not self.producer_lag_seconds >= 0:
            raise ConfigError(f"sensor.producer_lag_seconds: must be >= 0, got "
                              f"{self.producer_lag_seconds!r}")


@dataclass(frozen=True)
class S3Config:
    """Where ``s3://`` data roots live; the credentials are never logged nor hashed."""

    endpoint: str = ""  # "" = AWS; "http://host:port" for MinIO, Ceph, moto, ...
    region: str = ""  # "" = AWS_REGION / AWS_DEFAULT_REGION / the SDK's default
    access_key: str = field(default="", repr=False)  # "" = AWS_ACCESS_KEY_ID / the SDK's chain
    secret_key: str = field(default="", repr=False)  # "" = AWS_SECRET_ACCESS_KEY / the chain
    session_token: str = field(default="", repr=False)  # "" = AWS_SESSION_TOKEN / the chain
    connect_timeout_seconds: float = 10.0
    request_timeout_seconds: float = 60.0

    def validate(self) -> None:
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"s3.endpoint: must start with http:// or https://, "
                              f"got {self.endpoint!r}")
        if bool(self.access_key) != bool(self.secret_key):
            raise ConfigError("s3.access_key: give both s3.access_key and s3.secret_key, or "
                              "neither (then the AWS environment variables are used)")
        if self.session_token and not self.access_key:
            raise ConfigError("s3.session_token: needs s3.access_key and s3.secret_key")
        _positive("s3.connect_timeout_seconds", self.connect_timeout_seconds)
        _positive("s3.request_timeout_seconds", self.request_timeout_seconds)


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
    s3: S3Config = S3Config()
    path: str = ""  # the file this config was loaded from
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    network_source: typing.Any = None  # trainer.network.load.NetworkSource: the network's code

    @property
    def compile_cache_dir(self) -> str:
        """Where JAX keeps compiled steps ("" = no persistent cache)."""
        setting = self.network.compile_cache
        if setting == "off":
            return ""
        if setting:
            return setting
        return "" if "://" in self.model_dir else os.path.join(self.model_dir, "jax_cache")

    def config_hash(self) -> str:
        """sha256 of the canonical config (what was trained, not where files live nor the
        credentials to reach them), including the sha256 of the network's code.

        The effective ``table.optimizer.show_scale`` is always in it: a file without the key
        trained unscaled before the key existed and scaled since, so the text alone cannot say.
        """
        canonical = {k: v for k, v in self.raw.items() if k not in _WHERE_KEYS}
        table = dict(canonical.get("table") or {})
        table["optimizer"] = {**(table.get("optimizer") or {}),
                              "show_scale": self.table.optimizer.show_scale}
        canonical["table"] = table
        if self.network_source is not None:
            canonical["network_sha256"] = self.network_source.sha256
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


_TOP_KEYS = {"name", "data_root", "model_dir", "columns", "table", "network", "train", "save",
             "mpi", "sensor", "s3"}
_SECTIONS = {"columns": ColumnsConfig, "network": NetworkConfig, "train": TrainConfig,
             "save": SaveConfig, "mpi": MpiConfig, "sensor": SensorConfig, "s3": S3Config}
#: Top-level keys that say where files live (and how to reach them), not what is trained.
_WHERE_KEYS = ("data_root", "model_dir", "s3")


def load_config(path: str | os.PathLike, overrides: dict | None = None, *,
                check_network: bool = True) -> ModelConfig:
    """Read, validate and return the model config at `path` (``.toml``, ``.yaml`` or ``.yml``).

    Relative ``data_root`` / ``model_dir`` / ``network.model`` files are relative to the config
    file. `overrides` is a nested dict merged over the file (tests and the demo use it to point
    at temporary folders). `check_network` imports the network and checks it abstractly
    (:func:`trainer.network.load.build`, imports JAX); without it only its file is found and
    hashed (what MPI server ranks do: they never run the network).
    """
    path = Path(path)
    raw = _read_file(path)
    if overrides:
        raw = _merge(raw, overrides)
    try:
        cfg = _build(raw, path)
        if check_network:
            from trainer.network import load
            load.build(cfg.network_source, load.input_spec(cfg), cfg.train.batch_size)
        return cfg
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
    if "hidden" in _section(raw, "network"):
        raise ConfigError("network.hidden: moved to network.options.hidden (an option of the dnn "
                          "network): write it under [network.options]")
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
    from trainer.network.load import resolve
    network = sections["network"]
    if network.compile_cache not in ("", "off"):
        sections["network"] = dataclasses.replace(
            network, compile_cache=_resolve(base, network.compile_cache))
    return ModelConfig(
        network_source=resolve(network.model, network.options, base.resolve()),
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
