"""The Triton model repository Sextant owns: one folder per registered model, one per version.

Layout under ``Settings.triton_models_dir`` (Triton versions = registry versions)::

    <triton name>/config.pbtxt                 python backend, dynamic batching, the tensors below
    <triton name>/<version>/model.py           the serving adapter (``backend/serving/triton_model.py``)
    <triton name>/<version>/tabular_model.py   the model's own code, exactly as logged with it in MLflow
    <triton name>/<version>/serving.json       this version's tensors (``ServingSpec``)
    <triton name>/<version>/sextant_model.json, preprocessor.json, xgboost_booster.json | model.torchscript.pt

Tensors (rows along the batch dimension, every tensor has dims ``[1]`` per row unless said):

- one input per raw feature column, named as the column, in signature order. Numbers and booleans
  are ``TYPE_FP64`` (NaN = missing, booleans 1/0): FP32 inputs round values such as 72.04 onto the
  other side of XGBoost split thresholds (measured on the churn example: probabilities off by up to
  0.42). Text columns are ``TYPE_STRING`` (UTF-8 bytes, the raw category; an empty string = missing).
- classifiers: ``probabilities`` (``TYPE_FP32``, dims ``[classes]``, in the order of the version's
  ``classes``) and ``prediction``, the class label typed as in the signature (``TYPE_INT64``,
  ``TYPE_BOOL``, ``TYPE_FP64`` or ``TYPE_STRING``); regressors: ``prediction`` (``TYPE_FP64``).

One ``config.pbtxt`` serves every version of a model, so it is the union of their tensors: an input
only some versions have is ``optional``, and ``probabilities`` gets dims ``[-1]`` when versions
disagree on the number of classes. Versions whose tensors conflict (a column numeric in one, text
in the other) cannot share a Triton model and are refused.

This module only touches the disk (and MLflow in ``export_model_version``): no Triton needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from backend.config import Settings, get_settings
from backend.errors import NotFoundError
from backend.serving.errors import ServingError

CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.py"
SPEC_FILE = "serving.json"
MODEL_CODE_FILE = "tabular_model.py"
METADATA_FILE = "sextant_model.json"
PREPROCESSOR_FILE = "preprocessor.json"
MODEL_ARTIFACTS = {"xgboost": "xgboost_booster.json", "torch": "model.torchscript.pt"}
PREDICTION_OUTPUT = "prediction"
PROBABILITIES_OUTPUT = "probabilities"
REGISTRY_NAME_PARAMETER = "sextant.registry_name"
ADAPTER_SOURCE = Path(__file__).resolve().parent / "triton_model.py"
STAGING_DIR = ".staging"
NVIDIA_GPUS_DIR = Path("/proc/driver/nvidia/gpus")

NUMERIC_INPUT = "TYPE_FP64"
STRING_TENSOR = "TYPE_STRING"
# MLflow signature column types → Triton input types.
_INPUT_TYPES = {
    "boolean": NUMERIC_INPUT,
    "integer": NUMERIC_INPUT,
    "long": NUMERIC_INPUT,
    "float": NUMERIC_INPUT,
    "double": NUMERIC_INPUT,
    "string": STRING_TENSOR,
}
_LABEL_TYPES = {
    "boolean": "TYPE_BOOL",
    "integer": "TYPE_INT64",
    "long": "TYPE_INT64",
    "float": "TYPE_FP64",
    "double": "TYPE_FP64",
    "string": STRING_TENSOR,
}
_TRITON_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_INSTANCE_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str
    dims: tuple[int, ...] = (1,)
    optional: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data_type": self.data_type, "dims": list(self.dims), "optional": self.optional}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(data["name"], data["data_type"], tuple(data["dims"]), bool(data.get("optional", False)))


@dataclass(frozen=True)
class ServingSpec:
    """One registry version as Triton serves it: what ``model.py`` decodes and returns."""

    registry_name: str
    version: int
    framework: str
    task: str
    classes: list[Any] | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "registry_name": self.registry_name,
            "version": self.version,
            "framework": self.framework,
            "task": self.task,
            "classes": self.classes,
            "inputs": [tensor.to_dict() for tensor in self.inputs],
            "outputs": [tensor.to_dict() for tensor in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServingSpec:
        return cls(
            registry_name=data["registry_name"],
            version=int(data["version"]),
            framework=data["framework"],
            task=data["task"],
            classes=data["classes"],
            inputs=tuple(TensorSpec.from_dict(item) for item in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(item) for item in data["outputs"]),
        )


@dataclass(frozen=True)
class ServingOptions:
    """The knobs of a model's ``config.pbtxt`` (defaults from Settings)."""

    max_batch_size: int = 4096
    max_queue_delay_us: int = 0
    instance_count: int = 1
    # auto | cpu | gpu; auto picks GPU instances for PyTorch models where an NVIDIA GPU is present.
    instance_kind: str = "auto"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ServingOptions:
        settings = settings or get_settings()
        return cls(
            max_batch_size=settings.triton_max_batch_size,
            max_queue_delay_us=settings.triton_max_queue_delay_us,
            instance_count=settings.triton_instance_count,
            instance_kind=settings.triton_instance_kind,
        )


