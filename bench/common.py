"""What every benchmark shares: result rows, sizes, measured subprocesses, servers on loopback.

Peak memory is read from the kernel's accounting of a child process (``os.wait4`` → ``ru_maxrss``),
so each side of a comparison runs in its own process: the parent's own imports never count.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
PROCFILE = REPO_ROOT / "infra" / "Procfile"
VENV_BIN = Path(sys.executable).parent
SEED = 20261126
Size = Literal["full", "smoke"]
SIZES: tuple[Size, ...] = ("full", "smoke")
Better = Literal["higher", "lower"]
MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


class BenchError(RuntimeError):
    """A benchmark could not run (a server did not start, a module is missing, ...)."""


@dataclass
class Result:
    """One row of the table: Sextant's figure, its baseline's, measured in the same run."""

    name: str
    unit: str
    sextant: float
    baseline_name: str
    baseline: float
    # "lower": seconds, bytes, latencies; the ratio is inverted so that > 1 always favours Sextant.
    better: Better
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.sextant <= 0 or self.baseline <= 0:
            raise BenchError(
                f"{self.name}: figures must be positive (sextant {self.sextant}, baseline {self.baseline})"
            )
        return self.sextant / self.baseline if self.better == "higher" else self.baseline / self.sextant

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "sextant": _round(self.sextant),
            "baseline_name": self.baseline_name,
            "baseline": _round(self.baseline),
            "ratio": _round(self.ratio),
            "better": self.better,
            **self.extra,
        }


def _round(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    digits = max(0, 3 - math.floor(math.log10(abs(value))))
    return round(value, digits)


def pick(size: Size, *, full: Any, smoke: Any) -> Any:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; use one of {SIZES}")
    return full if size == "full" else smoke


@contextmanager
def stage(label: str) -> Iterator[None]:
    """Print how long a step took (progress for `make bench`, and where the time goes)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        print(f"   · {label}: {time.perf_counter() - start:.1f} s", flush=True)


def median_seconds(function: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


# Measured child processes --------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    output: dict[str, Any]
    peak_rss_bytes: int
    wall_s: float


def run_measured(
    target: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300,
) -> Measured:
    """Run ``module:function(**kwargs)`` in a fresh Python; its returned dict and its peak RSS.

    The function returns a JSON-able dict (its own timings). ``ru_maxrss`` covers the child and
    the descendants it waited for, not servers it talks to.
    """
    with tempfile.TemporaryDirectory(prefix="sextant-bench-") as folder:
        output_path = Path(folder) / "output.json"
        log_path = Path(folder) / "child.log"
        command = [sys.executable, "-m", "bench.child", target, json.dumps(dict(kwargs or {})), str(output_path)]
        start = time.perf_counter()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=dict(env or bench_env()), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{target} ran past {timeout_s:.0f} s: {_tail(log_path)}")
                time.sleep(0.02)
        except BaseException:
            # Timed out, or the run was interrupted: the child must not outlive it.
            process.kill()
            os.wait4(process.pid, 0)
            raise
        wall = time.perf_counter() - start
        # Popen must not try to reap the child again.
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise BenchError(f"{target} exited with {process.returncode}: {_tail(log_path)}")
        return Measured(json.loads(output_path.read_text()), usage.ru_maxrss * 1024, wall)


def alternate(sides: Mapping[str, Callable[[], Measured]], *, repeat: int) -> dict[str, list[Measured]]:
    """Run each side ``repeat`` times, round-robin (A B A B ...): load that comes and goes on a shared
    machine then falls on every side alike, and the median of each side is compared."""
    runs: dict[str, list[Measured]] = {name: [] for name in sides}
    for _ in range(repeat):
        for name, side in sides.items():
            runs[name].append(side())
    return runs


def median_of(runs: list[Measured], key: str = "seconds") -> float:
    return statistics.median(run.output[key] for run in runs)


def peak_of(runs: list[Measured]) -> int:
    return max(run.peak_rss_bytes for run in runs)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


# Servers on loopback --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bench_env(**overrides: str) -> dict[str, str]:
    """This environment with the venv first on PATH (servers and Triton's stub find their Python there)."""
    env = dict(os.environ)
    # mlflow.set_tracking_uri / set_registry_uri export these for children: an earlier benchmark's
    # store must not leak into this one's processes.
    for key in MLFLOW_URI_VARIABLES:
        env.pop(key, None)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env.update(overrides)
    return env


def sextant_env(home: Path, **overrides: str) -> dict[str, str]:
    env = bench_env(**overrides)
    env["SEXTANT_HOME"] = str(home)
    env.pop("SEXTANT_DATABASE_URL", None)
    env.pop("SEXTANT_MLFLOW_TRACKING_URI", None)
    return env


@contextmanager
def sextant_home(home: Path, **overrides: str) -> Iterator[Path]:
    """Point this process's Settings at ``home`` (and ``SEXTANT_*`` overrides), restoring them afterwards."""
    from backend.config import reset_settings
    from backend.db import dispose_engines

    keys = {"SEXTANT_HOME", "SEXTANT_DATABASE_URL", "SEXTANT_MLFLOW_TRACKING_URI", *MLFLOW_URI_VARIABLES, *overrides}
    saved = {key: os.environ.get(key) for key in keys}
    os.environ["SEXTANT_HOME"] = str(home)
    os.environ.pop("SEXTANT_DATABASE_URL", None)
    os.environ.pop("SEXTANT_MLFLOW_TRACKING_URI", None)
    os.environ.update(overrides)
    reset_settings()
    try:
        yield home
    finally:
        dispose_engines()
        if "mlflow" in sys.modules:
            import mlflow

            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_settings()


class Server:
    """A process group started by a benchmark: its own session, stopped as a whole."""

    def __init__(self, name: str, command: list[str], *, env: Mapping[str, str], log_path: Path, start: bool = True):
        self.name = name
        self.command = command
        self.env = dict(env)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._descendants: list[tuple[int, int]] | None = None
        if start:
            self.start()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def started(self) -> bool:
        return self._process is not None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise BenchError(f"{self.name} was not started")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_http(
        self, url: str, *, timeout_s: float = 120, ok: Callable[[httpx.Response], bool] | None = None
    ) -> float:
        """Poll ``url`` until it answers 200 (or ``ok``); the seconds since the server was started."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                response = httpx.get(url, timeout=2)
                if ok(response) if ok else response.status_code == 200:
                    return time.monotonic() - self._started_at
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.process.returncode}: {_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not answer {url} within {timeout_s:.0f} s: {_tail(self.log_path)}")
            time.sleep(0.1)

    def terminate(self) -> None:
        """Ask the whole group to stop (SIGTERM) without waiting; ``stop`` finishes the job."""
        if self._process is None:
            return
        # Processes that left the group (tritonserver runs in its own session) are found by ancestry.
        if self._descendants is None:
            self._descendants = descendants(self.process.pid)
        if self.process.poll() is None:
            with _suppress_lookup():
                os.killpg(self.process.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the group and every descendant seen, at once."""
        if self._process is None:
            return
        seen = self._descendants if self._descendants is not None else descendants(self._process.pid)
        with _suppress_lookup():
            os.killpg(self._process.pid, signal.SIGKILL)
        for pid, start in seen:
            if _same_process(pid, start):
                with _suppress_lookup():
                    os.kill(pid, signal.SIGKILL)
        self._process.wait()

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM, wait for the leader and every descendant to exit, SIGKILL what is left at the deadline.

        The leader may be ``sh``, which dies at once: its children's graceful exit is waited for too.
        """
        if self._process is None:
            return
        self.terminate()
        deadline = time.monotonic() + timeout_s
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout_s)
        seen = self._descendants or []
        while [item for item in seen if _same_process(*item)] and time.monotonic() < deadline:
            time.sleep(0.05)
        self.kill()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command sits in parentheses and may itself contain ") ".
    return stat[stat.rfind(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _same_process(pid: int, start: int) -> bool:
    """``pid`` still runs the process seen earlier: not gone, not a zombie, not a reuse of its number."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == start


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, start ticks) of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(")") + 2 :].split()[1]), []).append(int(entry.name))
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        start = _start_ticks(pid)
        if start is not None:
            found.append((pid, start))
    return found


