"""Endpoints: named online-prediction targets, each serving registry model versions with traffic shares.

The database holds the desired state (which versions each endpoint serves, with what share of its
traffic); Triton is brought to it. All versions of one registered model are served side by side
by one Triton model, so a deploy, undeploy or alias move reloads that Triton model with the
union of the versions any endpoint deploys (``version_policy: specific``); versions still served
keep answering during the reload.

- Deploy (synchronous, ~1–2 s for a small model): export the version from MLflow into the Triton
  repository, record the deployment as ``loading`` and commit (other processes see it, and no
  database lock is held while Triton loads), load, then record ``ready`` or ``failed`` with
  Triton's message. When Triton is down the deployment stays ``loading`` and is loaded by the
  supervisor's reload hook when Triton (re)starts.
- Follow an alias: a deployment made with ``alias`` (``MODEL@champion``) remembers it; moving the
  alias (``registry.set_model_alias``) calls ``redeploy_alias_followers``, which points every
  follower at the new version and reloads the model.
- Restart: ``reload_deployed_models`` (the default ``Settings.triton_reload_hook``) loads every
  deployed model again after tritonserver (re)starts, re-exporting versions missing on disk.

Traffic shares are whole percentages summing to 100 over an endpoint's deployments; a deployment
may hold 0 % (deployed, idle). The gateway picks a deployment per request by these weights.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from backend.config import Settings, get_settings
from backend.db import session_scope
from backend.errors import ConflictError, InvalidInputError, NotFoundError
from backend.models import Endpoint, EndpointDeployment, utcnow
from backend.serving.client import ModelState, TritonClient
from backend.serving.errors import ModelLoadError, ModelNotReadyError, ServingError, TritonUnavailableError
from backend.serving.repository import (
    SPEC_FILE,
    STAGING_DIR,
    ServingOptions,
    load_config_json,
    remove_model_version,
    signature_columns,
    triton_model_name,
    write_model_version,
    written_versions,
)

log = logging.getLogger("sextant.endpoints")

LOADING = "loading"
READY = "ready"
FAILED = "failed"
# Only in live views: Triton cannot be reached, so nothing is known of the version.
UNAVAILABLE = "unavailable"
NO_MODEL = "empty"
ENDPOINT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAX_DESCRIPTION = 2000
# MLflow column types the gateway accepts; missing values (null / NaN) are allowed where the
# MLflow pyfunc allows them: in float and text columns, not in integer or boolean ones.
NULLABLE_TYPES = frozenset({"float", "double", "string"})
WAITING_FOR_TRITON = "Triton is not reachable; the model loads when it (re)starts"
# A concurrent deploy of the same model may change the version set while we load: load again.
MAX_SYNC_ROUNDS = 3


@dataclass(frozen=True)
class InputColumn:
    name: str
    # The MLflow signature type: boolean, integer, long, float, double or string.
    type: str

    @property
    def nullable(self) -> bool:
        return self.type in NULLABLE_TYPES

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable}


@dataclass(frozen=True)
class DeploymentInfo:
    id: int
    endpoint: str
    model: str
    version: int
    # Set when the deployment follows ``model@alias``.
    alias: str | None
    traffic_percent: int
    triton_name: str
    framework: str
    task: str
    classes: list[Any] | None
    inputs: tuple[InputColumn, ...]
    example: dict[str, Any] | None
    state: str
    message: str
    updated_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.alias}" if self.alias else f"{self.model}/{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "alias": self.alias,
            "traffic_percent": self.traffic_percent,
            "state": self.state,
            "message": self.message,
            "framework": self.framework,
            "task": self.task,
            "classes": self.classes,
            "inputs": [column.as_dict() for column in self.inputs],
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class EndpointInfo:
    id: int
    name: str
    description: str
    created_at: datetime
    updated_at: datetime
    deployments: tuple[DeploymentInfo, ...]

    @property
    def primary(self) -> DeploymentInfo | None:
        """The deployment with the largest share of traffic (the oldest among equals)."""
        if not self.deployments:
            return None
        return max(self.deployments, key=lambda item: (item.traffic_percent, -item.id))

    @property
    def inputs(self) -> tuple[InputColumn, ...]:
        return self.primary.inputs if self.primary else ()

    @property
    def example(self) -> dict[str, Any] | None:
        return self.primary.example if self.primary else None

    @property
    def state(self) -> str:
        serving = [item for item in self.deployments if item.traffic_percent > 0] or list(self.deployments)
        if not serving:
            return NO_MODEL
        states = {item.state for item in serving}
        for state in (UNAVAILABLE, FAILED, LOADING):
            if state in states:
                return state
        return READY

    def deployment(self, ref: int | str) -> DeploymentInfo:
        return _find(self.deployments, ref, self.name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "state": self.state,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "deployed_models": [item.as_dict() for item in self.deployments],
            "inputs": [column.as_dict() for column in self.inputs],
            "example": self.example,
        }


@dataclass(frozen=True)
class ExportedVersion:
    model: str
    version: int
    triton_name: str
    framework: str
    task: str
    classes: list[Any] | None
    inputs: tuple[InputColumn, ...]
    example: dict[str, Any] | None


# Pure helpers ---------------------------------------------------------------------------------


def validate_endpoint_name(name: str) -> str:
    name = name.strip()
    if not ENDPOINT_NAME.fullmatch(name):
        raise InvalidInputError(
            f"endpoint name {name!r} must be 1–63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit (it is part of the URL)"
        )
    return name


def suggest_endpoint_name(model: str) -> str:
    """A valid endpoint name derived from a model name (``Churn_Model v2`` → ``churn-model-v2``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:63].strip("-")
    return slug or "endpoint"


