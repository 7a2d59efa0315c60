"""Errors of the serving layer; the gateway maps them to HTTP statuses (400 / 503)."""

from __future__ import annotations

from backend.errors import SextantError


class ServingError(SextantError):
    """Triton or its model repository could not do what was asked."""


class TritonUnavailableError(ServingError):
    """The server cannot be reached (not started, restarting, or dead)."""


class ModelNotReadyError(ServingError):
    """The model (version) is not loaded or is still loading."""


class ModelLoadError(ServingError):
    """Triton refused to load a model; the message is Triton's own."""


class InferenceError(ServingError):
    """Triton or the model rejected an inference request; the message is Triton's own."""
