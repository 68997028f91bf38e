"""NuRL's two stages (docs/method.md §2.4): the plateau rule that ends stage 1 and the drop of
problems solved n/n between the stages.

:class:`PlateauDetector` counts training steps, whatever a metric's logging period;
:func:`feed_plateau_detectors` feeds one metrics row to several; :func:`drop_solved` samples
hint-free rollouts and keeps the problems not solved every time. The trainer
(:meth:`nudgelib.training.trainer.Trainer.enter_stage_two`) and the two-run pipeline
(:func:`nudgelib.training.pipeline.find_plateau`) both use them.
"""

from __future__ import annotations

from collections.abc import Sequence

from nudgelib.rollouts import evaluate_pass_counts
from nudgelib.tasks.problems import Problem

__all__ = ["PlateauDetector", "drop_solved", "feed_plateau_detectors"]


class PlateauDetector:
    """Fires when a metric's moving average has not improved for ``patience`` training steps.

    Each :meth:`update` takes one value and the training step it was measured at (e.g. the
    step's mean training reward, or a validation pass rate logged every K steps). Both
    ``patience`` and ``window`` count training steps, whatever the logging period
    (docs/method.md §2.4): the moving average is over the values logged in the last ``window``
    steps (at least the latest one), and the detector fires once ``patience`` steps have passed
    since the best average. An improvement is an average above the best so far by more than
    ``min_delta``. The paper moves to stage 2 after 10 steps without improvement.

    Without ``step``, each update counts as one step (1, 2, 3, ...).
    """

    def __init__(self, patience: int = 10, *, window: int = 5, min_delta: float = 0.0):
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        self.patience, self.window, self.min_delta = patience, window, float(min_delta)
        self.values: list[float] = []
        self.steps: list[int] = []
        self.best = float("-inf")
        self.best_step = 0

    @property
    def since_best(self) -> int:
        """Training steps from the best average to the latest update."""
        return self.steps[-1] - self.best_step if self.steps else 0

    def update(self, value: float, step: int | None = None) -> bool:
        """Add the value measured at training ``step``; True once the plateau is reached."""
        step = (self.steps[-1] + 1 if self.steps else 1) if step is None else int(step)
        if self.steps and step <= self.steps[-1]:
            raise ValueError(f"PlateauDetector.update: step {step} is not after the last "
                             f"update's step {self.steps[-1]}")
        self.values.append(float(value))
        self.steps.append(step)
        recent = [v for v, s in zip(self.values, self.steps) if s > step - self.window]
        avg = sum(recent) / len(recent)
        if avg > self.best + self.min_delta:
            self.best, self.best_step = avg, step
        return self.fired(step)

    def fired(self, step: int) -> bool:
        """Has the plateau been reached by training ``step``?"""
        return bool(self.values) and step - self.best_step >= self.patience

    def state_dict(self) -> dict:
        return {"values": list(self.values), "steps": list(self.steps), "best": self.best,
                "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.values = list(state["values"])
        self.best = state["best"]
        if "steps" in state:
            self.steps, self.best_step = list(state["steps"]), state["best_step"]
        else:  # a checkpoint from before patience counted steps: one update = one step
            self.steps = list(range(1, len(self.values) + 1))
            self.best_step = len(self.values) - state["since_best"]


def feed_plateau_detectors(detectors: dict[str, PlateauDetector], row: dict) -> bool:
    """Update each metric's detector with the value in ``row`` (a metrics row of one step, with
    its ``step``; a metric the step did not measure, None or absent, is skipped); True when
    every metric has gone ``patience`` training steps without improving. A metric logged every
    K steps plateaus after the same number of steps as one logged every step."""
    step = int(row["step"])
    for name, det in detectors.items():
        if row.get(name) is not None:
            det.update(row[name], step)
    return all(d.fired(step) for d in detectors.values())


def drop_solved(policy, problems: Sequence[Problem], scorer, *, n_samples: int = 8,
                **sampling) -> tuple[list[Problem], list[int]]:
    """Between the stages (docs/method.md §2.4): sample ``n_samples`` hint-free rollouts per problem
    and drop the problems solved n/n. Returns (kept problems, pass counts of all)."""
    counts = evaluate_pass_counts(policy, problems, scorer, n_samples=n_samples, **sampling)
    return [p for p, c in zip(problems, counts) if c < n_samples], counts
