import json
import re

import pytest

from nudgelib.tasks import problems


def _write(tmp_path, name, split, rows):
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{split}.jsonl", "w") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def test_local_dir_is_used_and_parsed(tmp_path, monkeypatch):
    _write(tmp_path, "gsm8k", "test", [
        {"question": "q1", "answer": "work <<1+1=2>>2\n#### 2"},
        {"question": "q2", "answer": "big\n#### 1,250"},
    ])
    monkeypatch.setenv("NUDGE_DATA_DIR", str(tmp_path))
    ps = problems.load_gsm8k("test")
    assert [p.answer for p in ps] == ["2", "1,250"]
    assert ps[0].id == "gsm8k/test/0" and ps[0].solution.endswith("#### 2")
    assert problems.load_gsm8k("test", limit=1)[0].question == "q1"


@pytest.mark.parametrize(
    "row, message",
    [
        ({"question": "q"}, "missing field 'answer'"),
        ({"question": 3, "answer": "#### 1"}, "field 'question' should be str"),
        ({"question": "q", "answer": "no marker"}, "no '#### <number>'"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"question": "q", "answer": "work\n####   "}, "empty after '####'"),  # issue 22
        ({"question": "  ", "answer": "#### 1"}, "field 'question' is empty"),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, monkeypatch, row, message):
    _write(tmp_path, "gsm8k", "train", [{"question": "ok", "answer": "#### 1"}, row])
    monkeypatch.setenv("NUDGE_DATA_DIR", str(tmp_path))
    with pytest.raises(problems.DataFormatError, match=message) as info:
        problems.load_gsm8k("train")
    assert "train.jsonl:2" in str(info.value)


def test_bad_dir_and_bad_names(tmp_path, monkeypatch):
    monkeypatch.setenv("NUDGE_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(problems.DataNotFound, match="NUDGE_DATA_DIR"):
        problems.load_gsm8k()
    monkeypatch.setenv("NUDGE_DATA_DIR", str(tmp_path))
    with pytest.raises(problems.DataNotFound, match="math500/test.jsonl"):
        problems.load_math500()
    with pytest.raises(ValueError, match="no split 'validation'"):
        problems.load_problems("gsm8k", "validation")
    with pytest.raises(ValueError, match="unknown dataset 'aime'"):
        problems.load_problems("aime")


def test_real_data_counts(real_data):
    assert len(real_data("gsm8k", "test")) == 1319
    assert len(real_data("gsm8k", "train")) == 7473
    m = real_data("math500")
    assert len(m) == 500
    assert {lvl: sum(p.level == lvl for p in m) for lvl in range(1, 6)} == {
        1: 43, 2: 90, 3: 105, 4: 128, 5: 134}  # MATH-500 problems per level (levels 1-5)
    assert len(real_data("math500", levels=[5], limit=10)) == 10


def test_a_byte_that_is_not_utf8_names_file_line_and_column(tmp_path, monkeypatch):
    _write(tmp_path, "gsm8k", "train", [{"question": "ok", "answer": "#### 1"}])
    with open(tmp_path / "gsm8k" / "train.jsonl", "ab") as fh:
        fh.write(b'{"question": "caf\xe9", "answer": "#### 2"}\n')
    monkeypatch.setenv("NUDGE_DATA_DIR", str(tmp_path))
    with pytest.raises(problems.DataFormatError, match=r"train\.jsonl:2: not UTF-8 \(byte 0xe9 "
                                                       r"at column 18\)"):
        problems.load_gsm8k("train")


@pytest.mark.parametrize("level,expect", [(3, 3), ("3", 3), ("Level 3", 3), ("Level x", None),
                                          (True, None)])
def test_math500_level_as_number_or_level_n(tmp_path, monkeypatch, level, expect):
    row = {"problem": "p", "answer": "1", "solution": "s", "subject": "Algebra",
           "unique_id": "test/algebra/1.json", "level": level}
    _write(tmp_path, "math500", "test", [row])
    monkeypatch.setenv("NUDGE_DATA_DIR", str(tmp_path))
    if expect is None:
        with pytest.raises(problems.DataFormatError, match=r"test\.jsonl:1: field 'level' should "
                                                           r"be an integer 1-5 or 'Level N'"):
            problems.load_math500()
    else:
        assert problems.load_math500()[0].level == expect


DAMAGE = ("empty", "truncated", "flipped", "random", "not-utf8", "utf16", "bom-utf8", "json-list",
          "json-null", "json-number", "json-string", "json-object", "json-wrong-types")


def _damaged(kind: str, data: bytes) -> bytes:
    """The fault sweep's 13 kinds of damage (tests/training/test_fault_sweep.py), for a data
    file: every line replaced by another JSON shape for the ``json-*`` kinds."""
    import random

    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    lines = data.decode().splitlines()
    shapes = {"json-list": "[]", "json-null": "null", "json-number": "42", "json-string": '"x"',
              "json-object": "{}", "json-wrong-types": json.dumps(
                  {"question": ["q"], "answer": 7, "problem": None, "level": [], "solution": 1,
                   "unique_id": 2, "subject": 3})}
    return {"empty": b"", "truncated": data[: len(data) // 2], "flipped": bytes(flipped),
            "random": random.Random(1).randbytes(len(data)), "not-utf8": b"\xff\xfe\xfd" + data[3:],
            "utf16": data.decode().encode("utf-16"), "bom-utf8": b"\xef\xbb\xbf" + data,
            **{k: "\n".join([v] * len(lines)).encode() + b"\n" for k, v in shapes.items()}}[kind]


@pytest.mark.parametrize("name,split", [("gsm8k", "train"), ("math500", "test")])
@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_data_file_is_named_with_its_line_or_read_as_it_was(tmp_path, monkeypatch,
                                                                       name, split, kind):
    """Every kind of damage to a data file the runs read: a DataFormatError naming the file
    (and the line, for a row), or the same problems as before (a UTF-8 byte-order mark is
    read through); never another exception, never problems that silently differ."""
    rows = ([{"question": f"Tom has {i} apples and buys 2. How many?", "answer":
              f"{i} + 2 = {i + 2}\n#### {i + 2}"} for i in range(3)] if name == "gsm8k" else
            [{"problem": f"What is {i} + 2?", "answer": str(i + 2), "solution": f"$\\boxed{{{i + 2}}}$",
              "subject": "Algebra", "level": 1 + i, "unique_id": f"test/algebra/{i}.json"}
             for i in range(3)])
    _write(tmp_path, name, split, rows)
    monkeypatch.setenv("NUDGE_DATA_DIR", str(tmp_path))
    path = tmp_path / name / f"{split}.jsonl"
    before = problems.load_problems(name, split)
    path.write_bytes(_damaged(kind, path.read_bytes()))
    try:
        after = problems.load_problems(name, split)
    except problems.DataFormatError as err:
        assert f"{split}.jsonl" in str(err), err
        assert kind in ("empty",) or re.search(rf"{split}\.jsonl:\d+", str(err)), err
        return
    assert kind == "bom-utf8" and after == before, (kind, after)
