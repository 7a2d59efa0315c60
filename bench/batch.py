"""batch: 1,000,000 rows × 20 features from a CSV file to a predictions file.

The model is the serving benchmarks' (``bench.model``: XGBoost, 200 trees, trained and registered
by Sextant). Three ways, each in its own process:

- Sextant: ``backend.batch.runner.run_batch_prediction`` — the body of ``jobs/batch_predict.py``
  (the job module only adapts the worker's context) — against a real Triton started as
  infra/Procfile starts it: plan, load the model under a private Triton name, stream the CSV with
  polars, score over gRPC, write the CSV output and register the Parquet output as a dataset
  version with lineage (hash + profile included).
- pandas: ``pd.read_csv`` + ``mlflow.pyfunc.load_model(...).predict`` + ``to_csv``.
- floor: the model's booster on the preprocessed matrix already in memory (``inplace_predict``).

Rows/s is rows over the operation's seconds (imports excluded, model loading included), the median
of 3 runs of each way taken in turn (S P F S P F ...). Peak memory is the process's ``ru_maxrss``
(the highest of its runs); for Sextant the Triton side — the ``triton`` process of `make run`: its
supervisor, tritonserver and the model instances, sampled every 0.1 s while the job runs — is
added, since the pandas process holds its model itself.
"""

from __future__ import annotations

import itertools
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    Measured,
    Result,
    Size,
    alternate,
    bench_env,
    descendants,
    free_port,
    median_of,
    mib,
    peak_of,
    pick,
    procfile_server,
    run_measured,
    running,
    sextant_env,
    stage,
)
from bench.data import feature_frame, write_csv
from bench.model import load_predictor, model_home, shared_model

TOLERANCE = 1e-5
CHECKED_ROWS = 1000


def sextant_batch(csv: str, output: str, dataset: str, model: str, version: int) -> dict[str, Any]:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from backend.batch.runner import run_batch_prediction

    marks: list[tuple[float, str]] = []
    start = time.perf_counter()
    result = run_batch_prediction(
        {
            "model": f"{model}/{version}",
            "input": csv,
            "output_dataset": dataset,
            "output_path": output,
            "output_format": "csv",
        },
        progress=lambda _fraction, message: marks.append((time.perf_counter(), message)),
    )
    end = time.perf_counter()
    return {
        "seconds": end - start,
        "rows": result.rows,
        "scoring_seconds": result.scoring_seconds,
        "scoring_rows_per_second": result.rows_per_second,
        "phases": batch_phases(start, marks, end),
    }


def batch_phases(start: float, marks: list[tuple[float, str]], end: float) -> dict[str, float]:
    """Plan, model load into Triton, row counting, scoring + writing, publishing, from the job's progress messages."""

    def first(predicate: Any) -> float | None:
        return next((moment for moment, message in marks if predicate(message)), None)

    loading = first(lambda m: m.startswith("loading "))
    counting = first(lambda m: m.startswith("counting ") or m.startswith("0 of "))
    scoring = first(lambda m: m.startswith("0 of "))
    publishing = first(lambda m: m.endswith("publishing"))
    points = [("plan_s", start), ("triton_load_s", loading), ("count_rows_s", counting), ("score_and_write_s", scoring),
              ("publish_s", publishing), ("", end)]  # fmt: skip
    known = [(name, moment) for name, moment in points if moment is not None]
    return {name: round(later - moment, 3) for (name, moment), (_, later) in itertools.pairwise(known) if name}


def pandas_batch(csv: str, output: str, model: str, version: int) -> dict[str, Any]:
    import mlflow.pyfunc
    import pandas as pd

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    start = time.perf_counter()
    frame = pd.read_csv(csv)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model}/{version}")
    predictions = pyfunc.predict(frame)
    predictions.to_csv(output, index=False)
    return {"seconds": time.perf_counter() - start, "rows": len(predictions)}


def floor_batch(rows: int, model: str, version: int) -> dict[str, Any]:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _pyfunc, predictor = load_predictor(model, version)
    matrix = predictor.preprocessor.transform(feature_frame(rows, target=False).to_pandas())
    start = time.perf_counter()
    scores = predictor.booster.inplace_predict(matrix)
    return {
        "seconds": time.perf_counter() - start,
        "rows": len(scores),
        "first": [float(v) for v in scores[:CHECKED_ROWS]],
    }


class RssSampler:
    """Peak of the summed RSS of a process's descendants, sampled in a thread (model instances come and go)."""

    def __init__(self, root_pid: int, interval_s: float = 0.1):
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid, _ in descendants(self.root_pid):
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
                except OSError:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _probabilities(path: Path) -> list[float]:
    import polars as pl

    return pl.read_csv(path, n_rows=CHECKED_ROWS).get_column("probability_1").to_list()