def rescale_traffic(shares: Sequence[int], total: int) -> list[int]:
    """Whole percentages proportional to ``shares`` that sum to ``total`` (largest remainder first)."""
    if not shares:
        return []
    current = sum(shares)
    weights = list(shares) if current > 0 else [1] * len(shares)
    exact = [weight * total / sum(weights) for weight in weights]
    result = [math.floor(value) for value in exact]
    order = sorted(range(len(exact)), key=lambda index: (-(exact[index] - result[index]), index))
    for index in order[: total - sum(result)]:
        result[index] += 1
    return result


def validate_traffic(split: Mapping[Any, int]) -> None:
    for key, value in split.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise InvalidInputError(f"traffic for {key} must be a whole percentage from 0 to 100, got {value!r}")
    if split and sum(split.values()) != 100:
        raise InvalidInputError(f"traffic percentages must sum to 100, got {sum(split.values())}")


def _find(deployments: Sequence[Any], ref: int | str, endpoint: str) -> Any:
    """A deployment (row or info) by id, by ``MODEL@ALIAS`` or by ``MODEL/VERSION`` (a pinned one first)."""
    text = str(ref).strip()
    keyed = [(item, *_key(item)) for item in deployments]
    for matches in (
        [item for item, ident, _model, _version, _alias in keyed if text == str(ident)],
        [item for item, _ident, model, _version, alias in keyed if alias and text == f"{model}@{alias}"],
        [item for item, _ident, model, version, alias in keyed if not alias and text == f"{model}/{version}"],
        [item for item, _ident, model, version, _alias in keyed if text == f"{model}/{version}"],
    ):
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise InvalidInputError(f"{text!r} names several deployments of endpoint {endpoint!r}: use the id")
    raise NotFoundError(f"endpoint {endpoint!r} has no deployment {text!r}")


def _key(item: Any) -> tuple[int, str, int, str | None]:
    if isinstance(item, EndpointDeployment):
        return item.id, item.model_name, item.model_version, item.alias
    return item.id, item.model, item.version, item.alias


def _clean_json(value: Any) -> Any:
    # NaN is not JSON (PostgreSQL's JSON type refuses it): missing values are stored as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _deployment_info(row: EndpointDeployment, endpoint: str) -> DeploymentInfo:
    return DeploymentInfo(
        id=row.id,
        endpoint=endpoint,
        model=row.model_name,
        version=row.model_version,
        alias=row.alias,
        traffic_percent=row.traffic_percent,
        triton_name=row.triton_name,
        framework=row.framework,
        task=row.task,
        classes=list(row.classes_json) if row.classes_json is not None else None,
        inputs=tuple(InputColumn(item["name"], item["type"]) for item in row.inputs_json),
        example=dict(row.example_json) if row.example_json else None,
        state=row.state,
        message=row.message,
        updated_at=row.updated_at,
    )


