"""The live dashboard: every step recorded, panels from the batch's own numbers, escaped
tables, resume, and headless behaviour."""

import base64
import os

import pytest
import torch

from nudgelib.training.config import get_train_config
from nudgelib.training.trainer import Trainer, complete_checkpoints
from nudgelib.ui.dashboard import TrainingDashboard


def _trainer(tmp_path=None, **kw):
    cfg = get_train_config("toy-table", nudging="nurl", hint_type="partial_steps", seed=1,
                           stage1="steps", stage1_steps=2, **kw)
    return Trainer(cfg, tmp_path, progress=False)


def test_every_step_is_recorded_with_the_batch_numbers():
    tr = _trainer()
    dash = TrainingDashboard().attach(tr)
    seen = []
    tr.callbacks.append(lambda t, row, batch: seen.append((row["step"], batch)))
    tr.train(until_step=4)
    assert dash.steps == [1, 2, 3, 4] == dash.live_steps
    assert dash.updates == 0, "no kernel here: nothing is displayed, only recorded"
    for step, batch in seen:
        snap = dash.snapshots[step]
        # per-prompt hint-free pass rates: correct / members, recomputed by hand
        plain = ~batch.hinted
        expect = []
        for g in range(batch.n_groups):
            sel = (batch.group == g) & plain
            if sel.any():
                expect.append(batch.correct[sel].sum().item() / sel.sum().item())
        assert snap["pass_rates"] == pytest.approx(expect)
        assert snap["advantages"] == pytest.approx(batch.advantages.tolist())
        assert len(snap["rollouts"]) == len(batch)
        assert sum(snap["hinted"]) == int(batch.hinted.sum())
    assert dash.snapshots[4]["hinted_pass_rates"], "stage 2 nudged some groups"
    assert all(dash.panels_have_data().values())
    hinted = dash.rollout_table(4, only="hinted")
    assert len(hinted) > 0 and hinted["hint"].notna().all()
    assert (dash.rollout_table(4, only="correct")["correct"]).all()
    assert "stage 2 (NuRL since step 2)" in dash.summary_html()


def test_old_steps_keep_numbers_but_drop_rollout_tables():
    tr = _trainer()
    dash = TrainingDashboard(keep_rollouts=2).attach(tr)
    tr.train(until_step=4)
    assert [s for s, v in dash.snapshots.items() if "rollouts" in v] == [3, 4]
    assert all("advantages" in v for v in dash.snapshots.values())
    with pytest.raises(KeyError, match="steps with rollouts: \\[3, 4\\]"):
        dash.rollout_table(1)
    with pytest.raises(ValueError, match="only='wrong'"):
        dash.rollout_table(4, only="wrong")


def test_rollout_html_escapes_model_output():
    tr = _trainer()
    dash = TrainingDashboard(live=False).attach(tr)
    tr.train(until_step=1)
    dash.snapshots[1]["rollouts"][0]["completion"] = "<script>alert(1)</script>"
    dash.snapshots[1]["rollouts"][0]["hint"] = "<img src=x onerror=alert(2)>"
    out = dash.rollout_html(1)
    assert "<script>" not in out and "&lt;script&gt;" in out and "<img" not in out


def test_attach_after_resume_takes_over_the_history(tmp_path):
    tr = _trainer(tmp_path, save_every=1)
    tr.train(until_step=3)
    again = _trainer(tmp_path, save_every=1)
    again.load_checkpoint(complete_checkpoints(tmp_path)[-2])  # step 2 (keep_checkpoints=2)
    dash = TrainingDashboard(live=False).attach(again)
    assert dash.steps == [1, 2] and dash.live_steps == []
    again.train(until_step=4)
    assert dash.steps == [1, 2, 3, 4] and dash.live_steps == [3, 4]
    x, y = dash.series("reward_mean")
    assert x == [1, 2, 3, 4] and y[:3] == pytest.approx(tr.metrics["reward_mean"].tolist())


def test_browser_widget_renders_the_chosen_step():
    tr = _trainer()
    dash = TrainingDashboard(live=False).attach(tr)
    tr.train(until_step=2)
    box = dash.browser()
    controls, html_out = box.children
    step, only, _ = controls.children
    assert step.value == 2 and "<table" in html_out.value
    step.value = 1
    assert html_out.value == dash.rollout_html(1, only="all", max_rows=32)
    assert TrainingDashboard().browser().children[0].value.startswith("<p><i>no rollouts")


def test_rollout_html_says_when_a_filter_matches_nothing_and_how_to_see_more():
    tr = _trainer()
    dash = TrainingDashboard(live=False).attach(tr)
    tr.train(until_step=1)
    for r in dash.snapshots[1]["rollouts"]:
        r["hint"] = None  # no hinted row at this step
    assert dash.rollout_html(1, only="hinted") == \
        "<p><i>no rollout of step 1 matches the filter 'hinted'</i></p>"
    n = len(dash.snapshots[1]["rollouts"])
    out = dash.rollout_html(1, max_rows=2)
    assert f"{n - 2} more rows: call <code>rollout_table(step=1, only='all')</code>" in out
    assert len(dash.rollout_table(step=1, only="all")) == n  # the call it names works


