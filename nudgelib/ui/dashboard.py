"""A live training dashboard: a :class:`~nudgelib.training.trainer.Trainer` callback that records every
step and, inside a notebook, redraws itself after each one.

    dash = TrainingDashboard()
    dash.attach(trainer)          # also shows it (JupyterLab, Colab, VS Code)
    trainer.train(until_step=20)  # the panels update after every step
    dash.browser()                # afterwards: browse any recorded step's rollouts and hints

What it shows: reward and pass rates per step (hint-free and hinted), the share of zero-variance
groups (0/G or G/G, no gradient) and of nudged groups, the learnable share, validation pass rate
when the run has one, the distribution of per-prompt pass rates over steps, the advantages of
the latest step (hint-free vs hinted rows), and a table of the latest step's rollouts with
their hints.

Headless it is harmless: without an IPython kernel nothing is displayed and the dashboard only
records (the data stays testable: :attr:`rows`, :attr:`snapshots`, :meth:`figure`). In a kernel
it is one ipywidgets box redrawn in place (:meth:`show`), plus, when the training cell ends, a
static HTML copy of its final state for saved notebooks and exports (:meth:`static_html`).

Model outputs are untrusted text: every table escapes HTML.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

from nudgelib.ui.plots import LiveFigure, figure_has_data, static_figure_html

ROLLOUT_COLUMNS = ("group", "problem_id", "hint", "completion", "reward", "correct", "advantage")


def _in_notebook() -> bool:
    """True inside an IPython kernel (Jupyter, Colab, nbclient), False in a plain script."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _short(text, width: int) -> str:
    text = "" if text is None else str(text)
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class TrainingDashboard:
    """Records each training step and (in a notebook) redraws its panels.

    ``keep_rollouts``: how many recent steps keep their full rollout tables (older steps keep
    their numbers: metrics, pass rates, advantages). ``text_width``: characters of question,
    hint and completion shown per cell; ``table_rows``: rows of the latest step shown live (all
    of them: :meth:`rollout_table`, :meth:`browser`). ``live=False`` records without displaying.
    """

    def __init__(self, *, keep_rollouts: int = 50, text_width: int = 160, live: bool = True,
                 title: str = "training", table_rows: int = 16):
        if not isinstance(keep_rollouts, int) or keep_rollouts < 1:
            raise ValueError(f"keep_rollouts must be an integer >= 1, got {keep_rollouts!r}")
        self.keep_rollouts, self.text_width, self.live, self.title = \
            keep_rollouts, text_width, live, title
        self.table_rows = table_rows  # rows of the latest step's table shown live
        self.rows: list[dict] = []        # the trainer's metrics row of every step
        self.snapshots: dict[int, dict] = {}  # step -> per-group / per-row data of that step
        self.updates = 0                  # how many times the panels were redrawn
        self._handles: dict | None = None

    # ------------------------------------------------------------------ recording
    def __call__(self, trainer, row: dict, batch) -> None:
        self.record(row, batch)
        if self._handles is not None:
            self.refresh()

    def attach(self, trainer, *, show: bool | None = None) -> TrainingDashboard:
        """Add this dashboard to ``trainer``'s callbacks, take over the steps it has already
        logged (after a resume: the metrics of the steps before the checkpoint), and show it."""
        if self not in trainer.callbacks:
            trainer.callbacks.append(self)
        seen = {r["step"] for r in self.rows}
        self.rows.extend(dict(r) for r in trainer.rows if r["step"] not in seen)
        self.rows.sort(key=lambda r: r["step"])
        if show if show is not None else self.live:
            self.show()
        return self

    def record(self, row: dict, batch) -> dict:
        """Store one step: its metrics row and, from the batch, the per-group pass rates, every
        row's advantage and the rollout table. Returns the snapshot."""
        step = int(row["step"])
        self.rows = [r for r in self.rows if r["step"] < step]  # a re-run step replaces the old
        self.rows.append(dict(row))
        snap = {"step": step, "stage": row.get("stage")}
        if batch is not None:
            hinted = batch.hinted
            group = batch.group
            correct = batch.correct.float()
            plain_rates, hinted_rates = [], []
            for g in range(batch.n_groups):
                for want, out in ((False, plain_rates), (True, hinted_rates)):
                    sel = (group == g) & (hinted == want)
                    if sel.any():
                        out.append(float(correct[sel].mean()))
            snap.update(
                group_size=int(batch.group_sizes().max()) if len(batch) else 0,
                pass_rates=plain_rates, hinted_pass_rates=hinted_rates,
                advantages=[float(a) for a in batch.advantages.tolist()]
                if batch.advantages is not None else [],
                hinted=[bool(h) for h in hinted.tolist()],
                rollouts=self._rollout_records(batch))
        self.snapshots[step] = snap
        for old in sorted(self.snapshots)[:-self.keep_rollouts]:
            self.snapshots[old].pop("rollouts", None)
        return snap

    def _rollout_records(self, batch) -> list[dict]:
        adv = batch.advantages.tolist() if batch.advantages is not None else [None] * len(batch)
        out = []
        for i, r in enumerate(batch.records()):
            out.append({"group": r.group, "problem_id": r.problem_id,
                        "question": batch.problems[r.group].question, "hint": r.hint, "completion": r.completion,
                        "reward": float(r.reward), "correct": bool(r.correct),
                        "advantage": None if adv[i] is None else float(adv[i])})
        return out

    @property
    def steps(self) -> list[int]:
        """The steps this dashboard has metrics for."""
        return [r["step"] for r in self.rows]

    @property
    def live_steps(self) -> list[int]:
        """The steps it saw happen (with their batch), as opposed to steps loaded on resume."""
        return sorted(s for s, snap in self.snapshots.items() if "pass_rates" in snap)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of metric ``key`` over the steps that logged a finite value."""
        pts = [(r["step"], r[key]) for r in self.rows if _finite(r.get(key))]
        return [s for s, _ in pts], [float(v) for _, v in pts]

    # ------------------------------------------------------------------ views
    def rollout_table(self, step: int | None = None, *, only: str = "all"):
        """The rollouts of ``step`` (default: the latest kept) as a DataFrame.

        ``only``: ``all``, ``hinted`` (rows sampled with a hint), ``correct``, or
        ``zero_variance`` (rows of groups whose hint-free members all scored the same)."""
        import pandas as pd

        kept = [s for s, snap in self.snapshots.items() if snap.get("rollouts")]
        if not kept:
            return pd.DataFrame(columns=["question", *ROLLOUT_COLUMNS])
        step = max(kept) if step is None else step
        if step not in kept:
            raise KeyError(f"step {step} has no stored rollouts; steps with rollouts: "
                           f"{sorted(kept)}")
        df = pd.DataFrame(self.snapshots[step]["rollouts"])
        if only == "hinted":
            df = df[df["hint"].notna()]
        elif only == "correct":
            df = df[df["correct"]]
        elif only == "zero_variance":
            plain = df[df["hint"].isna()]
            flat = plain.groupby("group")["reward"].nunique()
            df = df[df["group"].isin(flat[flat == 1].index)]
        elif only != "all":
            raise ValueError(f"only={only!r}; expected all, hinted, correct or zero_variance")
        return df.reset_index(drop=True)

    def rollout_html(self, step: int | None = None, *, only: str = "all",
                     max_rows: int = 32) -> str:
        """An escaped HTML table of :meth:`rollout_table` (hinted rows tinted)."""
        df = self.rollout_table(step, only=only)
        kept = [s for s, snap in self.snapshots.items() if snap.get("rollouts")]
        if not kept:
            return "<p><i>no rollouts recorded yet</i></p>"
        at = max(kept) if step is None else step
        if df.empty:
            return f"<p><i>no rollout of step {at} matches the filter '{html.escape(only)}'</i></p>"
        w = self.text_width
        head = "".join(f"<th>{c}</th>" for c in ("group", "question", "hint", "completion",
                                                  "reward", "correct", "advantage"))
        body = []
        for r in df.head(max_rows).itertuples():
            tint = ' style="background:#fff6dd"' if r.hint is not None and r.hint == r.hint \
                else ""
            adv = "" if r.advantage is None or r.advantage != r.advantage else f"{r.advantage:+.2f}"
            cells = [str(r.group), html.escape(_short(r.question, w // 2)),
                     html.escape(_short(r.hint, w // 2)) if isinstance(r.hint, str) else "",
                     html.escape(_short(r.completion, w)), f"{r.reward:.2f}",
                     "✓" if r.correct else "", adv]
            body.append(f"<tr{tint}>" + "".join(f"<td style='text-align:left'>{c}</td>"
                                               for c in cells) + "</tr>")
        more = (f"<p><i>{len(df) - max_rows} more rows: call <code>rollout_table(step={at}, "
                f"only={only!r})</code> on this dashboard for all of them</i></p>") \
            if len(df) > max_rows else ""
        return (f"<table style='font-size:11px'><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>{more}")

    def summary_html(self) -> str:
        if not self.rows:
            return f"<b>{html.escape(self.title)}</b>: waiting for the first step…"
        r = self.rows[-1]

        def fmt(key, digits=3):
            v = r.get(key)
            return f"{v:.{digits}f}" if _finite(v) else "–"

        switch = [x["step"] for x in self.rows if x.get("stage_switch")]
        parts = [f"<b>{html.escape(self.title)}</b> step {r['step']}",
                 f"stage {r.get('stage', '–')}" + (f" (NuRL since step {switch[0]})" if switch
                                                     else ""),
                 f"reward {fmt('reward_mean')}", f"pass rate {fmt('pass_rate')}",
                 f"zero-variance groups {fmt('frac_zero_std', 2)}",
                 f"nudged {fmt('frac_nudged', 2)}"]
        if r.get("hinted_successes") is not None:
            parts.append(f"hinted successes {r['hinted_successes']}, hint reliance "
                         f"{fmt('hint_reliance', 2)} nats/token")
        if _finite(r.get("t_sample")) and _finite(r.get("t_train")):
            parts.append(f"{r['t_sample'] + r['t_train']:.1f} s/step")
        return " · ".join(parts)

    def figure(self):
        """The four panels as one plotly figure (every panel from recorded data)."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=2, cols=2, vertical_spacing=0.16, horizontal_spacing=0.09,
                            specs=[[{}, {"secondary_y": True}], [{}, {}]],
                            subplot_titles=("reward and pass rates", "groups: zero-variance, "
                                            "nudged, learnable; hint reliance",
                                            "pass-rate distribution (hint-free, per prompt)",
                                            "advantages, latest step"))
        for key, name in (("reward_mean", "reward"), ("pass_rate", "pass rate (hint-free)"),
                          ("hinted_pass_rate", "pass rate (hinted)"),
                          ("val_pass_rate", "validation pass rate")):
            x, y = self.series(key)
            if x:
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name,
                                         legendgroup="1"), row=1, col=1)
        for key, name in (("frac_zero_std", "zero-variance"), ("frac_nudged", "nudged"),
                          ("learnable_ratio", "learnable")):
            x, y = self.series(key)
            if x:
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name,
                                         legendgroup="2"), row=1, col=2)
        x, y = self.series("hint_reliance")  # nats per token: its own axis, on the right
        if x:
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name="hint reliance (nats)",
                                     line=dict(dash="dot"), legendgroup="2"),
                          row=1, col=2, secondary_y=True)
            fig.update_yaxes(title_text="log π(y|q,h) − log π(y|q)", row=1, col=2,
                             secondary_y=True)
        for r in self.rows:
            if r.get("stage_switch"):
                for col in (1, 2):
                    fig.add_vline(x=r["step"], line_dash="dot", line_color="gray", row=1, col=col)
        steps = [s for s in sorted(self.snapshots) if self.snapshots[s].get("pass_rates")]
        if steps:
            g = max(self.snapshots[s]["group_size"] for s in steps) or 1
            z = []
            for s in steps:  # share of prompts per pass-rate bin k/G (nearest bin)
                rates = np.asarray(self.snapshots[s]["pass_rates"])
                z.append(np.bincount(np.rint(rates * g).astype(int), minlength=g + 1) / len(rates))
            fig.add_trace(go.Heatmap(x=steps, y=[f"{k}/{g}" for k in range(g + 1)],
                                     z=np.asarray(z).T, zmin=0, zmax=1, colorscale="Blues",
                                     showscale=False, name="share of prompts"), row=2, col=1)
            fig.update_yaxes(type="category", dtick=1, row=2, col=1)
        last = self.snapshots.get(max(self.snapshots)) if self.snapshots else None
        if last and last.get("advantages"):
            a, h = np.asarray(last["advantages"]), np.asarray(last["hinted"], dtype=bool)
            for sel, name in ((~h, "hint-free rows"), (h, "hinted rows")):
                if sel.any():
                    fig.add_trace(go.Histogram(x=a[sel], name=name, nbinsx=30, opacity=0.7,
                                               legendgroup="4"), row=2, col=2)
        fig.update_layout(height=560, barmode="overlay", template="plotly_white",
                          margin=dict(t=50, b=30, l=40, r=20), legend=dict(font=dict(size=10)))
        fig.update_xaxes(title_text="step", row=1, col=1)
        fig.update_xaxes(title_text="step", row=1, col=2)
        fig.update_xaxes(title_text="step", row=2, col=1)
        fig.update_xaxes(title_text="advantage", row=2, col=2)
        return fig

    def panels_have_data(self) -> dict[str, bool]:
        """Whether each panel of :meth:`figure` has data (for asserts in notebooks)."""
        import plotly.graph_objects as go

        fig = self.figure()
        out = {}
        for name, (r, c) in {"curves": (1, 1), "fractions": (1, 2), "pass_rates": (2, 1),
                             "advantages": (2, 2)}.items():
            axis = fig.get_subplot(r, c)
            traces = [t for t in fig.data
                      if (t.xaxis or "x") == axis.xaxis.plotly_name.replace("axis", "")]
            out[name] = bool(traces) and figure_has_data(go.Figure(traces))
        return out

    # ------------------------------------------------------------------ display
    def show(self) -> None:
        """Display the dashboard once (a no-op outside a notebook kernel); every later step
        redraws it in place.

        With ipywidgets (JupyterLab, Notebook 7, VS Code, Colab) it is one widget box: the
        summary and table are HTML widgets whose value changes, the figure sits in an
        ``ipywidgets.Output`` that is cleared and redrawn (``clear_output(wait=True)``), so the
        cell keeps exactly one dashboard. A plotly figure shown through a display id cannot do
        this: its renderer keeps the first graph and each update adds another. When the cell
        that trained finishes, it also gets a static copy of the final state (summary, figure,
        table; :meth:`static_html`), hidden while the live one is on the page: what a saved
        notebook shows in an HTML export, nbviewer or any viewer without the kernel."""
        if not _in_notebook():
            return
        import ipywidgets as w
        from IPython.display import display

        self._summary = w.HTML(self.summary_html())
        self._figure = LiveFigure()
        self._table = w.HTML(self.rollout_html(max_rows=self.table_rows))
        self._box = w.VBox([self._summary, self._figure.widget, self._table])
        self._box.add_class("nudgelib-dashboard")
        bundle = self._box._repr_mimebundle_()
        bundle = dict(bundle[0] if isinstance(bundle, tuple) else bundle)
        bundle["text/plain"] = f"live dashboard {self.title!r} (its last state is shown below)"
        display(bundle, raw=True)  # not the box's repr, which carries every table's HTML
        self._handles = {"box": self._box}
        self._draw_figure()
        self.updates += 1

    def refresh(self) -> None:
        """Redraw the shown panels with the data recorded so far."""
        if self._handles is None:
            return
        self._summary.value = self.summary_html()
        self._table.value = self.rollout_html(max_rows=self.table_rows)
        self._draw_figure()
        self.updates += 1

    def _draw_figure(self) -> None:
        self._figure.draw(self.figure(), **self._static_parts())

    def _static_parts(self) -> dict:
        return {"before": f"<p>{self.summary_html()}</p>",
                "after": self.rollout_html(max_rows=self.table_rows)}

    def static_html(self) -> str:
        """The dashboard as it is now, as HTML that needs no kernel: what a saved notebook shows
        in an HTML export or nbviewer (:func:`~nudgelib.ui.plots.static_figure_html`; the model
        outputs in the table are escaped). :meth:`show` writes it into the notebook when the
        training cell ends, hidden on a page that shows the live dashboard."""

        live = self._figure.live_class if self._handles else "nudgelib-live-none"
        return static_figure_html(self.figure(), live_class=live, **self._static_parts())

    def browser(self, steps: Sequence[int] | None = None):
        """An ipywidgets browser over the recorded rollouts: step slider, row filter.

        Use it after (or between) ``train`` calls: while a cell trains the kernel is busy and
        widgets do not respond. Returns the widget (display it, or let the cell show it)."""
        import ipywidgets as w

        kept = sorted(steps or [s for s, snap in self.snapshots.items() if snap.get("rollouts")])
        out = w.HTML()
        if not kept:
            out.value = "<p><i>no rollouts recorded yet</i></p>"
            return w.VBox([out])
        step = w.SelectionSlider(options=kept, value=kept[-1], description="step")
        only = w.Dropdown(options=["all", "hinted", "correct", "zero_variance"], value="all",
                          description="rows")
        rows = w.IntSlider(value=32, min=8, max=256, step=8, description="max rows")

        def redraw(*_):
            out.value = self.rollout_html(step.value, only=only.value, max_rows=rows.value)

        for ctl in (step, only, rows):
            ctl.observe(redraw, names="value")
        redraw()
        return w.VBox([w.HBox([step, only, rows]), out])
