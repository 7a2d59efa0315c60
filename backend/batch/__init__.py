"""Batch prediction: score a dataset version or a CSV / Parquet file with a registry model version on Triton.

Pages and the CLI use the services re-exported here; ``jobs/batch_predict.py`` runs
``run_batch_prediction`` (loaded on first use: it brings Triton's client and MLflow's model code).
Cron schedules of batch jobs are created with ``create_batch_schedule`` and managed in
``backend.schedules``.
"""

from __future__ import annotations

import importlib
from typing import Any

from backend.batch.progress import RowProgress, format_row_progress, parse_row_progress
from backend.batch.service import (
    BATCH_JOB_KIND,
    BatchJobInfo,
    BatchJobPage,
    ModelChoice,
    batch_job_info,
    build_batch_spec,
    create_batch_schedule,
    export_batch_output,
    get_batch_job,
    list_batch_jobs,
    list_model_choices,
    preview_batch_output,
    submit_batch_prediction,
)
from backend.batch.spec import (
    COLUMN_CHOICES,
    OUTPUT_FORMATS,
    BatchSpec,
    InputRef,
    ModelRef,
    default_output_dataset,
    parse_batch_spec,
    parse_input_ref,
    parse_model_ref,
)

_LAZY = {
    "BatchCancelled": "backend.batch.runner",
    "BatchResult": "backend.batch.runner",
    "run_batch_prediction": "backend.batch.runner",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "BATCH_JOB_KIND",
    "COLUMN_CHOICES",
    "OUTPUT_FORMATS",
    "BatchCancelled",
    "BatchJobInfo",
    "BatchJobPage",
    "BatchResult",
    "BatchSpec",
    "InputRef",
    "ModelChoice",
    "ModelRef",
    "RowProgress",
    "batch_job_info",
    "build_batch_spec",
    "create_batch_schedule",
    "default_output_dataset",
    "export_batch_output",
    "format_row_progress",
    "get_batch_job",
    "list_batch_jobs",
    "list_model_choices",
    "parse_batch_spec",
    "parse_input_ref",
    "parse_model_ref",
    "parse_row_progress",
    "preview_batch_output",
    "run_batch_prediction",
    "submit_batch_prediction",
]
