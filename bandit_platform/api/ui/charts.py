"""plotly figures (as JSON-ready dicts) from the report objects of `service.reports`.

Only shaping for display: every number comes from the reports, and every figure's title
states its sample size and what its intervals are (exact counts have none).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from bandit_platform.evaluation.segments import Interval
from bandit_platform.service.policy_evaluation import PolicyEvaluation
from bandit_platform.service.reports import (
    ExperimentReport,
    FairnessReport,
    ModelTimeline,
    SegmentReport,
    TimeSeries,
)

#: Colour-blind-safe colours (Okabe-Ito) with enough contrast on white.
GROUP_COLOURS = {"holdout": "#555555", "ab": "#0072B2", "bandit": "#D55E00"}
_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
_FONT = {"family": "system-ui, sans-serif", "size": 13, "color": "#1a1a1a"}


def _layout(title: str, x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 15}},
        "xaxis": {"title": {"text": x_title}, "automargin": True},
        "yaxis": {"title": {"text": y_title}, "automargin": True},
        # Above the plot, so that it never covers the axis title however many entries.
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "margin": {"l": 60, "r": 20, "t": 70, "b": 50},
        "font": _FONT,
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "hovermode": "closest",
        **extra,
    }


def _errors(
    values: Sequence[float | None], lower: Sequence[float | None], upper: Sequence[float | None]
) -> dict[str, Any]:
    """plotly's asymmetric error bars; a missing end draws none."""
    plus = [None if v is None or u is None else u - v for v, u in zip(values, upper, strict=True)]
    minus = [
        None if v is None or lo is None else v - lo for v, lo in zip(values, lower, strict=True)
    ]
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus}


def _groups(names: Iterable[str]) -> list[str]:
    order = list(GROUP_COLOURS)
    return sorted(set(names), key=lambda g: (order.index(g) if g in order else len(order), g))


def traffic_figure(series: TimeSeries) -> dict[str, Any]:
    """Decisions per bucket, stacked by group."""
    total = sum(p.decisions for p in series.traffic)
    data = [
        {
            "type": "bar",
            "name": group,
            "x": [p.time.isoformat() for p in series.traffic if p.group == group],
            "y": [p.decisions for p in series.traffic if p.group == group],
            "marker": {"color": GROUP_COLOURS.get(group, "#000000")},
        }
        for group in _groups(p.group for p in series.traffic)
    ]
    title = f"Decisions per {series.bucket} by group (n = {total:,}; exact counts)"
    return {"data": data, "layout": _layout(title, "time (UTC)", "decisions", barmode="stack")}


def allocation_figure(series: TimeSeries, group: str = "bandit") -> dict[str, Any]:
    """Share of one group's decisions per offer over time, with Wilson intervals."""
    points = [p for p in series.allocation if p.group == group]
    total = sum(p.decisions for p in points)
    offers = sorted({p.offer for p in points})
    data = []
    for index, offer in enumerate(offers):
        mine = [p for p in points if p.offer == offer]
        values = [p.share.rate for p in mine]
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": offer,
                "x": [p.time.isoformat() for p in mine],
                "y": values,
                "error_y": _errors(
                    values, [p.share.lower for p in mine], [p.share.upper for p in mine]
                ),
                "line": {"color": _PALETTE[index % len(_PALETTE)]},
            }
        )
    title = (
        f"Allocation by offer in the {group} group (n = {total:,} decisions; 95% Wilson intervals)"
    )
    layout = _layout(title, "time (UTC)", "share of the group's decisions")
    layout["yaxis"]["tickformat"] = ".0%"
    return {"data": data, "layout": layout}


