"""The package's floors, checked from the source (AST): imports point down only, no cycles,
no import of a nudgelib module hidden inside a function, no module over 600 lines, and the
training step on one short page. Failing here means a change broke the layout a reader relies
on to find where things are (docs/method.md §8)."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "nudgelib"

FLOORS = {  # folder -> the nudgelib folders/modules it may import (besides itself)
    "core": set(),
    "tasks": {"core"},
}
"""The floors the layout promises: ``core/`` imports nothing of nudgelib (torch, numpy and the
standard library only); ``tasks/`` imports only ``core/``."""

LOCAL_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {}
"""(module, imported nudgelib module) -> why a function-local import is needed. None today.
Function-local imports of optional or heavy third-party packages (trl, accelerate, kaleido,
playwright, google.colab, peft, transformers, datasets, math_verify...) are allowed: they are
not part of the layout."""

def modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = f
    return out


def _resolve(node: ast.ImportFrom, name: str, known) -> list[str]:
    """The nudgelib modules one ``from X import a, b`` reaches (a submodule or X itself)."""
    mod = node.module or ""
    if node.level:
        base = name.split(".")[:-node.level] if not name.endswith("__init__") else name.split(".")
        mod = ".".join(base + ([mod] if mod else []))
    if not mod.startswith("nudgelib"):
        return []
    out = []
    for a in node.names:
        sub = f"{mod}.{a.name}"
        out.append(sub if sub in known else mod)
    return out


def imports(name: str, path: Path, known) -> list[tuple[str, bool, int]]:
    """(imported nudgelib module, inside a function?, line) for every import in the file."""
    tree = ast.parse(path.read_text())
    found = []

    def walk(node, in_fn):
        for child in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                found.extend((m, in_fn, child.lineno) for m in _resolve(child, name, known))
            elif isinstance(child, ast.Import):
                found.extend((a.name, in_fn, child.lineno) for a in child.names
                             if a.name.startswith("nudgelib"))
            walk(child, fn)

    walk(tree, False)
    return found


def graph():
    known = modules()
    return known, {n: imports(n, p, known) for n, p in known.items()}


def floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_floors_hold():
    _, g = graph()
    bad = []
    for mod, deps in g.items():
        rule = FLOORS.get(floor(mod))
        if rule is None:
            continue
        for dep, _, line in deps:
            if floor(dep) != floor(mod) and floor(dep) not in rule:
                bad.append(f"{mod}:{line} imports {dep}")
    assert not bad, "imports that break a floor:\n" + "\n".join(bad)


def test_no_import_cycles():
    _, g = graph()
    edges = {m: {d for d, _, _ in deps if d in g and d != m} for m, deps in g.items()}
    # a package's __init__ is reached by importing any of its modules: not an edge back
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_function_local_imports_of_nudgelib_modules():
    _, g = graph()
    bad = [f"{mod}:{line} imports {dep} inside a function"
           for mod, deps in g.items() for dep, local, line in deps
           if local and (mod, dep) not in LOCAL_IMPORTS_ALLOWED]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_600_lines(name):
    n = len(modules()[name].read_text().splitlines())
    assert n <= 600, f"{name} has {n} lines; split it by job"


def test_the_step_is_one_page_and_what_the_trainer_calls():
    step = PKG / "training" / "step.py"
    assert len(step.read_text().splitlines()) <= 150
    trainer = ast.parse((PKG / "training" / "trainer.py").read_text())
    calls = {n.func.id for n in ast.walk(trainer)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "train_step" in calls  # Trainer.train_step delegates to training.step.train_step
    defs = {n.name for n in ast.walk(trainer) if isinstance(n, ast.FunctionDef)}
    assert not defs & {"_loss_and_backward", "_micro_batches", "_plain_metrics"}


def test_the_structure_checks_can_fail(tmp_path):
    """The walkers see what they must: a cycle, a local import and a floor breach in a
    made-up file are found (so a green run is not a blind one)."""
    f = tmp_path / "m.py"
    f.write_text("from nudgelib.training.config import TrainConfig\n"
                 "def g():\n    from nudgelib.toy import ToyTask\n")
    known = modules()
    got = imports("nudgelib.core.fake", f, known)
    assert ("nudgelib.training.config", False, 1) in got and ("nudgelib.toy", True, 3) in got
    assert floor("nudgelib.core.fake") == "core" and floor(got[0][0]) not in FLOORS["core"]
