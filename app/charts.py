"""Altair chart builders for profiles (pages stay thin)."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd


def histogram_chart(column: dict[str, Any]) -> alt.Chart:
    bins = pd.DataFrame(column.get("histogram", []))
    return (
        alt.Chart(bins, title=f"Distribution of {column['name']}")
        .mark_bar()
        .encode(
            x=alt.X("start:Q", bin="binned", title=column["name"]),
            x2="end:Q",
            y=alt.Y("count:Q", title="rows"),
            tooltip=[alt.Tooltip("start:Q", format=",.4g"), alt.Tooltip("end:Q", format=",.4g"), "count:Q"],
        )
        .properties(height=260)
    )


def top_values_chart(column: dict[str, Any]) -> alt.Chart:
    values = pd.DataFrame(column.get("top_values", []))
    values["value"] = values["value"].astype(str)
    return (
        alt.Chart(values, title=f"Most frequent values of {column['name']}")
        .mark_bar()
        .encode(
            x=alt.X("count:Q", title="rows"),
            y=alt.Y("value:N", sort="-x", title=None),
            tooltip=["value:N", "count:Q"],
        )
        .properties(height=max(120, 26 * len(values)))
    )


def correlation_heatmap(correlation: dict[str, Any]) -> alt.Chart:
    names = correlation["columns"]
    cells = [
        {"x": names[j], "y": names[i], "r": value}
        for i, row in enumerate(correlation["matrix"])
        for j, value in enumerate(row)
    ]
    frame = pd.DataFrame(cells)
    base = alt.Chart(frame, title="Correlation of numeric columns (Pearson)").encode(
        x=alt.X("x:N", sort=names, title=None),
        y=alt.Y("y:N", sort=names, title=None),
    )
    heat = base.mark_rect().encode(
        color=alt.Color("r:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1], reverse=True), title="r"),
        tooltip=["x:N", "y:N", alt.Tooltip("r:Q", format=".3f")],
    )
    labels = base.mark_text(fontSize=10).encode(
        text=alt.Text("r:Q", format=".2f"),
        color=alt.condition("abs(datum.r) > 0.6", alt.value("white"), alt.value("black")),
    )
    # Fixed steps per cell: Streamlit stretches a chart's width but not its height.
    return (heat + labels).properties(width=alt.Step(56), height=alt.Step(30))


def metric_curves_chart(curves: pd.DataFrame, metric_key: str) -> alt.Chart:
    return (
        alt.Chart(curves, title=f"{metric_key} per step")
        .mark_line(point=alt.OverlayMarkDef(size=12))
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("value:Q", title=metric_key, scale=alt.Scale(zero=False)),
            color=alt.Color("run:N", title="run"),
            tooltip=["run:N", "step:Q", alt.Tooltip("value:Q", format=".5g")],
        )
        .properties(height=320)
    )


def parallel_coordinates_chart(frame: pd.DataFrame, metric_key: str) -> alt.Chart:
    """One line per run across the varying parameters, coloured by the metric (values min-max scaled)."""
    axes = [c for c in frame.columns if c != "run"]
    numeric = frame[axes].apply(pd.to_numeric, errors="coerce")
    long = []
    for row_index, row in frame.iterrows():
        for axis in axes:
            column = numeric[axis]
            if column.notna().all():
                low, high = column.min(), column.max()
                scaled = 0.5 if high == low else (column[row_index] - low) / (high - low)
            else:
                # Categorical parameter: spread its sorted categories over the axis.
                categories = sorted(frame[axis].astype(str).unique())
                scaled = categories.index(str(row[axis])) / max(1, len(categories) - 1)
            long.append(
                {"run": row["run"], "axis": axis, "scaled": scaled, "value": str(row[axis]),
                 metric_key: row[metric_key]}
            )  # fmt: skip
    data = pd.DataFrame(long)
    return (
        alt.Chart(data, title=f"Parameters vs {metric_key} (each axis scaled to its range)")
        .mark_line(opacity=0.7)
        .encode(
            x=alt.X("axis:N", sort=axes, title=None),
            y=alt.Y("scaled:Q", axis=None),
            detail="run:N",
            color=alt.Color(f"{metric_key}:Q", scale=alt.Scale(scheme="viridis")),
            tooltip=["run:N", "axis:N", "value:N", alt.Tooltip(f"{metric_key}:Q", format=".5g")],
        )
        .properties(height=320)
    )


def optimization_history_chart(history: pd.DataFrame, objective: str) -> alt.Chart:
    base = alt.Chart(history, title=f"Optimization history ({objective})").encode(x=alt.X("trial:Q", title="trial"))
    points = base.mark_circle(size=60).encode(
        y=alt.Y("value:Q", title=objective, scale=alt.Scale(zero=False)),
        tooltip=["trial:Q", alt.Tooltip("value:Q", format=".5g")],
    )
    best = base.mark_line(color="#d62728").encode(y="best:Q")
    return (points + best).properties(height=300)


def importances_chart(importances: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(importances, title="Parameter importances (fANOVA)")
        .mark_bar()
        .encode(
            x=alt.X("importance:Q", title="importance"),
            y=alt.Y("parameter:N", sort="-x", title=None),
            tooltip=["parameter:N", alt.Tooltip("importance:Q", format=".3f")],
        )
        .properties(height=max(120, 28 * len(importances)))
    )
