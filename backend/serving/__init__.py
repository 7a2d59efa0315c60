"""Serving on NVIDIA Triton Inference Server.

- ``server``: the managed ``tritonserver`` (``python -m backend.serving.server``, the Procfile's
  ``triton`` line): start, health-check, restart, reload hook.
- ``repository``: the model repository writer (pure: disk and MLflow, no Triton).
- ``triton_model``: the python-backend ``model.py`` copied into every version folder.
- ``client``: load / unload / state and chunked inference over gRPC.

Modules are imported one by one (``from backend.serving.client import TritonClient``): the gateway
needs the client without MLflow, the supervisor needs neither.
"""
