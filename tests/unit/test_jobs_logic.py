"""Pure parts of the jobs package: registry, error and exit wording, staleness, log chunks, throttling."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.config import Settings
from backend.errors import InvalidInputError
from backend.jobs.executor import (
    LocalSubprocessExecutor,
    describe_exit,
    job_command,
    job_environment,
    kill_orphaned_job_process,
    process_alive,
)
from backend.jobs.queue import WORKER_STOPPED_REASON, WorkerInfo, interruption_reason
from backend.jobs.registry import JOB_KINDS, register_job_kind, resolve_entry_module, unregister_job_kind
from backend.jobs.runtime import Throttle, summarize_exception, validated_result
from backend.jobs.service import JobInfo, complete_utf8_prefix, validate_fraction
from backend.jobs.worker import Worker
from backend.models import UTCDateTime

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def job_info(**changes: object) -> JobInfo:
    fields: dict[str, object] = {
        "id": 7,
        "kind": "train",
        "status": "running",
        "params": {},
        "result": None,
        "error": None,
        "progress": None,
        "progress_message": "",
        "cancel_requested": False,
        "attempts": 1,
        "retry_of": None,
        "entry_module": "jobs.train",
        "pid": 4242,
        "worker_id": "w1",
        "log_path": None,
        "created_at": NOW - timedelta(minutes=1),
        "started_at": NOW - timedelta(seconds=30),
        "finished_at": None,
        "heartbeat_at": NOW - timedelta(seconds=1),
    }
    return JobInfo(**(fields | changes))  # type: ignore[arg-type]


def worker_info(**changes: object) -> WorkerInfo:
    fields: dict[str, object] = {
        "id": "w1",
        "hostname": "here",
        "pid": 100,
        "concurrency": 2,
        "started_at": NOW - timedelta(hours=1),
        "heartbeat_at": NOW,
        "stopped_at": None,
    }
    return WorkerInfo(**(fields | changes))  # type: ignore[arg-type]


class TestRegistry:
    def test_product_kinds_map_to_job_entry_modules(self) -> None:
        assert resolve_entry_module("train") == "jobs.train"
        assert resolve_entry_module("tune") == "jobs.tune"

    def test_register_and_unregister(self) -> None:
        register_job_kind("unit_test_kind", "tests.job_modules.echo")
        try:
            assert resolve_entry_module("unit_test_kind") == "tests.job_modules.echo"
            register_job_kind("unit_test_kind", "tests.job_modules.echo")  # the same mapping again is fine
            with pytest.raises(InvalidInputError, match="already registered"):
                register_job_kind("unit_test_kind", "tests.job_modules.sleepy")
            register_job_kind("unit_test_kind", "tests.job_modules.sleepy", replace=True)
            assert JOB_KINDS["unit_test_kind"] == "tests.job_modules.sleepy"
        finally:
            unregister_job_kind("unit_test_kind")
        with pytest.raises(InvalidInputError, match="unknown job kind 'unit_test_kind'; known kinds: "):
            resolve_entry_module("unit_test_kind")

    @pytest.mark.parametrize(
        ("kind", "module"),
        [("Bad Kind", "jobs.x"), ("", "jobs.x"), ("ok", "jobs x"), ("ok", "jobs..x"), ("ok", "-m evil")],
    )
    def test_bad_names_are_refused(self, kind: str, module: str) -> None:
        with pytest.raises(InvalidInputError):
            register_job_kind(kind, module)
        assert kind not in JOB_KINDS


class TestWording:
    def test_user_errors_keep_their_message(self) -> None:
        assert summarize_exception(InvalidInputError("target column 'y' is constant")) == (
            "target column 'y' is constant"
        )

    def test_other_errors_name_their_type_on_one_line(self) -> None:
        assert summarize_exception(ValueError("bad value\n  detail")) == "ValueError: bad value"
        assert summarize_exception(KeyError("col")) == "KeyError: 'col'"
        assert summarize_exception(RuntimeError()) == "RuntimeError"
        assert summarize_exception(SystemExit(3)) == "job exited early with status 3"
        long = summarize_exception(ValueError("x" * 2000))
        assert len(long) == 500 and long.endswith("…")

    def test_exit_statuses(self) -> None:
        assert describe_exit(-9) == "job process exited with signal 9 (SIGKILL)"
        assert describe_exit(-15) == "job process exited with signal 15 (SIGTERM)"
        assert describe_exit(0) == "job process exited without recording a result"
        assert describe_exit(3) == "job process exited with code 3 without recording a result; see the log"


class TestInterruption:
    stale = timedelta(seconds=30)

    def reason(self, job: JobInfo, owner: WorkerInfo | None, *, alive: bool = True) -> str | None:
        return interruption_reason(
            job=job, owner=owner, now=NOW, stale_after=self.stale, hostname="here", pid_alive=lambda _pid: alive
        )

    def test_a_heartbeating_job_of_a_live_worker_is_left_alone(self) -> None:
        assert self.reason(job_info(), worker_info()) is None
        assert self.reason(job_info(), worker_info(hostname="there"), alive=False) is None

    def test_a_dead_local_owner_is_noticed_at_once(self) -> None:
        assert self.reason(job_info(), worker_info(), alive=False) == f"{WORKER_STOPPED_REASON} (worker w1 is gone)"

    def test_a_stopped_owner_is_noticed_at_once(self) -> None:
        reason = self.reason(job_info(), worker_info(stopped_at=NOW))
        assert reason == f"{WORKER_STOPPED_REASON} (worker w1 shut down)"

    def test_silence_longer_than_the_stale_limit(self) -> None:
        silent = job_info(heartbeat_at=NOW - timedelta(seconds=31))
        assert self.reason(silent, worker_info(hostname="there")) == f"{WORKER_STOPPED_REASON} (no heartbeat for 31 s)"
        assert self.reason(job_info(heartbeat_at=NOW - timedelta(seconds=29)), None) is None
        assert self.reason(job_info(heartbeat_at=None, started_at=NOW - timedelta(minutes=5)), None) is not None


class TestLogChunks:
    @pytest.mark.parametrize("text", ["plain ascii", "é", "€uro", "🙂!", "aé€🙂"])
    def test_no_character_is_ever_split(self, text: str) -> None:
        data = text.encode()
        for cut in range(len(data) + 1):
            head = complete_utf8_prefix(data[:cut])
            assert data.startswith(head)
            head.decode("utf-8")  # never raises
            assert cut - len(head) < 4
            # Reading on from where the head ended yields the rest, intact.
            assert (head + data[len(head) :]).decode() == text


class TestDtos:
    def test_duration(self) -> None:
        assert job_info(started_at=None).duration_seconds is None
        done = job_info(started_at=NOW - timedelta(seconds=90), finished_at=NOW)
        assert done.duration_seconds == 90
        running = job_info(started_at=datetime.now(UTC) - timedelta(seconds=5))
        assert running.duration_seconds is not None and 4 < running.duration_seconds < 60

    def test_as_dict_is_plain_json(self) -> None:
        payload = json.loads(json.dumps(job_info(finished_at=NOW, status="succeeded").as_dict()))
        assert payload["status"] == "succeeded" and payload["duration_seconds"] == 30
        assert payload["started_at"] == "2026-01-01T11:59:30+00:00"

    def test_naive_database_times_are_utc(self) -> None:
        column = UTCDateTime()
        assert column.process_result_value(datetime(2026, 1, 1, 12), None) == NOW
        assert column.process_result_value(datetime(2026, 1, 1, 12), None).tzinfo is UTC
        assert column.process_result_value(None, None) is None


class TestRuntimeHelpers:
    def test_throttle(self) -> None:
        clock = iter([0.0, 0.5, 1.0, 1.2, 2.1]).__next__
        throttle = Throttle(1.0, clock)
        assert [throttle.ready() for _ in range(5)] == [True, False, True, False, True]

    def test_progress_is_clamped_and_nan_refused(self) -> None:
        assert validate_fraction(-1) == 0.0 and validate_fraction(0.25) == 0.25 and validate_fraction(7) == 1.0
        with pytest.raises(ValueError, match="NaN"):
            validate_fraction(float("nan"))

    def test_results_become_plain_json(self) -> None:
        class Float32:
            def item(self) -> float:
                return 0.5

        assert validated_result(None) == {}
        assert validated_result({"auc": Float32(), "bad": float("nan"), "nested": [float("inf"), 1]}) == {
            "auc": 0.5,
            "bad": None,
            "nested": [None, 1],
        }
        with pytest.raises(TypeError, match="returned a list, expected a dict"):
            validated_result([1])


class TestLocalProcesses:
    def test_job_environment_pins_the_workspace(self, settings: Settings) -> None:
        env = job_environment(settings, base={"PATH": "/bin", "PYTHONPATH": "/extra"})
        assert env["SEXTANT_HOME"] == str(settings.resolved_home)
        assert env["SEXTANT_DATABASE_URL"] == settings.resolved_database_url
        assert env["PYTHONUNBUFFERED"] == "1" and env["PATH"] == "/bin"
        assert env["PYTHONPATH"].endswith(":/extra")
        assert job_command(job_info(), "python") == ["python", "-m", "jobs.train", "--job-id", "7"]

    def test_executor_sends_output_to_the_log_and_reports_the_exit(self, settings: Settings, tmp_path: Path) -> None:
        executor = LocalSubprocessExecutor(settings=settings)
        log_file = tmp_path / "logs" / "job.log"
        handle = executor.start(job_info(entry_module="tests.job_modules.no_such_module"), log_file=log_file)
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while (returncode := executor.poll(handle)) is None and datetime.now(UTC) < deadline:
            time.sleep(0.01)
        assert returncode == 1
        assert "No module named tests.job_modules.no_such_module" in log_file.read_text()
        executor.terminate(handle)  # after the end: harmless

    def test_process_alive_treats_zombies_as_gone(self) -> None:
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        # Exited but not reaped yet: a zombie still answers kill(pid, 0).
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert datetime.now(UTC) < deadline
            time.sleep(0.01)
        assert not process_alive(child.pid)
        child.wait()
        assert not process_alive(child.pid)

    def test_only_a_process_running_that_job_is_killed_as_an_orphan(self) -> None:
        script = "import time; time.sleep(60)"
        other = subprocess.Popen([sys.executable, "-c", script, "--job-id", "8"], start_new_session=True)
        orphan = subprocess.Popen([sys.executable, "-c", script, "--job-id", "7"], start_new_session=True)
        try:
            assert process_alive(other.pid) and process_alive(orphan.pid)
            assert not kill_orphaned_job_process(other.pid, 7)
            assert kill_orphaned_job_process(orphan.pid, 7)
            assert orphan.wait(timeout=10) == -9
            assert other.poll() is None
        finally:
            other.kill()
            other.wait()

    def test_worker_refuses_an_unknown_interrupt_policy(self, settings: Settings) -> None:
        with pytest.raises(ValueError, match="on_interrupt"):
            Worker(settings=settings, on_interrupt="retry")  # type: ignore[arg-type]
