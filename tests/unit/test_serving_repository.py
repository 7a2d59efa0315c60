"""The Triton model repository writer and model.py's core, on disk, without Triton or MLflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost
import yaml
from tritonclient.grpc import model_config_pb2

from backend.errors import NotFoundError
from backend.serving.errors import ServingError
from backend.serving.repository import (
    ServingOptions,
    ServingSpec,
    config_text,
    load_config_json,
    model_config,
    parse_config_text,
    read_serving_specs,
    remove_model_version,
    serving_spec,
    triton_model_name,
    write_model_version,
    written_versions,
)
from backend.serving.triton_model import RequestError, VersionModel
from backend.training import tabular_model
from backend.training.tabular_model import TabularPredictor, TabularPreprocessor

REPO_ROOT = Path(__file__).resolve().parents[2]
COLUMNS = [("plan", "string"), ("tenure", "long"), ("charges", "double"), ("partner", "boolean")]
OPTIONS = ServingOptions(max_batch_size=512, max_queue_delay_us=100, instance_count=2, instance_kind="auto")


def _spec(
    task: str,
    *,
    version: int = 1,
    classes: list[Any] | None = None,
    label: str | None = None,
    columns: list[tuple[str, str]] = COLUMNS,
    framework: str = "xgboost",
) -> ServingSpec:
    metadata = {"task": task, "classes": classes, "framework": framework}
    return serving_spec(
        registry_name="churn", version=version, metadata=metadata, input_columns=columns, label_type=label
    )


def _tensors(items: Any) -> list[tuple[str, str, list[int], bool]]:
    return [
        (item.name, model_config_pb2.DataType.Name(item.data_type), list(item.dims), getattr(item, "optional", False))
        for item in items
    ]


def test_binary_classifier_config() -> None:
    config = model_config(triton_name="churn", specs=[_spec("binary", classes=[0, 1], label="long")], options=OPTIONS)
    text = config_text(config)

    assert parse_config_text(text) == config
    assert config.backend == "python" and 'backend: "python"' in text
    assert config.max_batch_size == 512
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds == 100
    # Raw feature columns in signature order; numbers and booleans as FP64, text as strings.
    assert _tensors(config.input) == [
        ("plan", "TYPE_STRING", [1], False),
        ("tenure", "TYPE_FP64", [1], False),
        ("charges", "TYPE_FP64", [1], False),
        ("partner", "TYPE_FP64", [1], False),
    ]
    assert _tensors(config.output) == [
        ("probabilities", "TYPE_FP32", [2], False),
        ("prediction", "TYPE_INT64", [1], False),
    ]
    (group,) = config.instance_group
    assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.version_policy.latest.num_versions == 1
    assert config.parameters["sextant.registry_name"].string_value == "churn"


def test_multiclass_config_with_text_labels() -> None:
    spec = _spec("multiclass", classes=["basic", "premium", "standard"], label="string")
    config = model_config(triton_name="churn", specs=[spec], options=OPTIONS)

    assert _tensors(config.output) == [
        ("probabilities", "TYPE_FP32", [3], False),
        ("prediction", "TYPE_STRING", [1], False),
    ]


def test_regression_config() -> None:
    config = model_config(triton_name="churn", specs=[_spec("regression")], options=OPTIONS)

    assert _tensors(config.output) == [("prediction", "TYPE_FP64", [1], False)]
    assert len(config.input) == 4


def test_boolean_labels_and_unsupported_types() -> None:
    spec = _spec("binary", classes=[False, True], label="boolean")
    assert spec.outputs[1].data_type == "TYPE_BOOL"
    with pytest.raises(ServingError, match="datetime"):
        _spec("regression", columns=[("when", "datetime")])


def test_versions_side_by_side_share_one_config() -> None:
    older = _spec("multiclass", version=1, classes=["a", "b"], label="string", columns=COLUMNS[:3])
    newer = _spec("multiclass", version=2, classes=["a", "b", "c"], label="string")
    config = model_config(triton_name="churn", specs=[older, newer], options=OPTIONS, versions=[2, 1])

    assert list(config.version_policy.specific.versions) == [1, 2]
    # An input only the newer version has is optional; class counts differ, so dims are variable.
    assert [(name, optional) for name, _, _, optional in _tensors(config.input)] == [
        ("plan", False),
        ("tenure", False),
        ("charges", False),
        ("partner", True),
    ]
    assert _tensors(config.output)[0] == ("probabilities", "TYPE_FP32", [-1], False)


def test_conflicting_versions_are_refused() -> None:
    numeric = _spec("regression", version=1, columns=[("plan", "double")])
    text = _spec("regression", version=2, columns=[("plan", "string")])
    with pytest.raises(ServingError, match="cannot be served side by side"):
        model_config(triton_name="churn", specs=[numeric, text], options=OPTIONS)


def test_instance_kind() -> None:
    torch_spec = _spec("regression", framework="torch")
    xgb_spec = _spec("regression")

    def kind(specs: list[ServingSpec], options: ServingOptions, gpu: bool) -> str:
        config = model_config(triton_name="m", specs=specs, options=options, gpu=gpu)
        return model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind)

    assert kind([torch_spec], OPTIONS, True) == "KIND_GPU"
    assert kind([torch_spec], OPTIONS, False) == "KIND_CPU"
    assert kind([xgb_spec], OPTIONS, True) == "KIND_CPU"
    assert kind([xgb_spec], ServingOptions(instance_kind="gpu"), False) == "KIND_GPU"
    assert kind([torch_spec], ServingOptions(instance_kind="cpu"), True) == "KIND_CPU"


def test_triton_model_names() -> None:
    assert triton_model_name("churn-churned_v2.1") == "churn-churned_v2.1"
    odd = triton_model_name("churn / churned")
    assert odd.startswith("churn-churned-") and len(odd) == len("churn-churned-") + 8
    assert triton_model_name("churn // churned") != odd


# A real (tiny) Sextant model folder, laid out as MLflow logs it.


def _raw_frame(rows: int = 80, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "plan": rng.choice(["basic", "standard", "premium"], rows).astype(object),
            "tenure": rng.integers(0, 72, rows),
            "charges": rng.normal(70, 20, rows).round(2),
            "partner": rng.random(rows) > 0.5,
        }
    )
    frame.loc[3, "charges"] = np.nan
    frame.loc[4, "plan"] = None
    return frame


def _make_model_dir(folder: Path, task: str) -> tuple[Path, TabularPredictor]:
    frame = _raw_frame()
    preprocessor = TabularPreprocessor.fit(frame, numeric=["tenure", "charges", "partner"], categorical=["plan"])
    matrix = preprocessor.transform(frame)
    rng = np.random.default_rng(0)
    classes: list[Any] | None
    if task == "binary":
        classes, labels, label_type = [0, 1], (matrix[:, 0] > 0).astype(int), "long"
        params = {"objective": "binary:logistic"}
    elif task == "multiclass":
        classes, labels, label_type = ["a", "b", "c"], rng.integers(0, 3, len(frame)), "string"
        params = {"objective": "multi:softprob", "num_class": 3}
    else:
        classes, labels, label_type = None, rng.normal(size=len(frame)), "double"
        params = {"objective": "reg:squarederror"}
    booster = xgboost.train({**params, "max_depth": 3}, xgboost.DMatrix(matrix, label=labels), num_boost_round=5)
    metadata = {
        "format_version": tabular_model.FORMAT_VERSION,
        "framework": "xgboost",
        "task": task,
        "target": "y",
        "classes": classes,
        "features": [{"name": name, "mlflow_type": kind} for name, kind in COLUMNS],
    }
    artifacts = folder / "artifacts"
    artifacts.mkdir(parents=True)
    (artifacts / tabular_model.METADATA_FILE).write_text(json.dumps(metadata))
    (artifacts / tabular_model.PREPROCESSOR_FILE).write_text(json.dumps(preprocessor.to_dict()))
    booster.save_model(str(artifacts / tabular_model.BOOSTER_FILE))
    (folder / "code").mkdir()
    shutil.copyfile(REPO_ROOT / "backend" / "training" / "tabular_model.py", folder / "code" / "tabular_model.py")
    signature = {
        "inputs": json.dumps([{"type": kind, "name": name, "required": True} for name, kind in COLUMNS]),
        "outputs": json.dumps([{"type": label_type, "name": "prediction", "required": True}]),
    }
    (folder / "MLmodel").write_text(yaml.safe_dump({"signature": signature}))
    return folder, TabularPredictor(metadata, preprocessor, booster=booster)


def test_write_model_version_layout(tmp_path: Path) -> None:
    model_dir, _ = _make_model_dir(tmp_path / "mlflow-model", "binary")
    repository = tmp_path / "models"

    written = write_model_version(
        repository=repository, registry_name="churn", version=3, model_dir=model_dir, options=OPTIONS, gpu=False
    )

    version_dir = repository / "churn" / "3"
    assert written.version_dir == version_dir and written.triton_name == "churn"
    assert sorted(path.name for path in version_dir.iterdir()) == [
        "model.py",
        "preprocessor.json",
        "serving.json",
        "sextant_model.json",
        "tabular_model.py",
        "xgboost_booster.json",
    ]
    assert (version_dir / "model.py").read_text() == (REPO_ROOT / "backend/serving/triton_model.py").read_text()
    assert (version_dir / "tabular_model.py").read_bytes() == (model_dir / "code" / "tabular_model.py").read_bytes()
    assert (repository / "churn" / "config.pbtxt").read_text() == written.config_text
    assert read_serving_specs(repository, "churn") == [written.spec]

    # A second version joins the same config; rewriting one replaces it whole.
    write_model_version(repository=repository, registry_name="churn", version=4, model_dir=model_dir, options=OPTIONS)
    write_model_version(repository=repository, registry_name="churn", version=3, model_dir=model_dir, options=OPTIONS)
    assert written_versions(repository) == {"churn": [3, 4]}
    override = json.loads(load_config_json(repository=repository, triton_name="churn", versions=[4], options=OPTIONS))
    assert override["version_policy"] == {"specific": {"versions": ["4"]}}
    assert override["backend"] == "python" and override["max_batch_size"] == 512
    with pytest.raises(NotFoundError):
        load_config_json(repository=repository, triton_name="churn", versions=[9], options=OPTIONS)

    remove_model_version(repository=repository, registry_name="churn", version=3, options=OPTIONS)
    assert written_versions(repository) == {"churn": [4]}
    remove_model_version(repository=repository, registry_name="churn", version=4, options=OPTIONS)
    assert not (repository / "churn").exists()


def test_a_folder_that_is_not_a_sextant_model_is_refused(tmp_path: Path) -> None:
    model_dir, _ = _make_model_dir(tmp_path / "mlflow-model", "binary")
    (model_dir / "code" / "tabular_model.py").unlink()
    with pytest.raises(ServingError, match="not a Sextant model"):
        write_model_version(repository=tmp_path / "models", registry_name="churn", version=1, model_dir=model_dir)
    assert written_versions(tmp_path / "models") == {}


def _as_request_tensors(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The columns as Triton hands them to model.py: (rows, 1) arrays, text as bytes (b"" = missing)."""
    tensors = {}
    for name, kind in COLUMNS:
        if kind == "string":
            values = np.array([b"" if value is None else value.encode() for value in frame[name]], dtype=object)
        else:
            values = frame[name].to_numpy(dtype=np.float64)
        tensors[name] = values.reshape(-1, 1)
    return tensors


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_model_py_core_matches_the_pyfunc_model(tmp_path: Path, task: str) -> None:
    model_dir, predictor = _make_model_dir(tmp_path / "mlflow-model", task)
    written = write_model_version(
        repository=tmp_path / "models", registry_name="m", version=1, model_dir=model_dir, options=OPTIONS
    )
    frame = _raw_frame(rows=40, seed=11)
    frame.loc[5, "plan"] = "never-seen"
    expected = predictor.predict(frame)

    model = VersionModel(written.version_dir)
    columns = {name: model.decode(name, kind, _as_request_tensors(frame)[name]) for name, kind in model.inputs}
    outputs = model.predict(columns)

    if task == "regression":
        assert outputs["prediction"].shape == (40, 1) and outputs["prediction"].dtype == np.float64
        assert np.abs(outputs["prediction"][:, 0] - expected["prediction"].to_numpy()).max() <= 1e-12
        return
    probabilities = expected[[f"probability_{label}" for label in predictor.classes]].to_numpy()
    assert outputs["probabilities"].dtype == np.float32
    assert np.abs(outputs["probabilities"] - probabilities).max() <= 1e-7
    labels = outputs["prediction"][:, 0]
    if task == "multiclass":
        labels = np.array([label.decode() for label in labels], dtype=object)
    assert (labels == expected["prediction"].to_numpy()).all()


def test_model_py_rejects_unusable_inputs(tmp_path: Path) -> None:
    model_dir, _ = _make_model_dir(tmp_path / "mlflow-model", "binary")
    written = write_model_version(repository=tmp_path / "models", registry_name="m", version=1, model_dir=model_dir)
    model = VersionModel(written.version_dir)

    with pytest.raises(RequestError, match="missing input 'plan'"):
        model.decode("plan", "TYPE_STRING", None)
    with pytest.raises(RequestError, match="shape"):
        model.decode("tenure", "TYPE_FP64", np.zeros((2, 3)))
    with pytest.raises(RequestError, match="UTF-8"):
        model.decode("plan", "TYPE_STRING", np.array([[b"\xff"]], dtype=object))
