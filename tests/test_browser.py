"""What a learner sees, in a real browser: JupyterLab on 127.0.0.1, opened in headless Chromium
(Debian's ``chromium``, driven by playwright), runs notebooks 02, 04, 05, 06 and 08 in fast mode the way a
learner would (Run All) and checks the page, not just the kernel:

- every live training dashboard redraws in place: while it trains, each dashboard holds exactly
  one figure (sampled every 0.2 s) and that figure's data advances step by step; at the end each
  training cell shows one dashboard, at its last step;
- every plotly figure is drawn and has data; no JavaScript error reaches the console; no
  "Error displaying widget", also after the notebook is closed and reopened while its kernel
  lives; no cell raised and none wrote to stderr (a red box reads as a failure);
- the rollout browser's filters change its table when a learner picks them (after training);
- notebook 05's hint lab answers a hint the learner types: the leak check's verdict, pass@G with
  and without it, NuRL's group and its advantages;
- the saved notebook exports to HTML with every figure in it, and that HTML, opened in the same
  browser (plotly.js served from the installed plotly, nothing from the network), draws them.

Screenshots of every dashboard and notebook land in ``test-artifacts/browser/`` (or
``$NUDGE_ARTIFACTS``). The notebooks run here are deselected from the nbmake run
(``conftest.py``), so no notebook executes twice. Without chromium or playwright these tests
skip, saying what to install; CI sets ``NUDGE_REQUIRE_BROWSER=1``, which turns the skip into a
failure. Run them alone with ``python -m pytest -m browser``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROWSER_NOTEBOOKS = ("02_toy_policy_and_group_advantages.ipynb", "04_nudging_with_hints.ipynb",
                     "05_language_model_rollouts_and_self_hints.ipynb",
                     "06_lora_training_grpo_then_nurl.ipynb",
                     "08_which_way_out_of_the_zero_pass_trap.ipynb")
PLOTLY_MIME = "application/vnd.plotly.v1+json"
RUN_TIMEOUT_S = 600
pytestmark = pytest.mark.browser


def chromium_path() -> str | None:
    """The system Chromium (``NUDGE_CHROMIUM`` overrides the search)."""
    if os.environ.get("NUDGE_CHROMIUM"):
        return os.environ["NUDGE_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def browser_missing() -> str | None:
    """Why the browser suite cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if chromium_path() is None:
        return "no chromium found (apt-get install chromium, or set NUDGE_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def artifacts() -> Path:
    out = Path(os.environ.get("NUDGE_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 over a scratch copy of the notebooks (the rest of the repository
    linked beside them, so relative paths resolve as in a checkout); fast mode; cells not
    virtualised, so every output is in the page."""
    why = browser_missing()
    if why:
        if os.environ.get("NUDGE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"NUDGE_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    for name in BROWSER_NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, root / "notebooks" / name)
    for entry in ROOT.iterdir():
        if entry.name not in ("notebooks", ".git") and not entry.name.startswith(".ci"):
            (root / entry.name).symlink_to(entry)
    settings = root / ".lab-settings"
    for plugin, values in {
            "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                            "checkForUpdates": False}}.items():
        pkg, name = plugin.rsplit("/", 1)
        (settings / pkg).mkdir(parents=True, exist_ok=True)
        (settings / pkg / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
    port, token = _free_port(), "nudgelib-browser-test"
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTER_CONFIG_DIR=str(root / ".jupyter"))
    log = open(root / "jupyterlab.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=True"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.close()
                pytest.fail("JupyterLab did not start:\n"
                            + (root / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.3)
    yield {"url": url, "token": token, "root": root}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def chromium(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


def _offline(page, local: str) -> None:
    """Nothing leaves the machine: requests to other hosts fail at once (as they would
    offline), except plotly.js, served from the installed plotly package."""
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

    def route(r):
        if r.request.url.startswith(local):
            return r.continue_()
        if re.match(r"https://cdn\.plot\.ly/plotly-[\d.]+\.min(\.js)?$", r.request.url):
            return r.fulfill(path=str(plotly_js), content_type="application/javascript",
                             headers={"Access-Control-Allow-Origin": "*"})
        return r.abort()

    page.route("**/*", route)


class Console:
    """JavaScript errors of a page, minus the failed loads of blocked outside resources."""

    def __init__(self, page, local: str):
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("console", lambda m: self._console(m, local))

    def _console(self, msg, local):
        if msg.type != "error":
            return
        where = (msg.location or {}).get("url", "")
        if msg.text.startswith("Failed to load resource") and not where.startswith(local):
            return  # a blocked outside resource (a badge image, MathJax from a CDN)
        self.errors.append(f"{msg.text} ({where})")


SAMPLER = """() => {
  window.__samples = [];
  window.__sampler = setInterval(() => {
    document.querySelectorAll('.jp-Cell').forEach((cell, c) => {
      cell.querySelectorAll('.nudgelib-dashboard').forEach((d, i) => {
        const plots = d.querySelectorAll('.js-plotly-plot');
        const xs = plots.length && plots[0].data ? plots[0].data.map(t => Array.from(t.x || []).length) : [];
        window.__samples.push({cell: c, dash: i, plots: plots.length, points: Math.max(0, ...xs),
                               text: (d.innerText || '').slice(0, 200)});
      });
    });
  }, 200);
}"""

RUN_ALL = """() => {
  window.__done = null;
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    r => { window.__done = 'ok'; }, e => { window.__done = 'error: ' + e; });
}"""

KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && w.content.widgets.length > 0;
}"""

