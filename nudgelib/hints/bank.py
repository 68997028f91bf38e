"""The hint bank: hints keyed by (problem id, hint type) in a :class:`datasets.Dataset`, with
the hint types and the one lookup every strategy uses (:func:`as_hint_source`).

    bank.leak_rate(), bank.lookup("gsm8k/train/3", "abstract")
    bank.save("hints/")                  # the dataset, how it was written, a manifest
    bank = HintBank.load("hints/")       # checked against the manifest, named when damaged
    bank = HintBank(datasets.load_from_disk("hints/"))   # or the standard way, unchecked

Banks are written by :mod:`nudgelib.hints.generate` (self, teacher, hand-written and reference
hints); every hint is checked by :func:`nudgelib.hints.leaks.hint_leaks_answer`.

A saved bank is a ``datasets`` folder plus ``generation.json`` (what writing the hints cost)
and ``MANIFEST.json`` (size and SHA-256 of every file), written to a temporary folder and
renamed into place. :meth:`HintBank.load` checks the manifest when there is one, so a flipped
byte in the Arrow data is named instead of silently changing a hint; a bank saved by
``dataset.save_to_disk`` has none, and a run that trains on it records the bank's
:meth:`~HintBank.fingerprint` in every checkpoint and refuses to resume on other hints
(docs/runs.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nudgelib.hints.leaks import hint_leaks_answer
from nudgelib.tasks.problems import Problem
from nudgelib.training.runs import MANIFEST, read_json, save_folder_atomic, verify_folder

HINT_TYPES = ("abstract", "partial_steps", "explanation", "answer")
"""Hint types, best to worst in the paper's comparison (docs/method.md §2.5)."""

COLUMNS = ("problem_id", "hint_type", "hint", "source", "leak", "attempts", "seconds", "tokens")
"""Columns of a hint bank's dataset: problem id, type, text, where it came from ("self",
"teacher:<name>", "hand", "reference", "toy"), whether it leaks the gold answer, how many
generations it took, and the generation time and tokens (every model call for this hint,
retries included) charged to it. ``attempts``, ``seconds`` and ``tokens`` may be missing from
a bank made elsewhere."""

GENERATION_FILE = "generation.json"
"""Beside a saved bank's dataset: the generation statistics (:attr:`HintBank.stats`), among
them what writing the hints cost (model calls and tokens, dropped hints included)."""

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
            rows["tokens"].append(int(r.get("tokens", 0)))
        from datasets import Features, Value

        feats = Features({"problem_id": Value("string"), "hint_type": Value("string"),
                          "hint": Value("string"), "source": Value("string"),
                          "leak": Value("bool"), "attempts": Value("int32"),
                          "seconds": Value("float32"), "tokens": Value("int64")})
        return cls(Dataset.from_dict(rows, features=feats), dict(stats or {}))

    @classmethod
    def load(cls, path) -> HintBank:
        """A bank saved by :meth:`save` (its manifest checked: a damaged file is named) or by
        ``dataset.save_to_disk`` (no manifest: loaded as it is)."""
        from datasets import Dataset, load_from_disk

        path = Path(path)
        if (path / MANIFEST).exists():
            problem = verify_folder(path)
            if problem is not None:
                raise HintBankError(
                    f"hint bank {path}: {problem}. Nothing was loaded; restore the bank from "
                    f"where you keep it, or write it again (python -m nudgelib.hints --out). A "
                    f"bank whose data you know to be intact loads without the check once its "
                    f"{MANIFEST} is moved aside")
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
        stats = {}
        if (path / GENERATION_FILE).exists():
            try:
                stats = read_json(path / GENERATION_FILE)
            except (OSError, ValueError) as err:
                raise HintBankError(f"hint bank {path}: {GENERATION_FILE} is unreadable "
                                    f"({type(err).__name__}); expected the JSON object "
                                    f"HintBank.save writes") from err
            if not isinstance(stats, dict):
                raise HintBankError(f"hint bank {path}: {GENERATION_FILE} holds a "
                                    f"{type(stats).__name__}, expected a JSON object")
        try:
            return cls(ds, stats)
        except HintBankError as err:
            raise HintBankError(f"hint bank {path}: {err}") from err

    def save(self, path) -> Path:
        """The dataset (``dataset.save_to_disk``), :data:`GENERATION_FILE` and a manifest,
        written to a temporary folder beside ``path`` and renamed into place: a kill leaves the
        old bank or the new one. Replaces a bank saved there before; refuses any other
        non-empty folder."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (
                (path / "state.json").exists() or (path / MANIFEST).exists()))):
            raise HintBankError(f"hint bank {path}: exists and is not a saved hint bank; "
                                f"nothing was written. Choose a new or empty folder")

        def write(tmp: Path) -> None:
            self.dataset.save_to_disk(str(tmp))
            (tmp / GENERATION_FILE).write_text(json.dumps(self.stats, indent=1, default=str))

        return save_folder_atomic(path, write)

    def fingerprint(self) -> str:
        """SHA-256 of what the bank serves: every row's problem id, hint type, text and leak
        flag, in order (the first hint of a type is the one served). Two banks with the same
        fingerprint nudge alike; a checkpoint records it (docs/runs.md)."""
        cols = [self.dataset[c] for c in ("problem_id", "hint_type", "hint", "leak")]
        rows = [[pid, kind, text, bool(leak)] for pid, kind, text, leak in zip(*cols)]
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()

    def writing_cost(self) -> dict:
        """What writing these hints cost, from the generation statistics: ``model_calls``
        (sampling calls to the model) and ``tokens`` (tokens it generated, retries and dropped
        hints included). Zero for hints that need no model (reference, hand-written, answer)
        and for a bank that carries no statistics."""
        parts = [self.stats, *(v for v in self.stats.values() if isinstance(v, dict))]
        return {k: int(sum(p.get(k, 0) for p in parts if isinstance(p.get(k, 0), (int, float))))
                for k in ("model_calls", "tokens")}

    @staticmethod
    def merge(banks: Iterable[HintBank]) -> HintBank:
        """One bank holding every row of ``banks``; their statistics kept by hint type."""
        banks = list(banks)
        records = [r for b in banks for r in b.records()]
        stats = {}
        for b in (b for b in banks if b.stats):  # two banks of one type: both kept
            key = str(b.stats.get("hint_type", "bank"))
            stats[key if key not in stats else f"{key}_{len(stats)}"] = b.stats
        return HintBank.from_records(records, stats)

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
