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
import sys
import uuid
from collections.abc import Sequence

import numpy as np


def _go():
    import plotly.graph_objects as go

    return go


NOTEBOOK_RENDERER = "plotly_mimetype+notebook_connected"


STATIC_FIGURES_ENV = "NUDGE_STATIC_FIGURES"


def use_notebook_renderer() -> str:
    """Give figures an HTML copy beside plotly's own mimetype, unless the user chose a renderer
    (``PLOTLY_RENDERER``) or the front end has its own (Colab, VS Code, Kaggle...). Returns the
    renderer now in use.

    ``NUDGE_STATIC_FIGURES=png`` also embeds a PNG of every figure (kaleido, which drives a
    local Chrome or Chromium): what a GitHub preview shows, since it runs no JavaScript. Off by
    default: it adds tens of KB per figure to a saved notebook and needs a browser."""
    import plotly.io as pio

    if not os.environ.get("PLOTLY_RENDERER") and pio.renderers.default == "plotly_mimetype":
        pio.renderers.default = NOTEBOOK_RENDERER
    static = os.environ.get(STATIC_FIGURES_ENV, "").strip().lower()
    if static and static not in ("png", "svg"):
        raise ValueError(f"{STATIC_FIGURES_ENV}={static!r}; expected png or svg (or unset)")
    if static and static not in pio.renderers.default.split("+"):
        _start_kaleido_once()
        pio.renderers.default = f"{pio.renderers.default}+{static}"
    return pio.renderers.default


def _start_kaleido() -> None:
    """One browser for every image (0.14 s a figure, measured, instead of 2.4 s with a browser per
    figure); plotly's notice that its per-call options are then unused is silenced."""
    import atexit
    import warnings

    try:
        import kaleido
    except ImportError as err:
        raise ImportError(f"{STATIC_FIGURES_ENV} needs kaleido (pip install kaleido) and a "
                          f"Chrome or Chromium on this machine") from err
    warnings.filterwarnings("ignore", message="The kopts argument is ignored if using a server",
                            category=UserWarning)
    kaleido.start_sync_server(silence_warnings=True)
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)


_KALEIDO_STARTED = False


def _start_kaleido_once() -> None:
    global _KALEIDO_STARTED
    if not _KALEIDO_STARTED:
        _start_kaleido()
        _KALEIDO_STARTED = True


def static_figure_html(fig, *, live_class: str, before: str = "", after: str = "",
                       height: int | None = None) -> str:
    """HTML that shows ``fig`` without a kernel (a saved notebook in an HTML export, nbviewer):
    ``before``, the figure, ``after``. plotly.js is the page's, else loaded from plotly's CDN.
    On a page where an element of class ``live_class`` is shown (the live view it copies), the
    copy hides itself (CSS ``:has``) and draws nothing. ``before``/``after`` must be escaped."""
    import plotly

    sid = f"nudgelib-static-{uuid.uuid4().hex[:12]}"
    data = fig.to_json().replace("</", "<\\/")  # no text in the figure can close the script
    src = f"https://cdn.plot.ly/plotly-{plotly.offline.get_plotlyjs_version()}.min.js"
    h = height or fig.layout.height or 450
    return (f"<div id='{sid}' class='nudgelib-static'>"
            f"<style>body:has(.{live_class}) #{sid} {{display: none}}</style>{before}"
            f"<div id='{sid}-figure' style='height:{h}px'></div>{after}"
            # the live view renders asynchronously: decide after a second whether it is here
            f"<script>setTimeout(function () {{"
            f"var live = function () {{ return document.querySelector('.{live_class}'); }};"
            f"if (live()) return;"
            f"var fig = {data};"
            f"function draw() {{ if (!live()) window.Plotly.newPlot('{sid}-figure', fig.data,"
            f" fig.layout); }}"
            f"if (window.Plotly) return draw();"
            f"var s = document.createElement('script'); s.src = '{src}'; s.onload = draw;"
            f"document.head.appendChild(s);}}, 1000);</script></div>")


def _in_cell_execution() -> bool:
    """True while a cell runs (the kernel's current request is an ``execute_request``), False in
    a widget callback (a ``comm_msg``) or outside a kernel."""
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    try:
        parent = kernel.get_parent()  # ipykernel >= 6
    except Exception:  # noqa: BLE001 (no kernel, or an older one: write at once)
        return False
    return (parent or {}).get("header", {}).get("msg_type") == "execute_request"


class LiveFigure:
    """One figure in a notebook that is redrawn in place, plus a static copy for exports.

        live = LiveFigure()
        ui = W.VBox([controls, live.widget])  # an ipywidgets.Output
        live.draw(fig)                        # e.g. from a slider's callback

    A plotly figure re-displayed under a display id cannot do this: its renderer keeps the
    first graph and each update adds another. Here the Output is cleared and redrawn
    (``clear_output(wait=True)``: the old figure stays until the new one is drawn), which
    JupyterLab, Notebook 7, VS Code and Colab all honour.

    Widget contents are not part of a saved notebook's outputs, so the last figure is also
    written into the notebook as static HTML (:func:`static_figure_html`): one output, updated
    in place, hidden while the live view is on the page. Within a running cell it is written
    once, when the cell ends (after the live view was displayed, and once per cell rather than
    per redraw); from a widget callback, at once. Colab draws each output in its own frame,
    where the copy could not hide: there it is left out.
    """

    def __init__(self):
        import ipywidgets as w

        self.live_class = f"nudgelib-live-{uuid.uuid4().hex[:12]}"
        self.widget = w.Output()
        self.widget.add_class(self.live_class)
        self.fig = None
        self._parts = ("", "")
        self._static = None
        self._pending = False

    def draw(self, fig, *, before: str = "", after: str = "") -> None:
        """Show ``fig`` in place of the previous one; ``before`` / ``after`` (escaped HTML) go
        around it in the static copy."""
        from IPython.display import clear_output, display

        self.fig, self._parts = fig, (before, after)
        with self.widget:
            clear_output(wait=True)
            display(fig)
        self._write_static()

    def _write_static(self) -> None:
        from IPython import get_ipython

        if self.fig is None or "google.colab" in sys.modules:
            return
        shell = get_ipython()
        if shell is None or not _in_cell_execution():
            return self._write_static_now()
        if not self._pending:
            def finish(*_):
                shell.events.unregister("post_execute", finish)
                self._pending = False
                self._write_static_now()

            self._pending = True
            shell.events.register("post_execute", finish)

    def _write_static_now(self) -> None:
        from IPython.display import display

        before, after = self._parts
        data = {"text/html": static_figure_html(self.fig, live_class=self.live_class,
                                                before=before, after=after),
                "text/plain": "<a static copy of the live figure>"}
        if os.environ.get(STATIC_FIGURES_ENV, "").strip().lower() == "png":
            import base64

            import plotly.io as pio

            _start_kaleido_once()  # a PNG beside it: what a viewer without JavaScript shows
            data["image/png"] = base64.b64encode(pio.to_image(self.fig, format="png")).decode()
        if self._static is None:
            self._static = display(data, raw=True, display_id=True)
        else:
            self._static.update(data, raw=True)


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
