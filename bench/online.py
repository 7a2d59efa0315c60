"""online: single-row predictions of one XGBoost model (200 trees, 20 features) over loopback.

The model is trained and registered by Sextant (``bench.model``), deployed to an endpoint with
``backend.serving.endpoints.deploy_model`` into a real Triton started as infra/Procfile starts it
(``python -m backend.serving.server``), and served five ways:

- ``gateway``: Sextant's REST gateway (``python -m backend.gateway``), Vertex-style JSON;
- ``triton_http`` / ``triton_grpc``: Triton's own KServe-v2 ports (JSON over HTTP, protobuf over gRPC);
- ``mlflow_serve``: ``mlflow models serve`` of the same registry version (``--env-manager local``);
- ``in_process``: the model's booster predicting one preprocessed row in this process (the floor).

An asyncio load client (httpx; tritonclient's asyncio gRPC client) keeps C requests in flight: C=1
for p50 / p99 latency, C=8 and C=32 for throughput. Each level is bounded by a request count and
a time limit, after a warm-up, and is measured in 4 slices that go round the paths in turn, so
load that comes and goes on the machine falls on every path alike. Every answer is checked against
the pyfunc's prediction for the same row. The client shares the machine's cores with the servers.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BenchError,
    Result,
    Server,
    Size,
    bench_env,
    free_port,
    pick,
    procfile_server,
    running,
    sextant_env,
    sextant_home,
    stage,
)
from bench.data import FEATURE_NAMES, feature_frame
from bench.model import load_predictor, model_home, shared_model

ENDPOINT = "bench"
LEVELS = (1, 8, 32)
TOLERANCE = 1e-5
TARGETS = ("gateway", "triton_http", "triton_grpc", "mlflow_serve", "in_process")
LABELS = {
    "gateway": "Sextant gateway",
    "triton_http": "Triton HTTP",
    "triton_grpc": "Triton gRPC",
    "mlflow_serve": "mlflow models serve",
    "in_process": "in-process predict",
}


@dataclass
class LevelStats:
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    # CPU seconds the load client (this process, all threads) used per wall second: near 1.0 means
    # the client, not the server, may be what limits the throughput.
    client_cpu: float = 0.0

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


Request = Callable[[], Awaitable[float]]


async def drive(request: Request, *, concurrency: int, max_requests: int, max_seconds: float) -> LevelStats:
    """Keep ``concurrency`` requests in flight until ``max_requests`` are done or ``max_seconds`` pass."""
    latencies: list[float] = []
    issued = 0
    deadline = time.perf_counter() + max_seconds
    expected: float | None = None

    async def worker() -> None:
        nonlocal issued, expected
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            start = time.perf_counter()
            value = await request()
            latencies.append((time.perf_counter() - start) * 1000)
            if expected is None:
                expected = value
            elif abs(value - expected) > TOLERANCE:
                raise BenchError(f"answers differ between requests: {value} vs {expected}")

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return LevelStats(concurrency, len(latencies), wall, latencies, (time.process_time() - cpu) / wall)


def in_process_stats(predict: Callable[[], float], *, max_requests: int, max_seconds: float) -> LevelStats:
    latencies: list[float] = []
    deadline = time.perf_counter() + max_seconds
    start = time.perf_counter()
    while len(latencies) < max_requests and time.perf_counter() < deadline:
        begin = time.perf_counter()
        predict()
        latencies.append((time.perf_counter() - begin) * 1000)
    return LevelStats(1, len(latencies), time.perf_counter() - start, latencies)


def positive_probability(target: str, body: Any) -> float:
    """P(label = 1) from each protocol's answer."""
    if target == "gateway":
        return float(body["predictions"][0]["probabilities"]["1"])
    if target == "triton_http":
        output = next(item for item in body["outputs"] if item["name"] == "probabilities")
        return float(output["data"][1])
    if target == "mlflow_serve":
        return float(body["predictions"][0]["probability_1"])
    raise ValueError(target)


