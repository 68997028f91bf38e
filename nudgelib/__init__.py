"""nudgelib: hint-nudged RL with verifiable rewards.

A small, readable reproduction of NuRL ("Nudging the Boundaries of LLM Reasoning",
arXiv 2509.25666) and of the GRPO family of RLVR methods it builds on. One module per
concept; the notebooks in ``notebooks/`` teach with it.

Heavy dependencies (torch, transformers, math-verify) are imported by the modules that need
them, so ``import nudgelib`` stays fast.
"""

from __future__ import annotations

import sys

__version__ = "0.1.0"

from nudgelib.presets import Preset, env_report, get_preset, is_fast

if "ipykernel" in sys.modules:  # figures that survive export (nudgelib.ui.plots)
    from nudgelib.ui.plots import use_notebook_renderer

    use_notebook_renderer()

__all__ = ["Preset", "__version__", "env_report", "get_preset", "is_fast"]
