"""Job kinds and the entry modules that run them (``python -m <module> --job-id N``).

A kind is resolved to its module when the job is submitted and the module is stored on the job row,
so the worker runs exactly what was submitted and needs no registry of its own. Product kinds live
in ``JOB_KINDS``; other code (tests, plugins) adds kinds at run time with ``register_job_kind``.
"""

from __future__ import annotations

import re

from backend.errors import InvalidInputError

JOB_KINDS: dict[str, str] = {
    "train": "jobs.train",
    "tune": "jobs.tune",
    "batch_predict": "jobs.batch_predict",
}

_KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
_MODULE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def register_job_kind(kind: str, module: str, *, replace: bool = False) -> None:
    """Make ``kind`` submittable; its jobs run as ``python -m <module> --job-id N``."""
    if not _KIND_PATTERN.match(kind):
        raise InvalidInputError(f"job kind {kind!r} must be 1-50 lowercase letters, digits or underscores")
    if not _MODULE_PATTERN.match(module) or len(module) > 200:
        raise InvalidInputError(f"entry module {module!r} is not a dotted Python module name")
    if kind in JOB_KINDS and JOB_KINDS[kind] != module and not replace:
        raise InvalidInputError(f"job kind {kind!r} is already registered to {JOB_KINDS[kind]}")
    JOB_KINDS[kind] = module


def unregister_job_kind(kind: str) -> None:
    JOB_KINDS.pop(kind, None)


def job_kinds() -> dict[str, str]:
    return dict(JOB_KINDS)


def resolve_entry_module(kind: str) -> str:
    try:
        return JOB_KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(JOB_KINDS)) or "none"
        raise InvalidInputError(f"unknown job kind {kind!r}; known kinds: {known}") from None
