"""`sextant models`, `sextant endpoints` and `sextant predict`: the registry, deployments and the gateway."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from backend.db import migrate, session_scope
from backend.errors import InvalidInputError, SextantError

models_app = typer.Typer(help="Registered models: versions, metrics, aliases.", no_args_is_help=True)
endpoints_app = typer.Typer(help="Online-prediction endpoints: create, deploy, undeploy.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object")]
WAIT_POLL_SECONDS = 0.5


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _emit(payload: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(_plain(payload)) if as_json else text)


def _fail(error: Exception, as_json: bool = False) -> None:
    if as_json:
        typer.echo(json.dumps({"error": str(error)}))
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=1)


def _quiet_downloads() -> None:
    # MLflow draws a progress bar per model download on stderr; a deploy's output is its result.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in metrics.items()) or "—"


# models ----------------------------------------------------------------------------------------


@models_app.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """Registered models with their latest version and aliases."""
    from backend import registry

    try:
        models = registry.list_models()
    except SextantError as error:
        _fail(error, as_json)
    lines = [f"{'MODEL':40} {'VERSIONS':>8} {'LATEST':>6}  ALIASES"]
    lines += [
        f"{model.name:40} {model.version_count:>8} {model.latest_version or '—':>6}  "
        + (", ".join(f"{alias}→{version}" for alias, version in model.aliases.items()) or "—")
        for model in models
    ]
    _emit({"models": [model.as_dict() for model in models]}, as_json, "\n".join(lines))


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="MODEL, MODEL/VERSION or MODEL@ALIAS")],
    as_json: JsonFlag = False,
) -> None:
    """A model's versions (MODEL), or one version with its signature and parameters."""
    from backend import registry

    try:
        parsed = registry.parse_model_ref(ref)
        if parsed.version is None and parsed.alias is None:
            model = registry.get_model(parsed.name)
            versions = registry.list_model_versions(parsed.name)
            payload: dict[str, Any] = model.as_dict() | {"versions": [version.as_dict() for version in versions]}
            lines = [
                f"{model.name}: {model.description or '(no description)'}",
                "aliases: " + (", ".join(f"{a}→{v}" for a, v in model.aliases.items()) or "none"),
                f"{'VERSION':>7}  {'FRAMEWORK':9} {'DATASET':14} {'ALIASES':20} TEST METRICS",
                *(
                    f"{v.version:>7}  {v.framework or '—':9} {v.dataset or '—':14} {','.join(v.aliases) or '—':20} "
                    f"{_metrics_text(v.metrics)}"
                    for v in versions
                ),
            ]
            _emit(payload, as_json, "\n".join(lines))
            return
        detail = registry.get_model_version_detail(parsed.name, version=parsed.version, alias=parsed.alias)
    except SextantError as error:
        _fail(error, as_json)
    info = detail.info
    lines = [
        f"{info.name} version {info.version}" + (f" ({', '.join(info.aliases)})" if info.aliases else ""),
        info.description,
        f"framework {info.framework or '—'}, task {info.task or '—'}, dataset {info.dataset or '—'}, run {info.run_id}",
        f"test metrics: {_metrics_text(info.metrics)}",
        "inputs:",
        *(f"  {column.name:30} {column.type}" for column in detail.inputs),
        "outputs:",
        *(f"  {column.name:30} {column.type}" for column in detail.outputs),
        f"MLflow: {info.mlflow_url}",
    ]
    _emit(detail.as_dict(), as_json, "\n".join(lines))


