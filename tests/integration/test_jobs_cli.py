"""``sextant jobs list|show|logs|cancel|retry`` against a real database and worker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from backend.cli import app
from backend.config import Settings
from backend.jobs import JobStatus
from backend.jobs.worker import Worker
from tests.job_modules import register_test_job_kinds, unregister_test_job_kinds
from tests.job_modules.harness import current, drive, finished, submit, use_fast_settings

runner = CliRunner()


@pytest.fixture
def settings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    register_test_job_kinds()
    yield use_fast_settings(monkeypatch)
    unregister_test_job_kinds()


def sextant(*args: str) -> Result:
    return runner.invoke(app, list(args))


def json_of(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_and_show(settings: Settings) -> None:
    first = submit("test_echo", {"message": "one"})
    second = submit("test_sleep")

    listed = json_of(sextant("jobs", "list", "--json"))
    assert listed["total"] == 2 and [job["id"] for job in listed["jobs"]] == [second.id, first.id]
    only = json_of(sextant("jobs", "list", "--kind", "test_echo", "--status", "queued", "--json"))
    assert [job["id"] for job in only["jobs"]] == [first.id]

    table = sextant("jobs", "list")
    assert table.exit_code == 0
    assert "test_echo" in table.stdout and "test_sleep" in table.stdout and "queued" in table.stdout

    shown = json_of(sextant("jobs", "show", str(first.id), "--json"))
    assert shown["id"] == first.id and shown["status"] == "queued" and shown["params"] == {"message": "one"}
    text = sextant("jobs", "show", str(first.id))
    assert f"job {first.id}  test_echo  queued" in text.stdout and '"message": "one"' in text.stdout


def test_errors_go_to_stderr_with_a_non_zero_exit(settings: Settings) -> None:
    missing = sextant("jobs", "show", "999")
    assert missing.exit_code == 1
    assert "error: job 999 does not exist" in missing.stderr and missing.stdout == ""

    as_json = sextant("jobs", "show", "999", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout) == {"error": "job 999 does not exist"}

    bad_status = sextant("jobs", "list", "--status", "done")
    assert bad_status.exit_code == 1 and "unknown job status 'done'" in bad_status.stderr

    assert sextant("jobs", "logs", "999").exit_code == 1


def test_cancel_and_retry(settings: Settings) -> None:
    job = submit("test_echo", {"message": "again"})
    cancelled = json_of(sextant("jobs", "cancel", str(job.id), "--json"))
    assert cancelled["status"] == "cancelled"
    assert current(job.id).status == JobStatus.CANCELLED

    twice = sextant("jobs", "cancel", str(job.id))
    assert twice.exit_code == 1 and f"job {job.id} already cancelled" in twice.stderr

    retried = json_of(sextant("jobs", "retry", str(job.id), "--json"))
    assert retried["retry_of"] == job.id and retried["params"] == {"message": "again"}
    assert retried["status"] == "queued" and retried["id"] != job.id
    text = sextant("jobs", "cancel", str(retried["id"]))
    assert text.exit_code == 0 and f"job {retried['id']} cancelled" in text.stdout


def test_cancel_of_a_running_job_says_the_worker_stops_it(settings: Settings) -> None:
    worker = Worker(settings=settings)
    job = submit("test_sleep")
    try:
        drive(worker, lambda: current(job.id).pid is not None)
        result = sextant("jobs", "cancel", str(job.id))
        assert result.exit_code == 0
        assert f"cancel requested for job {job.id} (running)" in result.stdout
        drive(worker, finished(job.id))
        assert current(job.id).status == JobStatus.CANCELLED
    finally:
        worker.shutdown()


def test_logs_follow_streams_until_the_job_ends(settings: Settings) -> None:
    job = submit("test_sleep", {"ticks": 12, "interval": 0.05})
    stop = threading.Event()
    worker = Worker(settings=settings)
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        followed = sextant("jobs", "logs", str(job.id), "--follow")
    finally:
        stop.set()
        thread.join(timeout=20)
    assert followed.exit_code == 0, followed.output
    lines = followed.stdout.splitlines()
    assert [line for line in lines if line.startswith("tick ")] == [f"tick {i}" for i in range(12)]
    assert f"job {job.id} succeeded" in followed.stdout
    assert current(job.id).status == JobStatus.SUCCEEDED

    plain = sextant("jobs", "logs", str(job.id))
    assert plain.exit_code == 0 and "tick 11" in plain.stdout
