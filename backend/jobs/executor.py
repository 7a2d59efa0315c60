"""Executors run a claimed job's entry module somewhere and report how it ended.

The worker owns the queue and the job rows; an executor only starts, polls and stops runs. Its
contract (``JobExecutor``):

- ``start(job, log_file=...)`` launches ``python -m <job.entry_module> --job-id <job.id>`` with the
  worker's ``SEXTANT_*`` environment and returns a handle at once; the run's stdout and stderr end
  up in ``log_file``.
- ``poll(handle)`` never blocks: None while the run is alive, else its exit status in
  ``subprocess`` terms (0 ok, > 0 an exit code, < 0 the number of the signal that killed it).
- ``terminate(handle, force=False)`` asks the run to stop (SIGTERM, the runtime's cue to stop
  cleanly); ``force=True`` stops it at once (SIGKILL). Both are safe to call after it ended.

``LocalSubprocessExecutor`` runs each job as a child process in its own session (process group),
so a signal reaches the job and every helper process it started, and a terminal's Ctrl-C aimed at
the worker does not hit the jobs.

A cluster engine plugs in behind the same three calls; the worker and the queue do not change.
Either needs the metadata DB on PostgreSQL reachable from the cluster and the workspace
(datasets, MLflow artifacts) on shared storage, and takes its settings from the worker's.

- Ray Jobs: ``start`` calls ``JobSubmissionClient.submit_job(entrypoint="python -m <module> --job-id N",
  submission_id="sextant-job-N-<attempt>", runtime_env={"env_vars": {...SEXTANT_*...}})``; ``poll``
  maps ``get_job_status`` (SUCCEEDED → 0, FAILED → 1, STOPPED → -SIGTERM); ``terminate`` calls
  ``stop_job``; a small thread copies ``tail_job_logs`` into ``log_file``.
- Kubernetes Jobs: ``start`` creates a ``batch/v1`` Job (``backoffLimit: 0``; the queue owns
  retries) running the Sextant image with that command and the environment from a Secret; ``poll``
  reads the pod's terminated state (exit code, or ``-9`` for ``OOMKilled``); ``terminate`` deletes
  the Job with ``gracePeriodSeconds`` (0 when forced); logs are streamed from the pod into ``log_file``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from backend.config import Settings, get_settings
from backend.jobs.service import JobInfo

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ExecutionHandle:
    job_id: int
    attempt: int
    # The local process (group) id; None for executors whose runs live elsewhere.
    pid: int | None
    # The executor's own name for the run: a pid, a Ray submission id, a Kubernetes Job name.
    external_id: str


class JobExecutor(ABC):
    @abstractmethod
    def start(self, job: JobInfo, *, log_file: Path) -> ExecutionHandle: ...

    @abstractmethod
    def poll(self, handle: ExecutionHandle) -> int | None: ...

    @abstractmethod
    def terminate(self, handle: ExecutionHandle, *, force: bool = False) -> None: ...


def job_command(job: JobInfo, python: str = sys.executable) -> list[str]:
    return [python, "-m", job.entry_module, "--job-id", str(job.id)]


def job_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment, pinned to the worker's workspace and database."""
    env = dict(os.environ if base is None else base)
    env["SEXTANT_HOME"] = str(settings.resolved_home)
    env["SEXTANT_DATABASE_URL"] = settings.resolved_database_url
    # Live logs: without this, print() output sits in a block buffer until the job ends.
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(part for part in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if part)
    return env


class LocalSubprocessExecutor(JobExecutor):
    """Each job is a child process of the worker, in its own process group."""

    def __init__(self, *, settings: Settings | None = None, python: str = sys.executable, cwd: Path = REPO_ROOT):
        self._settings = settings or get_settings()
        self._python = python
        self._cwd = cwd
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, job: JobInfo, *, log_file: Path) -> ExecutionHandle:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            process = subprocess.Popen(
                job_command(job, self._python),
                cwd=self._cwd,
                env=job_environment(self._settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        handle = ExecutionHandle(job_id=job.id, attempt=job.attempts, pid=process.pid, external_id=str(process.pid))
        self._processes[handle.external_id] = process
        return handle

    def poll(self, handle: ExecutionHandle) -> int | None:
        process = self._processes[handle.external_id]
        returncode = process.poll()
        if returncode is not None:
            # Helpers the job started (data loaders, tritonserver, ...) must not outlive it.
            _signal_group(process.pid, signal.SIGKILL)
            del self._processes[handle.external_id]
        return returncode

    def terminate(self, handle: ExecutionHandle, *, force: bool = False) -> None:
        process = self._processes.get(handle.external_id)
        if process is not None and process.returncode is None:
            _signal_group(process.pid, signal.SIGKILL if force else signal.SIGTERM)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def describe_exit(returncode: int) -> str:
    """Why a job process that did not record its own end stopped, in words."""
    if returncode < 0:
        try:
            name = f" ({signal.Signals(-returncode).name})"
        except ValueError:
            name = ""
        return f"job process exited with signal {-returncode}{name}"
    if returncode == 0:
        return "job process exited without recording a result"
    return f"job process exited with code {returncode} without recording a result; see the log"


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs on this host; a zombie (dead, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        stat = ""
    if stat:
        # The state letter follows the command name, which is in parentheses and may contain spaces.
        return stat.rpartition(")")[2].split()[:1] != ["Z"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command_line(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        raw = b""
    if raw:
        return raw.decode(errors="replace").rstrip("\0").split("\0")
    try:
        listed = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return listed.stdout.split() or None


def kill_orphaned_job_process(pid: int, job_id: int) -> bool:
    """SIGKILL a job process (and its group) left behind by a dead worker on this host.

    The pid is only trusted if it still runs ``--job-id <job_id>``: after a reboot or a long gap it
    may belong to something else.
    """
    if not process_alive(pid):
        return False
    command = _command_line(pid) or []
    if not any(a == "--job-id" and b == str(job_id) for a, b in itertools.pairwise(command)):
        return False
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True
