import json

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
