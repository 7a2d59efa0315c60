"""Ticks until told to stop: the long-running job for cancel, kill and live-log tests.

Params: ``ticks`` (how many), ``interval`` (seconds between ticks), ``cooperative`` (stop by itself
when a cancel is requested), ``ignore_sigterm`` (a job stuck where SIGTERM cannot reach it).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from backend.jobs.runtime import JobCancelled, JobContext, run_job


def main(ctx: JobContext) -> dict[str, Any]:
    if ctx.params.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ticks = int(ctx.params.get("ticks", 600))
    interval = float(ctx.params.get("interval", 0.05))
    for tick in range(ticks):
        print(f"tick {tick}")
        ctx.progress((tick + 1) / ticks, f"tick {tick + 1}/{ticks}")
        if ctx.params.get("cooperative") and ctx.cancel_requested():
            raise JobCancelled(f"stopped cleanly after tick {tick}")
        time.sleep(interval)
    return {"ticks": ticks}


if __name__ == "__main__":
    run_job(main)
