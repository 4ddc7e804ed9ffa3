"""From ``[network]`` to a checked :class:`~trainer.network.api.Network`.

``[network] model`` names the factory:

- a zoo name, e.g. ``"dnn"``: the function ``network`` of ``trainer/network/zoo/<name>.py``;
- ``"path/to/file.py:factory"``: the function ``factory`` of that file (a relative path is
  relative to the config file, like ``data_root``).

The factory is called as ``factory(spec, **options)`` (``options`` = ``[network.options]``).
:func:`resolve` is cheap (no import: the name is known or the file exists, and its sha256);
:func:`build` imports the code, calls the factory and checks the network with one abstract
evaluation (``jax.eval_shape``: no compile, no arrays) of ``init`` and of ``apply`` on a dummy
batch. Every refusal is a :class:`trainer.config.ConfigError` naming the key.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from trainer.network.api import InputSpec, Inputs, Network
from trainer.network.layout import ParamLayout

__all__ = ["NetworkSource", "Built", "zoo_names", "resolve", "input_spec", "factory_of", "build",
           "check_saved"]

ZOO_PACKAGE = "trainer.network.zoo"
ZOO_FACTORY = "network"


def _error(key: str, problem: str):
    from trainer.config import ConfigError
    return ConfigError(f"{key}: {problem}")


def zoo_names() -> list[str]:
    """The built-in network names (the modules of ``trainer/network/zoo/``)."""
    package = importlib.import_module(ZOO_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


@dataclass(frozen=True)
class NetworkSource:
    """Where a network's code is: what ``meta.json`` and ``config_hash`` record."""

    model: str  #: as configured: a zoo name or "path.py:factory"
    kind: str  #: "zoo" | "file"
    path: str  #: absolute path of the Python file
    factory: str  #: function name in that file
    sha256: str  #: of the file's bytes (a zoo model's: with the zoo code it may import)
    options: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {"model": self.model, "kind": self.kind, "factory": self.factory,
                "sha256": self.sha256, "options": self.options}


def resolve(model: str, options: Mapping, config_dir: Path) -> NetworkSource:
    """Find the factory's file (no import yet) and hash it."""
    if not isinstance(model, str) or not model:
        raise _error("network.model", f"a zoo name or 'file.py:factory' is required, got {model!r}")
    if ":" not in model and not model.endswith(".py"):
        known = zoo_names()
        if model not in known:
            raise _error("network.model", f"unknown network {model!r} (the zoo has: "
                                          f"{', '.join(known)}; or give 'file.py:factory')")
        path = Path(importlib.util.find_spec(f"{ZOO_PACKAGE}.{model}").origin)
        kind, factory = "zoo", ZOO_FACTORY
    else:
        file, _, factory = model.rpartition(":")
        if not file or not factory.isidentifier():
            raise _error("network.model", f"{model!r}: expected 'path/to/file.py:factory'")
        path = Path(file) if Path(file).is_absolute() else (config_dir / file)
        if not path.is_file():
            raise _error("network.model", f"{model!r}: file {path.resolve()} does not exist")
        kind = "file"
    return NetworkSource(model=model, kind=kind, path=str(path.resolve()), factory=factory,
                         sha256=_code_sha256(path, kind), options=dict(options))


def _code_sha256(path: Path, kind: str) -> str:
    """sha256 of a network's code. A zoo model may import the other zoo files and
    ``trainer/network/layers.py`` (deepfm builds on wide_deep), so an edit to any of them
    changes every zoo model's hash; a user's file is hashed alone."""
    digest = hashlib.sha256(path.read_bytes())
    if kind == "zoo":
        shared = sorted(path.parent.glob("*.py")) + [path.parent.parent / "layers.py"]
        for file in shared:
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def input_spec(cfg, dense_dim: int | None = None) -> InputSpec:
    """The :class:`InputSpec` of model config ``cfg`` (``dense_dim`` defaults to one per dense
    column; the job passes the width found in the partition's schema)."""
    sequences = dict(getattr(cfg.columns, "sequences", None) or {})
    return InputSpec(slots=tuple(s for s in cfg.columns.slots if s not in sequences),
                     dim=int(cfg.table.dim),
                     dense_dim=len(cfg.columns.dense) if dense_dim is None else int(dense_dim),
                     sequences=sequences)


@dataclass(frozen=True)
class Built:
    """A checked network and what the framework needs to run it."""

    network: Network
    spec: InputSpec
    layout: ParamLayout
    source: NetworkSource

    def record(self, prior_logit: float = 0.0) -> dict:
        """``meta.json``'s ``network``: the source, its options, parameter names and shapes, and
        the chain's prior logit (:func:`prior_logit_of`)."""
        return {**self.source.record(), "parameters": self.layout.record(),
                "num_params": self.layout.num_params, "prior_logit": float(prior_logit)}


def prior_logit_of(record: dict | None) -> float:
    """The constant the framework adds to every logit of a chain: ``logit(initial_ctr)``, fixed
    when the chain's first version is trained (``network.initial_ctr``) and carried by every
    version's ``network`` record, so a new model's first predictions start at that CTR whatever
    the network (0 for versions made before it was recorded)."""
    return float((record or {}).get("prior_logit", 0.0))


