"""Jobs: a DB-backed queue, a worker that runs each job as its own process, and the job runtime.

Pages, the CLI and the REST API use the services re-exported here; job entry modules use
``backend.jobs.runtime``; ``python -m backend.jobs.worker`` runs the queue.
"""

from backend.jobs.registry import JOB_KINDS, job_kinds, register_job_kind, unregister_job_kind
from backend.jobs.service import (
    FINISHED_STATUSES,
    JobInfo,
    JobLogChunk,
    JobPage,
    JobStatus,
    get_job,
    list_jobs,
    read_job_log,
    request_job_cancel,
    retry_job,
    submit_job,
)

__all__ = [
    "FINISHED_STATUSES",
    "JOB_KINDS",
    "JobInfo",
    "JobLogChunk",
    "JobPage",
    "JobStatus",
    "get_job",
    "job_kinds",
    "list_jobs",
    "read_job_log",
    "register_job_kind",
    "request_job_cancel",
    "retry_job",
    "submit_job",
    "unregister_job_kind",
]
