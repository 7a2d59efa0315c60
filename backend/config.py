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

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home / 'sextant.db'}"

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
        for folder in (self.resolved_home, self.datasets_dir, self.tmp_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
