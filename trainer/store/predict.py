"""Scoring Parquet files of the input schema with a committed version: no MPI, no optimizer state.

The chain is loaded the way the training job's servers load it: base, then deltas in order,
through ``SparseTable.load`` (:meth:`trainer.store.load.Chain.load_into`), into one table whose
rule keeps no optimizer state (``opt_state`` is never read). Features the model does not hold
(never admitted, still pending, evicted) read as zeros, as in training. Batches come from
``trainer.reader``, scores from the network's forward pass
(:meth:`trainer.network.step.Step.predict`, the training step's forward).

The input is one Parquet file or a folder (a partition: every data file of it, by name, as the
job reads a partition). The label column is optional: without it the rows are scored and the
output's ``label`` is null; with it the summary also carries the metrics of the hour
(:class:`trainer.metrics.ProgressiveMetrics`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import StoreError
from .layout import version_name
from .load import load_chain

#: the summary's metrics, when the input has the label column
METRICS = ("auc", "logloss", "pred_ctr", "actual_ctr", "copc")


def version_id(text: str | None) -> str | None:
    """A version as the user may type it: ``v1``, ``v000001``, ``1`` -> ``'v000001'``; ``None``
    or ``head`` -> ``None`` (the head).

    >>> version_id("v1"), version_id("000012"), version_id("head")
    ('v000001', 'v000012', None)
    """
    if text is None or text == "head":
        return None
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit() or int(digits) < 1:
        raise StoreError(f"version {text!r}: expected head, v<number> (v1 or v000001) or a number")
    return version_name(int(digits))


def model_table(chain):
    """A ``pstable.SparseTable`` holding the chain's rows (weights only), loaded through
    ``SparseTable.load`` as the job's servers load it; ``pull`` gives a feature's row."""
    import pstable

    table = pstable.SparseTable(pstable.TableConfig(dim=chain.dim, optimizer={"rule": "sgd"}))
    chain.load_into(table, weights_only=True)
    return table


def input_files(input_path: str, s3=None) -> tuple:
    """The ``Partition`` view and the data files of ``input_path``: one Parquet file, or a
    folder whose data files (names not starting with ``_`` or ``.``) are read by name, as the
    job reads a partition (no ``_SUCCESS`` needed). A local path or a pyarrow URI (``s3://…``
    with the config's ``[s3]`` settings)."""
    from trainer import partition

    fs, path = partition.open_root(input_path, s3)
    part = partition.Partition(data_root=input_path, hour=-1, fs=fs, path=path)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        files = partition.list_files(part, checksums=False)
        if not files:
            raise partition.InputError(f"{input_path}: no data files in this folder",
                                       file=input_path)
        return part, files
    if info.type == pafs.FileType.File:
        return part, [partition.DataFile(name=info.base_name, path=path, bytes=int(info.size))]
    raise partition.InputError(f"{input_path}: no such file or folder", file=input_path)


def _has_column(fs: pafs.FileSystem, path: str, name: str) -> bool:
    try:
        with fs.open_input_file(path) as handle:
            return pq.ParquetFile(handle).schema_arrow.get_field_index(name) >= 0
    except (pa.ArrowException, OSError):
        return False  # check_schema names the unreadable file


def predict(cfg, version: str | None, input_path: str, output_path: str, *,
            batch_size: int | None = None) -> dict:
    """Score ``input_path`` (a Parquet file or a folder of them) with ``version`` (default: the
    head; ``v1``, ``v000001`` or ``1``) of ``cfg.model_dir``.

    Writes ``output_path`` (Parquet: ``pred`` float32, ``label`` float32, null when the input has
    no label column, one row per input row in file order) and returns a summary dict (with
    ``metrics`` when the input is labelled). Rows the config would reject fail the call
    (``bad_rows`` is forced to "fail" so the output stays aligned with the input). Batches of
    ``batch_size`` rows (default ``train.batch_size``: the training step's shapes). A version
    made by another network than the config's is refused.
    """
    from trainer import partition, reader
    from trainer.metrics import ProgressiveMetrics
    from trainer.network import load as network_load
    from trainer.network import step as network_step

    chain = load_chain(cfg.model_dir, head=version_id(version), num_shards=cfg.table_num_shards)
    if not len(chain):
        raise StoreError(f"{cfg.model_dir}: no committed version to predict with")
    head = chain.head
    dense = chain.read_dense(head)
    if "params" not in dense:
        raise StoreError(f"version {head}: dense.npz has no 'params' array ({sorted(dense)})")
    columns = cfg.columns
    if dataclasses.is_dataclass(columns) and getattr(columns, "bad_rows", "fail") != "fail":
        columns = dataclasses.replace(columns, bad_rows="fail")
    part, files = input_files(input_path, getattr(cfg, "s3", None))
    labelled = bool(columns.label) and _has_column(part.fs, files[0].path, columns.label)
    if not labelled:
        columns = dataclasses.replace(columns, label="")  # unlabelled rows: scored, no metrics
    files, dense_dim = partition.check_schema(part, files, columns)
    units = partition.assign_work(files, 1)[0]  # every row group, in (file, row group) order
    batch_size = batch_size or cfg.train.batch_size
    built = network_load.build(cfg.network_source, network_load.input_spec(cfg, dense_dim),
                               batch_size)
    saved_network = chain.get(head).meta.get("network")
    network_load.check_saved(saved_network, built.record(), f"version {head}")
    if dense["params"].size != built.layout.num_params:
        raise StoreError(f"version {head}: dense has {dense['params'].size} parameters, the "
                         f"config's network on this input needs {built.layout.num_params}")
    if cfg.compile_cache_dir:
        network_step.use_compile_cache(cfg.compile_cache_dir)
    step = network_step.Step(built, batch_size,
                             prior_logit=network_load.prior_logit_of(saved_network))
    table = model_table(chain)
    metrics = ProgressiveMetrics()
    preds, labels = [], []
    for batch in reader.BatchReader(units, columns, batch_size, filesystem=part.fs):
        d = reader.dedup(batch)
        pred = step.predict(dense["params"], batch, d, table.pull(d.keys, d.slots))
        preds.append(pred)
        if labelled:
            labels.append(batch.labels)
            metrics.update(batch.labels, pred, batch.shows)
    pred = np.concatenate(preds).astype(np.float32) if preds else np.zeros(0, np.float32)
    label = (pa.array(np.concatenate(labels) if labels else np.zeros(0, np.float32), pa.float32())
             if labelled else pa.nulls(pred.size, pa.float32()))
    pq.write_table(pa.table({"pred": pred, "label": label}), output_path)
    summary = {"version": head, "chain": [v.version for v in chain.versions],
               "rows": int(pred.size), "model_rows": len(table), "files": len({u.path for u in units}),
               "output": str(output_path), "labelled": labelled,
               "mean_pred": float(pred.mean()) if pred.size else None}
    if labelled:
        got = metrics.get()
        summary["metrics"] = {k: got[k] for k in METRICS}
    return summary