@models_app.command("alias")
def models_alias(
    model: Annotated[str, typer.Argument(help="registered model name")],
    alias: Annotated[str, typer.Argument(help="alias, e.g. champion or challenger")],
    version: Annotated[int | None, typer.Argument(help="version to point the alias at")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="remove the alias")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Set or move MODEL@ALIAS to VERSION (endpoints following it are redeployed), or --delete it."""
    from backend import registry

    try:
        if delete == (version is not None):
            raise InvalidInputError("give a VERSION to set or move the alias, or --delete to remove it")
        _quiet_downloads()
        migrate()
        with session_scope() as session:
            if delete:
                change = registry.delete_model_alias(session, name=model, alias=alias)
            else:
                assert version is not None
                change = registry.set_model_alias(session, name=model, alias=alias, version=version)
    except SextantError as error:
        _fail(error, as_json)
    if change.version is None:
        text = f"removed {model}@{alias} (was version {change.previous_version})"
    else:
        moved = f" (was {change.previous_version})" if change.previous_version not in (None, change.version) else ""
        text = f"{model}@{alias} → version {change.version}{moved}"
        if change.redeployed_endpoints:
            text += f"; redeployed endpoint {', '.join(change.redeployed_endpoints)}"
    _emit(change, as_json, text)


# endpoints -------------------------------------------------------------------------------------


def _endpoint_text(info: Any) -> str:
    lines = [f"{info.name}: {info.state}" + (f" — {info.description}" if info.description else "")]
    lines += [
        f"  #{item.id:<4} {item.ref:40} v{item.version:<4} {item.traffic_percent:>3}%  {item.state}"
        + (f": {item.message}" if item.message else "")
        for item in info.deployments
    ] or ["  (no model deployed)"]
    return "\n".join(lines)


@endpoints_app.command("create")
def endpoints_create(
    name: Annotated[str, typer.Argument(help="endpoint name (lowercase letters, digits, '-')")],
    description: Annotated[str, typer.Option("--description", help="what it serves")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Create an empty endpoint; deploy a model to it next."""
    from backend.serving import endpoints

    try:
        migrate()
        with session_scope() as session:
            info = endpoints.create_endpoint(session, name=name, description=description)
    except SextantError as error:
        _fail(error, as_json)
    _emit(info.as_dict(), as_json, f"created endpoint {info.name}")


@endpoints_app.command("list")
def endpoints_list(as_json: JsonFlag = False) -> None:
    """Endpoints with their deployed versions, traffic and live state."""
    from backend.serving import endpoints

    migrate()
    with endpoints.triton_client() as triton, session_scope() as session:
        infos = endpoints.list_endpoints(session, triton=triton)
    text = "\n".join(_endpoint_text(info) for info in infos) or "no endpoints yet"
    _emit({"endpoints": [info.as_dict() for info in infos]}, as_json, text)


def _wait_until_settled(name: str, timeout_s: float) -> Any:
    from backend.serving import endpoints

    deadline = time.monotonic() + timeout_s
    with endpoints.triton_client() as triton:
        while True:
            with session_scope() as session:
                info = endpoints.get_endpoint(session, name=name, triton=triton)
            if all(item.state in (endpoints.READY, endpoints.FAILED) for item in info.deployments):
                return info
            if time.monotonic() > deadline:
                raise SextantError(f"endpoint {name} is not ready after {timeout_s:.0f} s: {info.state}")
            time.sleep(WAIT_POLL_SECONDS)


@endpoints_app.command("deploy")
def endpoints_deploy(
    name: Annotated[str, typer.Argument(help="endpoint name")],
    model: Annotated[str, typer.Option("--model", help="MODEL@ALIAS (follows the alias) or MODEL/VERSION")],
    traffic: Annotated[int, typer.Option("--traffic", help="percent of the requests it gets", min=0, max=100)] = 100,
    create: Annotated[bool, typer.Option("--create", help="create the endpoint if missing")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="wait until Triton has loaded it (e.g. while Triton restarts)")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds --wait waits")] = 120.0,
    as_json: JsonFlag = False,
) -> None:
    """Deploy a registry version; the endpoint's other models share the remaining traffic."""
    from backend import registry
    from backend.errors import NotFoundError
    from backend.serving import endpoints

    try:
        ref = registry.parse_model_ref(model)
        _quiet_downloads()
        migrate()
        with session_scope() as session:
            if create:
                try:
                    endpoints.get_endpoint(session, name=name)
                except NotFoundError:
                    endpoints.create_endpoint(session, name=name)
                    session.commit()
            info = endpoints.deploy_model(
                session, endpoint=name, model=ref.name, version=ref.version, alias=ref.alias, traffic_percent=traffic
            )
        if wait:
            info = _wait_until_settled(name, timeout)
    except SextantError as error:
        _fail(error, as_json)
    _emit(info.as_dict(), as_json, _endpoint_text(info))
    if any(item.state == endpoints.FAILED for item in info.deployments):
        raise typer.Exit(code=1)


@endpoints_app.command("undeploy")
def endpoints_undeploy(
    name: Annotated[str, typer.Argument(help="endpoint name")],
    model: Annotated[str, typer.Option("--model", help="MODEL/VERSION, MODEL@ALIAS or the deployment id")],
    as_json: JsonFlag = False,
) -> None:
    """Remove a deployed model; the endpoint's other models share its traffic."""
    from backend.serving import endpoints

    try:
        migrate()
        with session_scope() as session:
            info = endpoints.undeploy_model(session, endpoint=name, deployment=model)
    except SextantError as error:
        _fail(error, as_json)
    _emit(info.as_dict(), as_json, _endpoint_text(info))


# predict ---------------------------------------------------------------------------------------


def _read_instances(source: str) -> bytes:
    """The request body: a file (or - for stdin) with {"instances": [...]} or a bare [...] array."""
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as error:
        raise InvalidInputError(f"cannot read {source}: {error.strerror}") from error
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise InvalidInputError(f"{source} is not JSON: {error}") from error
    if isinstance(data, list):
        data = {"instances": data}
    return json.dumps(data).encode("utf-8")


def predict_command(
    name: Annotated[str, typer.Argument(help="endpoint name")],
    instances: Annotated[str, typer.Option("--instances", help='JSON file ({"instances": [...]} or [...]); - = stdin')],
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="same id, same deployed model (sticky traffic split)")
    ] = None,
) -> None:
    """Send instances to an endpoint through the gateway and print its JSON answer."""
    from backend.serving import rest

    try:
        answer = rest.post_predict(name, _read_instances(instances), request_id=request_id)
    except SextantError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(json.dumps(answer.body))
    if not answer.ok:
        typer.echo(f"error: {answer.status_code}: {answer.error_message}", err=True)
        raise typer.Exit(code=1)
