"""Experiments that reproduce the paper's claims end to end (``python -m nudgelib.experiments.X``)."""
