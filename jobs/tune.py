"""``tune`` job: an Optuna study (each trial a nested MLflow run); the best model is registered."""

from __future__ import annotations

import os
from typing import Any

from backend.jobs.runtime import JobCancelled, JobContext, run_job
from backend.training.service import TrainingCancelled
from backend.training.spec import parse_training_spec
from backend.training.tuning import run_tuning


def main(ctx: JobContext) -> dict[str, Any]:
    # MLflow's download progress bars would fill the job's live log with carriage returns.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    spec = parse_training_spec(ctx.params)
    try:
        result = run_tuning(
            spec, job_id=ctx.job_id, progress=ctx.progress, should_stop=ctx.cancel_requested, settings=ctx.settings
        )
    except TrainingCancelled as cancelled:
        raise JobCancelled(str(cancelled)) from None
    ctx.log.info("best trial %s of %s: %s", result.best_trial_number, result.trials_completed, result.mlflow_run_url)
    return result.as_job_result()


if __name__ == "__main__":
    run_job(main)
