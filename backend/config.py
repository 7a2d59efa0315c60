"""The one place configuration is read: environment variables prefixed ``SEXTANT_``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1024**3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEXTANT_", extra="ignore")

    home: Path = Field(default=Path(".sextant"), description="workspace folder for all state")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in home by default")
    max_upload_bytes: int = Field(default=GIB, gt=0, description="largest accepted upload")
    portal_host: str = "127.0.0.1"
    portal_port: int = 8501
    # Rows shown per page in dataset previews and tables.
    page_size: int = Field(default=50, gt=0, le=1000)

    # Jobs and the worker.
    worker_concurrency: int = Field(default=2, ge=1, description="jobs the worker runs at once")
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    job_heartbeat_seconds: float = Field(default=2.0, gt=0)
    # A running job whose heartbeat is older than this is considered dead.
    job_stale_seconds: float = Field(default=30.0, gt=0)
    job_cancel_grace_seconds: float = Field(default=5.0, ge=0)

    # MLflow: jobs log to this URI; by default a SQLite store in the workspace that the
    # `make run` tracking server serves too. The UI link points at the tracking server.
    mlflow_tracking_uri: str | None = None
    mlflow_host: str = "127.0.0.1"
    mlflow_port: int = 5000

    # Triton Inference Server (the `triton` process of `make run`), bound to loopback: its
    # repository API has no auth. The gateway and batch jobs reach it over gRPC.
    triton_host: str = "127.0.0.1"
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    # Rows per request: the dynamic batcher's ceiling and the chunk size of bulk predictions.
    triton_max_batch_size: int = Field(default=4096, gt=0)
    triton_max_queue_delay_us: int = Field(default=0, ge=0)
    triton_instance_count: int = Field(default=1, ge=1, description="model instances (stub processes) per version")
    # auto: GPU instances for PyTorch models where an NVIDIA GPU is present, CPU instances otherwise.
    triton_instance_kind: str = Field(default="auto", pattern="^(auto|cpu|gpu)$")
    # Chunks of a bulk prediction in flight at once.
    triton_infer_concurrency: int = Field(default=4, ge=1)
    triton_start_timeout_s: float = Field(default=60.0, gt=0)
    triton_health_interval_s: float = Field(default=2.0, gt=0)
    # "module:function" called with a TritonClient after every (re)start of tritonserver, to load
    # the deployed models; unset, the supervisor loads nothing.
    triton_reload_hook: str | None = "backend.serving.endpoints:reload_deployed_models"

    @property
    def triton_dir(self) -> Path:
        return self.resolved_home / "triton"

    @property
    def triton_models_dir(self) -> Path:
        return self.triton_dir / "models"

    @property
    def triton_grpc_url(self) -> str:
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def triton_http_url(self) -> str:
        return f"http://{self.triton_host}:{self.triton_http_port}"

    # REST gateway (the `gateway` process of `make run`): Vertex-style online prediction in front of
    # Triton. Loopback by default; the limits bound what one request may cost the server.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_max_instances: int = Field(default=1000, gt=0, description="instances accepted in one predict request")
    gateway_max_body_bytes: int = Field(default=10 * 1024**2, gt=0, description="largest accepted request body")
    # The request log reaches the DB in batches: every interval, or sooner once this many rows wait.
    gateway_log_flush_s: float = Field(default=1.0, gt=0)
    gateway_log_batch_rows: int = Field(default=500, gt=0)
    # How long the gateway reuses an endpoint's deployments read from the DB (a deploy shows after this).
    gateway_endpoint_cache_s: float = Field(default=1.0, ge=0)

    @property
    def gateway_url(self) -> str:
        return f"http://{self.gateway_host}:{self.gateway_port}"

    # Batch prediction (backend/batch) and cron schedules (backend/schedules.py). A batch job serves
    # its model under a private Triton name whose max_batch_size is batch_request_rows: bulk work
    # wants big requests (8k-row requests scored ≈ 0.12M rows/s here, 32k-row ones ≈ 0.26M).
    batch_request_rows: int = Field(default=32768, gt=0, description="rows per Triton request of a batch job")
    # Rows read, scored and written at a time; two chunks are in flight, so memory stays a few chunks
    # (≈ 350 MiB over the job's 270 MiB baseline here at 64k rows, whatever the input's size).
    batch_chunk_rows: int = Field(default=65536, gt=0)
    batch_in_flight: int = Field(default=4, ge=1, description="Triton requests in flight per chunk")
    batch_instance_count: int = Field(default=2, ge=1, description="instances of a batch job's private model")
    # Outputs up to this many rows are profiled whole, larger ones on an even sample of this size.
    batch_profile_max_rows: int = Field(default=1_000_000, gt=0)
    # Runs a schedule missed while no worker ran: "once" fires one catch-up run, "skip" fires none.
    schedule_catch_up: str = Field(default="once", pattern="^(once|skip)$")
    # A due time at most this old when the worker sees it is on time, not missed.
    schedule_misfire_grace_seconds: float = Field(default=60.0, ge=0)

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home / 'sextant.db'}"

    @property
    def mlflow_dir(self) -> Path:
        return self.resolved_home / "mlflow"

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def mlflow_ui_url(self) -> str:
        return f"http://{self.mlflow_host}:{self.mlflow_port}"

    @property
    def datasets_dir(self) -> Path:
        return self.resolved_home / "datasets"

    @property
    def tmp_dir(self) -> Path:
        return self.resolved_home / "tmp"

    @property
    def logs_dir(self) -> Path:
        return self.resolved_home / "logs"

    def ensure_dirs(self) -> None:
        for folder in (self.resolved_home, self.datasets_dir, self.tmp_dir, self.logs_dir, self.mlflow_dir):
            folder.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
