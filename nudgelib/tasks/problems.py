"""Real math problems: GSM8K and MATH-500, from a local data directory or the hub.

Where the data comes from, in order:

1. the directory named by ``NUDGE_DATA_DIR`` (CI points it at ``../shared/data``), laid out as
   ``gsm8k/{train,test}.jsonl`` and ``math500/test.jsonl`` (the files the upstream projects
   publish: openai/grade-school-math and the MATH-500 split of openai/prm800k);
2. otherwise the same sets from the Hugging Face hub with ``datasets``
   (``openai/gsm8k`` config ``main``, ``HuggingFaceH4/MATH-500``).

Every row is validated: a missing or mistyped field raises :class:`DataFormatError` naming
the file, the line and the field, instead of being dropped silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

DATA_ENV = "NUDGE_DATA_DIR"

HUB_SOURCES = {
    "gsm8k": ("openai/gsm8k", "main"),
    "math500": ("HuggingFaceH4/MATH-500", None),
}
SPLITS = {"gsm8k": ("train", "test"), "math500": ("test",)}


class DataNotFound(RuntimeError):
    """Neither NUDGE_DATA_DIR nor the hub could provide a dataset."""


class DataFormatError(ValueError):
    """A dataset row does not have the expected fields."""


@dataclass(frozen=True)
class Problem:
    """One question with its gold final answer (as the dataset stores it)."""

    id: str
    question: str
    answer: str
    solution: str = ""
    source: str = ""
    level: int | None = None
    subject: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def data_dir() -> Path | None:
    """The directory named by NUDGE_DATA_DIR, or None when unset. A set but missing dir is an error."""
    raw = os.environ.get(DATA_ENV, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise DataNotFound(f"{DATA_ENV}={raw!r} is not a directory; point it at a folder with "
                           f"gsm8k/ and math500/ (see docs/data.md)")
    return path


def gsm8k_final_answer(answer_text: str) -> str:
    """The gold answer of a GSM8K solution: the text after its last ``####``."""
    if "####" not in answer_text:
        raise DataFormatError("GSM8K 'answer' has no '#### <number>' line: "
                              f"{answer_text[-80:]!r}")
    gold = answer_text.rsplit("####", 1)[1].strip()
    if not gold:  # would score every completion -1 (or 0): refuse it here
        raise DataFormatError(f"GSM8K 'answer' is empty after '####': {answer_text[-80:]!r}")
    return gold


def _require(row: dict, field: str, where: str, kind=str):
    if not isinstance(row, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if field not in row:
        raise DataFormatError(f"{where}: missing field {field!r} (fields present: {sorted(row)})")
    value = row[field]
    if not isinstance(value, kind):
        raise DataFormatError(f"{where}: field {field!r} should be {getattr(kind, '__name__', kind)}, "
                              f"got {type(value).__name__} {str(value)[:60]!r}")
    if isinstance(value, str) and not value.strip() and field in ("question", "problem",
                                                                 "answer"):
        raise DataFormatError(f"{where}: field {field!r} is empty")
    return value


def _level(value, where: str) -> int:
    """MATH's level: an integer, or a string such as "3" or "Level 3"."""
    text = str(value).strip()
    digits = text[len("Level"):].strip() if text.lower().startswith("level") else text
    if isinstance(value, bool) or not digits.isdigit():
        raise DataFormatError(f"{where}: field 'level' should be an integer 1-5 or 'Level N', "
                              f"got {value!r}")
    return int(digits)


def problem_from_row(name: str, split: str, index: int, row: dict, where: str = "") -> Problem:
    """Validate one raw row of ``name`` (gsm8k | math500) and turn it into a :class:`Problem`."""
    where = where or f"{name}/{split} row {index}"
    if name == "gsm8k":
        question = _require(row, "question", where)
        full = _require(row, "answer", where)
        try:
            gold = gsm8k_final_answer(full)
        except DataFormatError as err:
            raise DataFormatError(f"{where}: {err}") from None
        solution = full.rsplit("####", 1)[0].strip() + f"\n#### {gold}"
        return Problem(id=f"gsm8k/{split}/{index}", question=question, answer=gold,
                       solution=solution, source=f"gsm8k/{split}")
    if name == "math500":
        level = _require(row, "level", where, (int, str))
        return Problem(
            id=_require(row, "unique_id", where),
            question=_require(row, "problem", where),
            answer=_require(row, "answer", where),
            solution=_require(row, "solution", where),
            source="math500/test",
            level=_level(level, where),
            subject=_require(row, "subject", where),
        )
    raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SPLITS)}")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(f"{path}:{lineno}: not UTF-8 (byte {raw[err.start]:#04x} "
                                      f"at column {err.start + 1}); the file must be UTF-8 "
                                      f"JSON lines") from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None


def _hub_rows(name: str, split: str) -> Iterable[dict]:
    repo, config = HUB_SOURCES[name]
    try:
        import datasets

        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as err:  # network, auth, missing package: all mean "not available here"
        raise DataNotFound(
            f"could not load {name}/{split}: {DATA_ENV} is not set and the hub dataset {repo!r} "
            f"failed to load ({type(err).__name__}: {str(err)[:200]}). Set {DATA_ENV} to a "
            f"folder with gsm8k/ and math500/ (see docs/data.md)."
        ) from err
    return iter(ds)


def load_problems(name: str, split: str = "test", *, limit: int | None = None,
                  levels: Iterable[int] | None = None) -> list[Problem]:
    """Load ``name`` in {gsm8k, math500} as a list of :class:`Problem`, validated row by row.

    ``limit`` keeps the first N rows (after the ``levels`` filter, MATH-500 only).
    """
    if name not in SPLITS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SPLITS)}")
    if split not in SPLITS[name]:
        raise ValueError(f"{name} has no split {split!r}; expected one of {SPLITS[name]}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    keep_levels = None if levels is None else {int(x) for x in levels}
    root = data_dir()
    if root is not None:
        path = root / name / f"{split}.jsonl"
        if not path.is_file():
            raise DataNotFound(f"{DATA_ENV}={root} has no {name}/{split}.jsonl")
        rows = ((i, row, f"{path}:{lineno}") for i, (lineno, row) in enumerate(_read_jsonl(path)))
    else:
        rows = ((i, row, "") for i, row in enumerate(_hub_rows(name, split)))
    out: list[Problem] = []
    read = 0
    for i, row, where in rows:
        read += 1
        p = problem_from_row(name, split, i, row, where)
        if keep_levels is not None and p.level not in keep_levels:
            continue
        out.append(p)
        if limit is not None and len(out) >= limit:
            break
    if root is not None and not read and limit != 0:  # an empty file is damage, not a dataset
        raise DataFormatError(f"{root / name / f'{split}.jsonl'}: holds no rows (empty, or only "
                              f"blank lines); expected one JSON object per line, as in "
                              f"docs/data.md")
    return out


def load_gsm8k(split: str = "test", **kw) -> list[Problem]:
    return load_problems("gsm8k", split, **kw)


def load_math500(**kw) -> list[Problem]:
    return load_problems("math500", "test", **kw)
