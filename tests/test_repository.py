"""Repository hygiene: notebooks are committed executed with their provenance, the README
matches what exists and what CI runs."""

import functools
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
REPO = "nudgelib/nudgelib"


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:2] == ["00", "01"]


@functools.cache
def _execute_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("course_execute", ROOT / "notebooks" / "execute.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod



@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_executed_with_provenance(path):
    """Committed with the outputs of a full run (not fast mode), readable without a kernel:
    provenance in the metadata, the code that made the outputs unchanged since, every code cell
    run without an error, every figure with a copy a static viewer shows, no widget state, and
    at most 1 MB. `python notebooks/execute.py NN` makes it so."""
    ex = _execute_module()
    raw = path.read_text(encoding="utf-8")
    nb = json.loads(raw)
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), "name must be NN_snake_case"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert len(raw.encode("utf-8")) <= ex.MAX_BYTES, f"{len(raw.encode('utf-8')):,} bytes"
    assert "application/vnd.jupyter.widget-state+json" not in raw, "strip widget state"
    assert "widgets" not in nb["metadata"], "strip widget state from notebook metadata"
    meta = nb["metadata"].get("nudgelib")
    run = f"python notebooks/execute.py {path.name[:2]}"
    assert meta, f"not executed with provenance: {run}"
    assert meta["code_sha256"] == ex.code_sha256(nb), \
        f"its code changed after the outputs were made: {run}"
    assert meta["preset"] != "cpu-fast", f"executed in fast mode; the committed copy is a full run: {run}"
    assert {"version", "commit", "date", "minutes", "machine"} <= set(meta)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] is not None for c in code), f"some cells did not run: {run}"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"], "a cell ended in an error"
    pngs = 0
    for o in outputs:
        data = o.get("data", {})
        assert ex.WIDGET_VIEW not in data, "a widget view was committed"
        pngs += "image/png" in data
        if meta.get("static_figures") == "png":  # every figure as a PNG a viewer without JS shows
            assert ex.PLOTLY not in data and not ex._figure_html(data), \
                f"a figure that draws only with JavaScript: {run}"
    if path.name[:2] in ("02", "03", "04", "05", "06", "07", "08"):
        assert pngs, "a notebook with figures committed without them"
    first = "".join(code[0]["source"])
    assert '"google.colab" in sys.modules' in first and f"github.com/{REPO}" in first
    assert "-e " not in first and "--editable" not in first, "Colab install must not be editable"
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{path.name})")
    head = nb["cells"][0]
    assert head["cell_type"] == "markdown" and badge in "".join(head["source"]).split("\n")[:4]
    last = "".join(code[-1]["source"])
    assert "assert" in last, "a notebook ends with asserts that check its claims"


def test_code_hash_sees_a_changed_cell():
    ex = _execute_module()
    nb = {"cells": [{"cell_type": "code", "source": ["x = 1\n", "y = 2"]},
                    {"cell_type": "markdown", "source": "text"}]}
    before = ex.code_sha256(nb)
    nb["cells"][1]["source"] = "other text"  # prose does not make outputs
    assert ex.code_sha256(nb) == before
    nb["cells"][0]["source"] = "x = 1\ny = 3"
    assert ex.code_sha256(nb) != before


SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))


def test_every_notebook_01_07_has_an_exercise_with_a_solution():
    for path in NOTEBOOKS:
        n = path.name[:2]
        if n == "00":
            continue
        nb = json.loads(path.read_text(encoding="utf-8"))
        md = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]
        assert any(s.startswith("## Exercise") for s in md), f"{path.name} has no exercise"
        code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        assert f'check("{n}"' in code, f"{path.name}'s exercise is not checked"
        assert [s for s in SOLUTIONS if s.name.startswith(n + "_")], f"no solution for {n}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_readme_lists_notebook_with_colab_link(path):
    link = f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{path.name}"
    assert link in README


def test_readme_links_point_to_existing_notebooks():
    for name in re.findall(r"notebooks/(\d\d_[a-z0-9_]+\.ipynb)", README):
        assert (ROOT / "notebooks" / name).is_file(), name


README_MAX_LINES = 200
DOCS = sorted((ROOT / "docs").rglob("*.md"))


