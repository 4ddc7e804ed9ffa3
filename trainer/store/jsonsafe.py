"""Strict JSON for everything the project writes: a non-finite float is written ``null``.

Python's ``json`` writes ``NaN`` and ``Infinity``, which strict parsers (browsers' ``JSON.parse``,
``jq``, Go, serving systems reading the donefile) refuse. An hour with one class only has no AUC:
``null`` says so.

>>> strict_dumps({"auc": float("nan"), "rows": 3, "x": [float("inf"), 1.5]})
'{"auc": null, "rows": 3, "x": [null, 1.5]}'
"""
from __future__ import annotations

import json
import math


def finite_or_none(value):
    """`value` with every non-finite float (also in dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def strict_dumps(value, **kwargs) -> str:
    """``json.dumps`` that never writes ``NaN`` / ``Infinity`` (``allow_nan=False`` checks it)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
