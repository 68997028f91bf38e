"""Repository hygiene: notebooks are committed clean, the README matches what exists and
what CI runs."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
REPO = "nudgelib/nudgelib"
OUTPUT_BUDGET_BYTES = 100_000  # committed outputs per notebook (plotly figures bloat files)


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:2] == ["00", "01"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    raw = path.read_text(encoding="utf-8")
    nb = json.loads(raw)
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), "name must be NN_snake_case"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "application/vnd.jupyter.widget-state+json" not in raw, "strip widget state"
    assert "widgets" not in nb["metadata"], "strip widget state from notebook metadata"
    outputs = sum(len(json.dumps(c.get("outputs", []))) for c in nb["cells"])
    assert outputs <= OUTPUT_BUDGET_BYTES, f"{outputs} bytes of outputs"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = "".join(code[0]["source"])
    assert '"google.colab" in sys.modules' in first and f"github.com/{REPO}" in first
    assert "-e " not in first and "--editable" not in first, "Colab install must not be editable"
    last = "".join(code[-1]["source"])
    assert "assert" in last, "a notebook ends with asserts that check its claims"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_readme_lists_notebook_with_colab_link(path):
    link = f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{path.name}"
    assert link in README


def test_readme_links_point_to_existing_notebooks():
    for name in re.findall(r"notebooks/(\d\d_[a-z0-9_]+\.ipynb)", README):
        assert (ROOT / "notebooks" / name).is_file(), name


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
