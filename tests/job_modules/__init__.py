"""Job entry modules used only by the tests, and the kinds they register (never part of the product)."""

from __future__ import annotations

from backend.jobs import register_job_kind, unregister_job_kind

TEST_JOB_KINDS = {
    "test_echo": "tests.job_modules.echo",
    "test_sleep": "tests.job_modules.sleepy",
    "test_fail": "tests.job_modules.failing",
}


def register_test_job_kinds() -> None:
    for kind, module in TEST_JOB_KINDS.items():
        register_job_kind(kind, module)


def unregister_test_job_kinds() -> None:
    for kind in TEST_JOB_KINDS:
        unregister_job_kind(kind)