@dataclass(frozen=True)
class WrittenVersion:
    triton_name: str
    version: int
    model_dir: Path
    version_dir: Path
    spec: ServingSpec
    # The model's config.pbtxt after the write (covering every version in the folder).
    config_text: str = field(repr=False)


def triton_model_name(registry_name: str) -> str:
    """The model's folder and Triton name: the registry name when it is a safe folder name."""
    if _TRITON_NAME.fullmatch(registry_name):
        return registry_name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", registry_name).strip("-._")[:180] or "model"
    # Two names that slug alike must not share a folder.
    return f"{slug}-{hashlib.sha256(registry_name.encode()).hexdigest()[:8]}"


def gpu_available() -> bool:
    """An NVIDIA GPU is visible to the driver (no CUDA import: this runs in light processes too)."""
    try:
        return any(NVIDIA_GPUS_DIR.iterdir())
    except OSError:
        return False


def serving_spec(
    *,
    registry_name: str,
    version: int,
    metadata: dict[str, Any],
    input_columns: Sequence[tuple[str, str]],
    label_type: str | None = None,
) -> ServingSpec:
    """The tensors of one version from its Sextant metadata and signature (name, MLflow type) columns."""
    inputs = []
    for name, column_type in input_columns:
        if column_type not in _INPUT_TYPES:
            raise ServingError(f"input {name!r} has type {column_type!r}, which Triton serving does not support")
        inputs.append(TensorSpec(name, _INPUT_TYPES[column_type]))
    task = metadata["task"]
    classes = metadata.get("classes")
    if task == "regression":
        outputs = (TensorSpec(PREDICTION_OUTPUT, "TYPE_FP64"),)
    else:
        if not classes:
            raise ServingError(f"{registry_name} version {version} is a classifier without classes")
        label = _LABEL_TYPES.get(label_type or "")
        if label is None:
            raise ServingError(f"the signature's {PREDICTION_OUTPUT!r} output type {label_type!r} is not supported")
        outputs = (TensorSpec(PROBABILITIES_OUTPUT, "TYPE_FP32", (len(classes),)), TensorSpec(PREDICTION_OUTPUT, label))
    return ServingSpec(
        registry_name=registry_name,
        version=version,
        framework=metadata["framework"],
        task=task,
        classes=classes,
        inputs=tuple(inputs),
        outputs=outputs,
    )


def _merge(specs: Sequence[ServingSpec], kind: str) -> list[TensorSpec]:
    merged: dict[str, TensorSpec] = {}
    present: Counter[str] = Counter()
    for spec in sorted(specs, key=lambda item: item.version, reverse=True):
        for tensor in getattr(spec, kind):
            present[tensor.name] += 1
            seen = merged.get(tensor.name)
            if seen is None:
                merged[tensor.name] = tensor
            elif seen.data_type != tensor.data_type:
                raise ServingError(
                    f"versions of {spec.registry_name} disagree on {kind[:-1]} {tensor.name!r} "
                    f"({seen.data_type} vs {tensor.data_type} in version {spec.version}): "
                    "they cannot be served side by side"
                )
            elif seen.dims != tensor.dims:
                merged[tensor.name] = replace(seen, dims=(-1,))
    if kind == "outputs":
        return list(merged.values())
    return [replace(tensor, optional=present[tensor.name] < len(specs)) for tensor in merged.values()]


def _instance_kind(specs: Sequence[ServingSpec], options: ServingOptions, gpu: bool | None) -> str:
    if options.instance_kind != "auto":
        return _INSTANCE_KINDS[options.instance_kind]
    # Only the PyTorch MLP gains from a GPU; XGBoost boosters predict on the CPU in model.py.
    wants_gpu = any(spec.framework == "torch" for spec in specs)
    return "KIND_GPU" if wants_gpu and (gpu_available() if gpu is None else gpu) else "KIND_CPU"


