"""Model registry: models, versions and metrics, aliases, comparison, model cards, deploy to an endpoint."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.formatting import format_time
from backend import registry
from backend.db import session_scope
from backend.errors import SextantError
from backend.serving import endpoints

NEW_ENDPOINT = "New endpoint…"
OTHER_ALIAS = "other…"
FLASH_KEY = "registry.flash"
DEPLOYED_KEY = "registry.deployed_endpoint"


@st.cache_resource
def triton() -> endpoints.TritonClient:  # one gRPC channel for the portal process
    return endpoints.triton_client()


def flash(kind: str, message: str) -> None:
    """A message shown after the rerun that follows an action."""
    st.session_state[FLASH_KEY] = (kind, message)


def show_flash() -> None:
    kind, message = st.session_state.pop(FLASH_KEY, (None, None))
    if kind == "success":
        st.success(message)
    elif kind == "error":
        st.error(message)


def models_frame(models: list[registry.ModelSummary]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": model.name,
                "versions": model.version_count,
                "latest": model.latest_version,
                "aliases": ", ".join(f"{alias} → v{version}" for alias, version in model.aliases.items()),
                "updated": format_time(model.updated_at),
                "description": model.description,
            }
            for model in models
        ]
    )


def versions_frame(versions: list[registry.ModelVersionInfo]) -> pd.DataFrame:
    metric_names = sorted({name for version in versions for name in version.metrics})
    rows = []
    for version in versions:
        row = {
            "version": version.version,
            "aliases": ", ".join(version.aliases),
            "framework": version.framework,
            "task": version.task,
            "dataset": version.dataset,
        }
        row.update({f"test {name}": version.metrics.get(name) for name in metric_names})
        row.update({"registered": format_time(version.created_at), "MLflow": version.mlflow_url})
        rows.append(row)
    return pd.DataFrame(rows)


def show_aliases(model: registry.ModelSummary, versions: list[int]) -> None:
    if model.aliases:
        st.markdown("  ".join(f"`{alias}` → **v{version}**" for alias, version in model.aliases.items()))
    else:
        st.caption("No aliases yet. Point `champion` at the version to serve, `challenger` at the one to try.")
    names = list(dict.fromkeys([*registry.SUGGESTED_ALIASES, *model.aliases, OTHER_ALIAS]))
    left, middle, right = st.columns([2, 1, 1], vertical_alignment="bottom")
    alias = left.selectbox("Alias", names, key="registry.alias_name")
    if alias == OTHER_ALIAS:
        alias = left.text_input("Alias name", key="registry.alias_custom").strip()
    version = middle.selectbox("Version", versions, key=f"registry.alias_version.{model.name}")
    if right.button("Set alias", type="primary", key="registry.alias_set", disabled=not alias):
        try:
            with st.spinner("Moving the alias; endpoints that follow it are redeployed…"), session_scope() as session:
                change = registry.set_model_alias(
                    session, name=model.name, alias=alias, version=version, triton=triton()
                )
        except SextantError as error:
            st.error(f"Alias not set: {error}")
            return
        message = f"{model.name}@{change.alias} → version {change.version}"
        if change.redeployed_endpoints:
            message += f"; redeployed endpoint {', '.join(change.redeployed_endpoints)}"
        flash("success", message)
        st.rerun()
    for alias_name in model.aliases:
        if st.button(f"Remove {alias_name}", key=f"registry.alias_delete.{alias_name}"):
            try:
                with session_scope() as session:
                    registry.delete_model_alias(session, name=model.name, alias=alias_name)
            except SextantError as error:
                st.error(str(error))
                return
            flash("success", f"Removed {model.name}@{alias_name}")
            st.rerun()


def show_comparison(name: str, versions: list[int]) -> None:
    if len(versions) < 2:
        st.caption("Comparing needs two versions of this model.")
        return
    left, right, toggle = st.columns([1, 1, 2], vertical_alignment="bottom")
    version_a = left.selectbox("Version A", versions, index=1, key=f"registry.compare_a.{name}")
    version_b = right.selectbox("Version B", versions, index=0, key=f"registry.compare_b.{name}")
    only_differences = toggle.toggle("Only parameters that differ", value=True, key="registry.compare_diff_only")
    comparison = registry.compare_model_versions(
        name, version_a=version_a, version_b=version_b, only_differences=only_differences
    )
    st.markdown("**Metrics** (B − A; ✓ marks the better side where the direction is known)")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "metric": row.metric,
                    f"v{version_a}": row.a,
                    f"v{version_b}": row.b,
                    "B − A": row.difference,
                    "better": {"a": f"v{version_a} ✓", "b": f"v{version_b} ✓"}.get(row.better or "", ""),
                }
                for row in comparison.metrics
            ]
        ),
        hide_index=True,
        width="stretch",
        key="registry.compare_metrics",
    )
    left, right = st.columns(2)
    with left:
        st.markdown("**Parameters**")
        if comparison.params:
            rows = [{"parameter": p.name, f"v{version_a}": p.a, f"v{version_b}": p.b} for p in comparison.params]
            st.dataframe(
                pd.DataFrame(rows),
                hide_index=True,
                width="stretch",
            )
        else:
            st.caption("All parameters are equal." if only_differences else "No parameters recorded.")
    with right:
        st.markdown("**Signature**")
        if comparison.signature:
            st.dataframe(
                pd.DataFrame(
                    [
                        {"": change.side, "column": change.column, f"v{version_a}": change.a, f"v{version_b}": change.b,
                         "change": change.change}
                        for change in comparison.signature
                    ]
                ),
                hide_index=True,
                width="stretch",
            )  # fmt: skip
        else:
            st.caption("Same inputs and outputs: requests for one work for the other.")


def show_model_card(name: str, versions: list[int]) -> None:
    version = st.selectbox("Version", versions, key=f"registry.card_version.{name}")
    card = registry.get_model_card(name, version=version)
    with st.form(key=f"registry.card_form.{name}.{version}"):
        key = f"{name}.{version}"
        model_description = st.text_area(
            "Model description (all versions)", card.model_description, key=f"registry.card_model_description.{key}"
        )
        description = st.text_area(
            "Description of this version", card.description, key=f"registry.card_description.{key}"
        )
        intended_use = st.text_area(
            "Intended use",
            card.intended_use,
            placeholder="Who uses its predictions, for which decisions",
            key=f"registry.card_intended_use.{key}",
        )
        limitations = st.text_area(
            "Limitations",
            card.limitations,
            placeholder="Where it is known to be wrong; what it must not be used for",
            key=f"registry.card_limitations.{key}",
        )
        if st.form_submit_button("Save model card", type="primary", key=f"registry.card_save.{key}"):
            try:
                registry.update_model_card(
                    name,
                    version=version,
                    model_description=model_description,
                    description=description,
                    intended_use=intended_use,
                    limitations=limitations,
                )
            except SextantError as error:
                st.error(f"Not saved: {error}")
            else:
                flash("success", f"Saved the model card of {name} version {version}")
                st.rerun()
    left, right = st.columns(2)
    with left:
        st.markdown(
            f"**Training dataset version:** {card.dataset or 'unknown'}  \n"
            f"**Framework / task:** {card.framework or '—'} / {card.task or '—'}  \n"
            f"**Aliases:** {', '.join(card.aliases) or 'none'}  \n"
            f"**Registered:** {format_time(card.created_at)} · [MLflow]({card.mlflow_url})"
        )
        st.dataframe(
            pd.DataFrame([{"test metric": key, "value": value} for key, value in card.metrics.items()]),
            hide_index=True,
            width="stretch",
        )
    with right:
        st.dataframe(
            pd.DataFrame(
                [{"": "input", "column": c.name, "type": c.type} for c in card.inputs]
                + [{"": "output", "column": c.name, "type": c.type} for c in card.outputs]
            ),
            hide_index=True,
            width="stretch",
        )
    st.download_button(
        "Download the model card (Markdown)",
        card.to_markdown(),
        file_name=f"{name}-v{version}-model-card.md",
        mime="text/markdown",
        key=f"registry.card_download.{name}.{version}",
    )


def deploy_targets(model: registry.ModelSummary, versions: list[int]) -> dict[str, tuple[int | None, str | None]]:
    """Labels → (version, alias): the aliases first (a deployment of an alias follows it), then the versions."""
    targets: dict[str, tuple[int | None, str | None]] = {
        f"{model.name}@{alias} (now v{version}, follows the alias)": (None, alias)
        for alias, version in model.aliases.items()
    }
    targets.update({f"{model.name} version {version}": (version, None) for version in versions})
    return targets


def show_deploy(model: registry.ModelSummary, versions: list[int]) -> None:
    targets = deploy_targets(model, versions)
    label = st.selectbox("Deploy", list(targets), key=f"registry.deploy_target.{model.name}")
    version, alias = targets[label]
    with session_scope() as session:
        existing = {info.name: info for info in endpoints.list_endpoints(session)}
    left, right = st.columns(2)
    choice = left.selectbox("To endpoint", [NEW_ENDPOINT, *existing], key="registry.deploy_endpoint")
    if choice == NEW_ENDPOINT:
        endpoint = right.text_input(
            "Endpoint name", endpoints.suggest_endpoint_name(model.name), key=f"registry.deploy_new_name.{model.name}"
        ).strip()
    else:
        endpoint = choice
        right.caption(
            "Now serving: "
            + (", ".join(f"{d.ref} ({d.traffic_percent}%)" for d in existing[choice].deployments) or "nothing")
        )
    alone = choice == NEW_ENDPOINT or not existing[choice].deployments
    traffic = st.slider(
        "Traffic share (%)",
        0,
        100,
        100,
        key="registry.deploy_traffic",
        disabled=alone,
        help="The endpoint's other models keep their proportions in the rest. A first model takes 100%.",
    )
    buttons = st.columns([1, 1, 3])
    deploy = buttons[0].button("Deploy", type="primary", key="registry.deploy", disabled=not endpoint)
    if buttons[1].button(
        "Batch predict",
        key="registry.batch_predict",
        help="Score a dataset or file with this model on the Batch prediction page (no endpoint needed).",
    ):
        reference = f"{model.name}@{alias}" if alias else f"{model.name}/{version}"
        st.switch_page("../pages/batch.py", query_params={"model": reference})
    if deploy:
        try:
            with st.spinner(f"Deploying {label.split(' (')[0]} to {endpoint} in Triton…"), session_scope() as session:
                if choice == NEW_ENDPOINT:
                    endpoints.create_endpoint(session, name=endpoint)
                info = endpoints.deploy_model(
                    session,
                    endpoint=endpoint,
                    model=model.name,
                    version=version,
                    alias=alias,
                    traffic_percent=100 if alone else int(traffic),
                    triton=triton(),
                )
        except SextantError as error:
            st.error(f"Not deployed: {error}")
            return
        st.session_state[DEPLOYED_KEY] = info.name
        failed = [d for d in info.deployments if d.state == endpoints.FAILED]
        if failed:
            flash("error", f"Triton could not load {failed[0].ref}: {failed[0].message}")
        else:
            flash("success", f"Deployed to endpoint {info.name}")
        st.rerun()
    if st.session_state.get(DEPLOYED_KEY):
        show_deployed(st.session_state[DEPLOYED_KEY])


@st.fragment(run_every=2)
def show_deployed(name: str) -> None:
    # Live: a model still loading (e.g. while Triton restarts) turns ready here without a reload.
    try:
        with session_scope() as session:
            info = endpoints.get_endpoint(session, name=name, triton=triton())
    except SextantError:
        return
    st.markdown(f"**Endpoint `{info.name}`: {info.state}**")
    st.dataframe(
        pd.DataFrame(
            [
                {"model": d.ref, "version": d.version, "traffic %": d.traffic_percent, "state": d.state,
                 "message": d.message}
                for d in info.deployments
            ]
        ),
        hide_index=True,
        width="stretch",
        key="registry.deployed_table",
    )  # fmt: skip
    st.page_link("../pages/online.py", label="Predict on the Online prediction page", icon=":material/bolt:")


st.title("Model registry")
show_flash()
models = registry.list_models()
if not models:
    st.info("No registered models yet. Train one on the Training page: each training registers a version.")
    st.page_link("../pages/training.py", label="Go to Training", icon=":material/model_training:")
    st.stop()
st.dataframe(models_frame(models), hide_index=True, width="stretch", key="registry.models")
names = [model.name for model in models]
selected = st.selectbox("Model", names, key="registry.model")
summary = next(model for model in models if model.name == selected)
versions = registry.list_model_versions(selected)
numbers = [version.version for version in versions]
st.subheader(f"{selected}: {len(versions)} version{'s' if len(versions) != 1 else ''}")
if summary.description:
    st.caption(summary.description)
st.dataframe(
    versions_frame(versions),
    hide_index=True,
    width="stretch",
    key="registry.versions",
    column_config={"MLflow": st.column_config.LinkColumn("MLflow", display_text="open")},
)
deploy_tab, alias_tab, compare_tab, card_tab = st.tabs(["Deploy", "Aliases", "Compare versions", "Model card"])
with deploy_tab:
    show_deploy(summary, numbers)
with alias_tab:
    show_aliases(summary, numbers)
with compare_tab:
    show_comparison(selected, numbers)
with card_tab:
    show_model_card(selected, numbers)
