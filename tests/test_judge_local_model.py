"""The packaged local judge: GGUF assembly from chunk packages, discovery, and (when `.[judge]` is
installed) one real judgement end to end through `evalsuite gpt-eval` and the openai client."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from corpora.errors import UserError
from evalsuite.cli import main
from evalsuite.judge.local_model import (
    DEFAULT_SPEC,
    INSTALL_HINT,
    assemble_gguf,
    context_size,
    installed_part_dirs,
    local_gguf_path,
    local_judge_installed,
    ordered_part_files,
)


def make_parts(root: Path, numbers: list[int], *, seed: int = 0) -> tuple[list[Path], dict[int, bytes]]:
    """Fake chunk packages laid out like the real wheels: <pkg>_partN/data/partNN.bin."""
    rng = random.Random(seed)
    dirs, blobs = [], {}
    for n in numbers:
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(50, 400))) + f"<part {n}>".encode()
        pkg = root / f"fake_model_part{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(blob)
        (pkg / "__init__.py").write_text("")
        dirs.append(pkg)
        blobs[n] = blob
    return dirs, blobs


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_assembly_concatenates_parts_in_numeric_order(tmp_path):
    dirs, blobs = make_parts(tmp_path / "site", list(range(1, 13)))
    whole = b"".join(blobs[n] for n in range(1, 13))
    lexicographic = b"".join(blobs[n] for n in sorted(range(1, 13), key=str))  # 1, 10, 11, 12, 2, ...
    assert hashlib.sha256(lexicographic).hexdigest() != hashlib.sha256(whole).hexdigest()
    shuffled = dirs[:]
    random.Random(3).shuffle(shuffled)
    dest = tmp_path / "cache" / "judge" / "model.gguf"
    got = assemble_gguf(shuffled, dest, sha256=hashlib.sha256(whole).hexdigest(), size=len(whole), n_parts=12)
    assert got == dest and dest.read_bytes() == whole
    # Only the model and its verification stamp; no temporary file left behind.
    assert leftovers(dest.parent) == ["model.gguf", "model.gguf.verified.json"]
    stamp = json.loads((dest.parent / "model.gguf.verified.json").read_text())
    assert stamp["sha256"] == hashlib.sha256(whole).hexdigest() and stamp["size"] == len(whole)


def test_sha256_mismatch_is_a_user_error_and_leaves_no_file(tmp_path):
    dirs, blobs = make_parts(tmp_path / "site", [1, 2, 3])
    dest = tmp_path / "judge" / "model.gguf"
    with pytest.raises(UserError, match="sha256") as err:
        assemble_gguf(dirs, dest, sha256="0" * 64)
    assert INSTALL_HINT in str(err.value)
    assert leftovers(dest.parent) == []  # neither the model nor a partial file


def test_failed_assembly_keeps_the_previous_file_untouched(tmp_path):
    """Atomic rename: the target is replaced only by a complete, verified file."""
    dirs, blobs = make_parts(tmp_path / "site", [1, 2])
    dest = tmp_path / "judge" / "model.gguf"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"an older model")
    with pytest.raises(UserError, match="sha256"):
        assemble_gguf(dirs, dest, sha256="f" * 64)
    assert dest.read_bytes() == b"an older model"
    assert leftovers(dest.parent) == ["model.gguf"]
    # With the right hash the old file is replaced in one rename.
    whole = blobs[1] + blobs[2]
    assemble_gguf(dirs, dest, sha256=hashlib.sha256(whole).hexdigest())
    assert dest.read_bytes() == whole


def test_crash_while_streaming_leaves_no_partial_file(tmp_path):
    dirs, _ = make_parts(tmp_path / "site", [1, 3])
    broken = tmp_path / "site" / "fake_model_part2"
    (broken / "data" / "part02.bin").mkdir(parents=True)  # a folder where bytes should be: read fails mid-way
    dest = tmp_path / "judge" / "model.gguf"
    with pytest.raises(IsADirectoryError):
        assemble_gguf([dirs[0], broken, dirs[1]], dest, sha256="0" * 64)
    assert leftovers(dest.parent) == []


def test_parts_must_be_complete_and_unique(tmp_path):
    dirs, _ = make_parts(tmp_path / "gap", [1, 2, 4])
    with pytest.raises(UserError, match="without gaps"):
        ordered_part_files(dirs)
    one, _ = make_parts(tmp_path / "a", [1])
    again, _ = make_parts(tmp_path / "b", [1])
    with pytest.raises(UserError, match="without gaps"):
        ordered_part_files(one + again)
    empty = tmp_path / "empty_part1"
    (empty / "data").mkdir(parents=True)
    with pytest.raises(UserError, match="exactly one"):
        ordered_part_files([empty])
    dirs, blobs = make_parts(tmp_path / "ok", [1, 2])
    with pytest.raises(UserError, match="needs 3 parts"):
        assemble_gguf(dirs, tmp_path / "m.gguf", sha256="0" * 64, n_parts=3)
    with pytest.raises(UserError, match="add up to"):
        assemble_gguf(dirs, tmp_path / "m.gguf", sha256="0" * 64, size=10**9)
    assert not (tmp_path / "m.gguf").exists()


def test_verified_file_is_reused_and_a_changed_one_rebuilt(tmp_path):
    dirs, blobs = make_parts(tmp_path / "site", [1, 2, 3])
    whole = b"".join(blobs[n] for n in (1, 2, 3))
    sha = hashlib.sha256(whole).hexdigest()
    dest = assemble_gguf(dirs, tmp_path / "model.gguf", sha256=sha)
    # Verified before: no part is read (none given) and the file is returned as it is.
    assert assemble_gguf([], dest, sha256=sha) == dest
    # Same size, other bytes, newer mtime: the stamp no longer matches, so the file is rebuilt.
    dest.write_bytes(bytes(len(whole)))
    os.utime(dest, ns=(dest.stat().st_atime_ns, dest.stat().st_mtime_ns + 10**9))
    with pytest.raises(UserError, match="no local judge parts"):
        assemble_gguf([], dest, sha256=sha)  # must re-assemble, and with no parts it cannot
    assemble_gguf(dirs, dest, sha256=sha)
    assert dest.read_bytes() == whole


def test_missing_part_packages_name_the_extra():
    spec = dataclasses.replace(DEFAULT_SPEC, dist_template="evalsuite-test-no-such-part{n}")
    with pytest.raises(UserError) as err:
        installed_part_dirs(spec)
    message = str(err.value)
    assert INSTALL_HINT in message and "evalsuite-test-no-such-part1" in message and "--base-url" in message
    assert local_judge_installed(spec) is False
    assert "xllamacpp==2026.10.11549" in spec.requirements() and len(spec.requirements()) == 23


def test_context_size_holds_prompt_and_reply():
    n_ctx = context_size(2_117, 512)
    assert n_ctx % 512 == 0 and n_ctx >= 2_117 / 3 + 512
    assert context_size(30_000, 512) > context_size(3_000, 512)
    with pytest.raises(UserError, match="context"):
        context_size(200_000, 512)


def run_cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def write_one_sample(path: Path) -> Path:
    row = {"prompt_id": "p0", "checkpoint_id": "tiny", "prompt": "Once upon a time, there was a little girl named Lily.",
           "completion": " She had a red ball. She played with the ball in the park every day. One day the ball "
                         "rolled away, and a kind dog brought it back. Lily was happy and said thank you."}
    path.write_text(json.dumps(row) + "\n")
    return path


def test_without_any_judge_the_error_names_every_option(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EVALSUITE_JUDGE_GGUF", raising=False)
    samples = write_one_sample(tmp_path / "samples.jsonl")
    code = run_cli(["gpt-eval", str(samples), "--no-local-judge", "--cache", str(tmp_path / "c.sqlite"),
                    "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--base-url" in err and INSTALL_HINT in err and "--judge-gguf" in err and "--no-local-judge" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(not local_judge_installed(), reason=f"the local judge is not installed ({INSTALL_HINT})")
def test_local_judge_scores_a_story_end_to_end(tmp_path, capsys, monkeypatch):
    """Real model, real loopback server, real openai client, through the gpt-eval command."""
    monkeypatch.delenv("EVALSUITE_JUDGE_GGUF", raising=False)
    samples = write_one_sample(tmp_path / "samples.jsonl")
    out = tmp_path / "out"
    gguf = local_gguf_path()  # under this test's own $EVALSUITE_CACHE: assembled and verified here
    try:
        code = run_cli(["gpt-eval", str(samples), "--cache", str(tmp_path / "c.sqlite"), "--out", str(out),
                        "--max-tokens", "300", "--invalid-retries", "1", "--no-progress", "--n-bootstrap", "200",
                        "--judge-mode", "rubric"])  # forced: auto would not report its failed rubric grades
        captured = capsys.readouterr()
        assert code == 0, captured.err[-2000:]
        assert gguf.is_file() and gguf.stat().st_size == DEFAULT_SPEC.size
    finally:
        gguf.unlink(missing_ok=True)  # 1.1 GB: do not leave it in pytest's temp folders
    assert "smoke tests" in captured.err and "not comparable" in captured.err
    line = json.loads((out / "judgments.jsonl").read_text().splitlines()[0])
    assert line["status"] == "ok", line["error"]
    reply = json.loads(line["reply_text"])
    for dim in ("grammar", "creativity", "consistency", "plot"):
        assert 1 <= line["scores"][dim] <= 10 and reply[dim] == line["scores"][dim]
    assert line["scores"]["age_group"] in "ABCDEF" and line["scores"]["assessment"]
    assert line["judge"]["response_model"] == DEFAULT_SPEC.name
    assert line["judge"]["request"]["seed"] == 0 and line["judge"]["request"]["temperature"] == 0.0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["embedded_judge"]["sha256"] == DEFAULT_SPEC.sha256 and meta["embedded_judge"]["kind"] == "packaged"
    assert meta["judge"]["concurrency"] == 1 and meta["judge"]["model"] == DEFAULT_SPEC.name


def lp_response(tokens: list[str], content: str) -> dict:
    entries = [{"token": t, "logprob": -0.1, "top_logprobs": [{"token": t, "logprob": -0.1}]} for t in tokens]
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": {"content": entries}, "finish_reason": "stop"}]}


def test_fenced_generation_is_reported_as_generated_when_logprobs_are_asked():
    """llama.cpp strips the model's ```json fence from `content` but not from the logprob tokens."""
    from evalsuite.judge.local_model import _raw_text_as_content
    from evalsuite.judge.rubric import load_rubric
    from evalsuite.judge.scoring import logprob_expected_scores

    tokens = ["```", "json", "\n", "{\n", ' "', "grammar", '":', " ", "7", "\n", "}", "\n", "```"]
    response = lp_response(tokens, '{\n "grammar": 7\n}')
    _raw_text_as_content(response)
    content = response["choices"][0]["message"]["content"]
    assert content == "".join(tokens)
    rubric = load_rubric("tinystories_gpt_eval")
    entries = response["choices"][0]["logprobs"]["content"]
    assert logprob_expected_scores(content, entries, rubric)["grammar"] == 7  # offsets line up now
    # Anything but one complete fence around the same JSON is left alone.
    for toks, parsed in ((tokens[:-1], '{\n "grammar": 7\n}'), (tokens, '{\n "grammar": 8\n}')):
        other = lp_response(toks, parsed)
        _raw_text_as_content(other)
        assert other["choices"][0]["message"]["content"] == parsed