def run(size: Size) -> list[Result]:
    rows = pick(size, full=1_000_000, smoke=5_000)
    repeat = pick(size, full=3, smoke=1)
    with tempfile.TemporaryDirectory(prefix="sextant-bench-batch-") as folder:
        root = Path(folder)
        csv = write_csv(feature_frame(rows, target=False), root / "input.csv")
        home = model_home(size)
        ports = {key: str(free_port()) for key in ("http", "grpc", "metrics")}
        env = sextant_env(
            home,
            SEXTANT_TRITON_HTTP_PORT=ports["http"],
            SEXTANT_TRITON_GRPC_PORT=ports["grpc"],
            SEXTANT_TRITON_METRICS_PORT=ports["metrics"],
        )
        tracking = bench_env(MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
        # Triton starts while the model trains (when this run has not trained it yet): it needs no model to come up.
        triton = procfile_server("triton", variables={}, env=env, log_path=root / "triton.log")
        with running(triton):
            shared = shared_model(size)
            model = {"model": shared.name, "version": shared.version}
            triton.wait_http(f"http://127.0.0.1:{ports['http']}/v2/health/ready", timeout_s=120)
            triton_peaks: list[int] = []
            jobs = iter(range(repeat))

            def sextant_side() -> Measured:
                # Its own output dataset each time, so every run publishes a new version.
                kwargs = {"csv": str(csv), "output": str(root / "sextant.csv"), "dataset": f"bench-out-{next(jobs)}"}
                with RssSampler(triton.pid) as sampler:
                    measured = run_measured("bench.batch:sextant_batch", {**kwargs, **model}, env=env, timeout_s=400)
                triton_peaks.append(sampler.peak_bytes)
                return measured

            def pandas_side() -> Measured:
                kwargs = {"csv": str(csv), "output": str(root / "pandas.csv"), **model}
                return run_measured("bench.batch:pandas_batch", kwargs, env=tracking, timeout_s=400)

            def floor_side() -> Measured:
                return run_measured("bench.batch:floor_batch", {"rows": rows, **model}, env=tracking, timeout_s=300)

            # Triton idles while the other two run: it is up for the Sextant runs in between.
            with stage(f"Sextant batch job vs pandas + pyfunc vs in-process floor, {repeat}× each"):
                runs = alternate({"sextant": sextant_side, "pandas": pandas_side, "floor": floor_side}, repeat=repeat)
        for name, sides in runs.items():
            for side in sides:
                if side.output["rows"] != rows:
                    raise BenchError(f"the {name} way scored {side.output['rows']} rows, expected {rows}")
        reference = _probabilities(root / "pandas.csv")
        checks = (("sextant", _probabilities(root / "sextant.csv")), ("floor", runs["floor"][-1].output["first"]))
        for name, values in checks:
            worst = max(abs(a - b) for a, b in zip(values, reference, strict=True))
            if worst > TOLERANCE:
                raise BenchError(f"the {name} way's probabilities differ from the pyfunc's by up to {worst}")
    rate = {name: rows / median_of(sides) for name, sides in runs.items()}
    sextant = runs["sextant"]
    sextant_memory = peak_of(sextant) + max(triton_peaks)
    extra = {
        "rows": rows, "features": 20, "trees": shared.trained["trees"], "runs": repeat,
        "all_s": {name: [round(side.output["seconds"], 2) for side in sides] for name, sides in runs.items()},
        "sextant_scoring_rows_per_s": round(statistics.median(s.output["scoring_rows_per_second"] for s in sextant)),
        "sextant_phases": sextant[-1].output["phases"],
    }  # fmt: skip
    memory = {
        "job_process_mib": round(mib(peak_of(sextant)), 1),
        "triton_side_mib": round(mib(max(triton_peaks)), 1),
    }
    return [
        Result("batch.rows_per_s", "rows/s", rate["sextant"], "pandas + pyfunc", rate["pandas"], "higher", extra),
        Result(
            "batch.rows_per_s_vs_floor", "rows/s", rate["sextant"], "in-process xgboost (numpy in memory)",
            rate["floor"], "higher", {"rows": rows},
        ),
        Result(
            "batch.peak_memory", "MiB", mib(sextant_memory), "pandas + pyfunc", mib(peak_of(runs["pandas"])), "lower",
            {"sextant_parts": memory, "floor_mib": round(mib(peak_of(runs["floor"])), 1)},
        ),
    ]  # fmt: skip
