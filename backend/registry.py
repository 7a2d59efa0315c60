"""The model registry (MLflow): registered models, versions, aliases, comparison and model cards.

MLflow's registry is the single source of truth; nothing here is copied into Sextant's database.
Aliases (``champion``, ``challenger``, ...) replace the deprecated stages. Moving an alias
redeploys the endpoints that follow it (``set_model_alias`` → ``endpoints.redeploy_alias_followers``).

Model card: the registered model's description, and per version its description plus the tags
``sextant.card.intended_use`` and ``sextant.card.limitations``; the training dataset version,
metrics and signature come from what training recorded (tags, run, logged model).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from sqlalchemy.orm import Session

from backend.config import Settings, get_settings
from backend.errors import ConflictError, InvalidInputError, NotFoundError
from backend.tracking import model_version_url, tracking_client
from backend.training.metrics import HIGHER_IS_BETTER

if TYPE_CHECKING:
    from backend.serving.client import TritonClient

CHAMPION = "champion"
CHALLENGER = "challenger"
SUGGESTED_ALIASES = (CHAMPION, CHALLENGER)
TEST_METRIC_PREFIX = "test_"
DATASET_TAG = "sextant.dataset"
FRAMEWORK_TAG = "sextant.framework"
TASK_TAG = "sextant.task"
INTENDED_USE_TAG = "sextant.card.intended_use"
LIMITATIONS_TAG = "sextant.card.limitations"
# MLflow's own limits: 5000 characters for a tag value; descriptions are kept to the same.
MAX_CARD_TEXT = 5000
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_RESERVED_ALIAS = re.compile(r"v\d+|latest", re.IGNORECASE)
_VERSION_REF = re.compile(r"(?P<name>.+)/(?P<version>\d+)")
PAGE = 1000


@dataclass(frozen=True)
class SignatureColumn:
    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class ModelSummary:
    name: str
    description: str
    version_count: int
    latest_version: int | None
    # alias → version
    aliases: dict[str, int]
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: int
    description: str
    aliases: tuple[str, ...]
    status: str
    created_at: datetime
    run_id: str | None
    source: str
    framework: str | None
    task: str | None
    # "dataset:version" the model was trained on.
    dataset: str | None
    # Held-out test metrics recorded at registration, without the "test_" prefix.
    metrics: dict[str, float]
    tags: dict[str, str]
    mlflow_url: str

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"aliases": list(self.aliases)}


@dataclass(frozen=True)
class ModelVersionDetail:
    info: ModelVersionInfo
    inputs: tuple[SignatureColumn, ...]
    outputs: tuple[SignatureColumn, ...]
    params: dict[str, str]
    # The run's final metrics (validation_*, test_*, losses).
    run_metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return self.info.as_dict() | {
            "inputs": [asdict(column) for column in self.inputs],
            "outputs": [asdict(column) for column in self.outputs],
            "params": self.params,
            "run_metrics": self.run_metrics,
        }


@dataclass(frozen=True)
class ModelRef:
    """``MODEL/VERSION``, ``MODEL@ALIAS`` or ``MODEL`` (latest version) as parsed from user input."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        return f"{self.name}/{self.version}" if self.version is not None else self.name


@dataclass(frozen=True)
class AliasChange:
    name: str
    alias: str
    version: int | None
    previous_version: int | None
    # Endpoints that follow ``name@alias`` and were redeployed.
    redeployed_endpoints: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    a: float | None
    b: float | None
    # b - a; None when either side lacks the metric.
    difference: float | None
    # "a", "b" or None (equal, missing, or a metric without a known direction).
    better: str | None


@dataclass(frozen=True)
class ValueComparison:
    name: str
    a: str | None
    b: str | None


@dataclass(frozen=True)
class SignatureChange:
    side: str  # "input" or "output"
    column: str
    a: str | None  # type in version a; None: absent
    b: str | None

    @property
    def change(self) -> str:
        if self.a is None:
            return "added"
        if self.b is None:
            return "removed"
        return "type changed"


