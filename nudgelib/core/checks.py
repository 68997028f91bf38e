"""Field validation for the configuration dataclasses, written once.

Every config (training, experiments, toy) checks its fields with :func:`check_fields`, and its
``from_dict`` refuses unknown keys with :func:`reject_unknown_fields`; every message names the
class, the field, the value and what is expected. Plain Python: no import from nudgelib.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from typing import ClassVar


def _number(v) -> bool:  # true/false are not numbers here, whatever Python says
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


RULES = {
    "positive_int": (lambda v: _integer(v) and v >= 1, "a positive integer"),
    "non_negative_int": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "positive": (lambda v: _number(v) and v > 0, "a finite number > 0"),
    "non_negative": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
}
"""Rule name -> (test, what the message says is expected)."""


def field_error(obj, name: str, expected: str, error: type[Exception] = ValueError):
    """The error for field ``name`` of ``obj``: class, field, value, and what is expected."""
    return error(f"{type(obj).__name__}.{name}={getattr(obj, name)!r} is invalid; "
                 f"expected {expected}")


def check_fields(obj, error: type[Exception] = ValueError, *,
                 choices: Mapping[str, Sequence] | None = None, **rules: Iterable[str]) -> None:
    """Raise ``error`` (see :func:`field_error`) for the first field of ``obj`` that breaks
    its rule: ``choices={field: allowed values}``, then ``rule_name=(fields...)`` for each
    rule of :data:`RULES` (e.g. ``positive_int=("steps", "group_size")``)."""
    for name, allowed in (choices or {}).items():
        if getattr(obj, name) not in allowed:
            raise field_error(obj, name, f"one of {sorted(allowed, key=repr)}", error)
    for rule, names in rules.items():
        test, expected = RULES[rule]
        for name in names:
            if not test(getattr(obj, name)):
                raise field_error(obj, name, expected, error)


def reject_unknown_fields(cls, d: dict, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming every key of ``d`` that is not a field of dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise error(f"unknown {cls.__name__} field(s) {unknown}; fields are {sorted(known)}")


class ListFieldsDict:
    """``to_dict`` / ``from_dict`` for a config dataclass whose tuple fields (named in
    ``LIST_FIELDS``) are written to JSON as lists and read back as tuples; ``from_dict``
    refuses unknown keys (:func:`reject_unknown_fields`)."""

    LIST_FIELDS: ClassVar[tuple[str, ...]] = ("arms",)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in self.LIST_FIELDS:
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict):
        reject_unknown_fields(cls, d)
        return cls(**{k: tuple(v) if k in cls.LIST_FIELDS else v for k, v in d.items()})
