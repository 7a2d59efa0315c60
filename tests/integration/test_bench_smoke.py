"""Each benchmark still runs: `python -m bench.run --size smoke` once, every row checked for shape.

One runner process for all benchmarks (online and batch share their trained model there, as in
`make bench`). Timings are never asserted here (TESTING.md: benchmarks are not tests).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.portal import CHROMIUM
from bench.run import BENCHMARKS
from tests.conftest import REPO_ROOT

REQUIRED = {"name": str, "unit": str, "sextant": float, "baseline_name": str, "baseline": float, "ratio": float}
# Rows each benchmark must produce (more are allowed: pages added to the portal's menu, ...).
EXPECTED = {
    "ingest": {"ingest.seconds", "ingest.peak_memory"},
    "tracking": {"tracking.training_job"},
    "portal": {"portal.dashboard", "portal.datasets", "portal.training", "portal.experiments",
               "experiments.page_query"},
    "online": {"online.gateway.p50_c1", "online.gateway.p99_c1", "online.gateway.rps_c8", "online.gateway.rps_c32",
               "online.triton_grpc.p50_c1", "online.triton_http.rps_c32", "online.gateway.p50_c1_vs_floor"},
    "batch": {"batch.rows_per_s", "batch.rows_per_s_vs_floor", "batch.peak_memory"},
}  # fmt: skip
# A module the benchmark drives; without it the benchmark cannot run yet.
NEEDS = {"online": "backend.gateway", "batch": "backend.batch.runner"}


def skip_reason(name: str) -> str | None:
    module = NEEDS.get(name)
    if module and importlib.util.find_spec(module) is None:
        return f"{module} does not exist yet"
    if name == "portal" and not Path(CHROMIUM).exists():
        if os.environ.get("REQUIRE_E2E") == "1":
            pytest.fail(f"REQUIRE_E2E=1 but Chromium is missing at {CHROMIUM}")
        return f"Chromium is missing at {CHROMIUM}"
    return None


# Two runner processes side by side: smoke sizes time nothing, and most of their wall time is servers
# booting and stopping. Online and batch stay together: they share their trained model in one process.
GROUPS = (("ingest", "tracking", "portal"), ("online", "batch"))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("bench")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SEXTANT_", "MLFLOW_"))}
    runs = []
    for index, group in enumerate(GROUPS):
        names = [name for name in group if skip_reason(name) is None]
        if not names:
            continue
        output = folder / f"group-{index}" / "latest.json"
        command = [sys.executable, "-m", "bench.run", "--size", "smoke", "--only", ",".join(names),
                   "--output", str(output)]  # fmt: skip
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        runs.append((process, output))
    result: dict[str, Any] = {"rows": [], "failures": {}, "log": "", "returncodes": []}
    for process, output in runs:
        try:
            log, _ = process.communicate(timeout=280)
        except subprocess.TimeoutExpired:
            # SIGINT lets the runner stop the servers it started before it exits.
            process.send_signal(signal.SIGINT)
            try:
                log, _ = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                log, _ = process.communicate()
        result["log"] += log
        result["returncodes"].append(process.returncode)
        if output.exists():
            result["rows"] += json.loads(output.read_text())
            meta = json.loads(output.with_name("latest.meta.json").read_text())
            result["failures"].update(meta["last_run"]["failures"])
    return result


def test_every_benchmark_has_a_smoke_test() -> None:
    assert set(EXPECTED) == set(BENCHMARKS) == {name for group in GROUPS for name in group}


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_smoke(name: str, smoke_run: dict[str, Any]) -> None:
    reason = skip_reason(name)
    if reason:
        pytest.skip(reason)
    log = smoke_run["log"][-6000:]
    assert name not in smoke_run["failures"], f"{smoke_run['failures'][name]}\n{log}"
    rows = [row for row in smoke_run["rows"] if row["benchmark"] == name]
    assert EXPECTED[name] <= {row["name"] for row in rows}, log
    for row in rows:
        for key, kind in REQUIRED.items():
            assert isinstance(row[key], int | float) if kind is float else isinstance(row[key], kind), (key, row)
        for key in ("sextant", "baseline", "ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert row["better"] in ("higher", "lower")
        ratio = row["sextant"] / row["baseline"] if row["better"] == "higher" else row["baseline"] / row["sextant"]
        assert row["ratio"] == pytest.approx(ratio, rel=0.01)
    assert f"| {rows[0]['name']}" in smoke_run["log"]
