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
