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


def json_safe(value):
    """``value`` with every NaN or infinite float (numpy floats too; also inside dicts, lists and
    tuples) replaced by ``None``, JSON's ``null``.

    >>> json_safe({"auc": float("nan"), "bins": [0.5, float("inf")]})
    {'auc': None, 'bins': [0.5, None]}
    """
    if isinstance(value, float):  # numpy.float64 is a float subclass
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def strict_dumps(value, **kwargs) -> str:
    """``json.dumps`` that never writes ``NaN`` / ``Infinity`` (``allow_nan=False`` checks it)."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
