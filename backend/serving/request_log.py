"""The gateway's request log: one row per request, written to the DB in batches, never one write per request.

``RequestLog.record`` only appends to an in-memory buffer; a background thread writes the buffer
with one multi-row INSERT every ``flush_interval_s``, or sooner once ``batch_rows`` rows wait. A
database that is down costs log rows (counted in ``rows_dropped``), never a prediction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from backend.db import session_scope
from backend.errors import InvalidInputError
from backend.models import EndpointRequest, utcnow

log = logging.getLogger("sextant.gateway.requests")

MAX_ERROR_CHARS = 500
MAX_ENDPOINT_CHARS = 100
# Rows kept while the database cannot take them; beyond this the oldest are dropped.
MAX_PENDING_ROWS = 100_000
SUMMARY_ROWS = 100_000


@dataclass(frozen=True)
class RequestRecord:
    endpoint: str
    status_code: int
    latency_ms: float
    instances: int = 0
    model_name: str | None = None
    model_version: int | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def row(self) -> dict[str, object]:
        values = asdict(self)
        values["endpoint"] = self.endpoint[:MAX_ENDPOINT_CHARS]
        values["error"] = self.error[:MAX_ERROR_CHARS] if self.error else None
        return values


def write_request_records(session: Session, *, records: Sequence[RequestRecord]) -> int:
    """One multi-row INSERT of ``records``."""
    if not records:
        return 0
    session.execute(insert(EndpointRequest), [record.row() for record in records])
    return len(records)


class RequestLog:
    """A thread-safe buffer of request records and the thread that writes it in batches."""

    def __init__(self, database_url: str, *, flush_interval_s: float = 1.0, batch_rows: int = 500):
        self.database_url = database_url
        self.flush_interval_s = flush_interval_s
        self.batch_rows = batch_rows
        self.batches_written = 0
        self.rows_written = 0
        self.rows_dropped = 0
        self._pending: deque[RequestRecord] = deque()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._pending.append(record)
            if len(self._pending) > MAX_PENDING_ROWS:
                self._pending.popleft()
                self.rows_dropped += 1
            full = len(self._pending) >= self.batch_rows
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write what is buffered now (in batches of ``batch_rows``); the number of rows written."""
        written = 0
        with self._flush_lock:
            while True:
                with self._lock:
                    batch = [self._pending.popleft() for _ in range(min(self.batch_rows, len(self._pending)))]
                if not batch:
                    return written
                try:
                    with session_scope(self.database_url) as session:
                        write_request_records(session, records=batch)
                except Exception:
                    log.exception("could not write %d request log rows; they are dropped", len(batch))
                    with self._lock:
                        self.rows_dropped += len(batch)
                    return written
                written += len(batch)
                with self._lock:
                    self.batches_written += 1
                    self.rows_written += len(batch)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sextant-request-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after a last flush."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            deadline = time.monotonic() + self.flush_interval_s
            while not self._stop.is_set() and self.pending < self.batch_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
                self._wake.clear()
            self.flush()


@dataclass(frozen=True)
class VersionTraffic:
    model: str | None
    version: int | None
    requests: int
    errors: int
    share: float
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class RequestSummary:
    endpoint: str
    since: datetime
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    versions: list[VersionTraffic]


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarize_requests(
    session: Session, *, endpoint: str, since: datetime | None = None, window: timedelta = timedelta(hours=1)
) -> RequestSummary:
    """Requests, errors and latency percentiles of ``endpoint`` since ``since`` (default: the last hour)."""
    since = since or utcnow() - window
    if since.tzinfo is None:
        raise InvalidInputError("since must carry a time zone")
    rows = session.execute(
        select(
            EndpointRequest.model_name,
            EndpointRequest.model_version,
            EndpointRequest.status_code,
            EndpointRequest.latency_ms,
        )
        .where(EndpointRequest.endpoint == endpoint, EndpointRequest.created_at >= since)
        .order_by(EndpointRequest.id.desc())
        .limit(SUMMARY_ROWS)
    ).all()
    groups: dict[tuple[str | None, int | None], list[tuple[int, float]]] = {}
    for model, version, status, latency in rows:
        groups.setdefault((model, version), []).append((status, latency))
    served = [latency for _model, _version, status, latency in rows if status < 400]
    versions = [
        VersionTraffic(
            model=model,
            version=version,
            requests=len(items),
            errors=sum(1 for status, _ in items if status >= 400),
            share=len(items) / len(rows),
            p50_ms=_percentile([latency for status, latency in items if status < 400], 0.5),
            p95_ms=_percentile([latency for status, latency in items if status < 400], 0.95),
        )
        for (model, version), items in sorted(groups.items(), key=lambda item: (item[0][0] or "", item[0][1] or 0))
    ]
    return RequestSummary(
        endpoint=endpoint,
        since=since.astimezone(UTC),
        requests=len(rows),
        errors=sum(1 for _model, _version, status, _latency in rows if status >= 400),
        p50_ms=_percentile(served, 0.5),
        p95_ms=_percentile(served, 0.95),
        versions=versions,
    )


def count_requests(session: Session, *, endpoint: str | None = None) -> int:
    query = select(func.count()).select_from(EndpointRequest)
    if endpoint is not None:
        query = query.where(EndpointRequest.endpoint == endpoint)
    return int(session.scalar(query) or 0)