def _endpoint_info(row: Endpoint) -> EndpointInfo:
    return EndpointInfo(
        id=row.id,
        name=row.name,
        description=row.description,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deployments=tuple(_deployment_info(item, row.name) for item in row.deployments),
    )


# Triton: exporting versions and bringing a model to the deployed version set ------------------


def triton_client(settings: Settings | None = None) -> TritonClient:
    """A gRPC client for the managed Triton (share it: one channel, thread-safe)."""
    return TritonClient.from_settings(settings or get_settings())


def _example_row(model_dir: Path) -> dict[str, Any] | None:
    try:
        example = json.loads((model_dir / "input_example.json").read_text())
        columns, data = example["columns"], example["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not data:
        return None
    return {str(column): _clean_json(value) for column, value in zip(columns, data[0], strict=False)}


def export_version(*, model: str, version: int, settings: Settings | None = None) -> ExportedVersion:
    """Write a registry version into the Triton repository; return what serving it needs."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from backend.tracking import tracking_client

    settings = settings or get_settings()
    repository = settings.triton_models_dir
    client = tracking_client(settings)
    try:
        source = client.get_model_version_download_uri(model, str(version))
    except MlflowException as error:
        raise NotFoundError(f"model {model} has no version {version} in the registry") from error
    staging = repository / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging) as download:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=download))
        written = write_model_version(
            repository=repository,
            registry_name=model,
            version=version,
            model_dir=local,
            options=ServingOptions.from_settings(settings),
        )
        columns, _label = signature_columns(local)
        example = _example_row(local)
    return ExportedVersion(
        model=model,
        version=version,
        triton_name=written.triton_name,
        framework=written.spec.framework,
        task=written.spec.task,
        classes=written.spec.classes,
        inputs=tuple(InputColumn(name, column_type) for name, column_type in columns),
        example=example,
    )


def _deployed_versions(session: Session, model: str) -> list[int]:
    query = select(EndpointDeployment.model_version).where(EndpointDeployment.model_name == model).distinct()
    return sorted(session.scalars(query))


def _ensure_written(model: str, versions: Sequence[int], settings: Settings) -> None:
    folder = settings.triton_models_dir / triton_model_name(model)
    for version in versions:
        if not (folder / str(version) / SPEC_FILE).is_file():
            export_version(model=model, version=version, settings=settings)


def _version_state(states: list[ModelState], version: int) -> ModelState | None:
    exact = [state for state in states if state.version == version]
    # A model whose config failed to load is listed once, without versions.
    whole = [state for state in states if state.version is None]
    candidates = exact or whole
    ready = [state for state in candidates if state.ready]
    return (ready or candidates or [None])[0]


def _load(model: str, versions: list[int], triton: TritonClient, settings: Settings) -> tuple[bool, str]:
    """Make Triton serve exactly ``versions`` of ``model``; (Triton reachable, load error message)."""
    triton_name = triton_model_name(model)
    try:
        if not versions:
            triton.unload_model(triton_name, wait=False)
            return True, ""
        _ensure_written(model, versions, settings)
        # Already serving exactly these versions (e.g. one more endpoint on a served version):
        # a reload would only cost time. Triton's restarts always load in full.
        served = sorted(state.version for state in triton.model_states(triton_name) if state.ready and state.version)
        if served == list(versions):
            return True, ""
        config = load_config_json(
            repository=settings.triton_models_dir,
            triton_name=triton_name,
            versions=versions,
            options=ServingOptions.from_settings(settings),
        )
        triton.load_model(triton_name, config=config, versions=versions)
    except TritonUnavailableError:
        return False, WAITING_FOR_TRITON
    except ModelNotReadyError:
        # Unloading a model Triton does not know: nothing to do.
        return True, ""
    except (ModelLoadError, ServingError, NotFoundError) as error:
        return True, str(error)
    return True, ""


def _sync_model(session: Session, *, model: str, triton: TritonClient, settings: Settings) -> None:
    """Load the union of the deployed versions of ``model`` in Triton and record each deployment's state."""
    session.commit()
    versions: list[int] = []
    reachable, error = True, ""
    for _ in range(MAX_SYNC_ROUNDS):
        versions = _deployed_versions(session, model)
        reachable, error = _load(model, versions, triton, settings)
        session.commit()
        if not reachable or _deployed_versions(session, model) == versions:
            break
    states: list[ModelState] = []
    if reachable and versions:
        try:
            states = triton.model_states(triton_model_name(model))
        except TritonUnavailableError:
            reachable, error = False, WAITING_FOR_TRITON
    rows = session.scalars(select(EndpointDeployment).where(EndpointDeployment.model_name == model)).all()
    now = utcnow()
    for row in rows:
        if not reachable:
            state, message = LOADING, error
        else:
            live = _version_state(states, row.model_version)
            if live is not None and live.ready:
                state, message = READY, ""
            else:
                state = FAILED
                message = (live.reason if live is not None and live.reason else "") or error
                message = message or f"Triton did not load version {row.model_version}"
        if (row.state, row.message) != (state, message):
            row.state, row.message, row.updated_at = state, message, now
    session.commit()
    if reachable and not error:
        _remove_unused_versions(model, versions, settings)


def _remove_unused_versions(model: str, versions: Sequence[int], settings: Settings) -> None:
    repository = settings.triton_models_dir
    triton_name = triton_model_name(model)
    options = ServingOptions.from_settings(settings)
    for version in written_versions(repository).get(triton_name, []):
        if version not in versions:
            remove_model_version(repository=repository, registry_name=model, version=version, options=options)


def _triton(triton: TritonClient | None, settings: Settings) -> tuple[TritonClient, bool]:
    if triton is not None:
        return triton, False
    return triton_client(settings), True


def _sync_models(session: Session, models: Sequence[str], triton: TritonClient | None, settings: Settings) -> None:
    client, owned = _triton(triton, settings)
    try:
        for model in dict.fromkeys(models):
            _sync_model(session, model=model, triton=client, settings=settings)
    finally:
        if owned:
            client.close()


# Endpoints ------------------------------------------------------------------------------------


def _endpoint_row(session: Session, name: str) -> Endpoint:
    row = session.scalars(
        select(Endpoint).where(Endpoint.name == name).options(selectinload(Endpoint.deployments))
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"no endpoint named {name!r}")
    return row


def create_endpoint(session: Session, *, name: str, description: str = "") -> EndpointInfo:
    name = validate_endpoint_name(name)
    description = description.strip()
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInputError(f"the description is longer than {MAX_DESCRIPTION} characters")
    if session.scalars(select(Endpoint.id).where(Endpoint.name == name)).first() is not None:
        raise ConflictError(f"endpoint {name!r} already exists")
    row = Endpoint(name=name, description=description)
    session.add(row)
    session.flush()
    session.refresh(row, ["deployments"])
    return _endpoint_info(row)


def list_endpoints(session: Session, *, triton: TritonClient | None = None) -> list[EndpointInfo]:
    """Every endpoint by name; with ``triton``, each deployment's state is Triton's live one."""
    rows = session.scalars(select(Endpoint).order_by(Endpoint.name).options(selectinload(Endpoint.deployments))).all()
    infos = [_endpoint_info(row) for row in rows]
    return [live_states(info, triton) for info in infos] if triton is not None else infos


def get_endpoint(session: Session, *, name: str, triton: TritonClient | None = None) -> EndpointInfo:
    """The endpoint with its deployments; with ``triton``, states are Triton's live ones (not stored)."""
    info = _endpoint_info(_endpoint_row(session, name))
    return live_states(info, triton) if triton is not None else info


def live_states(info: EndpointInfo, triton: TritonClient) -> EndpointInfo:
    """``info`` with each deployment's state as Triton reports it now."""
    by_model: dict[str, list[ModelState] | None] = {}
    for item in info.deployments:
        if item.triton_name in by_model:
            continue
        try:
            by_model[item.triton_name] = triton.model_states(item.triton_name)
        except TritonUnavailableError:
            by_model[item.triton_name] = None
    deployments = []
    for item in info.deployments:
        states = by_model[item.triton_name]
        if states is None:
            state, message = UNAVAILABLE, "Triton is not reachable"
        else:
            state, message = _live_state(item, _version_state(states, item.version))
        deployments.append(replace(item, state=state, message=message))
    return replace(info, deployments=tuple(deployments))


def _live_state(item: DeploymentInfo, live: ModelState | None) -> tuple[str, str]:
    if live is None or not live.state:
        # Triton has not seen this version since it started: the deploy or reload is on its way.
        if item.state == FAILED:
            return FAILED, item.message
        return LOADING, item.message or "waiting for Triton to load it"
    if live.ready:
        return READY, ""
    if live.state in ("LOADING", "UNLOADING"):
        return LOADING, ""
    if live.reason and live.reason != "unloaded":
        return FAILED, live.reason
    if item.state == FAILED and item.message:
        return FAILED, item.message
    return FAILED, "not loaded in Triton (it was unloaded): deploy it again"


def delete_endpoint(
    session: Session, *, name: str, triton: TritonClient | None = None, settings: Settings | None = None
) -> None:
    settings = settings or get_settings()
    row = _endpoint_row(session, name)
    models = [item.model_name for item in row.deployments]
    session.delete(row)
    session.commit()
    _sync_models(session, models, triton, settings)


def deploy_model(
    session: Session,
    *,
    endpoint: str,
    model: str,
    version: int | None = None,
    alias: str | None = None,
    traffic_percent: int = 100,
    triton: TritonClient | None = None,
    settings: Settings | None = None,
) -> EndpointInfo:
    """Serve a registry version on ``endpoint`` with ``traffic_percent`` of its requests.

    ``alias`` deploys ``model@alias`` and follows the alias from then on; neither version nor alias
    deploys the latest version. The other deployments keep their proportions in the remaining
    traffic. Deploying what is already deployed (same version, or same alias) changes its share.
    Returns once Triton has loaded it (or failed to, or is down: then it stays ``loading``).
    """
    from backend import registry

    settings = settings or get_settings()
    if isinstance(traffic_percent, bool) or not isinstance(traffic_percent, int) or not 0 <= traffic_percent <= 100:
        raise InvalidInputError(f"traffic must be a whole percentage from 0 to 100, got {traffic_percent!r}")
    row = _endpoint_row(session, endpoint)
    target = registry.get_model_version(model, version=version, alias=alias, settings=settings)
    alias = registry.validate_alias(alias) if alias is not None else None
    existing = next(
        (
            item
            for item in row.deployments
            if item.model_name == target.name
            and item.alias == alias
            and (alias is not None or item.model_version == target.version)
        ),
        None,
    )
    others = [item for item in row.deployments if item is not existing]
    if not others and traffic_percent != 100:
        raise InvalidInputError(
            f"{target.name} would be the only model of endpoint {endpoint!r}: it takes 100% of the traffic"
        )
    exported = export_version(model=target.name, version=target.version, settings=settings)
    for item, share in zip(others, rescale_traffic([item.traffic_percent for item in others], 100 - traffic_percent),
                           strict=True):  # fmt: skip
        item.traffic_percent = share
    deployment = existing or EndpointDeployment(endpoint=row, model_name=target.name, alias=alias)
    _apply_export(deployment, exported)
    deployment.traffic_percent = traffic_percent
    if existing is None:
        session.add(deployment)
    row.updated_at = utcnow()
    session.commit()
    _sync_models(session, [target.name], triton, settings)
    return get_endpoint(session, name=endpoint)


def _apply_export(row: EndpointDeployment, exported: ExportedVersion) -> None:
    row.model_version = exported.version
    row.triton_name = exported.triton_name
    row.framework = exported.framework
    row.task = exported.task
    row.classes_json = exported.classes
    row.inputs_json = [{"name": column.name, "type": column.type} for column in exported.inputs]
    row.example_json = exported.example
    row.state = LOADING
    row.message = ""
    row.updated_at = utcnow()


def undeploy_model(
    session: Session,
    *,
    endpoint: str,
    deployment: int | str,
    triton: TritonClient | None = None,
    settings: Settings | None = None,
) -> EndpointInfo:
    """Remove one deployment (by id, ``MODEL/VERSION`` or ``MODEL@ALIAS``); the rest share its traffic."""
    settings = settings or get_settings()
    row = _endpoint_row(session, endpoint)
    target = _find(row.deployments, deployment, endpoint)
    others = [item for item in row.deployments if item is not target]
    for item, share in zip(others, rescale_traffic([item.traffic_percent for item in others], 100), strict=True):
        item.traffic_percent = share
    row.deployments.remove(target)
    row.updated_at = utcnow()
    session.commit()
    _sync_models(session, [target.model_name], triton, settings)
    return get_endpoint(session, name=endpoint)


def set_traffic(session: Session, *, endpoint: str, traffic: Mapping[int | str, int]) -> EndpointInfo:
    """Set every deployment's share at once (keys: id, ``MODEL/VERSION`` or ``MODEL@ALIAS``; unnamed get 0)."""
    row = _endpoint_row(session, endpoint)
    if not row.deployments:
        raise InvalidInputError(f"endpoint {endpoint!r} has no deployed model")
    validate_traffic(traffic)
    shares: dict[int, int] = {}
    for key, value in traffic.items():
        item = _find(row.deployments, key, endpoint)
        if item.id in shares:
            raise InvalidInputError(f"deployment {key} is named twice")
        shares[item.id] = value
    if sum(shares.values()) != 100:
        raise InvalidInputError("traffic percentages must sum to 100")
    for item in row.deployments:
        item.traffic_percent = shares.get(item.id, 0)
    row.updated_at = utcnow()
    session.flush()
    return _endpoint_info(row)


def alias_followers(session: Session, *, model: str, alias: str) -> list[str]:
    """Names of the endpoints with a deployment that follows ``model@alias``."""
    query = (
        select(Endpoint.name)
        .join(EndpointDeployment, EndpointDeployment.endpoint_id == Endpoint.id)
        .where(EndpointDeployment.model_name == model, EndpointDeployment.alias == alias)
        .distinct()
    )
    return sorted(session.scalars(query))


def redeploy_alias_followers(
    session: Session,
    *,
    model: str,
    alias: str,
    version: int,
    triton: TritonClient | None = None,
    settings: Settings | None = None,
) -> list[str]:
    """Point every deployment following ``model@alias`` at ``version`` and reload; the endpoints changed."""
    settings = settings or get_settings()
    rows = session.scalars(
        select(EndpointDeployment).where(EndpointDeployment.model_name == model, EndpointDeployment.alias == alias)
    ).all()
    changed = [row for row in rows if row.model_version != version]
    if not changed:
        return []
    exported = export_version(model=model, version=version, settings=settings)
    for row in changed:
        _apply_export(row, exported)
        row.endpoint.updated_at = utcnow()
    names = sorted({row.endpoint.name for row in changed})
    session.commit()
    _sync_models(session, [model], triton, settings)
    return names


def reload_deployed_models(triton: TritonClient, *, settings: Settings | None = None) -> dict[str, list[int]]:
    """Load every deployed model into a (re)started Triton; the supervisor's reload hook.

    Returns registered model → versions now deployed. A model that fails to load does not stop
    the others: its deployments record Triton's message.
    """
    settings = settings or get_settings()
    loaded: dict[str, list[int]] = {}
    with session_scope(settings.resolved_database_url) as session:
        models = sorted(set(session.scalars(select(EndpointDeployment.model_name))))
        for model in models:
            try:
                _sync_model(session, model=model, triton=triton, settings=settings)
            except Exception:
                log.exception("could not reload %s", model)
                session.rollback()
                continue
            loaded[model] = _deployed_versions(session, model)
            log.info("reloaded %s versions %s", model, loaded[model])
    return loaded
