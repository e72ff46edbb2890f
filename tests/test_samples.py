"""The one samples.jsonl reader: line numbers kept, every bad input a clear UserError."""

from __future__ import annotations

import pytest

from corpora.errors import UserError
from evalsuite.samples import read_jsonl_objects


def test_objects_keep_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"completion": "a"}\n\n{"completion": "b"}\n', encoding="utf-8")
    assert read_jsonl_objects(path) == [(1, {"completion": "a"}), (3, {"completion": "b"})]


@pytest.mark.parametrize(("content", "message"), [
    (b'{"completion": "a"}\n{oops\n', r"samples\.jsonl:2: not valid JSON"),
    (b'["a list"]\n', r"samples\.jsonl:1: expected a JSON object"),
    (b'{"completion": "caf\xe9"}\n', r"not UTF-8 .* at byte 19"),
])
def test_bad_files_are_user_errors_naming_the_place(tmp_path, content, message):
    path = tmp_path / "samples.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_jsonl_objects(path)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="samples file not found"):
        read_jsonl_objects(tmp_path / "nope.jsonl")


def _write(path, rows):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_one_defaulting_rule_for_checkpoint_id_and_prompt_id(tmp_path):
    from evalsuite.samples import read_samples

    path = _write(tmp_path / "run7.jsonl", [
        {"completion": "a", "checkpoint_id": "run/best-1", "checkpoint": "runs/x/best", "prompt_id": "p1"},
        {"completion": "b", "checkpoint": "runs/x/step_1"},
        {"completion": "c", "prompt": "Once"},
    ])
    a, b, c = read_samples(path)
    assert (a["checkpoint_id"], a["checkpoint"], a["checkpoint_id_from"]) == ("run/best-1", "runs/x/best", "checkpoint_id")
    assert (b["checkpoint_id"], b["checkpoint"], b["checkpoint_id_from"]) == ("runs/x/step_1", "runs/x/step_1", "checkpoint")
    assert (c["checkpoint_id"], c["checkpoint"], c["checkpoint_id_from"]) == ("run7", "run7", "file name")
    assert [r["prompt_id"] for r in (a, b, c)] == ["p1", "line-2", "line-3"]
    assert [r["prompt"] for r in (a, b, c)] == ["", "", "Once"]
    assert [r["samples_line"] for r in (a, b, c)] == [1, 2, 3] and a["samples_file"] == str(path)


def test_required_fields_and_string_fields_are_checked(tmp_path):
    from evalsuite.samples import read_samples

    path = _write(tmp_path / "s.jsonl", [{"completion": "a", "val_loss": None}])
    with pytest.raises(UserError, match=r"s\.jsonl:1: missing val_loss"):
        read_samples(path, require=("val_loss",))
    assert read_samples(path)[0]["completion"] == "a"
    bad = _write(tmp_path / "b.jsonl", [{"completion": "a", "prompt": 3}])
    with pytest.raises(UserError, match=r"b\.jsonl:1: line 1 lacks a string 'prompt'"):
        read_samples(bad)
    with pytest.raises(UserError, match="string 'completion'"):
        read_samples(_write(tmp_path / "c.jsonl", [{"prompt": "x"}]))
    with pytest.raises(UserError, match="no samples in"):
        read_samples(_write(tmp_path / "e.jsonl", []))


def test_several_files_are_read_in_order(tmp_path):
    from evalsuite.samples import read_samples

    one = _write(tmp_path / "one.jsonl", [{"completion": "a"}])
    two = _write(tmp_path / "two.jsonl", [{"completion": "b"}, {"completion": "c"}])
    assert [r["completion"] for r in read_samples([one, two])] == ["a", "b", "c"]
    assert [r["checkpoint_id"] for r in read_samples([one, two])] == ["one", "two", "two"]


def test_writer_is_atomic_and_round_trips(tmp_path):
    from evalsuite.samples import SamplesWriter, read_samples, write_samples

    out = tmp_path / "samples.jsonl"
    assert write_samples(out, [{"completion": "ü", "checkpoint_id": "c"}]) == 1
    assert read_samples(out)[0]["completion"] == "ü"
    with pytest.raises(RuntimeError), SamplesWriter(out) as writer:
        writer.write({"completion": "new"})
        raise RuntimeError("crash mid-run")
    # the old file is intact and no partial file is left behind
    assert read_samples(out)[0]["completion"] == "ü"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.jsonl"]
    with pytest.raises(ValueError), SamplesWriter(tmp_path / "x.jsonl") as writer:
        writer.write({"prompt": "no completion"})


def test_looks_like_samples(tmp_path):
    from evalsuite.samples import looks_like_samples

    assert looks_like_samples(_write(tmp_path / "s.jsonl", [{"completion": "a"}]))
    assert not looks_like_samples(_write(tmp_path / "c.jsonl", [{"text": "a story"}]))