def reward_figure(series: TimeSeries, *, conversion: bool = False) -> dict[str, Any]:
    """Mean reward (or conversion) per bucket by group, with intervals."""
    data = []
    total = 0
    for group in _groups(p.group for p in series.rewards):
        mine = [p for p in series.rewards if p.group == group]
        if conversion:
            values = [p.conversion.rate for p in mine]
            lower = [p.conversion.lower for p in mine]
            upper = [p.conversion.upper for p in mine]
            total += sum(p.conversion.n for p in mine)
        else:
            values = [p.reward.mean for p in mine]
            lower = [p.reward.lower for p in mine]
            upper = [p.reward.upper for p in mine]
            total += sum(p.reward.n for p in mine)
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": group,
                "x": [p.time.isoformat() for p in mine],
                "y": values,
                "error_y": _errors(values, lower, upper),
                "line": {"color": GROUP_COLOURS.get(group, "#000000")},
            }
        )
    if conversion:
        title = (
            f"Conversion (reward > 0) per {series.bucket} by group, horizon {series.horizon} "
            f"(n = {total:,} closed rewards; 95% Wilson intervals)"
        )
        layout = _layout(title, "decision time (UTC)", "conversion rate")
        layout["yaxis"]["tickformat"] = ".0%"
    else:
        title = (
            f"Mean reward per {series.bucket} by group, horizon {series.horizon} "
            f"(n = {total:,} closed rewards; 95% t intervals)"
        )
        layout = _layout(title, "decision time (UTC)", "mean reward")
    return {"data": data, "layout": layout}


def _lift_point(label: str, interval: Interval, colour: str) -> dict[str, Any]:
    value = interval.estimate
    return {
        "type": "scatter",
        "mode": "markers",
        "name": label,
        "x": [value],
        "y": [label],
        "error_x": _errors([value], [interval.lower], [interval.upper]),
        "marker": {"color": colour, "size": 10},
        "showlegend": False,
    }


def lift_figure(report: ExperimentReport) -> dict[str, Any]:
    """Bandit minus each control at the learning horizon: the fixed-horizon (Welch) and the
    always-valid (mixture SPRT) 95% intervals."""
    data: list[dict[str, Any]] = []
    sizes = []
    summary = report.horizons[0] if report.horizons else None
    for comparison in summary.comparisons if summary else ():
        name = f"bandit vs {comparison.control}"
        sizes.append(f"{name}: n = {comparison.n_treatment:,} / {comparison.n_control:,}")
        colour = GROUP_COLOURS.get(comparison.control, "#000000")
        data.append(_lift_point(f"{name} (Welch)", comparison.absolute, colour))
        data.append(_lift_point(f"{name} (always valid)", comparison.sequential, colour))
    horizon = summary.horizon if summary else "-"
    title = (
        f"Lift in mean reward, horizon {horizon} (95% intervals; "
        + ("; ".join(sizes) if sizes else "no closed rewards yet")
        + ")"
    )
    layout = _layout(title, "bandit minus control (mean reward)", "")
    layout["shapes"] = [
        {
            "type": "line",
            "x0": 0,
            "x1": 0,
            "yref": "paper",
            "y0": 0,
            "y1": 1,
            "line": {"color": "#1a1a1a", "dash": "dot", "width": 1},
        }
    ]
    layout["margin"] = {"l": 200, "r": 20, "t": 30, "b": 50}
    return {"data": data, "layout": layout}


def model_figure(timeline: ModelTimeline) -> dict[str, Any]:
    """Model versions over time, marker area by the decisions each served."""
    # By publication time: a version can be published with an earlier time than the one
    # before it (e.g. simulated traffic played into the past after a cold start).
    models = sorted(timeline.models, key=lambda m: (m.created_at, m.version))
    served = sum(m.decisions for m in models)
    largest = max((m.decisions for m in models), default=0) or 1
    data = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": "model version",
            "x": [m.created_at.isoformat() for m in models],
            "y": [m.version for m in models],
            "text": [
                f"v{m.version}: {m.note or 'learned'}; {m.examples_seen:,} examples; "
                f"served {m.decisions:,} decisions"
                for m in models
            ],
            "hoverinfo": "text",
            "marker": {
                "size": [8 + 22 * (m.decisions / largest) ** 0.5 for m in models],
                "color": "#0072B2",
                "opacity": 0.8,
            },
        }
    ]
    title = (
        f"Model versions (n = {len(models):,} versions serving {served:,} decisions; exact counts)"
    )
    return {"data": data, "layout": _layout(title, "published at (UTC)", "version")}