@dataclass(frozen=True)
class VersionComparison:
    name: str
    a: ModelVersionInfo
    b: ModelVersionInfo
    metrics: list[MetricComparison]
    params: list[ValueComparison]
    signature: list[SignatureChange]


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: int
    model_description: str
    description: str
    intended_use: str
    limitations: str
    dataset: str | None
    framework: str | None
    task: str | None
    metrics: dict[str, float]
    inputs: tuple[SignatureColumn, ...]
    outputs: tuple[SignatureColumn, ...]
    aliases: tuple[str, ...]
    run_id: str | None
    created_at: datetime
    mlflow_url: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"aliases": list(self.aliases)}

    def to_markdown(self) -> str:
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        lines = [
            f"# {self.name} version {self.version}{aliases}",
            "",
            self.model_description or "",
            "",
            "## Description",
            self.description or "_none_",
            "",
            "## Intended use",
            self.intended_use or "_not stated_",
            "",
            "## Limitations",
            self.limitations or "_not stated_",
            "",
            "## Training",
            f"- dataset version: {self.dataset or 'unknown'}",
            f"- framework: {self.framework or 'unknown'}, task: {self.task or 'unknown'}",
            f"- MLflow run: {self.run_id or 'unknown'}",
            f"- registered: {self.created_at:%Y-%m-%d %H:%M} UTC",
            "",
            "## Test metrics",
            *(f"- {name}: {value:.6g}" for name, value in sorted(self.metrics.items())),
            "",
            "## Signature",
            "| input | type |",
            "|---|---|",
            *(f"| {column.name} | {column.type} |" for column in self.inputs),
            "",
            "| output | type |",
            "|---|---|",
            *(f"| {column.name} | {column.type} |" for column in self.outputs),
            "",
        ]
        return "\n".join(lines)


# Parsing and validation -----------------------------------------------------------------------


def parse_model_ref(text: str) -> ModelRef:
    """``MODEL/VERSION`` | ``MODEL@ALIAS`` | ``MODEL``."""
    text = text.strip()
    if not text:
        raise InvalidInputError("give a model as MODEL/VERSION, MODEL@ALIAS or MODEL")
    if "@" in text:
        name, _, alias = text.rpartition("@")
        if not name.strip():
            raise InvalidInputError(f"{text!r} names no model before the '@'")
        return ModelRef(name.strip(), alias=validate_alias(alias))
    if match := _VERSION_REF.fullmatch(text):
        version = int(match["version"])
        if version < 1:
            raise InvalidInputError(f"model versions start at 1, got {version}")
        return ModelRef(match["name"], version=version)
    return ModelRef(text)


def validate_alias(alias: str) -> str:
    alias = alias.strip()
    if not _ALIAS.fullmatch(alias):
        raise InvalidInputError(
            f"alias {alias!r} must start with a letter and hold only letters, digits, '_' or '-' (≤ 64 characters)"
        )
    if _RESERVED_ALIAS.fullmatch(alias):
        raise InvalidInputError(f"alias {alias!r} is reserved by MLflow (latest, v<number>)")
    return alias


def _card_text(value: str, what: str) -> str:
    value = value.strip()
    if len(value) > MAX_CARD_TEXT:
        raise InvalidInputError(f"{what} is {len(value):,} characters; at most {MAX_CARD_TEXT:,} are kept")
    return value


# MLflow access --------------------------------------------------------------------------------


def registry_client(settings: Settings | None = None) -> MlflowClient:
    return tracking_client(settings or get_settings())


def _client(client: MlflowClient | None, settings: Settings | None) -> MlflowClient:
    return client if client is not None else registry_client(settings)


def _missing(error: MlflowException) -> bool:
    return error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST) or "not found" in error.message.lower()


def _time(ms: int | None) -> datetime:
    return datetime.fromtimestamp((ms or 0) / 1000, tz=UTC)


