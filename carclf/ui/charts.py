"""Plotly figures for the pages: built from plain data (lists, DataFrames), no model code."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import plotly.graph_objects as go

# Height of the small charts beside a photo, in px.
SMALL_CHART_PX = 260
# Size of the clickable marker drawn over each confusion-matrix cell, px.
CELL_MARKER_PX = 40
# Metric pairs drawn on the training-curves chart: (train column, validation column, title).
CURVE_PANELS = (("loss", "val_loss", "Loss"), ("accuracy", "val_accuracy", "Accuracy"))


def top_k_bar(top_k: Sequence[tuple[str, float]]) -> go.Figure:
    """Horizontal bars of the top-k classes, most probable on top."""
    labels = [label for label, _ in top_k][::-1]
    values = [p for _, p in top_k][::-1]
    fig = go.Figure(go.Bar(x=values, y=labels, orientation="h", text=[f"{v:.1%}" for v in values]))
    fig.update_traces(textposition="auto", marker_color="#1f77b4")
    fig.update_layout(
        height=max(SMALL_CHART_PX // 2, 48 * len(labels) + 60),
        margin=dict(l=10, r=10, t=30, b=10),
        xaxis=dict(range=[0, 1], tickformat=".0%"),
        title="Top classes",
    )
    return fig


def class_counts_bar(counts: dict[str, int]) -> go.Figure:
    """Photos per class, in class order."""
    fig = go.Figure(go.Bar(x=list(counts), y=list(counts.values()), text=list(counts.values())))
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), title="Photos per class", xaxis_type="category")
    return fig


def training_curves(history: pd.DataFrame) -> go.Figure:
    """Loss and accuracy, train (dashed) vs validation (solid), with a dotted line where each stage starts."""
    from plotly.subplots import make_subplots

    titles = [title for _, _, title in CURVE_PANELS]
    fig = make_subplots(rows=1, cols=len(CURVE_PANELS), subplot_titles=titles)
    for col, (train_col, val_col, _) in enumerate(CURVE_PANELS, start=1):
        for column, dash in ((train_col, "dash"), (val_col, "solid")):
            if column in history:
                fig.add_trace(
                    go.Scatter(x=history["epoch"], y=history[column], name=column, mode="lines+markers",
                               line=dict(dash=dash), legendgroup=column),
                    row=1, col=col,
                )
    for epoch, stage in stage_starts(history):
        for col in range(1, len(CURVE_PANELS) + 1):
            fig.add_vline(x=epoch - 0.5, line_dash="dot", line_color="gray", row=1, col=col)
        for col in range(1, len(CURVE_PANELS) + 1):  # label inside each panel, clear of the subplot titles
            fig.add_annotation(x=epoch - 0.5, y=0.98, yref="y domain", yanchor="top", xanchor="left", xshift=3,
                               text=f"stage {stage}", showarrow=False, font=dict(size=11, color="gray"),
                               row=1, col=col)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(title_text="epoch")
    return fig


def stage_starts(history: pd.DataFrame) -> list[tuple[int, object]]:
    """(first epoch, stage) for every stage after the first: where the boundary lines go."""
    if "stage" not in history or history.empty:
        return []
    changed = history["stage"].ne(history["stage"].shift())
    rows = history[changed].iloc[1:]
    return [(int(row.epoch), row.stage) for row in rows.itertuples()]


def compare_curves(histories: dict[str, pd.DataFrame], column: str = "val_accuracy") -> go.Figure:
    """One line per run of ``column`` against epoch."""
    fig = go.Figure()
    for name, history in histories.items():
        if column in history:
            fig.add_trace(go.Scatter(x=history["epoch"], y=history[column], name=name, mode="lines+markers"))
    # The legend below the plot, not beside it: run ids are long, and beside it took half a phone's width.
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), title=column, xaxis_title="epoch",
                      legend=dict(orientation="h", y=-0.3))
    return fig


def confusion_heatmap(matrix, class_names: Sequence[str]) -> go.Figure:
    """Confusion matrix (rows true, columns predicted) with counts written in the cells; clicking selects one."""
    names = [str(n) for n in class_names]
    matrix = [[int(v) for v in row] for row in matrix]  # plain lists: readable figure JSON, no typed arrays
    fig = go.Figure(
        go.Heatmap(z=matrix, x=names, y=names, colorscale="Blues", text=matrix, texttemplate="%{text}",
                   hovertemplate="true %{y}<br>predicted %{x}<br>%{z} photos<extra></extra>")
    )
    # Streamlit's selection events do not fire on heatmap cells, so each cell also gets an almost invisible
    # square marker: clicking a cell selects that marker, whose (x, y) names the cell.
    cells_x = [pred for _ in names for pred in names]
    cells_y = [true for true in names for _ in names]
    fig.add_trace(go.Scatter(x=cells_x, y=cells_y, mode="markers", hoverinfo="none", showlegend=False,
                             marker=dict(symbol="square", size=CELL_MARKER_PX, opacity=0.01, color="black")))
    fig.update_layout(
        height=max(360, 40 * len(names) + 160),
        margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(title="predicted", type="category"),
        yaxis=dict(title="true", type="category", autorange="reversed"),
        title="Confusion matrix (click a cell)",
    )
    return fig


def reliability_diagram(measured: dict) -> go.Figure:
    """Reliability diagram of an evaluation (``EvalReport.calibration``): per confidence bin, the share of
    right answers (bars: after the bundle's temperature) against the diagonal of perfect calibration, and
    the uncalibrated bins as a line, so the gap the temperature closed is visible."""
    calibrated = measured.get("temperature") is not None
    shown = measured["after"] if calibrated else measured["before"]
    bins = shown["bins"]
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"] if bins else 0.1
    name = f"calibrated (T {measured['temperature']:.2f})" if calibrated else "model"
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", hoverinfo="skip",
                               line=dict(dash="dash", color="gray")))
    fig.add_trace(go.Bar(
        x=centres, y=[b["accuracy"] or 0.0 for b in bins], width=width * 0.9, name=name, marker_color="#1f77b4",
        customdata=[[b["count"], b["confidence"] or 0.0] for b in bins],
        hovertemplate="confidence %{x:.0%} bin<br>right %{y:.0%} of %{customdata[0]} photos"
                      "<br>mean confidence %{customdata[1]:.0%}<extra></extra>"))
    if calibrated:
        before = [b for b in measured["before"]["bins"] if b["count"]]
        fig.add_trace(go.Scatter(x=[b["confidence"] for b in before], y=[b["accuracy"] for b in before],
                                 mode="lines+markers", name="before calibration", line=dict(color="#ff7f0e"),
                                 hovertemplate="confidence %{x:.0%}<br>right %{y:.0%}<extra></extra>"))
    ece = f"ECE {measured['before']['ece']:.1%}" + (f" → {measured['after']['ece']:.1%}" if calibrated else "")
    fig.update_layout(
        height=360, margin=dict(l=10, r=10, t=40, b=10), title=f"Reliability ({ece})",
        xaxis=dict(title="confidence (top probability)", range=[0, 1], tickformat=".0%"),
        yaxis=dict(title="share right", range=[0, 1], tickformat=".0%"),
        legend=dict(orientation="h", y=-0.25), bargap=0,
    )
    return fig
