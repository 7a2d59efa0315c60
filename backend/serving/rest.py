"""Calling the gateway over HTTP (the Online prediction page and ``sextant predict``), and the
equivalent ``curl`` command for users to copy."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

import httpx

from backend.config import Settings, get_settings
from backend.errors import SextantError

TIMEOUT_S = 30.0


class GatewayUnreachableError(SextantError):
    """Nothing answers at the gateway's address (``make run`` starts it)."""


@dataclass(frozen=True)
class GatewayAnswer:
    status_code: int
    body: dict[str, Any]
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.status_code == 200

    @property
    def error_message(self) -> str:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return str(error.get("message", error)) if isinstance(error, dict) else str(self.body)


def predict_url(endpoint: str, *, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return f"{settings.gateway_url}/v1/endpoints/{endpoint}:predict"


def post_predict(
    endpoint: str,
    body: bytes | dict[str, Any],
    *,
    request_id: str | None = None,
    settings: Settings | None = None,
    timeout_s: float = TIMEOUT_S,
) -> GatewayAnswer:
    """POST a predict request as is; the gateway's status and JSON, errors included."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    headers = {"content-type": "application/json"}
    if request_id:
        headers["x-request-id"] = request_id
    url = predict_url(endpoint, settings=settings)
    try:
        response = httpx.post(url, content=content, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise GatewayUnreachableError(f"the gateway at {url} did not answer ({error}); is it running?") from error
    try:
        payload = response.json()
    except ValueError:
        payload = {"error": {"code": response.status_code, "message": response.text[:500]}}
    return GatewayAnswer(
        status_code=response.status_code, body=payload, latency_ms=response.elapsed.total_seconds() * 1000
    )


def curl_command(endpoint: str, body: str | dict[str, Any], *, settings: Settings | None = None) -> str:
    """The shell command that sends ``body`` (a request object, or its JSON text) to the endpoint."""
    text = body if isinstance(body, str) else json.dumps(body)
    return (
        f"curl -sS -X POST {shlex.quote(predict_url(endpoint, settings=settings))} \\\n"
        f"  -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(text)}"
    )