def policy_figure(evaluations: Sequence[PolicyEvaluation]) -> dict[str, Any]:
    """Each candidate policy's IPS, SNIPS and DR values with their intervals."""
    data = []
    for index, name in enumerate(("ips", "snips", "dr")):
        estimates = [getattr(e, name) for e in evaluations]
        values = [_finite(x.value) for x in estimates]
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": name.upper(),
                "x": values,
                "y": [e.policy for e in evaluations],
                "error_x": _errors(
                    values,
                    [_finite(x.lower) for x in estimates],
                    [_finite(x.upper) for x in estimates],
                ),
                "marker": {"color": _PALETTE[index], "size": 9},
            }
        )
    n = evaluations[0].n if evaluations else 0
    horizon = evaluations[0].horizon if evaluations else "-"
    title = (
        f"Estimated mean reward per policy, horizon {horizon} "
        f"(n = {n:,} logged decisions; 95% normal intervals)"
    )
    layout = _layout(title, "estimated mean reward", "")
    layout["margin"] = {"l": 140, "r": 20, "t": 70, "b": 50}
    layout["yaxis"]["autorange"] = "reversed"
    # The three estimators side by side within each policy's row, not on top of each other.
    layout["scattermode"] = "group"
    return {"data": data, "layout": layout}


def segment_figure(report: SegmentReport, horizon: str) -> dict[str, Any]:
    """Mean reward at `horizon` per segment and group, with t intervals."""
    rows = [*report.segments, *([report.unsegmented] if report.unsegmented else [])]
    groups = _groups(g.group for row in rows for g in row.groups)
    data = []
    total = 0
    for group in groups:
        xs: list[str] = []
        values: list[float | None] = []
        lower: list[float | None] = []
        upper: list[float | None] = []
        for row in rows:
            for g in row.groups:
                if g.group != group or horizon not in g.rewards:
                    continue
                mean = g.rewards[horizon]
                total += mean.n
                xs.append(row.segment)
                values.append(mean.mean)
                lower.append(mean.lower)
                upper.append(mean.upper)
        data.append(
            {
                "type": "bar",
                "name": group,
                "x": xs,
                "y": values,
                "error_y": _errors(values, lower, upper),
                "marker": {"color": GROUP_COLOURS.get(group, "#000000")},
            }
        )
    title = (
        f"Mean reward per segment and group, horizon {horizon} "
        f"(n = {total:,} closed rewards; 95% t intervals)"
    )
    return {"data": data, "layout": _layout(title, "segment", "mean reward", barmode="group")}


def fairness_figure(report: FairnessReport) -> dict[str, Any]:
    """Share of decisions that showed an offer per protected group, with Wilson intervals."""
    data = []
    total = 0
    for index, item in enumerate(report.attributes):
        values = [v.offered.rate for v in item.values]
        total += sum(v.offered.n for v in item.values)
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"{item.attribute} ({item.group})",
                "x": [v.value for v in item.values],
                "y": values,
                "error_y": _errors(
                    values,
                    [v.offered.lower for v in item.values],
                    [v.offered.upper for v in item.values],
                ),
                "marker": {"color": _PALETTE[index % len(_PALETTE)], "size": 10},
            }
        )
    title = (
        f"Offer rate per protected group (n = {total:,} decisions over the attributes; "
        "95% Wilson intervals)"
    )
    layout = _layout(title, "attribute value", "share of decisions with an offer")
    layout["yaxis"]["tickformat"] = ".0%"
    return {"data": data, "layout": layout}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def figure_rows(figure: dict[str, Any]) -> int:
    """Data points in a figure (0: draw an empty-state message instead of a chart)."""
    return sum(len(trace.get("x") or []) for trace in figure["data"])
