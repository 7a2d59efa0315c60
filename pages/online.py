"""Online prediction: endpoints with their deployed versions, traffic and live state; predict through the
gateway from a form generated from the signature or from pasted JSON, with the equivalent curl command."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import streamlit as st

from backend.config import get_settings
from backend.db import session_scope
from backend.errors import SextantError
from backend.serving import endpoints, rest
from backend.serving.request_log import summarize_requests

RESULT_KEY = "online.result"
NUMBER_FORMAT = "%.6g"


@st.cache_resource
def triton() -> endpoints.TritonClient:  # one gRPC channel for the portal process
    return endpoints.triton_client()


def deployments_frame(info: endpoints.EndpointInfo) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "id": item.id,
                "model": item.model,
                "version": item.version,
                "follows": f"@{item.alias}" if item.alias else "",
                "traffic %": item.traffic_percent,
                "state": item.state,
                "message": item.message,
                "framework": item.framework,
            }
            for item in info.deployments
        ]
    )


@st.fragment(run_every=2)
def show_status(name: str) -> None:
    # Live state: Triton's view of each deployed version, refreshed every two seconds.
    with session_scope() as session:
        info = endpoints.get_endpoint(session, name=name, triton=triton())
        traffic = summarize_requests(session, endpoint=name)
    badge = {"ready": ":green[ready]", "failed": ":red[failed]", "unavailable": ":red[Triton unreachable]"}
    st.markdown(f"**State:** {badge.get(info.state, info.state)}")
    if not info.deployments:
        st.caption("No model deployed. Deploy one from the Model registry page.")
        return
    st.dataframe(deployments_frame(info), hide_index=True, width="stretch", key="online.deployments")
    left, middle, right = st.columns(3)
    left.metric("Requests (last hour)", f"{traffic.requests:,}")
    middle.metric("Errors", f"{traffic.errors:,}")
    right.metric("p50 latency", f"{traffic.p50_ms:.1f} ms" if traffic.p50_ms is not None else "—")
    if traffic.versions:
        st.caption(
            "Served: "
            + ", ".join(
                f"{item.model} v{item.version}: {item.share:.0%}" for item in traffic.versions if item.model is not None
            )
        )


def show_management(info: endpoints.EndpointInfo) -> None:
    if not info.deployments:
        return
    with st.expander("Traffic split and undeploy", icon=":material/call_split:"):
        frame = pd.DataFrame(
            [{"deployment": item.ref, "id": item.id, "traffic %": item.traffic_percent} for item in info.deployments]
        )
        edited = st.data_editor(
            frame,
            hide_index=True,
            disabled=["deployment", "id"],
            key=f"online.traffic.{info.name}",
            column_config={"traffic %": st.column_config.NumberColumn(min_value=0, max_value=100, step=1)},
        )
        left, right = st.columns(2)
        if left.button("Apply traffic split", key="online.apply_traffic"):
            split = {int(row["id"]): int(row["traffic %"] or 0) for row in edited.to_dict("records")}
            try:
                with session_scope() as session:
                    endpoints.set_traffic(session, endpoint=info.name, traffic=split)
            except SextantError as error:
                st.error(f"Traffic not changed: {error}")
            else:
                st.rerun()
        target = right.selectbox(
            "Deployment", [item.ref for item in info.deployments], key=f"online.undeploy_target.{info.name}"
        )
        if right.button("Undeploy", key="online.undeploy"):
            try:
                with st.spinner(f"Undeploying {target}…"), session_scope() as session:
                    endpoints.undeploy_model(session, endpoint=info.name, deployment=target, triton=triton())
            except SextantError as error:
                st.error(f"Not undeployed: {error}")
            else:
                st.rerun()


def input_widget(column: endpoints.InputColumn, default: Any, key: str) -> Any:
    label = f"{column.name} ({column.type})"
    if column.type == "string":
        text = st.text_input(label, "" if default is None else str(default), key=key, help="empty = missing")
        return text or None
    if column.type == "boolean":
        return st.checkbox(label, bool(default), key=key)
    if column.type in ("long", "integer"):
        return int(st.number_input(label, value=int(default or 0), step=1, key=key))
    value = None if default is None or (isinstance(default, float) and math.isnan(default)) else float(default)
    return st.number_input(label, value=value, format=NUMBER_FORMAT, key=key, help="empty = missing")


def show_form(info: endpoints.EndpointInfo) -> dict[str, Any] | None:
    """The form of one instance; the request body when submitted."""
    example = info.example or {}
    with st.form(key=f"online.form.{info.name}"):
        columns = st.columns(3)
        instance = {}
        for index, column in enumerate(info.inputs):
            with columns[index % 3]:
                instance[column.name] = input_widget(
                    column, example.get(column.name), key=f"online.input.{info.name}.{column.name}"
                )
        if st.form_submit_button("Predict", type="primary", key=f"online.predict.{info.name}"):
            return {"instances": [instance]}
    return None


def show_json(info: endpoints.EndpointInfo) -> str | None:
    """Pasted JSON, sent as is (the gateway says what is wrong with it); the text when sent."""
    default = json.dumps({"instances": [info.example or {c.name: None for c in info.inputs}]}, indent=2)
    text = st.text_area("Request body", default, height=260, key=f"online.json.{info.name}")
    if st.button("Send", type="primary", key="online.send_json"):
        return text
    return None


def predictions_frame(predictions: list[Any]) -> pd.DataFrame:
    rows = []
    for prediction in predictions:
        if isinstance(prediction, dict):
            row = {"class": prediction.get("class")}
            row.update({f"P({label})": p for label, p in prediction.get("probabilities", {}).items()})
        else:
            row = {"prediction": prediction}
        rows.append(row)
    return pd.DataFrame(rows)


def send(name: str, body: str | dict[str, Any]) -> None:
    payload = body.encode("utf-8") if isinstance(body, str) else body
    try:
        answer = rest.post_predict(name, payload)
    except SextantError as error:
        st.session_state[RESULT_KEY] = {"endpoint": name, "body": body, "unreachable": str(error)}
        return
    st.session_state[RESULT_KEY] = {"endpoint": name, "body": body, "answer": answer}


def show_result(name: str) -> None:
    result = st.session_state.get(RESULT_KEY)
    if not result or result["endpoint"] != name:
        return
    st.subheader("Result")
    if "unreachable" in result:
        st.error(result["unreachable"])
    else:
        answer: rest.GatewayAnswer = result["answer"]
        if answer.ok:
            deployed = answer.body["deployed_model"]
            st.success(f"Predicted by {deployed['model']} version {deployed['version']} in {answer.latency_ms:.1f} ms")
            st.dataframe(predictions_frame(answer.body["predictions"]), hide_index=True, key="online.predictions")
        else:
            error = answer.body.get("error", {})
            field = f" (field `{error['field']}`)" if error.get("field") else ""
            st.error(f"{answer.status_code}: {answer.error_message}{field}")
        with st.expander("Response JSON"):
            st.json(answer.body)
    st.caption("The same request with curl")
    st.code(rest.curl_command(name, result["body"]), language="bash", wrap_lines=True)


st.title("Online prediction")
settings = get_settings()
st.caption(f"Requests go through the REST gateway to Triton · API docs: {settings.gateway_url}/docs")
with session_scope() as session:
    infos = endpoints.list_endpoints(session)
if not infos:
    st.info("No endpoints yet. Deploy a model from the Model registry page; it gets an endpoint here.")
    st.page_link("../pages/registry.py", label="Go to the Model registry", icon=":material/inventory_2:")
    st.stop()
by_name = {info.name: info for info in infos}
selected = st.selectbox("Endpoint", list(by_name), key="online.endpoint")
current = by_name[selected]
show_status(selected)
show_management(current)
if current.deployments:
    st.subheader("Predict")
    form_tab, json_tab = st.tabs(["Form", "JSON"])
    with form_tab:
        body = show_form(current)
    with json_tab:
        text = show_json(current)
    if body is not None:
        send(selected, body)
    elif text is not None:
        send(selected, text)
    show_result(selected)
