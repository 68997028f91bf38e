"""The hint bank: hints keyed by (problem id, hint type) in a :class:`datasets.Dataset`, with
the hint types and the one lookup every strategy uses (:func:`as_hint_source`).

    bank.leak_rate(), bank.lookup("gsm8k/train/3", "abstract")
    bank.dataset.save_to_disk("hints/")          # a plain datasets.Dataset ...
    bank = HintBank(datasets.load_from_disk("hints/"))   # ... loaded back the standard way

Banks are written by :mod:`nudgelib.hints.generate` (self, teacher, hand-written and reference
hints); every hint is checked by :func:`nudgelib.hints.leaks.hint_leaks_answer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nudgelib.hints.leaks import hint_leaks_answer
from nudgelib.tasks.problems import Problem

HINT_TYPES = ("abstract", "partial_steps", "explanation", "answer")
"""Hint types, best to worst in the paper's comparison (docs/method.md §2.5)."""

COLUMNS = ("problem_id", "hint_type", "hint", "source", "leak", "attempts", "seconds")
"""Columns of a hint bank's dataset: problem id, type, text, where it came from ("self",
"teacher:<name>", "hand", "reference", "toy"), whether it leaks the gold answer, how many
generations it took, and the generation time charged to it."""

CONTEXT_TYPES = ("strategy", "strategy_2")
"""Answer-free hint types, written from the problem alone (NudgeRL's two strategy contexts per
problem, docs/method.md §3): never shown the gold answer or a solution. The second is a second
sample of the same prompt."""

ON_LEAK = ("regenerate", "drop", "keep")
LEAKS_BY_DESIGN = frozenset({"answer"})
"""Hint types that state the answer on purpose: flagged like any other, but never dropped and
always served."""
MAX_HINT_CHARS = 600


class HintBankError(ValueError):
    """A hint bank's table is malformed; the message names the column or row."""


# ----------------------------------------------------------------------------- the bank

