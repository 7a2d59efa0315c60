"""`sextant up`: run the processes of infra/Procfile under honcho, print the URLs once healthy."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from honcho.environ import parse_procfile
from honcho.manager import Manager

from backend.config import Settings, get_settings
from backend.db import migrate

REPO_ROOT = Path(__file__).resolve().parents[1]
PROCFILE = REPO_ROOT / "infra" / "Procfile"
HEALTH_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Service:
    name: str
    url: str
    health_url: str
    port: int


def services(settings: Settings) -> list[Service]:
    portal = f"http://{settings.portal_host}:{settings.portal_port}"
    return [
        Service("portal", portal, f"{portal}/_stcore/health", settings.portal_port),
        Service("mlflow", settings.mlflow_ui_url, f"{settings.mlflow_ui_url}/health", settings.mlflow_port),
        # Triton's KServe-v2 HTTP side; Sextant itself talks to it over gRPC (triton_grpc_port).
        Service(
            "triton", settings.triton_http_url, f"{settings.triton_http_url}/v2/health/ready", settings.triton_http_port
        ),
        Service("gateway", f"{settings.gateway_url}/docs", f"{settings.gateway_url}/healthz", settings.gateway_port),
    ]


def process_environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SEXTANT_HOME=str(settings.resolved_home),
        SEXTANT_PORTAL_HOST=settings.portal_host,
        SEXTANT_PORTAL_PORT=str(settings.portal_port),
        # Children find this environment's python, streamlit and sextant first.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        # Streamlit's own cap (MB) must not be below ours, or it refuses before we can explain.
        STREAMLIT_SERVER_MAX_UPLOAD_SIZE=str(max(1, -(-settings.max_upload_bytes // 1024**2))),
        SEXTANT_MLFLOW_HOST=settings.mlflow_host,
        SEXTANT_MLFLOW_PORT=str(settings.mlflow_port),
        # The tracking server serves the store jobs write to; when jobs log to a remote server
        # instead, the local one still gets the workspace's own store.
        SEXTANT_MLFLOW_BACKEND_STORE_URI=(
            settings.resolved_mlflow_tracking_uri
            if not settings.resolved_mlflow_tracking_uri.startswith(("http://", "https://"))
            else f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}"
        ),
        SEXTANT_MLFLOW_ARTIFACTS_DIR=str(settings.mlflow_artifacts_dir),
    )
    return env


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex((host, port)) == 0


def _announce_when_healthy(targets: list[Service], manager: Manager) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    pending = list(targets)
    while pending and time.monotonic() < deadline:
        for service in list(pending):
            try:
                if httpx.get(service.health_url, timeout=2).status_code == 200:
                    pending.remove(service)
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    if pending:
        manager._system_print(f"not healthy after {HEALTH_TIMEOUT_S:.0f}s: {', '.join(s.name for s in pending)}\n")
        return
    lines = ["Sextant is ready:"] + [f"  {s.name:8} {s.url}" for s in targets] + ["Press Ctrl-C to stop."]
    manager._system_print("\n".join(lines) + "\n")


def run_stack(settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    targets = services(settings)
    busy = [s for s in targets if port_in_use("127.0.0.1", s.port)]
    if busy:
        for service in busy:
            print(f"error: port {service.port} for the {service.name} is already in use", file=sys.stderr)
        return 1
    settings.ensure_dirs()
    migrate()
    env = process_environment(settings)
    manager = Manager()
    for name, command in parse_procfile(PROCFILE.read_text()).processes.items():
        manager.add_process(name, command, env=env, cwd=str(REPO_ROOT))
    print(f"workspace: {settings.resolved_home}")
    threading.Thread(target=_announce_when_healthy, args=(targets, manager), daemon=True).start()
    manager.loop()
    return manager.returncode or 0
