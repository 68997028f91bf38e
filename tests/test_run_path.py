"""The README's run command on a fresh machine: a new virtual environment gets the CPU build of
PyTorch (the README's first step without a GPU), then exactly the run command's install lines,
and notebook 05's cells up to and including the model-loading cell run in a kernel of that
environment (fast mode, an empty model cache: the offline model is built from what the run
command installed). Slow (a few minutes of pip), so one test; CI runs it."""

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NB05 = ROOT / "notebooks" / "05_language_model_rollouts_and_self_hints.ipynb"

RUNNER = r"""
import json, sys
import nbformat
from nbclient import NotebookClient
cells = json.load(open(sys.argv[1]))
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
print("".join(o.get("text", "") for c in nb.cells for o in c.outputs if o.get("name") == "stdout"))
"""


def _run_command_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- run-command -->\s*```bash\n(.*?)```", readme, re.S).group(1)
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def test_readme_run_command_loads_the_model_in_a_fresh_environment(tmp_path):
    lines = _run_command_lines()
    installs = [ln for ln in lines if ln.startswith("pip install")]
    assert lines[-1].startswith("jupyter lab") and len(installs) == len(lines) - 1, lines
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NUDGE_", "VIRTUAL_ENV", "PYTHONPATH", "PYTEST"))}
    env.update(PATH=f"{env_dir / 'bin'}:{env.get('PATH', '')}", PIP_NO_COMPILE="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1",
               JUPYTER_DATA_DIR=str(tmp_path / "jupyter"))  # no kernel of another environment

    def sh(cmd: str, timeout: int = 900):
        proc = subprocess.run(cmd, shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        return proc.stdout

    # without a GPU the README installs a CPU build of torch first (CI's pinned CPU wheel)
    sh(f"{py} -m pip install -q torch=={_torch_version()}")
    for line in installs:  # exactly the README's lines, run with the fresh environment's pip
        sh(line.replace("pip install", f"{py} -m pip install -q", 1))
    nb = json.loads(NB05.read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    upto = next(i for i, c in enumerate(code) if "HFPolicy.from_pretrained" in c)
    cells = code[1:upto + 1] + ["print('loaded', type(policy).__name__, len(first), 'rollouts')"]
    spec = tmp_path / "cells.json"
    spec.write_text(json.dumps(cells))
    env.update(NUDGE_FAST="1", NUDGE_CACHE_DIR=str(tmp_path / "cache"))
    out = sh(f"{py} -c {_quote(RUNNER)} {spec} {ROOT / 'notebooks'}")
    assert "loaded HFPolicy 16 rollouts" in out, out[-2000:]
    assert (tmp_path / "cache").is_dir(), "the offline model was built into the fresh cache"


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
