"""Plotly figures used by the notebooks. Each returns a ``go.Figure`` (nothing is shown), so
they work headless; ``figure_has_data`` lets notebooks assert that a figure is not empty.

Inside a kernel, ``import nudgelib`` calls :func:`use_notebook_renderer`: plotly's default there
is ``plotly_mimetype`` alone, which JupyterLab and VS Code draw but which a saved notebook viewed
elsewhere, ``nbconvert --to html``, nbviewer or a GitHub preview cannot show (the figure is simply
missing). Adding ``notebook_connected`` gives every figure an HTML copy too (a div and a script
that load plotly.js from its CDN, a few KB per figure, not the 4 MB library).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def _go():
    import plotly.graph_objects as go

    return go


NOTEBOOK_RENDERER = "plotly_mimetype+notebook_connected"


def use_notebook_renderer() -> str:
    """Give figures an HTML copy beside plotly's own mimetype, unless the user chose a renderer
    (``PLOTLY_RENDERER``) or the front end has its own (Colab, VS Code, Kaggle...). Returns the
    renderer now in use."""
    import plotly.io as pio

    if not os.environ.get("PLOTLY_RENDERER") and pio.renderers.default == "plotly_mimetype":
        pio.renderers.default = NOTEBOOK_RENDERER
    return pio.renderers.default


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
    """Heatmap [prompts x G] of advantages, with each cell's reward as its text. Every prompt
    is labelled; the colour scale is symmetric around 0, and when every advantage is 0 it
    spans [-1, 1] and the title says so (no scale of width 1e-9)."""
    go = _go()
    a = np.asarray(advantages, dtype=float).reshape(-1, group_size)
    r = np.asarray(rewards, dtype=float).reshape(-1, group_size)
    lim = float(np.abs(a).max()) if a.size else 0.0
    if lim == 0.0:
        lim, title = 1.0, f"{title} — every advantage is 0: no gradient"
    labels = [str(v) for v in row_labels]
    fig = go.Figure(go.Heatmap(z=a, zmin=-lim, zmax=lim, colorscale="RdBu",
                               text=[[f"r={int(v)}" for v in row] for row in r],
                               texttemplate="%{text}", y=labels,
                               x=[f"#{i}" for i in range(group_size)],
                               colorbar=dict(title="A")))
    fig.update_layout(title=title, height=max(260, 60 + 18 * a.shape[0]))
    fig.update_yaxes(type="category", tickmode="array", tickvals=labels, ticktext=labels,
                     autorange="reversed", tickfont=dict(size=10))
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
    interval per k, drawn as a shaded band clipped to [0, 1]: pass@k is a probability, and a
    t-interval over two seeds can reach far past either end (the numbers, unclipped, stay in
    the results table)."""
    go = _go()
    ks = list(ks)
    fig = go.Figure()
    for label, mean in means.items():
        fig.add_trace(go.Scatter(x=ks, y=list(mean), mode="lines+markers", name=label))
        band = (bands or {}).get(label)
        if band is not None:
            fig.add_trace(go.Scatter(x=ks + ks[::-1],
                                     y=[min(1.0, hi) for _, hi in band]
                                     + [max(0.0, lo) for lo, _ in band][::-1],
                                     fill="toself", opacity=0.15, line={"width": 0},
                                     showlegend=False, hoverinfo="skip",
                                     name=f"{label} 95 % CI"))
    fig.update_layout(title=title, xaxis={"type": "log", "title": "k"},
                      yaxis={"title": "pass@k", "range": [0, 1.02]}, template="plotly_white",
                      height=360)
    return fig
