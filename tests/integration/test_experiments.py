"""Experiment browsing and run comparison against a real MLflow store (SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from backend import experiments
from backend.errors import InvalidInputError

RUNS = 23


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, str, str]:
    folder: Path = tmp_path_factory.mktemp("mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    experiment_id = client.create_experiment("churn", artifact_location=str(folder / "artifacts"))
    for index in range(RUNS):
        run = client.create_run(experiment_id, run_name=f"run-{index:02d}")
        client.log_batch(
            run.info.run_id,
            params=[
                Param("max_depth", str(3 + index % 4)),
                Param("learning_rate", str(0.01 * (index + 1))),
                Param("framework", "xgboost"),
            ],
            metrics=[Metric("val_auc", 0.5 + index / 100, 0, step) for step in range(1)]
            + [Metric("val_loss", 1.0 / (step + 1) + index / 1000, 0, step) for step in range(5)],
        )
        client.set_terminated(run.info.run_id)
    parent = client.create_run(experiment_id, run_name="tuning")
    for trial in range(6):
        child = client.create_run(
            experiment_id, run_name=f"trial-{trial}", tags={experiments.PARENT_RUN_TAG: parent.info.run_id}
        )
        client.log_batch(
            child.info.run_id,
            params=[Param("max_depth", str(2 + trial)), Param("booster", "gbtree" if trial % 2 else "dart")],
            metrics=[Metric("val_logloss", 0.9 - 0.1 * trial + (0.05 if trial % 2 else 0), 0, 0)],
        )
        client.set_terminated(child.info.run_id)
    client.set_terminated(parent.info.run_id)
    return client, experiment_id, parent.info.run_id


def test_pages_cover_every_run_once_in_metric_order(store: tuple[MlflowClient, str, str]) -> None:
    client, experiment_id, _ = store
    seen: list[experiments.RunSummary] = []
    token = None
    pages = 0
    while True:
        page = experiments.search_runs_page(
            client, experiment_id=experiment_id, sort_by="metrics.val_auc", descending=True,
            page_size=10, page_token=token, top_level_only=True,
        )  # fmt: skip
        seen.extend(page.runs)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    scored = [run for run in seen if "val_auc" in run.metrics]
    assert len(scored) == RUNS and pages == 3
    assert [run.metrics["val_auc"] for run in scored] == sorted((r.metrics["val_auc"] for r in scored), reverse=True)
    assert len({run.run_id for run in seen}) == len(seen) == RUNS + 1  # plus the tuning parent, not its trials
    first = experiments.search_runs_page(client, experiment_id=experiment_id, page_size=5, top_level_only=True)
    assert {"val_auc", "val_loss"} <= set(first.metric_keys)
    assert {"max_depth", "learning_rate", "framework"} <= set(first.param_keys)


def test_nested_trials_are_hidden_from_the_top_level(store: tuple[MlflowClient, str, str]) -> None:
    client, experiment_id, parent_id = store
    everything = experiments.search_runs_page(client, experiment_id=experiment_id, page_size=1000)
    top = experiments.search_runs_page(client, experiment_id=experiment_id, page_size=1000, top_level_only=True)
    assert len(everything.runs) == RUNS + 7 and len(top.runs) == RUNS + 1
    children = experiments.child_runs(client, parent_run_id=parent_id, experiment_id=experiment_id)
    assert [c.run_name for c in children] == [f"trial-{i}" for i in range(6)]


def test_bad_sort_key_is_refused(store: tuple[MlflowClient, str, str]) -> None:
    client, experiment_id, _ = store
    with pytest.raises(InvalidInputError, match="cannot sort by"):
        experiments.search_runs_page(client, experiment_id=experiment_id, sort_by="drop table")


def test_comparison_shows_only_differing_params_by_default(store: tuple[MlflowClient, str, str]) -> None:
    client, experiment_id, _ = store
    runs = experiments.search_runs_page(client, experiment_id=experiment_id, page_size=3, top_level_only=True).runs
    ids = [run.run_id for run in runs if "framework" in run.params][:2]
    diff = experiments.compare_runs(client, run_ids=ids)
    assert set(diff.params.index) == {"max_depth", "learning_rate"}
    full = experiments.compare_runs(client, run_ids=ids, only_differences=False)
    assert set(full.params.index) == {"max_depth", "learning_rate", "framework"}
    assert list(full.params.loc["framework"]) == ["xgboost", "xgboost"]
    assert set(diff.metrics.index) == {"val_auc", "val_loss"}
    with pytest.raises(InvalidInputError, match="at least one run"):
        experiments.compare_runs(client, run_ids=[])


def test_metric_curves_and_parallel_coordinates(store: tuple[MlflowClient, str, str]) -> None:
    client, experiment_id, _ = store
    runs = [
        r
        for r in experiments.search_runs_page(client, experiment_id=experiment_id, page_size=100).runs
        if "val_loss" in r.metrics
    ][:3]
    curves = experiments.metric_histories(client, run_ids=[r.run_id for r in runs], metric_key="val_loss")
    assert len(curves) == 15 and sorted(curves["step"].unique()) == [0, 1, 2, 3, 4]
    frame = experiments.parallel_coordinates_frame(runs, metric_key="val_auc")
    assert list(frame.columns) == ["run", "learning_rate", "max_depth", "val_auc"]
    assert frame["learning_rate"].dtype.kind == "f"


def test_study_history_and_importances(store: tuple[MlflowClient, str, str]) -> None:
    client, experiment_id, parent_id = store
    trials = experiments.child_runs(client, parent_run_id=parent_id, experiment_id=experiment_id)
    study = experiments.study_from_trials(trials, objective_key="val_logloss", direction="minimize")
    values = [t.metrics["val_logloss"] for t in trials]
    assert study.history["value"].tolist() == values
    assert study.history["best"].tolist() == [min(values[: i + 1]) for i in range(len(values))]
    assert set(study.importances["parameter"]) == {"max_depth", "booster"}
    assert study.importances["importance"].sum() == pytest.approx(1.0)


def test_nan_metrics_sort_last_and_bad_tokens_are_refused(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("nan", artifact_location=str(tmp_path / "artifacts"))
    for name, value in (("a", 0.5), ("b", 0.7), ("diverged", float("nan")), ("c", -1.0)):
        run = client.create_run(experiment_id, run_name=name)
        client.log_batch(run.info.run_id, metrics=[Metric("loss", value, 0, 0)])
    for descending, expected in ((True, ["b", "a", "c", "diverged"]), (False, ["c", "a", "b", "diverged"])):
        page = experiments.search_runs_page(
            client, experiment_id=experiment_id, sort_by="metrics.loss", descending=descending
        )
        assert [run.run_name for run in page.runs] == expected
    with pytest.raises(InvalidInputError, match="invalid page token"):
        experiments.search_runs_page(client, experiment_id=experiment_id, page_token="abc")