@contextmanager
def _suppress_lookup() -> Iterator[None]:
    with suppress(ProcessLookupError, PermissionError):
        yield


@contextmanager
def running(*servers: Server) -> Iterator[None]:
    """Stop every server on exit, all at once (each may take seconds to drain)."""
    try:
        yield
    finally:
        live = [server for server in servers if server.running()]
        interrupted: BaseException | None = None
        with stage(f"stop {', '.join(server.name for server in live)}") if live else nullcontext():
            for server in servers:
                server.terminate()
            for server in servers:
                try:
                    server.stop()
                except KeyboardInterrupt as error:
                    # Interrupted while waiting: the others must still go.
                    interrupted = error
                    server.kill()
        if interrupted is not None:
            raise interrupted


_MLFLOW_TEMPLATE: list[Path] = []


def new_mlflow_store(path: Path) -> str:
    """An empty MLflow SQLite store at ``path``, copied from one made once per process.

    Creating MLflow's schema runs its whole migration chain (≈ 1.3 s here); the benchmarks make
    several fresh stores per run.
    """
    import shutil

    if not _MLFLOW_TEMPLATE or not _MLFLOW_TEMPLATE[0].exists():
        from mlflow import MlflowClient

        folder = Path(tempfile.mkdtemp(prefix="sextant-bench-mlflow-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = folder / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        _MLFLOW_TEMPLATE[:] = [template]
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_MLFLOW_TEMPLATE[0], path)
    return f"sqlite:///{path}"


def procfile_command(process: str) -> str:
    """The shell line ``infra/Procfile`` runs for ``process`` (servers start here as `make run` starts them)."""
    for line in PROCFILE.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == process and not name.startswith("#"):
            return command.strip()
    raise BenchError(f"infra/Procfile has no {process!r} process")


def procfile_server(
    process: str, *, variables: Mapping[str, str], env: Mapping[str, str], log_path: Path, start: bool = True
) -> Server:
    """Start a Procfile line with its ``$VARIABLES`` filled from ``variables`` (by ``sh -c``, as honcho runs it)."""
    line = procfile_command(process)
    missing = sorted(set(re.findall(r"\$(\w+)", line)) - set(variables))
    if missing:
        raise BenchError(f"no value for {', '.join(missing)} in the Procfile's {process!r} line")
    full_env = {**env, **variables}
    return Server(process, ["/bin/sh", "-c", line], env=full_env, log_path=log_path, start=start)


def mlflow_server(
    *, backend_store_uri: str, artifacts_dir: Path, port: int, log_path: Path, start: bool = True
) -> Server:
    """``mlflow server`` exactly as infra/Procfile starts it, on ``port``."""
    return procfile_server(
        "mlflow",
        variables={
            "SEXTANT_MLFLOW_BACKEND_STORE_URI": backend_store_uri,
            "SEXTANT_MLFLOW_ARTIFACTS_DIR": str(artifacts_dir),
            "SEXTANT_MLFLOW_HOST": "127.0.0.1",
            "SEXTANT_MLFLOW_PORT": str(port),
        },
        env=bench_env(),
        log_path=log_path,
        start=start,
    )


# The machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory / 1024**3, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def mib(value: float) -> float:
    return value / 1024**2
