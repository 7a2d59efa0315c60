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
