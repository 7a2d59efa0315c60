"""The managed ``tritonserver``: locate it in the nvidia-pytriton wheel, run it, supervise it.

``python -m backend.serving.server`` (the ``triton`` line of infra/Procfile) starts tritonserver on
loopback with explicit model control, checks its health, restarts it when it dies, and after every
(re)start calls the reload hook that loads the deployed models. The hook is named by
``Settings.triton_reload_hook`` ("module:function", taking a ``TritonClient``), so the endpoints
code wires its own in without touching this loop.

Recipe (DESIGN.md): the python backend directory is built once from the wheel (``libtriton_python.so``,
``triton_python_backend_utils.py`` and the stub for the running Python); ``LD_LIBRARY_PATH`` holds
the wheel's libraries and this Python's libdir; the venv's ``bin`` leads ``PATH`` so the stub runs
this environment's Python. An unclean exit leaves ``/dev/shm`` regions and ``/tmp/python_env_*``
folders behind; they are removed before each start, and only those of dead servers.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from backend.config import Settings, get_settings
from backend.serving.client import TritonClient
from backend.serving.errors import ServingError

log = logging.getLogger("sextant.triton")

ReloadHook = Callable[[TritonClient], None]

BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB_NAME = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")
PYTHON_ENV_DIR = Path("/tmp")
PYTHON_ENV_PREFIX = "python_env_"
# Health checks that may fail in a row (a busy server answers late) before a live process is restarted.
MAX_HEALTH_FAILURES = 3
MAX_RESTART_BACKOFF_S = 30.0
# A server that stayed up this long has recovered: its next crash is retried after the shortest delay.
STABLE_AFTER_S = 60.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class TritonInstallation:
    """The tritonserver shipped in the nvidia-pytriton wheel."""

    binary: Path
    libs_dir: Path
    python_backend_dir: Path
    stub: Path


def locate_triton(python_version: tuple[int, int] | None = None) -> TritonInstallation:
    try:
        import pytriton
    except ImportError as error:
        raise ServingError("Triton is not installed: pip install nvidia-pytriton") from error
    package = Path(pytriton.__file__).resolve().parent
    root = package / "tritonserver"
    major, minor = python_version or sys.version_info[:2]
    installation = TritonInstallation(
        binary=root / "bin" / "tritonserver",
        libs_dir=package.parent / "nvidia_pytriton.libs",
        python_backend_dir=root / "backends" / "python",
        stub=root / "python_backend_stubs" / f"{major}.{minor}" / STUB_NAME,
    )
    for path in (installation.binary, installation.libs_dir, installation.python_backend_dir, installation.stub):
        if not path.exists():
            raise ServingError(f"the nvidia-pytriton wheel lacks {path} (Python {major}.{minor})")
    return installation


def prepare_backend_directory(target: Path, installation: TritonInstallation) -> Path:
    """``<target>/python/`` with the python backend and this Python's stub (copied when missing or changed)."""
    folder = target / "python"
    folder.mkdir(parents=True, exist_ok=True)
    sources = [installation.python_backend_dir / name for name in BACKEND_FILES] + [installation.stub]
    for source in sources:
        destination = folder / source.name
        stat = source.stat()
        if destination.exists():
            current = destination.stat()
            if (current.st_size, int(current.st_mtime)) == (stat.st_size, int(stat.st_mtime)):
                continue
        # Copy aside then rename: a running server may have the old stub open.
        partial = destination.with_name(f".{destination.name}.partial")
        shutil.copy2(source, partial)
        os.replace(partial, destination)
    return target


@dataclass(frozen=True)
class TritonServerOptions:
    model_repository: Path
    backend_directory: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    exit_timeout_s: int = 5
    start_timeout_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> TritonServerOptions:
        settings = settings or get_settings()
        return cls(
            model_repository=settings.triton_models_dir,
            backend_directory=settings.triton_dir / "backends",
            host=settings.triton_host,
            http_port=settings.triton_http_port,
            grpc_port=settings.triton_grpc_port,
            metrics_port=settings.triton_metrics_port,
            start_timeout_s=settings.triton_start_timeout_s,
        )

    @property
    def shm_prefix(self) -> str:
        # One prefix per gRPC port: regions of an earlier server on this port are surely stale.
        return f"sextant_triton_{self.grpc_port}_"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


def server_command(options: TritonServerOptions, installation: TritonInstallation) -> list[str]:
    return [
        str(installation.binary),
        f"--model-repository={options.model_repository}",
        f"--backend-directory={options.backend_directory}",
        "--model-control-mode=explicit",
        # Sextant writes complete configs; auto-completion costs ~2.7 s per load.
        "--disable-auto-complete-config",
        # Ready = the server is up; the state of each model is asked per model.
        "--strict-readiness=false",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--cuda-memory-pool-byte-size=0:0",
        f"--exit-timeout-secs={options.exit_timeout_s}",
        # The repository API has no auth: never listen beyond loopback by default.
        f"--http-address={options.host}",
        f"--http-port={options.http_port}",
        f"--grpc-address={options.host}",
        f"--grpc-port={options.grpc_port}",
        f"--metrics-port={options.metrics_port}",
        f"--backend-config=python,shm-region-prefix-name={options.shm_prefix}",
    ]