def test_readme_is_a_front_door():
    """Short, and it (with docs/ and the notebooks) speaks of the project as it is: no issue
    numbers or work sessions as explanations, no path outside the repository."""
    assert len(README.splitlines()) <= README_MAX_LINES, len(README.splitlines())
    bad = []
    for path in [ROOT / "README.md", *DOCS, *NOTEBOOKS]:
        text = path.read_text(encoding="utf-8")
        bad += [f"{path.name}: {m.group(0)!r}" for m in
                re.finditer(r"(?i)issue [0-9]|\.\./shared", text)]
        if path.suffix == ".md":
            bad += [f"{path.name}: {m.group(0)!r}" for m in re.finditer(r"(?i)\bsession\b", text)]
    assert not bad, bad


def test_links_in_the_readme_and_docs_resolve():
    """Every relative markdown link (a page, an image, a notebook) names a file that exists."""
    missing = []
    for path in [ROOT / "README.md", *DOCS]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            if not (path.parent / target).exists():
                missing.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def _readme_command(title: str) -> str:
    m = re.search(rf"<!-- {title} -->\s*```bash\n(.*?)```", README, re.S)
    assert m, f"README has no '{title}' command block"
    return m.group(1).strip()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    cmd = _readme_command("test-command")
    for line in cmd.splitlines():
        if not line.startswith("#"):
            assert line in ci, f"CI does not run README line: {line}"
    assert "pip install torch==2.13.0" in ci


def test_requirements_are_lower_bounds():
    from packaging.requirements import Requirement

    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        names.add(req.name)
        ops = {spec.operator for spec in req.specifier}
        assert ops <= {">="}, f"only lower bounds (Colab ships many of these): {line}"
    assert {"torch", "transformers", "peft", "math-verify", "datasets"} <= names
    front_end = {"jupyterlab", "notebook", "ipykernel", "jupyter", "jupyter-server"}
    assert not names & front_end, "the front end lives in the `notebooks` extra, so Colab's " \
        "bootstrap (which installs requirements.txt) never replaces Colab's own Jupyter"


# ----------------------------------------------------------------------------- structure

PACKAGE = ROOT / "nudgelib"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 700


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(module imported from, names) for every import of a nudgelib module in ``path``."""
    import ast

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nudgelib"):
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("nudgelib"):
                    yield a.name, []


def test_modules_are_short_enough_to_read_in_one_sitting():
    long = {str(p.relative_to(ROOT)): n for p in MODULES
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_module_imports_another_modules_private_names():
    bad = []
    for path in MODULES:
        me = _module_name(path)
        for module, names in _imports(path):
            if module == me:
                continue
            private_module = module.split(".")[-1].startswith("_")
            bad += [f"{me}: from {module} import {n}" for n in names
                    if n.startswith("_") or private_module]
    assert not bad, bad


def test_the_integrations_import_nothing_from_the_trainer_module():
    for path in sorted((PACKAGE / "integrations").glob("*.py")):
        for module, names in _imports(path):
            assert module != "nudgelib.training.trainer", f"{path.name} imports {names} from nudgelib.training.trainer"
            assert not (module == "nudgelib" and "train" in names), path.name


def test_nudging_strategies_never_see_a_trainer():
    """The strategy module names no trainer at all: not as a variable, argument, attribute or
    import (strategies get a SamplingContext)."""
    import ast

    source = (PACKAGE / "nudging.py").read_text(encoding="utf-8")
    assert "trainer" not in source.lower(), "nudging.py mentions a trainer"
    tree = ast.parse(source)
    seen = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            seen.add(node.id)
        elif isinstance(node, ast.Attribute):
            seen.add(node.attr)
        elif isinstance(node, ast.arg):
            seen.add(node.arg)
    assert not {n for n in seen if "trainer" in n.lower()}, seen
    assert not any(m == "nudgelib.training.trainer" for m, _ in _imports(PACKAGE / "nudging.py"))


# ----------------------------------------------------------------------------- citations

CITING = sorted([*PACKAGE.rglob("*.py"), *NOTEBOOKS, ROOT / "README.md",
                 *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").glob("*.py"),
                 *(ROOT / "docs").rglob("*.md")])
DOC_PATH = re.compile(r"(?<![\w./-])((?:[\w.-]+/)+[\w.-]+\.md|[A-Z][A-Z_]+\.md)\b")
SECTION = re.compile(r"docs/method\.md §(\d+(?:\.\d+)?)(?:[–-](\d+(?:\.\d+)?))?")


def _method_sections() -> set[str]:
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.M))


def test_every_cited_document_exists_in_the_repository():
    missing = []
    for path in CITING:
        text = path.read_text(encoding="utf-8")
        for m in DOC_PATH.finditer(text):
            if m.group(1) == "README.md" or (ROOT / m.group(1)).is_file():
                continue
            missing.append(f"{path.relative_to(ROOT)}: {m.group(1)}")
    assert not missing, missing


def test_every_cited_method_section_exists():
    sections = _method_sections()
    assert {"1", "2", "2.1", "2.2", "2.4", "3", "4", "4.1", "7", "8"} <= sections
    cited, bad = 0, []
    for path in CITING:
        for m in SECTION.finditer(path.read_text(encoding="utf-8")):
            cited += 1
            bad += [f"{path.relative_to(ROOT)}: §{s}" for s in m.groups() if s and s not in sections]
    assert cited >= 40 and not bad, bad


def test_method_guide_names_the_code_that_exists():
    """Every `nudgelib/...py` file and every name in §8's table of the method guide exists."""
    import importlib

    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    table = text[text.index("## 8."):text.index("## 9.")]
    for row in re.findall(r"^\|([^|\n]*)\|([^|\n]*)\|([^|\n]*)\|$", table, re.M)[2:]:
        files = re.findall(r"`(nudgelib/[\w/]+\.py)`", row[1])
        assert files, row
        mods = [importlib.import_module(f[:-3].replace("/", ".")) for f in files]
        for name in re.findall(r"`([A-Za-z_][\w.]*)`", row[2]):
            head, _, attr = name.partition(".")
            owner = next((m for m in mods if hasattr(m, head)), None)
            assert owner is not None, f"{name} is in none of {files}"
            if attr:
                assert hasattr(getattr(owner, head), attr), name