def make_requests(
    *, row: dict[str, float], urls: dict[str, str], triton_name: str, version: int, http: Any, grpc: Any
) -> dict[str, Request]:
    import tritonclient.grpc.aio as grpc_aio

    gateway_body = json.dumps({"instances": [row]})
    triton_body = json.dumps(
        {
            "inputs": [
                {"name": name, "shape": [1, 1], "datatype": "FP64", "data": [value]} for name, value in row.items()
            ],
            "outputs": [{"name": "probabilities"}],
        }
    )
    mlflow_body = json.dumps({"dataframe_split": {"columns": list(row), "data": [list(row.values())]}})
    headers = {"content-type": "application/json"}
    grpc_inputs = []
    for name, value in row.items():
        tensor = grpc_aio.InferInput(name, [1, 1], "FP64")
        tensor.set_data_from_numpy(np.array([[value]], dtype=np.float64))
        grpc_inputs.append(tensor)
    grpc_outputs = [grpc_aio.InferRequestedOutput("probabilities")]

    def over_http(target: str, url: str, body: str) -> Request:
        async def send() -> float:
            response = await http.post(url, content=body, headers=headers)
            if response.status_code != 200:
                raise BenchError(f"{target} answered {response.status_code}: {response.text[:300]}")
            return positive_probability(target, response.json())

        return send

    async def over_grpc() -> float:
        result = await grpc.infer(triton_name, grpc_inputs, model_version=str(version), outputs=grpc_outputs)
        return float(result.as_numpy("probabilities")[0][1])

    return {
        "gateway": over_http("gateway", f"{urls['gateway']}/v1/endpoints/{ENDPOINT}:predict", gateway_body),
        "triton_http": over_http(
            "triton_http", f"{urls['triton_http']}/v2/models/{triton_name}/versions/{version}/infer", triton_body
        ),
        "triton_grpc": over_grpc,
        "mlflow_serve": over_http("mlflow_serve", f"{urls['mlflow_serve']}/invocations", mlflow_body),
    }