def test_dashboard_in_a_real_kernel_is_one_widget_redrawn_in_place():
    """Executed by nbclient (a real kernel): the training cell holds one widget box and one
    static copy of the last step; the box's figure area (an Output widget, whose outputs
    nbclient keeps in the widget state) holds exactly one figure after 3 steps, the last one;
    no figure was appended to the cell itself. The browser suite checks the same on screen."""
    import json

    import nbformat
    from nbclient import NotebookClient

    code = ("from nudgelib.training.config import get_train_config\n"
            "from nudgelib.ui.dashboard import TrainingDashboard\n"
            "from nudgelib.training.trainer import Trainer\n"
            "cfg = get_train_config('toy-table', nudging='nurl', hint_type='partial_steps', "
            "seed=1, stage1='steps', stage1_steps=2)\n"
            "tr = Trainer(cfg, progress=False)\n"
            "dash = TrainingDashboard(title='T').attach(tr)\n"
            "_ = tr.train(until_step=3)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outs = nb.cells[0].outputs
    kinds = [sorted(o.get("data", {})) for o in outs if o["output_type"] == "display_data"]
    assert kinds == [["application/vnd.jupyter.widget-view+json", "text/plain"],
                     ["text/html", "text/plain"]], kinds
    assert not [o for o in outs if o["output_type"] in ("error", "stream")], outs
    static = outs[-1]["data"]["text/html"]
    assert "T</b> step 3" in static and "Plotly.newPlot" in static
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    output_widgets = [m["state"] for m in state.values() if m["model_name"] == "OutputModel"]
    assert len(output_widgets) == 1
    figures = [o["data"]["application/vnd.plotly.v1+json"] for o in output_widgets[0]["outputs"]]
    assert len(figures) == 1, "cleared before each redraw: one figure, not one per step"
    steps = [x for t in figures[0]["data"] if t.get("type") == "scatter" for x in t["x"]]
    assert max(steps) == 3, json.dumps(figures[0]["data"])[:500]
    html_values = [m["state"]["value"] for m in state.values() if m["model_name"] == "HTMLModel"]
    assert any("T</b> step 3" in v for v in html_values)


def test_advantage_heatmap_labels_every_prompt_and_a_zero_batch_says_so():
    from nudgelib.ui.plots import advantage_heatmap

    labels = [f"p{i}" for i in range(24)]
    fig = advantage_heatmap(torch.zeros(24 * 4), torch.zeros(24 * 4), 4, labels)
    assert list(fig.layout.yaxis.tickvals) == labels  # all 24, not every other one
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-1.0, 1.0)  # not a 1e-9-wide scale
    assert "every advantage is 0" in fig.layout.title.text
    a = torch.tensor([1.5, -0.5, 0.0, -1.0])
    fig = advantage_heatmap(a, torch.tensor([1, 0, 0, 0]), 2, ["x", "y"])
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-1.5, 1.5)
    assert "every advantage" not in (fig.layout.title.text or "")


def test_figures_carry_an_html_copy_and_optionally_a_png(monkeypatch):
    """In a kernel, `import nudgelib` switches plotly's `plotly_mimetype` (drawn by JupyterLab
    only) to `plotly_mimetype+notebook_connected`: every figure also carries HTML, which
    exports and nbviewer show. NUDGE_STATIC_FIGURES=png adds a real PNG (kaleido + chromium)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    from nudgelib.ui.plots import NOTEBOOK_RENDERER, use_notebook_renderer

    monkeypatch.delenv("PLOTLY_RENDERER", raising=False)
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    assert use_notebook_renderer() == NOTEBOOK_RENDERER
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    bundle = pio.renderers._build_mime_bundle(fig.to_dict(), pio.renderers.default)
    assert "application/vnd.plotly.v1+json" in bundle and "plotly-graph-div" in bundle["text/html"]
    monkeypatch.setattr(pio.renderers, "default", "colab")  # a front end's own renderer stays
    assert use_notebook_renderer() == "colab"
    monkeypatch.setenv("NUDGE_STATIC_FIGURES", "gif")
    with pytest.raises(ValueError, match="png or svg"):
        use_notebook_renderer()
    from tests.test_browser import browser_missing

    if browser_missing() and os.environ.get("NUDGE_REQUIRE_BROWSER") != "1":
        pytest.skip(f"the PNG needs a local browser: {browser_missing()}")
    monkeypatch.setenv("NUDGE_STATIC_FIGURES", "png")
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    assert use_notebook_renderer() == NOTEBOOK_RENDERER + "+png"
    bundle = pio.renderers._build_mime_bundle(fig.to_dict(), pio.renderers.default)
    png = bundle["image/png"]
    png = png if isinstance(png, bytes) else base64.b64decode(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
