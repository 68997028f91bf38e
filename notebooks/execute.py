"""Execute the course's notebooks and commit them with their outputs and provenance.

    python notebooks/execute.py            # every notebook, the preset the hardware picks (full)
    python notebooks/execute.py 05 06 07   # some of them (06 before 07: 07 reads 06's adapters)
    python notebooks/execute.py --fast     # the tiny cpu-fast preset (a dry run; not for commit)

Each notebook runs top to bottom in a fresh kernel started in ``notebooks/``, with its runs in a
scratch folder shared by the notebooks of this call (``NUDGE_RUN_DIR``: 06 trains afresh and 07
reads 06's adapters) and ``NUDGE_STATIC_FIGURES=png`` when kaleido and a Chromium are present, so
every figure also carries a PNG that GitHub's renderer shows without JavaScript. Outputs are
written back into the notebook, atomically, without widget state (a saved page cannot keep a
live widget; the library writes a static copy of each live view), and the notebook's metadata
gets ``nudgelib``: library version, commit, preset, date, minutes, machine and the SHA-256 of
its code cells. ``tests/test_repository.py`` fails when a committed notebook's code differs from
the code that produced its outputs, or when a notebook is over 1 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MAX_BYTES = 1_000_000
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def code_sha256(nb: dict) -> str:
    """The SHA-256 of a notebook's code cells, in order (what produced its outputs)."""
    h = hashlib.sha256()
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = cell["source"]
            h.update(("".join(src) if isinstance(src, list) else src).encode("utf-8"))
            h.update(b"\x00")
    return h.hexdigest()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


PLOTLY = "application/vnd.plotly.v1+json"


def _figure_html(data: dict) -> bool:
    """An HTML output that is a plotly figure or a live view's static copy."""
    html = data.get("text/html", "")
    html = "".join(html) if isinstance(html, list) else html
    return "plotly-graph-div" in html or "nudgelib-static" in html


def _slim(nb) -> None:
    """No widget state: drop the widget-view mimetype (its text/plain and the library's static
    copy stay) and the notebook-level widget metadata. A figure with a PNG keeps the PNG (and its
    text) and drops plotly's own JSON and its HTML copy: GitHub's preview and an HTML export
    prefer HTML, which draws nothing without JavaScript, while the PNG shows everywhere;
    running the cell draws the interactive figure again."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            data = out.get("data")
            if data and WIDGET_VIEW in data:
                data.pop(WIDGET_VIEW)
                if not data:
                    continue
            if data and "image/png" in data and (PLOTLY in data or _figure_html(data)):
                data.pop(PLOTLY, None)
                data.pop("text/html", None)
            kept.append(out)
        cell.outputs = kept


class OverBudget(Exception):
    """A notebook whose outputs would make it larger than :data:`MAX_BYTES`."""


def execute(path: Path, env: dict, preset: str, timeout: int) -> dict:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits its launcher's environment
    t0 = time.time()
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    minutes = (time.time() - t0) / 60
    _slim(nb)
    import nudgelib

    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "nudgelib", "notebooks"))
    nb.metadata["nudgelib"] = {
        "version": nudgelib.__version__, "commit": commit + ("+uncommitted" if dirty else ""),
        "preset": preset, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "minutes": round(minutes, 2), "machine": f"{_cpu()}, {os.cpu_count()} cores",
        "static_figures": env.get("NUDGE_STATIC_FIGURES", ""),
        "code_sha256": code_sha256(nb)}
    text = nbformat.writes(nb)
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise OverBudget(f"{path.name}: {len(text.encode('utf-8')):,} bytes with outputs, over "
                         f"the {MAX_BYTES:,}-byte budget; not written. Show fewer or smaller "
                         f"figures")
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return nb.metadata["nudgelib"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python notebooks/execute.py", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("which", nargs="*", help="notebook numbers (default: all)")
    ap.add_argument("--fast", action="store_true", help="NUDGE_FAST=1 (not for commit)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = ap.parse_args(argv)
    paths = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if args.which:
        paths = [p for p in paths if p.name[:2] in set(args.which)]
    env = {"NUDGE_RUN_DIR": tempfile.mkdtemp(prefix="nudge-course-runs-")}
    if args.fast:
        env["NUDGE_FAST"] = "1"
    else:
        os.environ.pop("NUDGE_FAST", None)
    try:
        import kaleido  # noqa: F401

        env["NUDGE_STATIC_FIGURES"] = "png"
    except ImportError:
        print("kaleido is not installed: figures get HTML copies only (pip install "
              "'.[static-figures]' for PNGs GitHub shows)", file=sys.stderr)
    os.environ.update({k: v for k, v in env.items() if k == "NUDGE_FAST"})
    from nudgelib import get_preset

    preset = get_preset().name
    failed = []
    for path in paths:
        print(f"{path.name}: running (preset {preset}) ...", flush=True)
        try:
            meta = execute(path, env, preset, args.timeout)
        except Exception as err:  # noqa: BLE001 (over budget, or a cell failed: not written)
            print(f"{path.name}: not written: {type(err).__name__}: {str(err)[-3000:]}",
                  file=sys.stderr, flush=True)
            failed.append(path.name)
            continue
        print(f"{path.name}: {meta['minutes']:.1f} min, {path.stat().st_size:,} bytes",
              flush=True)
    print(json.dumps({"run_dir": env["NUDGE_RUN_DIR"], "not_written": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
