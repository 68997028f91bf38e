"""Progress bars that stay readable wherever a notebook is opened.

``tqdm.auto`` draws a widget bar inside a kernel; a bar closed with ``leave=False`` destroys
its widget model, and the saved or reopened notebook then shows "Error displaying widget:
model not found" where the bar was. A text bar on stdout has no model to lose: JupyterLab,
Notebook 7, VS Code and Colab redraw its line in place (carriage returns), and it is not red
like stderr, which a learner reads as a failure.
"""

from __future__ import annotations

import sys


def progress_bar(iterable=None, **kwargs):
    """``tqdm`` text bar on stdout (the same arguments as ``tqdm.tqdm``)."""
    from tqdm.std import tqdm

    kwargs.setdefault("file", sys.stdout)
    kwargs.setdefault("ncols", 100)
    kwargs.setdefault("mininterval", 0.5)
    return tqdm(iterable, **kwargs)
