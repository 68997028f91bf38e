"""Plotly figures used by the notebooks. Each returns a ``go.Figure`` (nothing is shown), so
they work headless; ``figure_has_data`` lets notebooks assert that a figure is not empty."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _go():
    import plotly.graph_objects as go

    return go


def figure_has_data(fig) -> bool:
    """True when every trace of ``fig`` holds at least one finite value."""
    if not fig.data:
        return False
    for tr in fig.data:
        vals = [v for key in ("x", "y", "z") if (v := getattr(tr, key, None)) is not None]
        flat = np.asarray([x for v in vals for x in np.ravel(np.asarray(v, dtype=object))],
                          dtype=object)
        nums = [x for x in flat if isinstance(x, (int, float, np.number)) and np.isfinite(x)]
        if not nums:
            return False
    return True


def pass_rate_histogram(pass_rates: dict[str, Sequence[float]], group_size: int,
                        title: str = "Per-prompt pass rate (c / G)"):
    """Overlaid histograms of per-prompt pass rates, one trace per label (e.g. difficulty)."""
    go = _go()
    fig = go.Figure()
    bins = dict(start=-0.5 / group_size, end=1 + 0.5 / group_size, size=1 / group_size)
    for label, vals in pass_rates.items():
        fig.add_trace(go.Histogram(x=list(vals), name=label, xbins=bins, opacity=0.7))
    fig.update_layout(barmode="overlay", title=title, xaxis_title="pass rate in the group",
                      yaxis_title="prompts", height=320)
    return fig


def advantage_heatmap(advantages, rewards, group_size: int, row_labels: Sequence[str],
                      title: str = "Advantage of each completion (rows: prompts)"):
    """Heatmap [prompts x G] of advantages, with each cell's reward as its text."""
    go = _go()
    a = np.asarray(advantages, dtype=float).reshape(-1, group_size)
    r = np.asarray(rewards, dtype=float).reshape(-1, group_size)
    lim = max(1e-9, float(np.abs(a).max()))
    fig = go.Figure(go.Heatmap(z=a, zmin=-lim, zmax=lim, colorscale="RdBu",
                               text=[[f"r={int(v)}" for v in row] for row in r],
                               texttemplate="%{text}", y=list(row_labels),
                               x=[f"#{i}" for i in range(group_size)],
                               colorbar=dict(title="A")))
    fig.update_layout(title=title, height=max(260, 18 * a.shape[0]), yaxis_autorange="reversed")
    return fig


def curves(frames: dict[str, object], y: str, *, x: str = "step", title: str | None = None,
           yaxis_title: str | None = None):
    """One line per labelled DataFrame: frames[label][y] against frames[label][x]."""
    go = _go()
    fig = go.Figure()
    for label, df in frames.items():
        fig.add_trace(go.Scatter(x=list(df[x]), y=list(df[y]), mode="lines", name=label))
    fig.update_layout(title=title or y, xaxis_title=x, yaxis_title=yaxis_title or y, height=330)
    return fig


def bars(values: dict[str, float], *, title: str = "", yaxis_title: str = "",
         errors: dict[str, tuple[float, float]] | None = None):
    """A bar per label; ``errors[label] = (low, high)`` draws an interval around each bar."""
    go = _go()
    labels = list(values)
    y = [float(values[k]) for k in labels]
    err = None
    if errors:
        err = dict(type="data", symmetric=False,
                   array=[errors[k][1] - values[k] for k in labels],
                   arrayminus=[values[k] - errors[k][0] for k in labels])
    fig = go.Figure(go.Bar(x=labels, y=y, error_y=err))
    fig.update_layout(title=title, yaxis_title=yaxis_title, height=320)
    return fig


def pass_at_k_curves(ks: Sequence[int], means: dict[str, Sequence[float]], *,
                     bands: dict[str, Sequence[tuple[float, float]]] | None = None,
                     title: str = "pass@k"):
    """One line per label of pass@k against k (log axis); ``bands[label]`` is a (low, high)
    interval per k, drawn as a shaded band."""
    go = _go()
    ks = list(ks)
    fig = go.Figure()
    for label, mean in means.items():
        fig.add_trace(go.Scatter(x=ks, y=list(mean), mode="lines+markers", name=label))
        band = (bands or {}).get(label)
        if band is not None:
            fig.add_trace(go.Scatter(x=ks + ks[::-1],
                                     y=[hi for _, hi in band] + [lo for lo, _ in band][::-1],
                                     fill="toself", opacity=0.15, line={"width": 0},
                                     showlegend=False, hoverinfo="skip",
                                     name=f"{label} 95 % CI"))
    fig.update_layout(title=title, xaxis={"type": "log", "title": "k"},
                      yaxis={"title": "pass@k"}, template="plotly_white", height=360)
    return fig
