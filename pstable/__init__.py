"""pstable: the sparse parameter table of streamtrain (knows nothing of MPI, Parquet or Airflow).

One :class:`SparseTable` per logical shard holds the rows of the features ``(slot, key)``:
show/click counters, the last-seen hour, a 1-wide weight, an embedding and their optimizer state.
See ``docs/pstable.md``.
"""

from pstable.config import (AdmissionConfig, AdmissionPolicy, EvictionConfig, OptimizerConfig,
                            OptimizerRule, TableConfig, TableConfigError, opt_state_width)
from pstable._table import EXPORT_COLUMNS, PushResult, SparseTable, feature_hash

__all__ = [
    "SparseTable",
    "PushResult",
    "TableConfig",
    "OptimizerConfig",
    "AdmissionConfig",
    "EvictionConfig",
    "TableConfigError",
    "OptimizerRule",
    "AdmissionPolicy",
    "opt_state_width",
    "feature_hash",
    "EXPORT_COLUMNS",
]
