"""Batch prediction against a real tritonserver and a real MLflow registry (SQLite metadata DB).

One workspace for the module: the churn example (400 rows) with two registered models, trained
once — ``churn-churned`` (XGBoost, binary, alias ``champion``) and ``churn-plan`` (XGBoost,
multiclass with text labels) — and one Triton serving its repository. Jobs run in this process
through the job runtime (``jobs.batch_predict.main`` with a real ``JobContext``), so the queue, the
progress, the cancel flag and the result are the real ones.

The helpers at the top are shared by the other batch test modules (CLI, page, worker, browser).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest

from backend import batch, datasets
from backend.batch import parse_row_progress
from backend.config import get_settings, reset_settings
from backend.db import dispose_engines, migrate, session_scope
from backend.errors import InvalidInputError, NotFoundError
from backend.jobs import JobInfo, JobStatus, get_job, list_jobs, request_job_cancel
from backend.jobs.queue import claim_jobs, finish_job
from backend.jobs.runtime import JobCancelled, JobContext, JobTerminated, validated_result
from backend.lineage import list_executions
from backend.serving.client import TritonClient
from backend.serving.server import TritonServer, TritonServerOptions
from backend.tracking import tracking_client
from backend.training import TrainingSpec, run_training
from jobs import batch_predict
from tests.conftest import free_ports

EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "churn.csv"
TRAIN_ROWS = 400
TOLERANCE = 1e-5
CHURNED = TrainingSpec(dataset="churn", target="churned", hyperparameters={"n_estimators": 30})
PLAN = TrainingSpec(dataset="churn", target="plan", hyperparameters={"n_estimators": 20})


# Shared helpers ---------------------------------------------------------------------------------


def prepare_workspace(home: Path, *, specs: list[TrainingSpec], champion: str | None = "churn-churned") -> None:
    """The churn dataset (version 1, 400 rows) and ``specs`` trained and registered, in ``home``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEXTANT_HOME", str(home))
        patch.delenv("SEXTANT_DATABASE_URL", raising=False)
        reset_settings()
        settings = get_settings()
        settings.ensure_dirs()
        migrate(settings.resolved_database_url)
        sample = settings.tmp_dir / "churn-small.parquet"
        pl.read_csv(EXAMPLE_CSV, try_parse_dates=True).sample(TRAIN_ROWS, seed=7).write_parquet(sample)
        with session_scope() as session:
            datasets.create_dataset_version(session, name="churn", source_path=sample, filename="churn.csv")
        sample.unlink()
        for spec in specs:
            run_training(spec, settings=settings)
        if champion:
            tracking_client(settings).set_registered_model_alias(champion, "champion", "1")
        mlflow.set_tracking_uri(None)
        dispose_engines()
    reset_settings()


