"""Returns its parameters at once: the shortest successful job."""

from __future__ import annotations

import os
from typing import Any

from backend.jobs.runtime import JobContext, run_job


def main(ctx: JobContext) -> dict[str, Any]:
    print(f"echo job {ctx.job_id} says {ctx.params.get('message', '')}")
    ctx.progress(0.5, "halfway")
    return {"echo": ctx.params, "attempt": ctx.attempt, "pid": os.getpid()}


if __name__ == "__main__":
    run_job(main)