def server_environment(
    installation: TritonInstallation,
    *,
    base: Mapping[str, str] | None = None,
    python_bin: Path | None = None,
    python_libdir: str | None = None,
) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    libdir = python_libdir if python_libdir is not None else sysconfig.get_config_var("LIBDIR")
    # The wheel's libraries first (the stub needs its libcudart), then this Python's libpython
    # (without it the stub may pick up the system's and crash).
    libraries = [str(installation.libs_dir), libdir or "", env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(part for part in libraries if part)
    # The stub runs the first `python3` on PATH: this environment's, where model.py's imports live.
    bin_dir = python_bin or Path(sys.executable).parent
    env["PATH"] = os.pathsep.join(part for part in (str(bin_dir), env.get("PATH", "")) if part)
    return env


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ServingError("no boot time in /proc/stat")


@dataclass(frozen=True)
class _Process:
    pid: int
    command: str
    state: str
    ppid: int
    start_ticks: int
    argv0: bytes


def _processes(proc: Path) -> list[_Process]:
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        # The command sits in parentheses and may itself contain ") ".
        fields = stat[stat.rfind(")") + 2 :].split()
        command = stat[stat.find("(") + 1 : stat.rfind(")")]
        found.append(_Process(int(entry.name), command, fields[0], int(fields[1]), int(fields[19]), argv0))
    return found


def _live_servers(processes: list[_Process]) -> list[_Process]:
    return [process for process in processes if process.command == "tritonserver" and process.state != "Z"]


def running_triton_start_times(proc: Path = Path("/proc")) -> list[float]:
    """Start times (epoch seconds) of the live tritonserver processes on this machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    boot = _boot_time()
    return [boot + server.start_ticks / ticks for server in _live_servers(_processes(proc))]


def orphaned_stubs(stub: Path, proc: Path = Path("/proc")) -> list[int]:
    """Python-backend stubs run from ``stub`` whose tritonserver is gone.

    A stub notices a dead server by itself, except when it waits on its shared memory at that
    moment: then it outlives a kill -9 for good (~200 MiB each). Only stubs of our backend folder count.
    """
    processes = _processes(proc)
    servers = {server.pid for server in _live_servers(processes)}
    target = os.fsencode(stub)
    return [process.pid for process in processes if process.argv0 == target and process.ppid not in servers]


def kill_orphaned_stubs(stub: Path) -> list[int]:
    killed = []
    for pid in orphaned_stubs(stub):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def clean_stale_files(
    *,
    shm_prefix: str,
    live_since: float | None,
    shm_dir: Path = SHM_DIR,
    tmp_dir: Path = PYTHON_ENV_DIR,
) -> list[Path]:
    """Remove what dead Triton servers left: our shm regions and old ``python_env_*`` folders.

    Shared-memory regions carry ``shm_prefix`` (unique per port), so only ours go. The python
    backend names its temp folders ``/tmp/python_env_XXXXXX`` for any server, so a folder goes only
    if it is ours (same user) and older than every live tritonserver (``live_since``: the earliest
    start among them, None when none runs).
    """
    removed: list[Path] = []
    with contextlib.suppress(FileNotFoundError):
        for path in shm_dir.iterdir():
            if path.name.startswith(shm_prefix) and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    uid = os.getuid()
    with contextlib.suppress(FileNotFoundError):
        for path in tmp_dir.iterdir():
            if not path.name.startswith(PYTHON_ENV_PREFIX) or path.is_symlink() or not path.is_dir():
                continue
            stat = path.stat()
            if stat.st_uid != uid or (live_since is not None and stat.st_mtime >= live_since):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _port_busy(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec function making the kernel SIGTERM tritonserver when the supervisor dies (Linux).

    tritonserver runs in its own session, so a Ctrl-C or honcho's group signal reaches only the
    supervisor, which stops it in order; this covers a supervisor that is killed outright.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    # Resolved in the parent: the child only makes the call (no dlopen between fork and exec).
    def set_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_signal


class TritonServer:
    """One tritonserver process: start, wait until live, stop; ``start`` again after it died."""

    def __init__(
        self,
        options: TritonServerOptions,
        *,
        installation: TritonInstallation | None = None,
        log_path: Path | None = None,
    ):
        self.options = options
        self.installation = installation or locate_triton()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def grpc_url(self) -> str:
        return self.options.grpc_url

    @property
    def http_url(self) -> str:
        return self.options.http_url

    @property
    def stub_path(self) -> Path:
        return self.options.backend_directory / "python" / STUB_NAME

    def command(self) -> list[str]:
        return server_command(self.options, self.installation)

    def environment(self) -> dict[str, str]:
        return server_environment(self.installation)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process else None

    def is_live(self, *, timeout_s: float = 2.0) -> bool:
        try:
            return httpx.get(f"{self.http_url}/v2/health/live", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        """Start tritonserver (cleaning what a dead one left) and wait until it is live and ready."""
        if self.is_running():
            raise ServingError(f"tritonserver is already running (pid {self.pid})")
        options = self.options
        busy = [
            port
            for port in (options.http_port, options.grpc_port, options.metrics_port)
            if _port_busy(options.host, port)
        ]
        if busy:
            raise ServingError(f"cannot start Triton: port {', '.join(map(str, busy))} in use on {options.host}")
        options.model_repository.mkdir(parents=True, exist_ok=True)
        prepare_backend_directory(options.backend_directory, self.installation)
        for pid in kill_orphaned_stubs(self.stub_path):
            log.info("killed python-backend stub %s left by a dead tritonserver", pid)
        live = running_triton_start_times()
        for path in clean_stale_files(shm_prefix=options.shm_prefix, live_since=min(live) if live else None):
            log.info("removed stale %s", path)
        output: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = output = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),
        )
        log.info("tritonserver started (pid %s), gRPC %s, HTTP %s", self.pid, self.grpc_url, self.http_url)
        try:
            self.wait_ready(timeout_s=options.start_timeout_s)
        except ServingError:
            self.stop()
            raise

    def wait_ready(self, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running():
                raise ServingError(f"tritonserver exited during start with code {self.returncode}{self._log_hint()}")
            try:
                if httpx.get(f"{self.http_url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ServingError(f"tritonserver was not ready within {timeout_s:.0f} s{self._log_hint()}")

    def _log_hint(self) -> str:
        return f" (see {self.log_path})" if self.log_path else ""

    def stop(self, *, timeout_s: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after Triton's own exit timeout; returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s if timeout_s is not None else self.options.exit_timeout_s + 5)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver (pid %s) ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait()
        kill_orphaned_stubs(self.stub_path)
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def reload_nothing(client: TritonClient) -> None:
    """The default reload hook: nothing is deployed until the endpoints code provides its own."""
    return None


def resolve_reload_hook(spec: str | None) -> ReloadHook:
    """``"package.module:function"`` → the function; None → ``reload_nothing``."""
    if not spec:
        return reload_nothing
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ServingError(f"reload hook {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ServingError(f"reload hook {spec!r} (SEXTANT_TRITON_RELOAD_HOOK) cannot be imported: {error}") from error
    hook = getattr(module, attribute, None)
    if not callable(hook):
        raise ServingError(f"reload hook {spec!r} is not a function")
    return hook


@dataclass
class SupervisorStats:
    starts: int = 0
    reloads: int = 0
    last_exit_code: int | None = None


def _run_reload_hook(server: TritonServer, reload_hook: ReloadHook, stats: SupervisorStats) -> None:
    try:
        with TritonClient(server.grpc_url) as client:
            reload_hook(client)
        stats.reloads += 1
    except Exception:
        # A model that fails to load must not take serving down: the others stay up, its state says why.
        log.exception("the reload hook failed")


def supervise(
    *,
    server: TritonServer,
    stop: threading.Event,
    reload_hook: ReloadHook = reload_nothing,
    health_interval_s: float = 2.0,
    stats: SupervisorStats | None = None,
) -> SupervisorStats:
    """Keep ``server`` up until ``stop`` is set: start, reload models, health-check, restart on death."""
    stats = stats if stats is not None else SupervisorStats()
    backoff = 1.0
    while not stop.is_set():
        try:
            server.start()
        except ServingError as error:
            log.error("%s; retrying in %.0f s", error, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_RESTART_BACKOFF_S)
            continue
        stats.starts += 1
        started = time.monotonic()
        _run_reload_hook(server, reload_hook, stats)
        failures = 0
        while not stop.wait(health_interval_s):
            if not server.is_running():
                stats.last_exit_code = server.returncode
                log.error("tritonserver exited with code %s; restarting", server.returncode)
                break
            failures = 0 if server.is_live() else failures + 1
            if failures >= MAX_HEALTH_FAILURES:
                log.error("tritonserver failed %d health checks; restarting it", failures)
                stats.last_exit_code = server.stop()
                break
        if stop.is_set():
            break
        server.stop()
        if time.monotonic() - started > STABLE_AFTER_S:
            backoff = 1.0
        # A server that keeps crashing is retried less and less often.
        stop.wait(backoff)
        backoff = min(backoff * 2, MAX_RESTART_BACKOFF_S)
    server.stop()
    return stats


def main() -> int:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per health check would bury Triton's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        hook = resolve_reload_hook(settings.triton_reload_hook)
        server = TritonServer(TritonServerOptions.from_settings(settings))
    except ServingError as error:
        log.error("%s", error)
        return 1
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("stopping tritonserver (%s)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    supervise(server=server, stop=stop, reload_hook=hook, health_interval_s=settings.triton_health_interval_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