def _float(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _version_info(version: Any, settings: Settings) -> ModelVersionInfo:
    tags = dict(version.tags or {})
    metrics = {
        key.removeprefix(TEST_METRIC_PREFIX): number
        for key, value in sorted(tags.items())
        if key.startswith(TEST_METRIC_PREFIX) and (number := _float(value)) is not None
    }
    return ModelVersionInfo(
        name=version.name,
        version=int(version.version),
        description=version.description or "",
        aliases=tuple(sorted(version.aliases or [])),
        status=str(version.status or ""),
        created_at=_time(version.creation_timestamp),
        run_id=version.run_id or None,
        source=version.source or "",
        framework=tags.get(FRAMEWORK_TAG),
        task=tags.get(TASK_TAG),
        dataset=tags.get(DATASET_TAG),
        metrics=metrics,
        tags=tags,
        mlflow_url=model_version_url(version.name, version.version, settings=settings),
    )


def _registered_model(client: MlflowClient, name: str) -> Any:
    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if _missing(error):
            raise NotFoundError(f"no registered model named {name!r}") from error
        raise


def _all_versions(client: MlflowClient, filter_string: str | None = None) -> list[Any]:
    versions: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(filter_string, max_results=PAGE, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def _name_filter(name: str) -> str:
    # MLflow's filter grammar has no escape for quotes; names with one are looked up another way.
    if "'" in name:
        raise InvalidInputError(f"model name {name!r} must not contain a quote")
    return f"name='{name}'"


# Models and versions --------------------------------------------------------------------------


def list_models(*, client: MlflowClient | None = None, settings: Settings | None = None) -> list[ModelSummary]:
    """Every registered model, most recently updated first."""
    settings = settings or get_settings()
    client = _client(client, settings)
    models: list[Any] = []
    token = None
    while True:
        page = client.search_registered_models(max_results=PAGE, page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            break
    counts: dict[str, list[int]] = {}
    for version in _all_versions(client):
        counts.setdefault(version.name, []).append(int(version.version))
    summaries = [
        ModelSummary(
            name=model.name,
            description=model.description or "",
            version_count=len(counts.get(model.name, [])),
            latest_version=max(counts[model.name]) if counts.get(model.name) else None,
            aliases={alias: int(version) for alias, version in sorted((model.aliases or {}).items())},
            created_at=_time(model.creation_timestamp),
            updated_at=_time(model.last_updated_timestamp),
        )
        for model in models
    ]
    return sorted(summaries, key=lambda summary: (summary.updated_at, summary.name), reverse=True)


def get_model(name: str, *, client: MlflowClient | None = None, settings: Settings | None = None) -> ModelSummary:
    settings = settings or get_settings()
    client = _client(client, settings)
    model = _registered_model(client, name)
    versions = [int(version.version) for version in _all_versions(client, _name_filter(name))]
    return ModelSummary(
        name=model.name,
        description=model.description or "",
        version_count=len(versions),
        latest_version=max(versions) if versions else None,
        aliases={alias: int(version) for alias, version in sorted((model.aliases or {}).items())},
        created_at=_time(model.creation_timestamp),
        updated_at=_time(model.last_updated_timestamp),
    )


def list_model_versions(
    name: str, *, client: MlflowClient | None = None, settings: Settings | None = None
) -> list[ModelVersionInfo]:
    """The model's versions, newest first."""
    settings = settings or get_settings()
    client = _client(client, settings)
    model = _registered_model(client, name)
    # MLflow's version search leaves aliases out; the registered model has them all.
    aliases: dict[int, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(int(version), []).append(alias)
    versions = [
        replace(info, aliases=tuple(sorted(aliases.get(info.version, []))))
        for info in (_version_info(version, settings) for version in _all_versions(client, _name_filter(name)))
    ]
    return sorted(versions, key=lambda info: info.version, reverse=True)


def get_model_version(
    name: str,
    *,
    version: int | None = None,
    alias: str | None = None,
    client: MlflowClient | None = None,
    settings: Settings | None = None,
) -> ModelVersionInfo:
    """One version by number, by alias, or (neither given) the latest."""
    settings = settings or get_settings()
    client = _client(client, settings)
    if version is not None and alias is not None:
        raise InvalidInputError("give a version or an alias, not both")
    if alias is not None:
        _registered_model(client, name)
        try:
            found = client.get_model_version_by_alias(name, validate_alias(alias))
        except MlflowException as error:
            if _missing(error):
                raise NotFoundError(f"model {name!r} has no alias {alias!r}") from error
            raise
        return _version_info(found, settings)
    if version is None:
        versions = list_model_versions(name, client=client, settings=settings)
        if not versions:
            raise NotFoundError(f"model {name!r} has no versions")
        return versions[0]
    try:
        return _version_info(client.get_model_version(name, str(version)), settings)
    except MlflowException as error:
        if _missing(error):
            _registered_model(client, name)
            raise NotFoundError(f"model {name!r} has no version {version}") from error
        raise


def resolve_model_ref(
    ref: ModelRef | str, *, client: MlflowClient | None = None, settings: Settings | None = None
) -> ModelVersionInfo:
    ref = parse_model_ref(ref) if isinstance(ref, str) else ref
    return get_model_version(ref.name, version=ref.version, alias=ref.alias, client=client, settings=settings)


def _signature(name: str, version: int) -> tuple[tuple[SignatureColumn, ...], tuple[SignatureColumn, ...]]:
    import mlflow.models

    try:
        signature = mlflow.models.get_model_info(f"models:/{name}/{version}").signature
    except (MlflowException, OSError):
        return (), ()
    if signature is None:
        return (), ()

    def columns(schema: Any) -> tuple[SignatureColumn, ...]:
        if schema is None:
            return ()
        return tuple(
            SignatureColumn(str(item.get("name", "")), str(item.get("type", "")), bool(item.get("required", True)))
            for item in schema.to_dict()
        )

    return columns(signature.inputs), columns(signature.outputs)


def get_model_version_detail(
    name: str,
    *,
    version: int | None = None,
    alias: str | None = None,
    client: MlflowClient | None = None,
    settings: Settings | None = None,
) -> ModelVersionDetail:
    """A version with its signature, the run's parameters and the run's final metrics."""
    settings = settings or get_settings()
    client = _client(client, settings)
    info = get_model_version(name, version=version, alias=alias, client=client, settings=settings)
    inputs, outputs = _signature(info.name, info.version)
    params: dict[str, str] = {}
    run_metrics: dict[str, float] = {}
    if info.run_id:
        try:
            run = client.get_run(info.run_id)
            params = dict(sorted(run.data.params.items()))
            run_metrics = dict(sorted(run.data.metrics.items()))
        except MlflowException as error:
            # A deleted run leaves the version usable; its params are just unknown.
            if not _missing(error):
                raise
    return ModelVersionDetail(info=info, inputs=inputs, outputs=outputs, params=params, run_metrics=run_metrics)


# Aliases --------------------------------------------------------------------------------------


def set_model_alias(
    session: Session,
    *,
    name: str,
    alias: str,
    version: int,
    client: MlflowClient | None = None,
    settings: Settings | None = None,
    triton: TritonClient | None = None,
) -> AliasChange:
    """Point ``name@alias`` at ``version`` (set or move), then redeploy the endpoints that follow it.

    The alias moves in MLflow first; each following endpoint then swaps to the new version in
    Triton (see ``endpoints.redeploy_alias_followers``). A redeploy that fails leaves the alias
    moved and the endpoint's state says why.
    """
    from backend.serving import endpoints

    settings = settings or get_settings()
    client = _client(client, settings)
    alias = validate_alias(alias)
    target = get_model_version(name, version=version, client=client, settings=settings)
    previous = get_model(name, client=client, settings=settings).aliases.get(alias)
    client.set_registered_model_alias(name, alias, str(target.version))
    redeployed = []
    if previous != target.version:
        redeployed = endpoints.redeploy_alias_followers(
            session, model=name, alias=alias, version=target.version, triton=triton, settings=settings
        )
    return AliasChange(
        name=name, alias=alias, version=target.version, previous_version=previous, redeployed_endpoints=redeployed
    )


def delete_model_alias(
    session: Session,
    *,
    name: str,
    alias: str,
    client: MlflowClient | None = None,
    settings: Settings | None = None,
) -> AliasChange:
    """Remove ``name@alias``; refused while an endpoint follows it (undeploy it or deploy a version first)."""
    from backend.serving import endpoints

    settings = settings or get_settings()
    client = _client(client, settings)
    alias = validate_alias(alias)
    previous = get_model(name, client=client, settings=settings).aliases.get(alias)
    if previous is None:
        raise NotFoundError(f"model {name!r} has no alias {alias!r}")
    followers = endpoints.alias_followers(session, model=name, alias=alias)
    if followers:
        raise ConflictError(
            f"endpoint {', '.join(followers)} follows {name}@{alias}; undeploy it there before removing the alias"
        )
    client.delete_registered_model_alias(name, alias)
    return AliasChange(name=name, alias=alias, version=None, previous_version=previous)


# Comparison -----------------------------------------------------------------------------------


def _better(metric: str, a: float | None, b: float | None) -> str | None:
    base = metric.removeprefix(TEST_METRIC_PREFIX).removeprefix("validation_")
    if a is None or b is None or a == b or base not in HIGHER_IS_BETTER:
        return None
    higher = HIGHER_IS_BETTER[base]
    return "b" if (b > a) == higher else "a"


def compare_metrics(a: dict[str, float], b: dict[str, float]) -> list[MetricComparison]:
    rows = []
    for metric in sorted(set(a) | set(b)):
        left, right = a.get(metric), b.get(metric)
        rows.append(
            MetricComparison(
                metric=metric,
                a=left,
                b=right,
                difference=None if left is None or right is None else right - left,
                better=_better(metric, left, right),
            )
        )
    return rows


def compare_values(a: dict[str, str], b: dict[str, str], *, only_differences: bool) -> list[ValueComparison]:
    return [
        ValueComparison(name=key, a=a.get(key), b=b.get(key))
        for key in sorted(set(a) | set(b))
        if not only_differences or a.get(key) != b.get(key)
    ]


def compare_signatures(
    a: tuple[tuple[SignatureColumn, ...], tuple[SignatureColumn, ...]],
    b: tuple[tuple[SignatureColumn, ...], tuple[SignatureColumn, ...]],
) -> list[SignatureChange]:
    changes = []
    for side, left, right in (("input", a[0], b[0]), ("output", a[1], b[1])):
        left_types = {column.name: column.type for column in left}
        right_types = {column.name: column.type for column in right}
        order = [column.name for column in left] + [column.name for column in right if column.name not in left_types]
        changes.extend(
            SignatureChange(side=side, column=column, a=left_types.get(column), b=right_types.get(column))
            for column in order
            if left_types.get(column) != right_types.get(column)
        )
    return changes


def compare_model_versions(
    name: str,
    *,
    version_a: int,
    version_b: int,
    only_differences: bool = True,
    client: MlflowClient | None = None,
    settings: Settings | None = None,
) -> VersionComparison:
    """Two versions side by side: metrics (run's final values), parameters, and signature changes (a → b)."""
    settings = settings or get_settings()
    client = _client(client, settings)
    a = get_model_version_detail(name, version=version_a, client=client, settings=settings)
    b = get_model_version_detail(name, version=version_b, client=client, settings=settings)
    metrics_a = a.run_metrics or {f"{TEST_METRIC_PREFIX}{k}": v for k, v in a.info.metrics.items()}
    metrics_b = b.run_metrics or {f"{TEST_METRIC_PREFIX}{k}": v for k, v in b.info.metrics.items()}
    params_a = a.params | {"framework": a.info.framework or "", "dataset": a.info.dataset or ""}
    params_b = b.params | {"framework": b.info.framework or "", "dataset": b.info.dataset or ""}
    return VersionComparison(
        name=name,
        a=a.info,
        b=b.info,
        metrics=compare_metrics(metrics_a, metrics_b),
        params=compare_values(params_a, params_b, only_differences=only_differences),
        signature=compare_signatures((a.inputs, a.outputs), (b.inputs, b.outputs)),
    )


# Model card -----------------------------------------------------------------------------------


def get_model_card(
    name: str, *, version: int, client: MlflowClient | None = None, settings: Settings | None = None
) -> ModelCard:
    settings = settings or get_settings()
    client = _client(client, settings)
    model = _registered_model(client, name)
    info = get_model_version(name, version=version, client=client, settings=settings)
    inputs, outputs = _signature(name, info.version)
    return ModelCard(
        name=name,
        version=info.version,
        model_description=model.description or "",
        description=info.description,
        intended_use=info.tags.get(INTENDED_USE_TAG, ""),
        limitations=info.tags.get(LIMITATIONS_TAG, ""),
        dataset=info.dataset,
        framework=info.framework,
        task=info.task,
        metrics=info.metrics,
        inputs=inputs,
        outputs=outputs,
        aliases=info.aliases,
        run_id=info.run_id,
        created_at=info.created_at,
        mlflow_url=info.mlflow_url,
    )


def update_model_card(
    name: str,
    *,
    version: int,
    description: str | None = None,
    intended_use: str | None = None,
    limitations: str | None = None,
    model_description: str | None = None,
    client: MlflowClient | None = None,
    settings: Settings | None = None,
) -> ModelCard:
    """Change the card's free-text parts (None leaves a part as it is; "" clears it)."""
    settings = settings or get_settings()
    client = _client(client, settings)
    get_model_version(name, version=version, client=client, settings=settings)
    if model_description is not None:
        client.update_registered_model(name, description=_card_text(model_description, "the model description"))
    if description is not None:
        client.update_model_version(name, str(version), description=_card_text(description, "the description"))
    card_tags = ((INTENDED_USE_TAG, intended_use, "intended use"), (LIMITATIONS_TAG, limitations, "limitations"))
    for tag, value, what in card_tags:
        if value is None:
            continue
        text = _card_text(value, what)
        if text:
            client.set_model_version_tag(name, str(version), tag, text)
        else:
            try:
                client.delete_model_version_tag(name, str(version), tag)
            except MlflowException as error:
                if not _missing(error):
                    raise
    return get_model_card(name, version=version, client=client, settings=settings)
