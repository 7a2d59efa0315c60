"""The Triton process manager's pure parts: command line, environment, backend folder, stale-file cleanup."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from backend.config import Settings
from backend.serving.errors import ServingError
from backend.serving.server import (
    TritonInstallation,
    TritonServerOptions,
    clean_stale_files,
    locate_triton,
    orphaned_stubs,
    prepare_backend_directory,
    reload_nothing,
    resolve_reload_hook,
    running_triton_start_times,
    server_command,
    server_environment,
)
from backend.supervisor import services


@pytest.fixture
def installation(tmp_path: Path) -> TritonInstallation:
    wheel = tmp_path / "wheel"
    backend = wheel / "backends" / "python"
    backend.mkdir(parents=True)
    (backend / "libtriton_python.so").write_bytes(b"so")
    (backend / "triton_python_backend_utils.py").write_text("# utils")
    stub = wheel / "stubs" / "triton_python_backend_stub"
    stub.parent.mkdir()
    stub.write_bytes(b"stub")
    return TritonInstallation(
        binary=wheel / "bin" / "tritonserver", libs_dir=wheel / "libs", python_backend_dir=backend, stub=stub
    )


def _options(tmp_path: Path) -> TritonServerOptions:
    return TritonServerOptions(
        model_repository=tmp_path / "models",
        backend_directory=tmp_path / "backends",
        http_port=18000,
        grpc_port=18001,
        metrics_port=18002,
    )


def test_command_line_follows_the_recipe(tmp_path: Path, installation: TritonInstallation) -> None:
    command = server_command(_options(tmp_path), installation)

    assert command[0] == str(installation.binary)
    assert set(command[1:]) == {
        f"--model-repository={tmp_path / 'models'}",
        f"--backend-directory={tmp_path / 'backends'}",
        "--model-control-mode=explicit",
        "--disable-auto-complete-config",
        "--strict-readiness=false",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--cuda-memory-pool-byte-size=0:0",
        "--exit-timeout-secs=5",
        "--http-address=127.0.0.1",
        "--http-port=18000",
        "--grpc-address=127.0.0.1",
        "--grpc-port=18001",
        "--metrics-port=18002",
        "--backend-config=python,shm-region-prefix-name=sextant_triton_18001_",
    }


def test_environment_finds_the_wheel_libraries_and_this_python(installation: TritonInstallation) -> None:
    env = server_environment(
        installation,
        base={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/opt/lib", "HOME": "/root"},
        python_bin=Path("/venv/bin"),
        python_libdir="/py/lib",
    )

    assert env["LD_LIBRARY_PATH"] == f"{installation.libs_dir}:/py/lib:/opt/lib"
    assert env["PATH"] == "/venv/bin:/usr/bin:/bin"
    assert env["HOME"] == "/root"
    default = server_environment(installation, base={})
    assert default["PATH"] == str(Path(sys.executable).parent)


def test_the_wheel_has_tritonserver_and_a_stub_for_this_python() -> None:
    found = locate_triton()
    assert found.binary.name == "tritonserver" and os.access(found.binary, os.X_OK)
    assert found.stub.parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(ServingError, match=r"Python 2\.7"):
        locate_triton((2, 7))


def test_backend_directory_is_built_once(tmp_path: Path, installation: TritonInstallation) -> None:
    target = prepare_backend_directory(tmp_path / "backends", installation)
    folder = target / "python"
    assert sorted(path.name for path in folder.iterdir()) == [
        "libtriton_python.so",
        "triton_python_backend_stub",
        "triton_python_backend_utils.py",
    ]
    inode = (folder / "triton_python_backend_stub").stat().st_ino
    prepare_backend_directory(tmp_path / "backends", installation)
    assert (folder / "triton_python_backend_stub").stat().st_ino == inode

    # A new wheel (another stub) replaces the copy.
    installation.stub.write_bytes(b"a newer stub")
    prepare_backend_directory(tmp_path / "backends", installation)
    assert (folder / "triton_python_backend_stub").read_bytes() == b"a newer stub"


def test_cleanup_touches_only_what_dead_triton_servers_left(tmp_path: Path) -> None:
    shm, tmp = tmp_path / "shm", tmp_path / "tmp"
    shm.mkdir()
    tmp.mkdir()
    ours = shm / "sextant_triton_8001_1f0c-77"
    other_port = shm / "sextant_triton_9001_1f0c-77"
    for path in (ours, other_port, shm / "PostgreSQL.2517696632", shm / "triton_python_backend_shm_region_1"):
        path.write_bytes(b"x")
    old_env, new_env = tmp / "python_env_AbC123", tmp / "python_env_XyZ789"
    unrelated = tmp / "pyenv_cache"
    for folder in (old_env, new_env, unrelated):
        folder.mkdir()
    (old_env / "leftover").write_text("x")
    a_file = tmp / "python_env_notes"
    a_file.write_text("not a folder")
    now = time.time()
    os.utime(old_env, (now - 600, now - 600))

    removed = clean_stale_files(shm_prefix="sextant_triton_8001_", live_since=now - 60, shm_dir=shm, tmp_dir=tmp)

    assert sorted(removed) == sorted([ours, old_env])
    assert sorted(path.name for path in shm.iterdir()) == [
        "PostgreSQL.2517696632",
        "sextant_triton_9001_1f0c-77",
        "triton_python_backend_shm_region_1",
    ]
    # The newer folder may belong to a server that is running now; with none running it goes too.
    assert sorted(path.name for path in tmp.iterdir()) == ["pyenv_cache", "python_env_XyZ789", "python_env_notes"]
    assert clean_stale_files(shm_prefix="sextant_triton_8001_", live_since=None, shm_dir=shm, tmp_dir=tmp) == [new_env]


def _fake_process(
    proc: Path,
    pid: int,
    command: str,
    *,
    state: str = "S",
    ppid: int = 1,
    start_ticks: int = 0,
    argv: list[str] | None = None,
) -> None:
    folder = proc / str(pid)
    folder.mkdir()
    rest = [state, str(ppid)] + ["0"] * 17 + [str(start_ticks)] + ["0"] * 10
    (folder / "stat").write_text(f"{pid} ({command}) {' '.join(rest)}\n")
    (folder / "cmdline").write_bytes(b"".join(part.encode() + b"\0" for part in argv or [command]))


def test_start_times_of_live_tritonservers(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    _fake_process(tmp_path, 10, "tritonserver", start_ticks=5 * ticks)
    _fake_process(tmp_path, 11, "tritonserver", state="Z", start_ticks=6 * ticks)
    _fake_process(tmp_path, 12, "python3", start_ticks=7 * ticks)
    _fake_process(tmp_path, 13, "odd ) name", start_ticks=8 * ticks)
    (tmp_path / "self").mkdir()

    (started,) = running_triton_start_times(tmp_path)
    boot = next(
        float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
    )
    assert started == pytest.approx(boot + 5)


def test_orphaned_stubs_are_ours_without_a_live_server(tmp_path: Path) -> None:
    stub = "/home/a/.sextant/triton/backends/python/triton_python_backend_stub"
    other_stub = "/elsewhere/backends/python/triton_python_backend_stub"
    _fake_process(tmp_path, 10, "tritonserver")
    _fake_process(tmp_path, 11, "triton_python_b", ppid=10, argv=[stub, "model.py"])
    _fake_process(tmp_path, 12, "triton_python_b", ppid=1, argv=[stub, "model.py"])
    _fake_process(tmp_path, 13, "triton_python_b", ppid=1, argv=[other_stub, "model.py"])
    _fake_process(tmp_path, 14, "tritonserver", state="Z")
    _fake_process(tmp_path, 15, "triton_python_b", ppid=14, argv=[stub, "model.py"])

    assert sorted(orphaned_stubs(Path(stub), tmp_path)) == [12, 15]


def test_reload_hook_is_named_in_settings() -> None:
    assert resolve_reload_hook(None) is reload_nothing
    assert resolve_reload_hook("backend.serving.server:reload_nothing") is reload_nothing
    with pytest.raises(ServingError, match="module:function"):
        resolve_reload_hook("backend.serving.server")
    with pytest.raises(ServingError, match="cannot be imported"):
        resolve_reload_hook("backend.no_such_module:reload")
    with pytest.raises(ServingError, match="not a function"):
        resolve_reload_hook("backend.serving.server:STUB_NAME")


def test_options_and_services_from_settings(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, triton_http_port=9000, triton_grpc_port=9001, triton_metrics_port=9002)
    options = TritonServerOptions.from_settings(settings)

    assert options.model_repository == tmp_path.resolve() / "triton" / "models"
    assert (options.grpc_url, options.http_url) == ("127.0.0.1:9001", "http://127.0.0.1:9000")
    triton = next(service for service in services(settings) if service.name == "triton")
    assert (triton.health_url, triton.port) == ("http://127.0.0.1:9000/v2/health/ready", 9000)