async def measure_servers(
    requests: dict[str, Request],
    *,
    expected: float,
    warmup: int,
    max_requests: int,
    max_seconds: float,
    rounds: int,
) -> dict[str, dict[int, LevelStats]]:
    """Every path at every level, in ``rounds`` interleaved slices so that background load that comes
    and goes during the run falls on all paths alike; each level is bounded by count and time."""
    for target, request in requests.items():
        first = await request()
        if abs(first - expected) > TOLERANCE:
            raise BenchError(f"{target} predicts {first}, the pyfunc {expected}")
        for _ in range(warmup):
            await request()
    stats: dict[str, dict[int, LevelStats]] = {target: {} for target in requests}
    for level in LEVELS:
        count = max_requests if level == 1 else max_requests * 2
        for _ in range(rounds):
            for target, request in requests.items():
                part = await drive(
                    request, concurrency=level, max_requests=-(-count // rounds), max_seconds=max_seconds / rounds
                )
                stats[target][level] = merge(stats[target].get(level), part)
    return stats


def merge(total: LevelStats | None, part: LevelStats) -> LevelStats:
    if total is None:
        return part
    seconds = total.seconds + part.seconds
    cpu = (total.client_cpu * total.seconds + part.client_cpu * part.seconds) / seconds
    return LevelStats(
        part.concurrency, total.requests + part.requests, seconds, total.latencies_ms + part.latencies_ms, cpu
    )


def mlflow_serve_server(*, model_uri: str, tracking_uri: str, port: int, log_path: Path) -> Server:
    command = [
        "mlflow", "models", "serve", "--model-uri", model_uri, "--env-manager", "local",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    return Server("mlflow models serve", command, env=bench_env(MLFLOW_TRACKING_URI=tracking_uri), log_path=log_path)


def run(size: Size) -> list[Result]:
    max_requests = pick(size, full=2_000, smoke=30)
    max_seconds = pick(size, full=4.0, smoke=0.5)
    warmup = pick(size, full=50, smoke=3)
    rounds = pick(size, full=4, smoke=1)
    with tempfile.TemporaryDirectory(prefix="sextant-bench-online-") as folder:
        root = Path(folder)
        ports = {key: free_port() for key in ("http", "grpc", "metrics", "gateway", "mlflow")}
        overrides = {
            "SEXTANT_TRITON_HTTP_PORT": str(ports["http"]),
            "SEXTANT_TRITON_GRPC_PORT": str(ports["grpc"]),
            "SEXTANT_TRITON_METRICS_PORT": str(ports["metrics"]),
            "SEXTANT_GATEWAY_HOST": "127.0.0.1",
            "SEXTANT_GATEWAY_PORT": str(ports["gateway"]),
        }
        urls = {
            "triton_http": f"http://127.0.0.1:{ports['http']}",
            "triton_grpc": f"127.0.0.1:{ports['grpc']}",
            "gateway": f"http://127.0.0.1:{ports['gateway']}",
            "mlflow_serve": f"http://127.0.0.1:{ports['mlflow']}",
        }
        home = model_home(size)
        env = sextant_env(home, **overrides)
        # Triton starts while the model trains (when this run has not trained it yet): it needs no model to come up.
        triton = procfile_server("triton", variables={}, env=env, log_path=root / "triton.log")
        with running(triton), sextant_home(home, **overrides):
            shared = shared_model(size)
            stats, floor, pyfunc_row = _serve_and_measure(
                triton, shared.trained, env=env, urls=urls, port=ports["mlflow"], root=root,
                max_requests=max_requests, max_seconds=max_seconds, warmup=warmup, rounds=rounds,
            )  # fmt: skip
    stats["in_process"] = {1: floor}
    return results(stats, trained=shared.trained, pyfunc_row=pyfunc_row)


def _serve_and_measure(
    triton: Server,
    trained: dict[str, Any],
    *,
    env: dict[str, str],
    urls: dict[str, str],
    port: int,
    root: Path,
    max_requests: int,
    max_seconds: float,
    warmup: int,
    rounds: int,
) -> tuple[dict[str, dict[int, LevelStats]], LevelStats, LevelStats]:
    import httpx
    import tritonclient.grpc.aio as grpc_aio

    from backend.config import get_settings
    from backend.db import session_scope
    from backend.serving import endpoints
    from backend.serving.client import TritonClient
    from backend.tracking import configure_tracking

    tracking_uri = configure_tracking(get_settings())
    with stage("deploy to an endpoint (Triton)"):
        triton.wait_http(f"{urls['triton_http']}/v2/health/ready", timeout_s=120)
        with TritonClient(urls["triton_grpc"]) as client, session_scope() as session:
            endpoints.create_endpoint(session, name=ENDPOINT)
            info = endpoints.deploy_model(
                session, endpoint=ENDPOINT, model=trained["model"], version=trained["version"], triton=client
            )
        deployment = info.deployments[0]
        if deployment.state != "ready":
            raise BenchError(f"the deployment is {deployment.state}: {deployment.message}")
    gateway = procfile_server("gateway", variables={}, env=env, log_path=root / "gateway.log")
    serve = mlflow_serve_server(
        model_uri=f"models:/{trained['model']}/{trained['version']}",
        tracking_uri=tracking_uri,
        port=port,
        log_path=root / "mlflow-serve.log",
    )
    # Triton stops with the others: each takes seconds to drain.
    with running(gateway, serve, triton):
        with stage("start the gateway and mlflow models serve"):
            pyfunc, predictor = load_predictor(trained["model"], trained["version"])
            gateway.wait_http(f"{urls['gateway']}/healthz", timeout_s=120)
            serve.wait_http(f"{urls['mlflow_serve']}/ping", timeout_s=180)
        sample = feature_frame(1, seed=7, target=False).to_pandas()
        row = {name: float(sample[name].iloc[0]) for name in FEATURE_NAMES}
        expected = float(pyfunc.predict(sample)["probability_1"].iloc[0])
        matrix = predictor.preprocessor.transform(sample)
        if abs(float(predictor.booster.inplace_predict(matrix)[0]) - expected) > TOLERANCE:
            raise BenchError("the booster and the pyfunc disagree")
        with stage("load the serving paths"):
            floor = in_process_stats(
                lambda: float(predictor.booster.inplace_predict(matrix)[0]), max_requests=max_requests * 5,
                max_seconds=max_seconds,
            )  # fmt: skip
            pyfunc_row = in_process_stats(
                lambda: pyfunc.predict(sample), max_requests=max_requests, max_seconds=max_seconds
            )

            async def measure() -> dict[str, dict[int, LevelStats]]:
                limits = httpx.Limits(max_connections=max(LEVELS), max_keepalive_connections=max(LEVELS))
                async with httpx.AsyncClient(timeout=30, limits=limits) as http:
                    grpc = grpc_aio.InferenceServerClient(urls["triton_grpc"])
                    try:
                        requests = make_requests(
                            row=row, urls=urls, triton_name=deployment.triton_name, version=deployment.version,
                            http=http, grpc=grpc,
                        )  # fmt: skip
                        return await measure_servers(
                            requests, expected=expected, warmup=warmup, max_requests=max_requests,
                            max_seconds=max_seconds, rounds=rounds,
                        )  # fmt: skip
                    finally:
                        await grpc.close()

            try:
                stats = asyncio.run(measure())
            finally:
                # The workspace is shared with the batch benchmark: leave no endpoint for its Triton to reload.
                with TritonClient(urls["triton_grpc"]) as client, session_scope() as session:
                    endpoints.delete_endpoint(session, name=ENDPOINT, triton=client)
    return stats, floor, pyfunc_row


METRICS = (
    ("p50_c1", "p50_ms", "ms", "lower"),
    ("p99_c1", "p99_ms", "ms", "lower"),
    ("rps_c8", "rps_c8", "req/s", "higher"),
    ("rps_c32", "rps_c32", "req/s", "higher"),
)


def results(
    stats: dict[str, dict[int, LevelStats]], *, trained: dict[str, Any], pyfunc_row: LevelStats
) -> list[Result]:
    """Each Sextant serving path against ``mlflow models serve``, and the gateway against the floor."""

    def figures(levels: dict[int, LevelStats]) -> dict[str, float]:
        out = {"p50_ms": levels[1].percentile(50), "p99_ms": levels[1].percentile(99)}
        out.update({f"rps_c{level}": stats.throughput for level, stats in levels.items()})
        return out

    table = {target: figures(stats[target]) for target in TARGETS}
    details = {
        "trees": trained["trees"], "features": len(FEATURE_NAMES),
        "requests": {target: {f"c{level}": s.requests for level, s in stats[target].items()} for target in TARGETS},
        "client_cpu_per_wall_s": {
            target: {f"c{level}": round(s.client_cpu, 2) for level, s in stats[target].items()}
            for target in TARGETS if target != "in_process"
        },
        "all": {target: {key: round(value, 3) for key, value in table[target].items()} for target in TARGETS},
        "pyfunc_in_process_p50_ms": round(pyfunc_row.percentile(50), 3),
    }  # fmt: skip
    out: list[Result] = []
    for target in ("gateway", "triton_grpc", "triton_http"):
        for name, key, unit, better in METRICS:
            out.append(
                Result(
                    f"online.{target}.{name}", unit, table[target][key], LABELS["mlflow_serve"],
                    table["mlflow_serve"][key], better, {"sextant_side": LABELS[target]},
                )
            )  # fmt: skip
    out[0].extra.update(details)
    out.append(
        Result(
            "online.gateway.p50_c1_vs_floor", "ms", table["gateway"]["p50_ms"], LABELS["in_process"],
            table["in_process"]["p50_ms"], "lower", {"sextant_side": LABELS["gateway"]},
        )
    )  # fmt: skip
    return out


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: every serving path × figure (the rows above compare Sextant's against mlflow models serve)."""
    first = next((row for row in rows if row["name"] == "online.gateway.p50_c1" and "all" in row), None)
    if first is None:
        return ""
    lines = ["| serving path | p50 ms (C=1) | p99 ms (C=1) | req/s C=8 | req/s C=32 |", "|---|---|---|---|---|"]
    for target, values in first["all"].items():
        cells = [values.get(key) for key in ("p50_ms", "p99_ms", "rps_c8", "rps_c32")]
        text = [f"{value:,.3g}" if value is not None and value < 100 else (f"{value:,.0f}" if value else "–")
                for value in cells]  # fmt: skip
        if target == "in_process":
            text[2] = f"{values['rps_c1']:,.0f} (1 thread)"
            text[3] = "–"
        lines.append(f"| {LABELS[target]} | " + " | ".join(text) + " |")
    return "\n".join(lines)
