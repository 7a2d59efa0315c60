"""`sextant models`, `sextant endpoints` and `sextant predict` against a real MLflow store, a real
tritonserver and a real uvicorn gateway (in a thread; `sextant predict` once as a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from backend.cli import app
from backend.config import get_settings
from backend.db import migrate
from backend.serving.server import TritonServer
from tests.conftest import free_ports
from tests.integration.test_endpoints_service import (
    CHURN,
    REPO_ROOT,
    ServingStack,
    serve_gateway,
    trained_store,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    stack = ServingStack.create(tmp_path_factory.mktemp("cli"), trained_store(tmp_path_factory), own_database=True)
    (gateway_port,) = free_ports(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEXTANT_GATEWAY_PORT", str(gateway_port))
        stack.apply(patch)
        migrate()
        yield stack


@pytest.fixture(autouse=True)
def stack_env(sextant_home: Path, stack: ServingStack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.apply(monkeypatch)


@pytest.fixture(scope="module")
def triton(stack: ServingStack) -> Iterator[TritonServer]:
    server = stack.server(stack.home.parent)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(triton: TritonServer, stack: ServingStack) -> Iterator[str]:
    with serve_gateway(get_settings()) as url:
        yield url


def sextant(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def as_json(*args: str) -> Any:
    code, out, err = sextant(*args, "--json")
    assert code == 0, (args, out, err)
    return json.loads(out)


def test_models_list_show_and_alias(triton: TritonServer) -> None:
    models = {model["name"]: model for model in as_json("models", "list")["models"]}
    assert models[CHURN]["latest_version"] == 3 and models[CHURN]["version_count"] == 3

    shown = as_json("models", "show", CHURN)
    assert [version["version"] for version in shown["versions"]] == [3, 2, 1]
    assert shown["versions"][1]["framework"] == "torch" and shown["versions"][1]["dataset"] == "churn:1"
    version = as_json("models", "show", f"{CHURN}/2")
    assert version["version"] == 2 and version["params"]["framework"] == "torch"
    assert {"name": "tenure_months", "type": "long", "required": True} in version["inputs"]
    code, text, _ = sextant("models", "show", CHURN)
    assert code == 0 and "VERSION" in text and "torch" in text

    change = as_json("models", "alias", CHURN, "challenger", "2")
    assert (change["alias"], change["version"], change["previous_version"]) == ("challenger", 2, None)
    assert as_json("models", "show", f"{CHURN}@challenger")["version"] == 2
    code, text, _ = sextant("models", "alias", CHURN, "challenger", "3")
    assert code == 0 and text.strip() == f"{CHURN}@challenger → version 3 (was 2)"
    assert as_json("models", "alias", CHURN, "challenger", "--delete")["previous_version"] == 3

    code, _, error = sextant("models", "alias", CHURN, "challenger")
    assert code == 1 and "give a VERSION" in error
    code, out, error = sextant("models", "show", "no-such-model", "--json")
    assert code == 1 and "no registered model" in json.loads(out)["error"]


def test_endpoints_create_deploy_list_undeploy(triton: TritonServer) -> None:
    as_json("models", "alias", CHURN, "champion", "1")
    created = as_json("endpoints", "create", "cli-churn", "--description", "from the CLI")
    assert (created["name"], created["state"]) == ("cli-churn", "empty")
    code, _, error = sextant("endpoints", "create", "Bad_Name")
    assert code == 1 and "endpoint name" in error

    deployed = as_json("endpoints", "deploy", "cli-churn", "--model", f"{CHURN}@champion", "--wait")
    [champion] = deployed["deployed_models"]
    assert (champion["alias"], champion["version"], champion["state"], champion["traffic_percent"]) == (
        "champion",
        1,
        "ready",
        100,
    )
    canary = as_json("endpoints", "deploy", "cli-churn", "--model", f"{CHURN}/2", "--traffic", "20")
    assert [(m["version"], m["traffic_percent"], m["state"]) for m in canary["deployed_models"]] == [
        (1, 80, "ready"),
        (2, 20, "ready"),
    ]
    listed = as_json("endpoints", "list")["endpoints"]
    assert [(item["name"], item["state"]) for item in listed] == [("cli-churn", "ready")]
    code, text, _ = sextant("endpoints", "list")
    assert code == 0 and f"{CHURN}@champion" in text and "80%" in text

    # Moving the alias redeploys the endpoint that follows it.
    moved = as_json("models", "alias", CHURN, "champion", "3")
    assert moved["redeployed_endpoints"] == ["cli-churn"]

    after = as_json("endpoints", "undeploy", "cli-churn", "--model", f"{CHURN}/2")
    assert [(m["version"], m["alias"], m["traffic_percent"]) for m in after["deployed_models"]] == [
        (3, "champion", 100)
    ]
    code, out, _ = sextant("endpoints", "deploy", "cli-churn", "--model", "nope/1", "--json")
    assert code == 1 and "no registered model" in json.loads(out)["error"]
    created_on_the_fly = as_json("endpoints", "deploy", "cli-new", "--model", f"{CHURN}/3", "--create")
    assert created_on_the_fly["deployed_models"][0]["state"] == "ready"


def test_predict_prints_the_gateways_json(gateway: str, tmp_path: Path) -> None:
    as_json("endpoints", "deploy", "cli-predict", "--model", f"{CHURN}/1", "--create")
    example = httpx.get(f"{gateway}/v1/endpoints/cli-predict").json()["example"]
    request = tmp_path / "instances.json"
    request.write_text(json.dumps({"instances": [example, example]}))

    code, out, _ = sextant("predict", "cli-predict", "--instances", str(request))
    assert code == 0, out
    answer = json.loads(out)
    assert answer["deployed_model"] == {"model": CHURN, "version": 1}
    assert len(answer["predictions"]) == 2 and set(answer["predictions"][0]) == {"class", "probabilities"}

    # A bare array on stdin, through a real `sextant` process.
    process = subprocess.run(
        [sys.executable, "-m", "backend.cli", "predict", "cli-predict", "--instances", "-"],
        input=json.dumps([example]),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert len(json.loads(process.stdout)["predictions"]) == 1

    code, out, error = sextant("predict", "cli-predict", "--instances", "-", stdin=json.dumps([{**example, "plan": 1}]))
    assert code == 1
    assert json.loads(out)["error"]["field"] == "instances[0].plan" and "400" in error
    code, _, error = sextant("predict", "cli-predict", "--instances", str(tmp_path / "missing.json"))
    assert code == 1 and "cannot read" in error