def factory_of(source: NetworkSource):
    """The factory function named by `source` (imports its module)."""
    if source.kind == "zoo":
        name = f"{ZOO_PACKAGE}.{source.model}"
        try:
            module = importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - reported with the key
            raise _error("network.model", f"importing zoo network {source.model!r} failed: "
                                          f"{type(err).__name__}: {err}") from err
    else:
        name = f"streamtrain_network_{source.sha256[:16]}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, source.path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses and pickling look the module up
            try:
                spec.loader.exec_module(module)
            except Exception as err:  # noqa: BLE001 - reported with the key
                del sys.modules[name]
                raise _error("network.model", f"importing {source.path} failed: "
                                              f"{type(err).__name__}: {err}") from err
    factory = getattr(module, source.factory, None)
    if factory is None:
        raise _error("network.model", f"{source.path} defines no {source.factory!r}")
    if not callable(factory):
        raise _error("network.model", f"{source.path}: {source.factory!r} is not callable")
    return factory


def build(source: NetworkSource, spec: InputSpec, batch_size: int) -> Built:
    """Import, call the factory, check ``init`` and ``apply`` abstractly (``jax.eval_shape``)."""
    import jax

    factory = factory_of(source)
    try:
        network = factory(spec, **source.options)
    except TypeError as err:
        raise _error("network.options", f"{source.model} does not take these options: {err}") from err
    except ValueError as err:
        raise _error("network.options", f"{source.model} refused its options: {err}") from err
    if not isinstance(network, Network):
        raise _error("network.model", f"{source.model}: the factory returned "
                                      f"{type(network).__name__}, not a Network (init and apply)")
    try:
        shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0))
    except Exception as err:  # noqa: BLE001 - reported with the key
        raise _error("network.model", f"{source.model}: init failed: {type(err).__name__}: {err}") from err
    _check_params(source.model, shapes)
    try:
        logits = jax.eval_shape(network.apply, shapes, dummy_inputs(spec, batch_size))
    except Exception as err:  # noqa: BLE001 - reported with the key
        raise _error("network.model", f"{source.model}: apply failed on a dummy batch of "
                                      f"{batch_size} rows: {type(err).__name__}: {err}") from err
    if getattr(logits, "shape", None) != (batch_size,) or logits.dtype != np.float32:
        raise _error("network.model", f"{source.model}: apply must return float32 logits of "
                                      f"shape ({batch_size},), got {_describe(logits)}")
    return Built(network, spec, ParamLayout.of(shapes), source)


def _check_params(model: str, shapes) -> None:
    if not isinstance(shapes, Mapping):
        raise _error("network.model", f"{model}: init must return a dict of name -> array, got "
                                      f"{type(shapes).__name__}")
    for name, value in shapes.items():
        if not isinstance(name, str) or not name:
            raise _error("network.model", f"{model}: init returned a parameter named {name!r} "
                                          f"(names are non-empty strings)")
        if getattr(value, "dtype", None) != np.float32:
            raise _error("network.model", f"{model}: parameter {name!r} must be a float32 "
                                          f"array, got {_describe(value)}")


def _describe(value) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{value.dtype} of shape {tuple(value.shape)}"
    return type(value).__name__


def dummy_inputs(spec: InputSpec, batch_size: int) -> Inputs:
    """Abstract inputs (``jax.ShapeDtypeStruct``) of one padded batch."""
    import jax

    def f32(*shape):
        return jax.ShapeDtypeStruct(shape, np.float32)

    return Inputs(pooled=f32(batch_size, spec.num_fields, spec.dim), wide=f32(batch_size),
                  dense=f32(batch_size, spec.dense_dim),
                  sequences={s: f32(batch_size, n, spec.dim) for s, n in spec.sequences.items()},
                  masks={s: f32(batch_size, n) for s, n in spec.sequences.items()})


def check_saved(saved: dict | None, mine: dict, what: str) -> list[str]:
    """Refuse loading a version made by another network; returns warnings (code changed).

    ``saved`` is the version's ``meta.json`` ``network`` record, ``mine`` the job's
    (:meth:`Built.record`); ``what`` names the version. Model and options must be equal and
    the parameters the same names and shapes; a changed sha256 of the same network's code
    (an edited file) is a warning.
    """
    from trainer.store import ChainError

    if not saved:
        raise ChainError(f"{what}: meta.json records no network (made before networks were "
                         f"recorded); it cannot be loaded into network {mine['model']!r}")
    for key in ("model", "options"):
        if saved.get(key) != mine[key]:
            raise ChainError(f"{what}: made by network {key} {saved.get(key)!r}, the config has "
                             f"{mine[key]!r}")
    difference = ParamLayout.from_record(mine["parameters"]).first_difference(
        ParamLayout.from_record(saved.get("parameters", [])))
    if difference:
        raise ChainError(f"{what}: made by another network: "
                         f"{difference.replace('there', 'in the chain')}")
    if saved.get("sha256") != mine["sha256"]:
        return [f"{what}: the code of network {mine['model']!r} changed since (sha256 "
                f"{str(saved.get('sha256'))[:12]} -> {mine['sha256'][:12]}); same parameters, "
                f"loading"]
    return []