@dataclass
class HintBank:
    """Hints keyed by (problem id, hint type), held in a :class:`datasets.Dataset`.

    ``stats`` carries generation statistics (first-try leak rate, seconds per hint) when the
    bank was generated here; they are not part of the dataset.
    """

    dataset: object  # datasets.Dataset with the columns of COLUMNS
    stats: dict = field(default_factory=dict)

    def __post_init__(self):
        cols = set(getattr(self.dataset, "column_names", []) or [])
        missing = [c for c in ("problem_id", "hint_type", "hint", "source", "leak") if c not in cols]
        if missing:
            raise HintBankError(f"hint bank dataset lacks column(s) {missing}; expected the "
                                f"columns {list(COLUMNS)}")
        self._index: dict[tuple[str, str], list[tuple[str, bool]]] = {}
        cols = (self.dataset[c] for c in ("problem_id", "hint_type", "hint", "leak"))
        for i, (pid, kind, text, leak) in enumerate(zip(*cols)):
            if not isinstance(pid, str) or not pid:
                raise HintBankError(f"hint bank row {i}: problem_id must be a non-empty string, "
                                    f"got {pid!r}")
            if not isinstance(kind, str) or not kind:
                raise HintBankError(f"hint bank row {i}: hint_type must be a non-empty string "
                                    f"such as {HINT_TYPES}, got {kind!r}")
            if not isinstance(text, str):
                raise HintBankError(f"hint bank row {i}: hint must be a string, got {text!r}")
            self._index.setdefault((pid, kind), []).append((text, bool(leak)))

    # -- construction
    @classmethod
    def from_records(cls, records: Sequence[Mapping], stats: dict | None = None) -> HintBank:
        from datasets import Dataset

        rows = {c: [] for c in COLUMNS}
        for i, r in enumerate(records):
            for c in ("problem_id", "hint_type", "hint"):
                if c not in r:
                    raise HintBankError(f"hint record {i} lacks {c!r}: {dict(r)}")
            rows["problem_id"].append(str(r["problem_id"]))
            rows["hint_type"].append(str(r["hint_type"]))
            rows["hint"].append(str(r["hint"]))
            rows["source"].append(str(r.get("source", "")))
            rows["leak"].append(bool(r.get("leak", False)))
            rows["attempts"].append(int(r.get("attempts", 1)))
            rows["seconds"].append(float(r.get("seconds", 0.0)))
        from datasets import Features, Value

        feats = Features({"problem_id": Value("string"), "hint_type": Value("string"),
                          "hint": Value("string"), "source": Value("string"),
                          "leak": Value("bool"), "attempts": Value("int32"),
                          "seconds": Value("float32")})
        return cls(Dataset.from_dict(rows, features=feats), dict(stats or {}))

    @classmethod
    def load(cls, path) -> HintBank:
        """``datasets.load_from_disk(path)`` wrapped as a bank."""
        from datasets import Dataset, load_from_disk

        try:
            ds = load_from_disk(str(path))
        except Exception as err:  # noqa: BLE001 (datasets/pyarrow raise many kinds: name the bank)
            raise HintBankError(
                f"hint bank {path}: cannot be read as a saved hint bank ({type(err).__name__}: "
                f"{str(err)[:200]}); expected a folder written by HintBank.save or "
                f"python -m nudgelib.hints --out") from err
        if not isinstance(ds, Dataset):
            raise HintBankError(f"hint bank {path}: holds a {type(ds).__name__} (several "
                                f"splits), not one hint bank dataset")
        try:
            return cls(ds)
        except HintBankError as err:
            raise HintBankError(f"hint bank {path}: {err}") from err

    def save(self, path) -> None:
        """``dataset.save_to_disk(path)``."""
        self.dataset.save_to_disk(str(path))

    @staticmethod
    def merge(banks: Iterable[HintBank]) -> HintBank:
        records = [r for b in banks for r in b.records()]
        return HintBank.from_records(records)

    # -- access
    def __len__(self) -> int:
        return len(self.dataset)

    def records(self) -> list[dict]:
        return self.dataset.to_list()

    def to_pandas(self):
        return self.dataset.to_pandas()

    def lookup(self, problem_id: str, hint_type: str = "abstract", *,
               include_leaky: bool = False) -> str | None:
        """The first hint of this type for the problem, or None. A hint flagged as leaking is
        served only when asked (or when its type leaks by design, :data:`LEAKS_BY_DESIGN`)."""
        leaky_ok = include_leaky or hint_type in LEAKS_BY_DESIGN
        for text, leak in self._index.get((problem_id, hint_type), ()):
            if leaky_ok or not leak:
                return text
        return None

    def recheck_leaks(self, problems: Iterable[Problem]) -> int:
        """Check every stored hint of ``problems`` against their gold answers again (a bank
        edited by hand, or made for other golds): one that leaks is flagged, so it is no
        longer served. Returns how many rows were newly flagged."""
        gold = {p.id: p.answer for p in problems}
        cols = [self.dataset[c] for c in ("problem_id", "hint_type", "hint", "leak")]
        new = [bool(lk) or (k not in LEAKS_BY_DESIGN and pid in gold
                            and hint_leaks_answer(text, gold[pid])) for pid, k, text, lk in
               zip(*cols)]
        flagged = sum(new) - sum(map(bool, cols[3]))
        if flagged:
            self.dataset = self.dataset.remove_columns("leak").add_column("leak", new)
            self.__post_init__()
        return flagged

    def leak_rate(self, hint_type: str | None = None) -> float:
        """Share of stored hints flagged as leaking (of this type, or all)."""
        flags = [lk for lk, k in zip(self.dataset["leak"], self.dataset["hint_type"])
                 if hint_type is None or k == hint_type]
        return sum(flags) / len(flags) if flags else 0.0


# ----------------------------------------------------------------------------- lookup

HintSource = Callable[[Problem, str], "str | None"]


def as_hint_source(hints) -> HintSource:
    """A function (problem, hint_type) -> hint or None from a bank, a dict or a callable.

    A dict maps problem id to a hint (any type) or to ``{hint_type: hint}``.
    """
    if isinstance(hints, HintBank):
        return lambda p, kind: hints.lookup(p.id, kind)
    if isinstance(hints, Mapping):
        def from_dict(p, kind):
            v = hints.get(p.id)
            return v.get(kind) if isinstance(v, Mapping) else v
        return from_dict
    if callable(hints):
        return hints
    raise TypeError(f"hints must be a HintBank, a dict or a callable (problem, hint_type) -> "
                    f"str | None; got {type(hints).__name__}")
