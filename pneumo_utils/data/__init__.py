"""The data set: one index of its files, its splits, and the loaders that turn index slices into arrays.

Promises: nothing else in the package walks the data folders; a split is always a slice of the index, with no
patient and no byte-identical image on two sides. Imports only ``config``, ``images`` and ``outputs`` (and
``records``); the model, explanations and runs sit above it. ``audit`` (shortcut cues), ``synthetic`` (a small
X-ray-like set for tests) and ``download`` (fetching a data set) are modules of their own, imported by name.

The index, split and loading functions are re-exported here, so ``data.index_dataset(...)`` reads as in the
notebooks.
"""

from pneumo_utils.config import CLASS_NAMES
from pneumo_utils.data.index import (
    EXPECTED_LAYOUT,
    SPLIT_LABELS,
    SPLIT_NAMES,
    SPLITS,
    TEST_HALVES,
    DatasetLayoutError,
    check_layout,
    counts_table,
    dataset_fingerprint,
    duplicate_report,
    file_hash,
    index_dataset,
    layout_warnings,
    parse_patient_id,
    problems,
    scored_splits,
    split_label,
    summary,
    test_half,
    test_half_counts,
)
from pneumo_utils.data.loading import (
    load_split,
    make_dataset,
)
from pneumo_utils.data.splits import (
    SHIFT_VIEWS,
    acquisition_id,
    grouped_split,
    normal_batch,
    select_split,
    shift_view,
    shift_view_counts,
    split_overlap,
)
