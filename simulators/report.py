"""An HTML report of a simulation run, with plotly charts (plotly.js served beside it)."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go
import polars as pl
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from simulators.runner import SimulationResult


def write_report(result: SimulationResult, path: Path | None = None) -> Path:
    """Write `report.html` next to the run's files; plotly.js goes in the same folder.

    The charts: cumulative expected reward of the policy and of the oracle, cumulative regret,
    and the share of decisions per arm over time. Every number comes from the run's
    `truth.parquet`; the headline table from `summary.json`.
    """
    path = path or result.directory / "report.html"
    truth = result.truth.with_row_index("decision", offset=1)
    figure = make_subplots(
        rows=3,
        cols=1,
        subplot_titles=(
            "Cumulative expected reward: policy vs oracle",
            "Cumulative regret (expected, against the best eligible arm)",
            "Share of decisions per offer (rolling 500 decisions)",
        ),
        vertical_spacing=0.08,
    )
    x = truth["decision"].to_list()
    figure.add_trace(
        go.Scatter(x=x, y=truth["cumulative_policy_reward"].to_list(), name="policy"), 1, 1
    )
    figure.add_trace(
        go.Scatter(x=x, y=truth["cumulative_oracle_reward"].to_list(), name="oracle"), 1, 1
    )
    figure.add_trace(go.Scatter(x=x, y=truth["cumulative_regret"].to_list(), name="regret"), 2, 1)
    offers = truth.with_columns(pl.col("arm").str.split("/").list.first().alias("offer"))
    for offer in sorted(offers["offer"].unique().to_list()):
        share = (
            offers.select((pl.col("offer") == offer).cast(pl.Float64).rolling_mean(500))
            .to_series()
            .to_list()
        )
        figure.add_trace(go.Scatter(x=x, y=share, name=offer, mode="lines"), 3, 1)
    figure.update_layout(height=1100, title=f"Simulation {result.config.name}")
    figure.update_xaxes(title_text="decisions", row=3, col=1)
    summary = result.summary()
    rows = "".join(
        f"<tr><th scope='row'>{name}</th><td>{value}</td></tr>" for name, value in summary.items()
    )
    body = figure.to_html(full_html=False, include_plotlyjs="directory")
    plotly_js = path.parent / "plotly.min.js"
    if not plotly_js.exists():
        plotly_js.write_text(get_plotlyjs())
    path.write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Simulation {result.config.name}</title></head><body>"
        f"<h1>Simulation {result.config.name}</h1>"
        f"<table>{rows}</table>{body}"
        f"<script type='application/json' id='summary'>{json.dumps(summary)}</script>"
        "</body></html>\n"
    )
    return path
