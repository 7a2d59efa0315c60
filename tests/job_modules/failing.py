"""Fails the way a job with bad input does: a log line, then an exception."""

from __future__ import annotations

from typing import Any

from backend.errors import InvalidInputError
from backend.jobs.runtime import JobContext, run_job


def main(ctx: JobContext) -> dict[str, Any]:
    print("checking the target column")
    if ctx.params.get("user_error", True):
        raise InvalidInputError("target column 'churned' is constant: nothing to learn")
    raise ZeroDivisionError("division by zero")


if __name__ == "__main__":
    run_job(main)