def _first_code_cell(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


def test_every_notebook_has_the_same_colab_bootstrap_with_one_repository_address():
    cells = {_first_code_cell(p) for p in NOTEBOOKS}
    assert len(cells) == 1, "one bootstrap cell, the same in every notebook"
    cell = cells.pop()
    assert cell.count("github.com/") == 1 and 'os.environ.get("NUDGE_REPO_URL"' in cell


def test_colab_bootstrap_runs_twice_in_one_kernel_under_a_stubbed_colab(tmp_path):
    """The first cell in a real kernel, as Colab runs it: ``google.colab`` is stubbed in
    ``sys.modules``, the repository address points at a local clone of this repository
    (``NUDGE_REPO_URL``), the clone goes to a scratch folder (``NUDGE_CLONE_DIR``). The clone is
    real; pip runs for real too, but as ``--dry-run --no-deps`` (it resolves and builds the
    clone's metadata, installs nothing, so this environment is untouched). Run twice in one
    kernel (Run all after a restart): the second run reuses the clone and the install."""
    import subprocess as sp

    import nbformat
    from nbclient import NotebookClient

    source = tmp_path / "origin"
    sp.run(["git", "clone", "-q", "--depth=1", f"file://{ROOT}", str(source)], check=True)
    clone = tmp_path / "content" / "nudgelib"
    stub = ("import subprocess, sys, types\n"
            "sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
            "CALLS, _run = [], subprocess.run\n"
            "def run(cmd, *a, **kw):\n"
            "    CALLS.append(list(cmd))\n"
            "    if cmd[1:4] == ['-m', 'pip', 'install']:\n"
            "        cmd = [*cmd, '--dry-run', '--no-deps', '--no-build-isolation', '--no-index']\n"
            "    return _run(cmd, *a, **kw)\n"
            "subprocess.run = run")
    check = ("clones = [c for c in CALLS if c[:2] == ['git', 'clone']]\n"
             "pips = [c for c in CALLS if c[1:4] == ['-m', 'pip', 'install']]\n"
             "assert len(clones) == 1 and len(pips) == 1, CALLS\n"
             "import os\n"
             "assert os.path.isfile(os.path.join(CLONE_DIR, 'pyproject.toml'))\n"
             "print('ok', CALLS)")
    cell = _first_code_cell(NOTEBOOKS[0])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c)
                                         for c in (stub, cell, cell, check)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    env = dict(os.environ, NUDGE_REPO_URL=f"file://{source}", NUDGE_CLONE_DIR=str(clone))
    client = NotebookClient(nb, timeout=300, kernel_name="python3")
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits the environment of its launcher
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    errors = [o for c in nb.cells for o in c.outputs if o["output_type"] == "error"]
    assert not errors, errors
    assert "ok" in "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert (clone / ".git").is_dir() and (clone / ".installed").is_file()