def model_config(
    *,
    triton_name: str,
    specs: Sequence[ServingSpec],
    options: ServingOptions | None = None,
    versions: Sequence[int] | None = None,
    gpu: bool | None = None,
) -> model_config_pb2.ModelConfig:
    """The Triton config serving ``specs`` (all one model's versions); ``versions`` pins the version policy.

    Without ``versions`` the policy is Triton's default (the latest version only).
    """
    if not specs:
        raise ServingError(f"no versions of {triton_name} to configure")
    options = options or ServingOptions.from_settings()
    config = model_config_pb2.ModelConfig(name=triton_name, backend="python", max_batch_size=options.max_batch_size)
    if versions is None:
        config.version_policy.latest.num_versions = 1
    else:
        config.version_policy.specific.versions.extend(sorted(set(versions)))
    for tensor in _merge(specs, "inputs"):
        config.input.add(
            name=tensor.name,
            data_type=model_config_pb2.DataType.Value(tensor.data_type),
            dims=list(tensor.dims),
            optional=tensor.optional,
        )
    for tensor in _merge(specs, "outputs"):
        config.output.add(
            name=tensor.name, data_type=model_config_pb2.DataType.Value(tensor.data_type), dims=list(tensor.dims)
        )
    config.instance_group.add(
        count=options.instance_count,
        kind=model_config_pb2.ModelInstanceGroup.Kind.Value(_instance_kind(specs, options, gpu)),
    )
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.parameters[REGISTRY_NAME_PARAMETER].string_value = specs[0].registry_name
    return config


def config_text(config: model_config_pb2.ModelConfig) -> str:
    """``config.pbtxt`` content."""
    return text_format.MessageToString(config)


def config_json(config: model_config_pb2.ModelConfig) -> str:
    """The JSON form Triton's load API takes as a config override."""
    return json_format.MessageToJson(config, preserving_proto_field_name=True, indent=None)


def parse_config_text(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def signature_columns(model_dir: Path) -> tuple[list[tuple[str, str]], str | None]:
    """(name, MLflow type) of the logged model's input columns, and its ``prediction`` output type."""
    import yaml

    try:
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
        inputs = json.loads(mlmodel["signature"]["inputs"])
        outputs = json.loads(mlmodel["signature"].get("outputs") or "[]")
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise ServingError(f"{model_dir} is not an MLflow model with a column signature ({error})") from error
    label = next((column["type"] for column in outputs if column.get("name") == PREDICTION_OUTPUT), None)
    return [(column["name"], column["type"]) for column in inputs], label


def version_dirs(model_dir: Path) -> list[Path]:
    if not model_dir.is_dir():
        return []
    found = [path for path in model_dir.iterdir() if path.is_dir() and path.name.isdigit()]
    return sorted(found, key=lambda path: int(path.name))


def read_serving_specs(repository: Path, triton_name: str) -> list[ServingSpec]:
    """The specs of every version written under ``<repository>/<triton_name>``, oldest first."""
    return [
        ServingSpec.from_dict(json.loads((folder / SPEC_FILE).read_text()))
        for folder in version_dirs(repository / triton_name)
        if (folder / SPEC_FILE).is_file()
    ]


def load_config_json(
    *,
    repository: Path,
    triton_name: str,
    versions: Sequence[int],
    options: ServingOptions | None = None,
    gpu: bool | None = None,
) -> str:
    """The config override that makes Triton serve exactly ``versions`` side by side."""
    specs = {spec.version: spec for spec in read_serving_specs(repository, triton_name)}
    missing = [version for version in versions if version not in specs]
    if missing:
        raise NotFoundError(f"{triton_name} has no version {', '.join(map(str, missing))} in the Triton repository")
    chosen = [specs[version] for version in versions]
    return config_json(model_config(triton_name=triton_name, specs=chosen, options=options, versions=versions, gpu=gpu))


def _write_text_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def _write_config(
    repository: Path, triton_name: str, options: ServingOptions | None, gpu: bool | None
) -> model_config_pb2.ModelConfig | None:
    specs = read_serving_specs(repository, triton_name)
    model_dir = repository / triton_name
    if not specs:
        shutil.rmtree(model_dir, ignore_errors=True)
        return None
    config = model_config(triton_name=triton_name, specs=specs, options=options, gpu=gpu)
    _write_text_atomically(model_dir / CONFIG_FILE, config_text(config))
    return config


def _stage_version(staging: Path, model_dir: Path, spec: ServingSpec) -> Path:
    code = model_dir / "code" / MODEL_CODE_FILE
    artifacts = model_dir / "artifacts"
    files = [artifacts / METADATA_FILE, artifacts / PREPROCESSOR_FILE, artifacts / MODEL_ARTIFACTS[spec.framework]]
    missing = [str(path.relative_to(model_dir)) for path in [code, *files] if not path.is_file()]
    if missing:
        raise ServingError(
            f"{spec.registry_name} version {spec.version} is not a Sextant model: no {', '.join(missing)}"
        )
    folder = staging / str(spec.version)
    folder.mkdir(parents=True)
    shutil.copyfile(ADAPTER_SOURCE, folder / MODEL_FILE)
    shutil.copyfile(code, folder / MODEL_CODE_FILE)
    for path in files:
        shutil.copyfile(path, folder / path.name)
    (folder / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2))
    return folder


