"""Shared fixtures: an isolated SEXTANT_HOME per test and a migrated database on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.orm import Session

from backend.config import Settings, get_settings, reset_settings
from backend.db import dispose_engines, migrate, session_scope

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CSV = REPO_ROOT / "examples" / "churn.csv"
# CI has PostgreSQL here with trust auth; override for other set-ups.
POSTGRES_ADMIN_URL = os.environ.get("SEXTANT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports, held together while chosen so they never repeat."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _postgres_available() -> bool:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(autouse=True)
def sextant_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "sextant-home"
    monkeypatch.setenv("SEXTANT_HOME", str(home))
    monkeypatch.delenv("SEXTANT_DATABASE_URL", raising=False)
    reset_settings()
    yield home
    dispose_engines()
    reset_settings()


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    return _postgres_available()


def _create_postgres_database() -> tuple[str, str]:
    name = f"sextant_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return name, f"{base}/{name}"


def _drop_postgres_database(name: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, sextant_home: Path, monkeypatch: pytest.MonkeyPatch, postgres_available: bool
) -> Iterator[str]:
    """A migrated, empty database; every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{sextant_home / 'sextant.db'}"
        name = None
    else:
        if not postgres_available:
            if os.environ.get("REQUIRE_POSTGRES") == "1":
                pytest.fail(f"REQUIRE_POSTGRES=1 but PostgreSQL is unreachable at {POSTGRES_ADMIN_URL}")
            pytest.skip("PostgreSQL is unreachable")
        name, url = _create_postgres_database()
    monkeypatch.setenv("SEXTANT_DATABASE_URL", url)
    reset_settings()
    migrate(url)
    yield url
    dispose_engines()
    if name:
        _drop_postgres_database(name)


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    with session_scope(database_url) as db_session:
        yield db_session


@pytest.fixture
def settings(sextant_home: Path) -> Settings:
    return get_settings()


@pytest.fixture
def example_csv() -> Path:
    return EXAMPLE_CSV
