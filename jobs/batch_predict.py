"""Batch prediction job: ``python -m jobs.batch_predict --job-id N`` (started by the worker)."""

from __future__ import annotations

import os
from typing import Any

from backend.batch.runner import BatchCancelled, run_batch_prediction
from backend.jobs.runtime import JobCancelled, JobContext, run_job


def main(ctx: JobContext) -> dict[str, Any]:
    # MLflow's download progress bars would fill the job's live log with carriage returns.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        result = run_batch_prediction(
            ctx.params,
            job_id=ctx.job_id,
            progress=ctx.progress,
            should_stop=ctx.cancel_requested,
            settings=ctx.settings,
        )
    except BatchCancelled as cancelled:
        raise JobCancelled(str(cancelled)) from None
    ctx.log.info(
        "scored %s rows at %.0f rows/s; output dataset %s:%s",
        f"{result.rows:,}",
        result.rows_per_second,
        result.output_dataset,
        result.output_version,
    )
    return result.as_dict()


if __name__ == "__main__":
    run_job(main)