def write_model_version(
    *,
    repository: Path,
    registry_name: str,
    version: int,
    model_dir: Path,
    options: ServingOptions | None = None,
    gpu: bool | None = None,
) -> WrittenVersion:
    """Write one version from a local copy of its MLflow model folder (the one holding ``MLmodel``).

    The version folder is built aside and swapped in whole, then ``config.pbtxt`` is rewritten to
    cover every version present. Rewriting a version Triton serves is safe: a loaded version keeps
    what it read at load time.
    """
    model_dir = Path(model_dir)
    try:
        metadata = json.loads((model_dir / "artifacts" / METADATA_FILE).read_text())
    except OSError as error:
        raise ServingError(f"{registry_name} version {version} is not a Sextant model: {error}") from error
    columns, label_type = signature_columns(model_dir)
    spec = serving_spec(
        registry_name=registry_name, version=version, metadata=metadata, input_columns=columns, label_type=label_type
    )
    triton_name = triton_model_name(registry_name)
    target_model = repository / triton_name
    # Refuse before touching the folder when this version cannot share a config with the others.
    others = [other for other in read_serving_specs(repository, triton_name) if other.version != version]
    model_config(triton_name=triton_name, specs=[*others, spec], options=options, gpu=gpu)
    staging_root = repository / STAGING_DIR
    staging_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging_root) as staging:
        built = _stage_version(Path(staging), model_dir, spec)
        target_model.mkdir(parents=True, exist_ok=True)
        target = target_model / str(version)
        if target.exists():
            retired = Path(staging) / "retired"
            os.replace(target, retired)
        os.replace(built, target)
    config = _write_config(repository, triton_name, options, gpu)
    assert config is not None
    return WrittenVersion(
        triton_name=triton_name,
        version=version,
        model_dir=target_model,
        version_dir=target_model / str(version),
        spec=spec,
        config_text=config_text(config),
    )


def remove_model_version(
    *,
    repository: Path,
    registry_name: str,
    version: int,
    options: ServingOptions | None = None,
    gpu: bool | None = None,
) -> None:
    """Delete one version's folder (the model's folder with its last version); unload it from Triton first."""
    triton_name = triton_model_name(registry_name)
    shutil.rmtree(repository / triton_name / str(version), ignore_errors=True)
    _write_config(repository, triton_name, options, gpu)


def export_model_version(
    *,
    registry_name: str,
    version: int,
    repository: Path | None = None,
    settings: Settings | None = None,
    options: ServingOptions | None = None,
    gpu: bool | None = None,
) -> WrittenVersion:
    """Fetch a registered model version's artifacts from MLflow and write it into the repository."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from backend.tracking import tracking_client

    settings = settings or get_settings()
    repository = repository or settings.triton_models_dir
    client = tracking_client(settings)
    try:
        source = client.get_model_version_download_uri(registry_name, str(version))
    except MlflowException as error:
        raise NotFoundError(f"model {registry_name} has no version {version} in the registry") from error
    staging_root = repository / STAGING_DIR
    staging_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging_root) as download:
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=download)
        return write_model_version(
            repository=repository,
            registry_name=registry_name,
            version=version,
            model_dir=Path(local),
            options=options or ServingOptions.from_settings(settings),
            gpu=gpu,
        )


def written_versions(repository: Path) -> dict[str, list[int]]:
    """Triton name → versions present in the repository."""
    if not repository.is_dir():
        return {}
    return {
        folder.name: [int(path.name) for path in version_dirs(folder)]
        for folder in sorted(repository.iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    }