DASHBOARDS = """() => Array.from(document.querySelectorAll('.jp-Cell')).map((cell, c) => {
  const ds = Array.from(cell.querySelectorAll('.nudgelib-dashboard'));
  return ds.map(d => {
    const plots = Array.from(d.querySelectorAll('.js-plotly-plot'));
    const steps = plots.length && plots[0].data
      ? plots[0].data.flatMap(t => Array.from(t.x || []).filter(v => typeof v === 'number')) : [];
    return {cell: c, plots: plots.length, maxStep: steps.length ? Math.max(...steps) : null,
            text: d.innerText.slice(0, 300)};
  });
}).flat()"""

FIGURES = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => ({
  traces: (p.data || []).length,
  points: (p.data || []).reduce((n, t) => n + Array.from(t.x || t.z || t.y || []).length, 0),
  drawn: p.querySelectorAll('.main-svg').length}))"""


def _open(page, lab, name: str) -> None:
    # a workspace of its own, reset: no tab of another notebook is restored beside it
    page.goto(f"{lab['url']}/lab/workspaces/nb{name[:2]}/tree/notebooks/{name}"
              f"?reset&token={lab['token']}")
    page.wait_for_function(KERNEL_IDLE, timeout=120_000, polling=250)


def _run_notebook(page, lab, name: str) -> dict:
    _open(page, lab, name)
    page.evaluate(SAMPLER)
    t0 = time.monotonic()
    page.evaluate(RUN_ALL)
    page.wait_for_function("() => window.__done !== null", timeout=RUN_TIMEOUT_S * 1000,
                           polling=500)
    page.wait_for_function(KERNEL_IDLE, timeout=60_000, polling=250)
    seconds = time.monotonic() - t0
    page.evaluate("() => clearInterval(window.__sampler)")
    page.wait_for_timeout(1500)  # the last display updates and plotly draws
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_timeout(500)
    return {"done": page.evaluate("() => window.__done"), "seconds": seconds,
            "samples": page.evaluate("() => window.__samples"),
            "saved": json.loads((lab["root"] / "notebooks" / name).read_text())}


def _saved_problems(nb: dict) -> list[str]:
    """Errors and stderr writes in the saved notebook, with their cell."""
    out = []
    for i, cell in enumerate(nb["cells"]):
        for o in cell.get("outputs", []):
            if o["output_type"] == "error":
                out.append(f"cell {i} raised {o['ename']}: {o['evalue']}\n"
                           + "\n".join(o["traceback"])[-2000:])
            elif o["output_type"] == "stream" and o["name"] == "stderr":
                text = "".join(o["text"])
                if text.strip(" \r\n"):  # a progress bar's erased line is not a message
                    out.append(f"cell {i} wrote to stderr: {text[-500:]}")
    return out


def _plotly_outputs(nb: dict) -> list[dict]:
    return [o["data"] for c in nb["cells"] for o in c.get("outputs", [])
            if PLOTLY_MIME in o.get("data", {})]


def _visible_static_copies(page) -> int:
    """Static copies of live views (for exports) that show on the live page: should be 0."""
    return page.locator(".nudgelib-static").evaluate_all(
        "els => els.filter(e => e.offsetParent !== null || e.querySelector('.js-plotly-plot'))"
        ".length")


def _screens(page, artifacts: Path, stem: str) -> None:
    for i, d in enumerate(page.locator(".nudgelib-dashboard").all()):
        d.scroll_into_view_if_needed()
        d.screenshot(path=str(artifacts / f"{stem}-dashboard-{i + 1}.png"))
    page.screenshot(path=str(artifacts / f"{stem}-end.png"))


@pytest.fixture(scope="module")
def runs(lab, chromium, artifacts):
    """Each notebook run once in the browser; the tests below read what it left."""
    done = {}

    def get(name):
        if name not in done:
            page = chromium.new_page(viewport={"width": 1400, "height": 2200})  # a dashboard fits
            _offline(page, lab["url"])
            console = Console(page, lab["url"])
            res = _run_notebook(page, lab, name)
            res.update(page=page, console=console)
            _screens(page, artifacts, name[:2])
            done[name] = res
        return done[name]

    yield get
    for res in done.values():
        res["page"].close()


@pytest.mark.parametrize("name", BROWSER_NOTEBOOKS)
def test_notebook_runs_in_the_browser_and_its_figures_are_drawn(runs, name, artifacts):
    res = runs(name)
    page, nb = res["page"], res["saved"]
    print(f"{name}: Run All took {res['seconds']:.1f} s in the browser")
    assert res["done"] == "ok", res["done"]
    assert not _saved_problems(nb), "\n\n".join(_saved_problems(nb))
    unexecuted = [i for i, c in enumerate(nb["cells"])
                  if c["cell_type"] == "code" and c.get("execution_count") is None]
    assert not unexecuted, f"cells {unexecuted} did not run"
    figures = page.evaluate(FIGURES)
    n_plotly = len(_plotly_outputs(nb))
    assert n_plotly > 0 and len(figures) >= n_plotly, (n_plotly, figures)
    assert all(f["traces"] > 0 and f["points"] > 0 and f["drawn"] > 0 for f in figures), figures
    for data in _plotly_outputs(nb):  # the static copy a viewer without plotly's renderer shows
        assert "plotly-graph-div" in "".join(data.get("text/html", "")), data.keys()
    assert "Error displaying widget" not in page.content()
    assert not res["console"].errors, res["console"].errors


def test_dashboards_redraw_in_place_while_training(runs):
    res = runs("06_lora_training_grpo_then_nurl.ipynb")
    page, nb = res["page"], res["saved"]
    dashboards = page.evaluate(DASHBOARDS)
    training_cells = [i for i, c in enumerate(nb["cells"])
                      if "TrainingDashboard(" in "".join(c["source"])]
    assert sorted({d["cell"] for d in dashboards}) == training_cells, dashboards
    assert len(dashboards) == len(training_cells), "one dashboard per training cell"
    # the last step each trainer reached, from the saved notebook's own text
    last = {}
    for d in dashboards:
        assert d["plots"] == 1, f"cell {d['cell']} shows {d['plots']} figures: {d['text']}"
        step = int(re.search(r"step (\d+)", d["text"]).group(1))
        last[d["cell"]] = step
        assert d["maxStep"] == step, f"the figure is not at the summary's step: {d}"
    steps = sorted(set(last.values()))
    assert steps[-1] == max(last.values()) > min(last.values()), last  # early stop, then more
    assert _visible_static_copies(page) == 0, "the static copies hide (and draw nothing) here"
    samples = res["samples"]
    assert samples and max(s["plots"] for s in samples) <= 1, "a dashboard stacked figures"
    for cell in training_cells:
        seen = sorted({s["points"] for s in samples if s["cell"] == cell and s["plots"]})
        texts = {m.group(1) for s in samples if s["cell"] == cell
                 if (m := re.search(r"step (\d+)", s["text"]))}
        assert len(seen) >= 2 and len(texts) >= 2, \
            f"cell {cell}: the live figure did not advance ({seen}, steps {sorted(texts)})"


def test_rollout_browser_filters_change_the_table(runs):
    res = runs("06_lora_training_grpo_then_nurl.ipynb")
    page = res["page"]
    box = page.locator(".jp-Cell", has_text="dash_nurl.browser()").locator(".widget-vbox").first
    table = box.locator(".widget-html-content").last
    choose = box.locator("select").first
    before = table.inner_text()
    assert "group" in before and "completion" in before, before
    seen = {"all": before}
    for option in ("hinted", "correct", "zero_variance"):
        choose.select_option(option)
        page.wait_for_timeout(700)
        seen[option] = table.inner_text()
    assert len(set(seen.values())) >= 3, seen  # at least two filters changed what is shown
    choose.select_option("all")
    page.wait_for_timeout(700)
    assert table.inner_text() == before
    assert not res["console"].errors, res["console"].errors


def test_interactive_figure_redraws_in_place(runs):
    """Notebook 02's estimator / G explorer (a LiveFigure): picking another estimator redraws
    its one figure; nothing is appended below it."""
    from playwright.sync_api import expect

    res = runs("02_toy_policy_and_group_advantages.ipynb")
    page = res["page"]
    cell = page.locator(".jp-Cell", has_text="live = LiveFigure()")
    title = cell.locator(".js-plotly-plot .gtitle")
    assert title.text_content().startswith("grpo, G=8")
    for option in ("rloo", "dr_grpo"):
        cell.locator("select").nth(1).select_option(option)
        expect(title).to_have_text(re.compile(rf"^{option}, G=8"), timeout=15_000)
        assert cell.locator(".js-plotly-plot").count() == 1
    assert _visible_static_copies(page) == 0
    assert not res["console"].errors, res["console"].errors


def test_hint_lab_answers_a_typed_hint(runs, artifacts):
    """Notebook 05's hint lab: a learner types a hint (here one that leaks the answer, then one
    that does not) and presses the button; the result replaces the previous one in place."""
    from playwright.sync_api import expect

    res = runs("05_language_model_rollouts_and_self_hints.ipynb")
    page = res["page"]
    cell = page.locator(".jp-Cell", has_text="lab = HintLab(")
    lab_box = cell.locator(".nudgelib-hint-lab")
    expect(lab_box).to_have_count(1)
    result = lab_box.locator(".nudgelib-hint-lab-result")
    expect(result).to_contain_text("leak check", timeout=15_000)  # the cell's own first try
    answer = re.search(r"\(answer (\d+)\)", result.inner_text()).group(1)
    for hint, verdict in ((f"The answer is {answer}.", "leaks the answer"),
                          ("Add the first two numbers, then add the third to that sum.",
                           "passes")):
        lab_box.locator("textarea").fill(hint)
        lab_box.locator("button", has_text="Try this hint").click()
        expect(result).to_contain_text(hint, timeout=60_000)
        expect(result).to_contain_text(verdict)
        expect(result).to_contain_text(re.compile(r"with the hint\s*\d+ / \d+ correct"))
        assert lab_box.locator(".nudgelib-hint-lab-result").count() == 1
    page.screenshot(path=str(artifacts / "05-hint-lab.png"))
    assert not res["console"].errors, res["console"].errors


def test_reopened_notebook_shows_no_widget_errors(runs, lab, artifacts):
    res = runs("06_lora_training_grpo_then_nurl.ipynb")
    page = res["page"]
    page.evaluate("() => window.jupyterapp.commands.execute('application:close-all')")
    page.wait_for_timeout(800)
    path = "notebooks/06_lora_training_grpo_then_nurl.ipynb"
    page.evaluate(f"() => window.jupyterapp.commands.execute('docmanager:open', "
                  f"{{path: '{path}'}})")
    page.wait_for_function(KERNEL_IDLE, timeout=60_000, polling=250)
    page.wait_for_timeout(2500)
    page.screenshot(path=str(artifacts / "06-reopened.png"))
    assert "Error displaying widget" not in page.content()
    dashboards = page.evaluate(DASHBOARDS)
    assert dashboards and all(d["plots"] == 1 for d in dashboards), dashboards
    assert not res["console"].errors, res["console"].errors


def _static_copies(nb: dict) -> int:
    return sum("nudgelib-static" in "".join(o.get("data", {}).get("text/html", ""))
               for c in nb["cells"] for o in c.get("outputs", []))


@pytest.mark.parametrize("name", ["02_toy_policy_and_group_advantages.ipynb",
                                  "06_lora_training_grpo_then_nurl.ipynb"])
def test_html_export_keeps_the_figures(runs, chromium, lab, artifacts, name):
    """The notebook as saved by the browser, exported with nbconvert, opened offline: every
    plotly figure and every static copy of a live view (02's explorer, 06's dashboards) is
    drawn, with data."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = runs(name)["saved"]
    n, n_static = len(_plotly_outputs(nb)), _static_copies(nb)
    assert n_static == (3 if name.startswith("06") else 1), "one copy per live view"
    body, _ = HTMLExporter().from_notebook_node(nbformat.reads(json.dumps(nb), as_version=4))
    out = artifacts / f"{name[:2]}-export.html"
    out.write_text(body, encoding="utf-8")
    assert body.count('class="plotly-graph-div"') == n > 0
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    _offline(page, "file://")
    console = Console(page, "file://")
    page.goto(out.as_uri())
    page.wait_for_function(f"() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                           f".filter(p => p.querySelector('.main-svg')).length >= {n + n_static}",
                           timeout=30_000)
    figures = page.evaluate(FIGURES)
    page.screenshot(path=str(artifacts / f"{name[:2]}-export.png"), full_page=True)
    page.close()
    assert len(figures) == n + n_static
    assert all(f["traces"] and f["points"] and f["drawn"] for f in figures), figures
    assert not console.errors, console.errors