@contextmanager
def triton_for(home: Path, log_dir: Path) -> Iterator[dict[str, str]]:
    """A tritonserver over ``home``'s model repository; yields the SEXTANT_ variables that point at it."""
    http, grpc, metrics = free_ports(3)
    options = TritonServerOptions(
        model_repository=home / "triton" / "models",
        backend_directory=home / "triton" / "backends",
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
    )
    server = TritonServer(options, log_path=log_dir / "triton.log")
    server.start()
    try:
        yield {
            "SEXTANT_HOME": str(home),
            "SEXTANT_TRITON_HTTP_PORT": str(http),
            "SEXTANT_TRITON_GRPC_PORT": str(grpc),
            "SEXTANT_TRITON_METRICS_PORT": str(metrics),
            # Small chunks: several per test input, so streaming, cancelling and failing happen mid-way.
            "SEXTANT_BATCH_CHUNK_ROWS": "20000",
            "SEXTANT_BATCH_REQUEST_ROWS": "8192",
            "SEXTANT_BATCH_INSTANCE_COUNT": "1",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    finally:
        server.stop()


def use_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SEXTANT_DATABASE_URL", raising=False)
    reset_settings()


def claim(job_id: int) -> JobInfo:
    with session_scope() as session:
        claimed = claim_jobs(session, worker_id="test-batch", limit=1)
    assert [job.id for job in claimed] == [job_id], "only the test's own job may be queued"
    return claimed[0]


def run_here(job_id: int, context: Callable[..., JobContext] = JobContext) -> dict[str, Any]:
    """Run a queued batch job in this process as the worker's job process would, and record its end."""
    ctx = context(job=claim(job_id))
    try:
        result = validated_result(batch_predict.main(ctx))
    except BaseException as error:
        ctx.flush_progress()
        status = JobStatus.CANCELLED if isinstance(error, (JobCancelled, JobTerminated)) else JobStatus.FAILED
        with session_scope() as session:
            finish_job(session, job_id=job_id, attempt=ctx.attempt, status=status, error=str(error) or "stopped")
        raise
    ctx.flush_progress()
    with session_scope() as session:
        finish_job(session, job_id=job_id, attempt=ctx.attempt, status=JobStatus.SUCCEEDED, result=result)
    return result


def pyfunc_predictions(model_uri: str, frame: pd.DataFrame) -> pd.DataFrame:
    tracking_client()
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    return pyfunc.predict(frame[pyfunc.metadata.get_input_schema().input_names()])


# This module ------------------------------------------------------------------------------------


@dataclass
class Workspace:
    env: dict[str, str]
    home: Path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    home = tmp_path_factory.mktemp("batch-home")
    prepare_workspace(home, specs=[CHURNED, PLAN])
    with triton_for(home, home.parent) as env:
        yield Workspace(env=env, home=home)


@pytest.fixture(autouse=True)
def in_workspace(workspace: Workspace, sextant_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use_environment(monkeypatch, workspace.env)
    yield
    dispose_engines()


@pytest.fixture
def triton(workspace: Workspace) -> Iterator[TritonClient]:
    with TritonClient(f"127.0.0.1:{workspace.env['SEXTANT_TRITON_GRPC_PORT']}") as client:
        yield client


def scoring_frame(rows: int, *, seed: int) -> pl.DataFrame:
    """``rows`` rows drawn from the example, with missing values and a category never seen in training."""
    frame = pl.read_csv(EXAMPLE_CSV, try_parse_dates=True).sample(rows, with_replacement=True, seed=seed)
    rng = np.random.default_rng(seed)
    holes = pl.Series(rng.random(rows) < 0.02)
    return frame.with_columns(
        pl.when(holes).then(None).otherwise(pl.col("monthly_charges")).alias("monthly_charges"),
        pl.when(holes).then(pl.lit("atlantis")).otherwise(pl.col("region")).alias("region"),
        pl.when(pl.Series(rng.random(rows) < 0.01)).then(None).otherwise(pl.col("plan")).alias("plan"),
    )


def leftovers(workspace: Workspace, folder: Path) -> list[Path]:
    """Temporary outputs and private Triton models that a finished job must not leave behind."""
    settings = get_settings()
    found = list(settings.tmp_dir.glob("batch-*")) + list(folder.glob(".*.tmp"))
    found += list((workspace.home / "triton" / "models").glob("batch-*"))
    return found


def wait_unloaded(client: TritonClient, name: str) -> None:
    deadline = time.monotonic() + 20
    while client.model_state(name).ready:
        assert time.monotonic() < deadline, f"{name} is still loaded"
        time.sleep(0.1)


def test_100k_rows_equal_the_pyfunc_and_are_published_with_lineage(
    workspace: Workspace, triton: TritonClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outputs this large are profiled on an even sample.
    monkeypatch.setenv("SEXTANT_BATCH_PROFILE_MAX_ROWS", "30000")
    reset_settings()
    frame = scoring_frame(100_000, seed=3)
    source = tmp_path / "to-score.parquet"
    frame.write_parquet(source)
    with session_scope() as session:
        datasets.create_dataset_version(session, name="to-score", source_path=source)
    # Leftovers of a job killed outright (job 999999 is long gone): the next batch job removes them.
    settings = get_settings()
    stale = [settings.tmp_dir / "batch-999999-0badf00d.parquet", tmp_path / ".scores.csv.batch-999999-0badf00d.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    stale_model = workspace.home / "triton" / "models" / "batch-999999-0badf00d-churn-churned"
    stale_model.mkdir(parents=True)

    with session_scope() as session:
        queued = batch.submit_batch_prediction(
            session, model="churn-churned@champion", input="dataset:to-score", output_path=str(tmp_path / "scores.csv")
        )
    # The alias and the latest version are pinned in the job.
    assert queued.job.params["model_version"] == 1 and queued.job.params["input"] == "dataset:to-score:1"
    result = run_here(queued.id)

    assert result["rows"] == 100_000 and result["output_dataset"] == "to-score-predictions"
    assert result["output_columns"] == ["customer_id", "prediction", "probability_0", "probability_1"]
    with session_scope() as session:
        published = datasets.get_dataset_version(session, name="to-score-predictions")
        path = datasets.dataset_file_path(session, name="to-score-predictions")
        info = batch.get_batch_job(session, job_id=queued.id)
        profile = datasets.get_dataset_profile(session, name="to-score-predictions")
    output = pl.read_parquet(path)
    assert published.version == result["output_version"] == 1 and published.rows == 100_000
    assert profile["rows"] == 100_000 and profile["sampled_rows"] == 25_000
    expected = pyfunc_predictions("models:/churn-churned/1", frame.to_pandas())
    assert output["customer_id"].to_list() == frame["customer_id"].to_list()
    assert (output["prediction"].to_numpy() == expected["prediction"].to_numpy()).all()
    for column in ("probability_0", "probability_1"):
        assert np.abs(output[column].to_numpy() - expected[column].to_numpy()).max() <= TOLERANCE
    # The user's CSV holds the same rows; nothing else is left behind.
    assert pl.read_csv(tmp_path / "scores.csv").equals(output)
    assert leftovers(workspace, tmp_path) == []
    wait_unloaded(triton, result["triton_model"])

    assert info.status == "succeeded" and info.rows_done == info.rows_total == 100_000
    assert parse_row_progress(info.job.progress_message).rows_done == 100_000
    assert info.rows_per_second and info.rows_per_second > 0 and info.output_ref == "dataset:to-score-predictions:1"
    with session_scope() as session:
        [execution] = list_executions(session, job_id=queued.id)
    assert [artifact.uri for artifact in execution.inputs] == ["models:/churn-churned/1", "dataset:to-score:1"]
    assert [artifact.uri for artifact in execution.outputs] == [
        "dataset:to-score-predictions:1",
        (tmp_path / "scores.csv").resolve().as_uri(),
    ]

    # The same request again scores the same content: the existing version is reused, the run recorded.
    with session_scope() as session:
        again = batch.submit_batch_prediction(session, model="churn-churned/1", input="dataset:to-score")
    repeat = run_here(again.id)
    assert (repeat["output_version"], repeat["output_created"]) == (1, False)
    with session_scope() as session:
        assert len(datasets.list_dataset_versions(session, name="to-score-predictions")) == 1
        assert list_executions(session, job_id=again.id)[0].outputs[0].uri == "dataset:to-score-predictions:1"


def test_text_labels_from_a_csv_file_with_all_columns(tmp_path: Path) -> None:
    frame = scoring_frame(3_000, seed=5)
    source = tmp_path / "customers.csv"
    frame.write_csv(source)
    with session_scope() as session:
        queued = batch.submit_batch_prediction(
            session, model="churn-plan/1", input=str(source), columns="all", output_path=str(tmp_path / "plans.parquet")
        )
    result = run_here(queued.id)
    output = pl.read_parquet(tmp_path / "plans.parquet")
    classes = ["basic", "premium", "standard"]
    assert output.columns == [*frame.columns, "prediction", *(f"probability_{label}" for label in classes)]
    assert output.height == 3_000 and result["input"] == str(source)
    expected = pyfunc_predictions("models:/churn-plan/1", pd.read_csv(source))
    assert output["prediction"].to_list() == expected["prediction"].tolist()
    for label in classes:
        column = f"probability_{label}"
        assert np.abs(output[column].to_numpy() - expected[column].to_numpy()).max() <= TOLERANCE
    with session_scope() as session:
        [execution] = list_executions(session, job_id=queued.id)
    assert execution.inputs[1].type == "file" and execution.inputs[1].uri == source.resolve().as_uri()


class CancelWhileScoring(JobContext):
    """The user presses Cancel once the first rows are written (the cancel flag is read at every chunk)."""

    def __init__(self, **options: Any):
        super().__init__(cancel_check_interval=0.0, **options)
        self.asked = False

    def progress(self, fraction: float, message: str = "") -> None:
        super().progress(fraction, message)
        seen = parse_row_progress(message)
        if seen and seen.rows_done > 0 and not self.asked:
            with session_scope() as session:
                request_job_cancel(session, job_id=self.job_id)
            self.asked = True


class TerminatedWhileScoring(JobContext):
    """SIGTERM (the worker stopping the job) arrives after the first chunk."""

    def progress(self, fraction: float, message: str = "") -> None:
        super().progress(fraction, message)
        seen = parse_row_progress(message)
        if seen and seen.rows_done > 0:
            raise JobTerminated


def bad_value_csv(path: Path, rows: int, bad_row: int) -> Path:
    frame = scoring_frame(rows, seed=9).with_columns(pl.col("tenure_months").cast(pl.String))
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == bad_row)
        .then(pl.lit("abc"))
        .otherwise(pl.col("tenure_months"))
        .alias("tenure_months")
    )
    frame.write_csv(path)
    return path


@pytest.mark.parametrize("how", ["cancelled", "terminated", "failed"])
def test_a_job_that_does_not_finish_publishes_nothing(
    workspace: Workspace, triton: TritonClient, tmp_path: Path, how: str
) -> None:
    output = tmp_path / "out" / "scores.parquet"
    output.parent.mkdir()
    if how == "failed":
        # A value that is not a number, far past the rows the CSV's types were guessed from.
        source = bad_value_csv(tmp_path / "input.csv", 60_000, bad_row=50_000)
    else:
        source = tmp_path / "input.parquet"
        scoring_frame(100_000, seed=11).write_parquet(source)
    with session_scope() as session:
        queued = batch.submit_batch_prediction(
            session, model="churn-churned@champion", input=str(source), output_path=str(output),
            output_dataset=f"never-{how}",
        )  # fmt: skip
    context = {"cancelled": CancelWhileScoring, "terminated": TerminatedWhileScoring, "failed": JobContext}[how]
    expected = {"cancelled": JobCancelled, "terminated": JobTerminated, "failed": InvalidInputError}[how]
    with pytest.raises(expected) as raised:
        run_here(queued.id, context)
    if how == "failed":
        assert "could not parse `abc`" in str(raised.value) and "after 40,000 rows" in str(raised.value)
    with session_scope() as session:
        job = get_job(session, job_id=queued.id)
        assert datasets.list_datasets(session, search=f"never-{how}").total == 0
        assert list_executions(session, job_id=queued.id) == []
    # Some rows were scored and written before the stop, and none of them survived it.
    assert parse_row_progress(job.progress_message).rows_done > 0
    assert list(output.parent.iterdir()) == []
    assert leftovers(workspace, output.parent) == []
    for state in triton.model_states():
        assert not (state.name.startswith("batch-") and state.ready), state


def test_bad_input_fails_at_submit_with_the_reason(tmp_path: Path) -> None:
    frame = scoring_frame(50, seed=1)
    lacking = tmp_path / "lacking.parquet"
    frame.drop("monthly_charges", "plan").write_parquet(lacking)
    text_numbers = tmp_path / "text-numbers.csv"
    frame.with_columns(pl.lit("n/a").alias("tenure_months")).write_csv(text_numbers)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\x00\x01\x02 not text")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    good = str(tmp_path / "ok.csv")
    with session_scope() as session:
        jobs_before = list_jobs(session, kind="batch_predict").total
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"input": str(lacking)}, InvalidInputError, "lacks 2 of the 11 feature columns of churn-churned v1 "
         "(@champion): plan, monthly_charges"),
        ({"input": str(text_numbers)}, InvalidInputError, "'tenure_months' holds text but the model expects numbers"),
        ({"input": str(tmp_path / "missing.csv")}, InvalidInputError, "does not exist"),
        ({"input": str(tmp_path)}, InvalidInputError, "is not a file"),
        ({"input": str(binary)}, InvalidInputError, "neither Parquet nor CSV"),
        ({"input": str(broken)}, InvalidInputError, "is not a readable Parquet file"),
        ({"input": str(empty)}, InvalidInputError, "is empty"),
        ({"input": "dataset:nope"}, NotFoundError, "dataset 'nope' does not exist"),
        ({"input": "dataset:churn:7"}, NotFoundError, "dataset 'churn' has no version 7"),
        ({"output_path": str(tmp_path / "no" / "such" / "x.csv")}, InvalidInputError, "does not exist"),
        ({"output_path": str(a_file / "x.csv")}, InvalidInputError, "is not a folder"),
        ({"model": "nope@champion"}, NotFoundError, "no registered model named 'nope'; registered models: "
         "churn-churned, churn-plan"),
        ({"model": "churn-churned@gold"}, NotFoundError, "has no alias 'gold'; its aliases: @champion (v1)"),
        ({"model": "churn-plan@champion"}, NotFoundError, "'churn-plan' has no alias 'champion'; it has no aliases"),
        ({"model": "churn-churned/9"}, NotFoundError, "model 'churn-churned' has no version 9; versions: 1"),
        ({"model": "churn-churned"}, InvalidInputError, "MODEL@ALIAS or MODEL/VERSION"),
    ]  # fmt: skip
    for override, error, message in cases:
        request = {"model": "churn-churned@champion", "input": "dataset:churn", "output_path": good} | override
        with pytest.raises(error) as raised, session_scope() as session:
            batch.submit_batch_prediction(session, **request)
        assert message in str(raised.value), (override, str(raised.value))
    with session_scope() as session:
        assert list_jobs(session, kind="batch_predict").total == jobs_before
    assert not Path(good).exists()


def test_a_job_rechecks_its_request_when_it_starts(workspace: Workspace, tmp_path: Path) -> None:
    source = tmp_path / "vanishing.parquet"
    scoring_frame(100, seed=2).write_parquet(source)
    with session_scope() as session:
        queued = batch.submit_batch_prediction(session, model="churn-churned/1", input=str(source))
    source.unlink()
    with pytest.raises(InvalidInputError, match="does not exist"):
        run_here(queued.id)
    with session_scope() as session:
        failed = batch.get_batch_job(session, job_id=queued.id)
    assert failed.status == "failed" and failed.output_version is None
    assert leftovers(workspace, tmp_path) == []
    shutil.rmtree(tmp_path, ignore_errors=True)
