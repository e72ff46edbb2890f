"""The bad-input matrix: every main command x missing / empty / binary / non-UTF-8 / truncated /
wrong-type input ends in ONE `error: ...` line on stderr and exit code 2 -- never a traceback (an
exception escaping `main` fails the test), never a silent accept (exit 0).

Runs in-process through the real entry point (`evalsuite.cli.main`) on tiny inputs written here and
the session's tiny run (tests/_tiny_run.py), so the whole matrix stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from _tiny_run import copy_run, stories, tiny_run

from evalsuite.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BINARY = bytes(range(256)) * 4  # NUL bytes and every invalid UTF-8 lead byte
NON_UTF8 = "Once upon a time, a caf\u00e9 story.\n".encode("latin-1") + b"\xff\xfe more\n"


def _inputs(root: Path) -> dict[str, Path]:
    """One file or folder of each kind of bad input, plus good ones to cut short."""
    files: dict[str, Path] = {}

    def put(name: str, data: bytes | str) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        files[name] = path
        return path

    for ext in ("txt", "jsonl", "yaml", "cha", "csv", "json"):
        put(f"empty.{ext}", b"")
        put(f"binary.{ext}", BINARY)
        put(f"latin1.{ext}", NON_UTF8)
    put("blank.txt", "\n\n   \n")
    put("truncated.jsonl", json.dumps({"prompt": "Once", "completion": "upon a time"}) + "\n" + '{"prompt": "Tom')
    put("truncated_mid.jsonl", '{"prompt": "Tom\n' + json.dumps({"prompt": "Once", "completion": "x"}) + "\n")
    put("truncated.yaml", "model:\n  family: spinnet\n  n_layer: [1, 2\n")
    put("list.yaml", "- a\n- b\n")
    put("scalar.json", "42\n")
    (root / "empty_dir").mkdir()
    files["empty_dir"] = root / "empty_dir"
    files["missing"] = root / "does-not-exist"
    files["missing.txt"] = root / "does-not-exist.txt"
    files["missing.yaml"] = root / "does-not-exist.yaml"
    return files


def _cha(root: Path, shared_data: Path) -> dict[str, Path]:
    """A real Brown transcript cut mid-line, and the same without its @End line."""
    real = sorted((shared_data / "childes" / "Brown" / "Eve").glob("*.cha"))[0]
    text = real.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    head = "".join(lines[: min(len(lines) - 1, 60)])
    cut = root / "cha_cut" / "cut.cha"
    cut.parent.mkdir(parents=True)
    cut.write_text(head + lines[60][: len(lines[60]) // 2], encoding="utf-8")
    no_end = root / "cha_noend" / "noend.cha"
    no_end.parent.mkdir(parents=True)
    no_end.write_text("".join(line for line in lines if not line.startswith("@End")), encoding="utf-8")
    return {"cha_cut": cut, "cha_noend": no_end}


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    return _inputs(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("<|endoftext|>".join(stories(12)), encoding="utf-8")
    return path


def _results_with(root: Path, name: str, data: bytes) -> Path:
    """A results folder whose childes-compare/rates.csv holds `data`."""
    (root / "childes-compare").mkdir(parents=True)
    (root / "childes-compare" / "rates.csv").write_bytes(data)
    return root


def _run_with_metrics(run: Path, dest: Path, data: bytes | None) -> Path:
    copy_run(run, dest)
    if data is not None:
        (dest / "metrics_stream.jsonl").write_bytes(data)
    return dest


# Each case: id -> argv builder (bad inputs, tiny run, good corpus, a private tmp dir). All must give
# exit 2 and one `error:` line.
Builder = Callable[[dict, Path, Path, Path], list[str]]

CASES: dict[str, Builder] = {
    # corpora info
    "corpora-info-missing": lambda b, r, c, t: ["corpora", "info", str(b["missing.txt"])],
    "corpora-info-empty": lambda b, r, c, t: ["corpora", "info", str(b["empty.txt"])],
    "corpora-info-blank": lambda b, r, c, t: ["corpora", "info", str(b["blank.txt"])],
    "corpora-info-binary": lambda b, r, c, t: ["corpora", "info", str(b["binary.txt"])],
    "corpora-info-latin1": lambda b, r, c, t: ["corpora", "info", str(b["latin1.jsonl"])],
    "corpora-info-truncated-jsonl": lambda b, r, c, t: ["corpora", "info", str(b["truncated_mid.jsonl"])],
    "corpora-info-empty-dir": lambda b, r, c, t: ["corpora", "info", str(b["empty_dir"])],
    "corpora-info-wrong-type": lambda b, r, c, t: ["corpora", "info", str(b["binary.csv"])],
    # corpora fetch
    "corpora-fetch-unknown-name": lambda b, r, c, t: ["corpora", "fetch", "no-such-corpus", "--no-progress"],
    "corpora-fetch-missing-mirror": lambda b, r, c, t: ["corpora", "fetch", "tinystories-valid", "--mirror",
                                                        str(b["missing"]), "--no-progress", "--cache-dir", str(t)],
    # tokenizer train / report
    "tokenizer-train-missing": lambda b, r, c, t: ["tokenizer", "train", str(b["missing.txt"]), "-o", str(t / "tok"),
                                                   "--no-progress"],
    "tokenizer-train-empty": lambda b, r, c, t: ["tokenizer", "train", str(b["empty.txt"]), "-o", str(t / "tok"),
                                                 "--no-progress"],
    "tokenizer-train-binary": lambda b, r, c, t: ["tokenizer", "train", str(b["binary.txt"]), "-o", str(t / "tok"),
                                                  "--no-progress"],
    "tokenizer-train-latin1": lambda b, r, c, t: ["tokenizer", "train", str(b["latin1.txt"]), "-o", str(t / "tok"),
                                                  "--no-progress"],
    "tokenizer-train-vocab-negative": lambda b, r, c, t: ["tokenizer", "train", str(c), "-o", str(t / "tok"),
                                                          "--vocab-size", "-5", "--no-progress"],
    "tokenizer-report-missing": lambda b, r, c, t: ["tokenizer", "report", str(b["missing.txt"]), "-t", "char",
                                                    "-o", str(t / "r.csv")],
    "tokenizer-report-empty": lambda b, r, c, t: ["tokenizer", "report", str(b["empty.txt"]), "-t", "char",
                                                  "-o", str(t / "r.csv")],
    "tokenizer-report-latin1": lambda b, r, c, t: ["tokenizer", "report", str(b["latin1.txt"]), "-t", "char",
                                                   "-o", str(t / "r.csv")],
    "tokenizer-report-bad-tokenizer": lambda b, r, c, t: ["tokenizer", "report", str(c), "-t", str(b["empty_dir"]),
                                                          "-o", str(t / "r.csv")],
    # train: config files
    "train-config-missing": lambda b, r, c, t: ["train", "-c", str(b["missing.yaml"]), "--no-progress"],
    "train-config-empty": lambda b, r, c, t: ["train", "-c", str(b["empty.yaml"]), "--no-progress"],
    "train-config-binary": lambda b, r, c, t: ["train", "-c", str(b["binary.yaml"]), "--no-progress"],
    "train-config-latin1": lambda b, r, c, t: ["train", "-c", str(b["latin1.yaml"]), "--no-progress"],
    "train-config-truncated": lambda b, r, c, t: ["train", "-c", str(b["truncated.yaml"]), "--no-progress"],
    "train-config-wrong-type": lambda b, r, c, t: ["train", "-c", str(b["list.yaml"]), "--no-progress"],
    # train: data
    "train-data-missing": lambda b, r, c, t: ["train", "-c", "spinnet-tiny", "--data", str(b["missing.txt"]),
                                              "-o", str(t / "run"), "--no-progress"],
    "train-data-empty": lambda b, r, c, t: ["train", "-c", "spinnet-tiny", "--data", str(b["empty.txt"]),
                                            "-o", str(t / "run"), "--no-progress"],
    "train-data-binary": lambda b, r, c, t: ["train", "-c", "spinnet-tiny", "--data", str(b["binary.txt"]),
                                             "-o", str(t / "run"), "--no-progress"],
    "train-data-latin1": lambda b, r, c, t: ["train", "-c", "spinnet-tiny", "--data", str(b["latin1.txt"]),
                                             "-o", str(t / "run"), "--no-progress"],
    "train-data-wrong-type": lambda b, r, c, t: ["train", "-c", "spinnet-tiny", "--data", str(b["binary.csv"]),
                                                 "-o", str(t / "run"), "--no-progress"],
    "train-set-unknown-key": lambda b, r, c, t: ["train", "-c", "spinnet-tiny", "--set", "train.no_such_key=1",
                                                 "--no-progress"],
    "train-set-wrong-type": lambda b, r, c, t: ["train", "-c", "spinnet-tiny", "--set", "train.max_iters=many",
                                                "--no-progress"],
    # the case: a mistyped run folder must not silently start from step 0
    "train-resume-empty-run": lambda b, r, c, t: ["train", "-c", "spinnet-tiny", "--data", str(c), "--resume",
                                                  "-o", str(b["empty_dir"]), "--no-progress"],
    # generate
    "generate-ckpt-missing": lambda b, r, c, t: ["generate", str(b["missing"]), "-o", str(t / "s.jsonl")],
    "generate-ckpt-empty-dir": lambda b, r, c, t: ["generate", str(b["empty_dir"]), "-o", str(t / "s.jsonl")],
    "generate-ckpt-binary-file": lambda b, r, c, t: ["generate", str(b["binary.txt"]), "-o", str(t / "s.jsonl")],
    "generate-ckpt-wrong-type": lambda b, r, c, t: ["generate", str(c), "-o", str(t / "s.jsonl")],
    "generate-prompts-missing": lambda b, r, c, t: ["generate", str(r), "--prompts", str(b["missing.txt"]),
                                                    "-o", str(t / "s.jsonl")],
    "generate-prompts-empty": lambda b, r, c, t: ["generate", str(r), "--prompts", str(b["empty.jsonl"]),
                                                  "-o", str(t / "s.jsonl")],
    "generate-prompts-binary": lambda b, r, c, t: ["generate", str(r), "--prompts", str(b["binary.txt"]),
                                                   "-o", str(t / "s.jsonl")],
    "generate-prompts-latin1": lambda b, r, c, t: ["generate", str(r), "--prompts", str(b["latin1.jsonl"]),
                                                   "-o", str(t / "s.jsonl")],
    "generate-prompts-truncated": lambda b, r, c, t: ["generate", str(r), "--prompts", str(b["truncated_mid.jsonl"]),
                                                      "-o", str(t / "s.jsonl")],
    "generate-max-new-tokens-negative": lambda b, r, c, t: ["generate", str(r), "--max-new-tokens", "-1",
                                                            "-o", str(t / "s.jsonl")],
    # compress
    "compress-missing": lambda b, r, c, t: ["compress", str(b["missing"]), "-o", str(t / "m.spinnet")],
    "compress-empty-dir": lambda b, r, c, t: ["compress", str(b["empty_dir"]), "-o", str(t / "m.spinnet")],
    "compress-wrong-type": lambda b, r, c, t: ["compress", str(b["binary.txt"]), "-o", str(t / "m.spinnet")],
    # gpt-eval: rubric and samples (dry runs: no judge is called)
    "gpt-eval-rubric-missing": lambda b, r, c, t: ["gpt-eval", str(t / "s.jsonl"), "--rubric", str(b["missing.yaml"]),
                                                   "--dry-run", "--out", str(t / "g")],
    "gpt-eval-rubric-empty": lambda b, r, c, t: ["gpt-eval", "--rubric", str(b["empty.yaml"]), "--dry-run",
                                                 "--out", str(t / "g")],
    "gpt-eval-rubric-binary": lambda b, r, c, t: ["gpt-eval", "--rubric", str(b["binary.yaml"]), "--dry-run",
                                                  "--out", str(t / "g")],
    "gpt-eval-rubric-latin1": lambda b, r, c, t: ["gpt-eval", "--rubric", str(b["latin1.yaml"]), "--dry-run",
                                                  "--out", str(t / "g")],
    "gpt-eval-rubric-truncated": lambda b, r, c, t: ["gpt-eval", "--rubric", str(b["truncated.yaml"]), "--dry-run",
                                                     "--out", str(t / "g")],
    "gpt-eval-rubric-wrong-type": lambda b, r, c, t: ["gpt-eval", "--rubric", str(b["list.yaml"]), "--dry-run",
                                                      "--out", str(t / "g")],
    "gpt-eval-samples-missing": lambda b, r, c, t: ["gpt-eval", str(b["missing.txt"]), "--dry-run",
                                                    "--base-url", "http://127.0.0.1:9/v1", "--out", str(t / "g")],
    "gpt-eval-samples-empty": lambda b, r, c, t: ["gpt-eval", str(b["empty.jsonl"]), "--dry-run",
                                                  "--base-url", "http://127.0.0.1:9/v1", "--out", str(t / "g")],
    "gpt-eval-samples-binary": lambda b, r, c, t: ["gpt-eval", str(b["binary.jsonl"]), "--dry-run",
                                                   "--base-url", "http://127.0.0.1:9/v1", "--out", str(t / "g")],
    "gpt-eval-samples-latin1": lambda b, r, c, t: ["gpt-eval", str(b["latin1.jsonl"]), "--dry-run",
                                                   "--base-url", "http://127.0.0.1:9/v1", "--out", str(t / "g")],
    "gpt-eval-samples-truncated": lambda b, r, c, t: ["gpt-eval", str(b["truncated_mid.jsonl"]), "--dry-run",
                                                      "--base-url", "http://127.0.0.1:9/v1", "--out", str(t / "g")],
    # dim-probe
    "dim-probe-ckpt-missing": lambda b, r, c, t: ["dim-probe", str(b["missing"]), "-o", str(t / "d"), "--no-progress"],
    "dim-probe-ckpt-empty-dir": lambda b, r, c, t: ["dim-probe", str(b["empty_dir"]), "-o", str(t / "d"),
                                                    "--no-progress"],
    "dim-probe-text-missing": lambda b, r, c, t: ["dim-probe", str(r), "--text", str(b["missing.txt"]),
                                                  "-o", str(t / "d"), "--no-progress"],
    "dim-probe-text-empty": lambda b, r, c, t: ["dim-probe", str(r), "--text", str(b["empty.txt"]),
                                                "-o", str(t / "d"), "--no-progress"],
    "dim-probe-text-binary": lambda b, r, c, t: ["dim-probe", str(r), "--text", str(b["binary.txt"]),
                                                 "-o", str(t / "d"), "--no-progress"],
    "dim-probe-text-latin1": lambda b, r, c, t: ["dim-probe", str(r), "--text", str(b["latin1.jsonl"]),
                                                 "-o", str(t / "d"), "--no-progress"],
    "dim-probe-categories-latin1": lambda b, r, c, t: ["dim-probe", str(r), "--text", str(c), "--categories",
                                                       str(b["latin1.yaml"]), "-o", str(t / "d"), "--no-progress"],
    "dim-probe-categories-wrong-type": lambda b, r, c, t: ["dim-probe", str(r), "--text", str(c), "--categories",
                                                           str(b["list.yaml"]), "-o", str(t / "d"), "--no-progress"],
    # childes-compare: inputs other than CHAT (the CHAT cases need the reference data, below)
    "childes-compare-childes-missing": lambda b, r, c, t: ["childes-compare", "--childes", str(b["missing"]),
                                                           "-o", str(t / "cc"), "--no-progress"],
    "childes-compare-childes-empty-dir": lambda b, r, c, t: ["childes-compare", "--childes", str(b["empty_dir"]),
                                                             "-o", str(t / "cc"), "--no-progress"],
    "childes-compare-childes-empty": lambda b, r, c, t: ["childes-compare", "--childes", str(b["empty.cha"]),
                                                         "-o", str(t / "cc"), "--no-progress"],
    "childes-compare-childes-binary": lambda b, r, c, t: ["childes-compare", "--childes", str(b["binary.cha"]),
                                                          "-o", str(t / "cc"), "--no-progress"],
    "childes-compare-childes-latin1": lambda b, r, c, t: ["childes-compare", "--childes", str(b["latin1.cha"]),
                                                          "-o", str(t / "cc"), "--no-progress"],
    # diagnose
    "diagnose-ckpt-missing": lambda b, r, c, t: ["diagnose", str(b["missing"]), "-o", str(t / "d.csv")],
    "diagnose-ckpt-empty-dir": lambda b, r, c, t: ["diagnose", str(b["empty_dir"]), "-o", str(t / "d.csv")],
    "diagnose-corpus-missing": lambda b, r, c, t: ["diagnose", str(r), "--corpus", str(b["missing.txt"]),
                                                   "-o", str(t / "d.csv")],
    "diagnose-corpus-empty": lambda b, r, c, t: ["diagnose", str(r), "--corpus", str(b["empty.txt"]),
                                                 "-o", str(t / "d.csv")],
    "diagnose-corpus-binary": lambda b, r, c, t: ["diagnose", str(r), "--corpus", str(b["binary.txt"]),
                                                  "-o", str(t / "d.csv")],
    "diagnose-corpus-binary-bin": lambda b, r, c, t: ["diagnose", str(r), "--corpus", str(_bin(t)),
                                                      "-o", str(t / "d.csv")],
    "diagnose-corpus-latin1": lambda b, r, c, t: ["diagnose", str(r), "--corpus", str(b["latin1.txt"]),
                                                  "-o", str(t / "d.csv")],
    "diagnose-samples-empty": lambda b, r, c, t: ["diagnose", str(r), "--samples", str(b["empty.jsonl"]),
                                                  "-o", str(t / "d.csv")],
    "diagnose-samples-latin1": lambda b, r, c, t: ["diagnose", str(r), "--samples", str(b["latin1.jsonl"]),
                                                   "-o", str(t / "d.csv")],
    "diagnose-samples-truncated": lambda b, r, c, t: ["diagnose", str(r), "--samples", str(b["truncated_mid.jsonl"]),
                                                      "-o", str(t / "d.csv")],
    # dynamics
    "dynamics-missing": lambda b, r, c, t: ["dynamics", str(b["missing"]), "-o", str(t / "dy"), "--no-progress"],
    "dynamics-empty-dir": lambda b, r, c, t: ["dynamics", str(b["empty_dir"]), "-o", str(t / "dy"), "--no-progress"],
    "dynamics-wrong-type": lambda b, r, c, t: ["dynamics", str(b["binary.txt"]), "-o", str(t / "dy"), "--no-progress"],
    "dynamics-metrics-empty": lambda b, r, c, t: ["dynamics", str(_run_with_metrics(r, t / "run", b"")),
                                                  "--checkpoints", "none", "-o", str(t / "dy"), "--no-progress"],
    "dynamics-metrics-latin1": lambda b, r, c, t: ["dynamics", str(_run_with_metrics(r, t / "run", NON_UTF8)),
                                                   "--checkpoints", "none", "-o", str(t / "dy"), "--no-progress"],
    "dynamics-metrics-binary": lambda b, r, c, t: ["dynamics", str(_run_with_metrics(r, t / "run", BINARY)),
                                                   "--checkpoints", "none", "-o", str(t / "dy"), "--no-progress"],
    "dynamics-metrics-truncated-mid": lambda b, r, c, t: ["dynamics", str(_torn_metrics(r, t / "run", middle=True)),
                                                          "--checkpoints", "none", "-o", str(t / "dy"),
                                                          "--no-progress"],
    # wrong-type / out-of-range option values
    "generate-temperature-negative": lambda b, r, c, t: ["generate", str(r), "--temperature", "-1", "--limit", "1",
                                                         "-o", str(t / "s.jsonl")],
    "generate-top-p-above-1": lambda b, r, c, t: ["generate", str(r), "--top-p", "2", "--limit", "1",
                                                  "-o", str(t / "s.jsonl")],
    "generate-batch-size-zero": lambda b, r, c, t: ["generate", str(r), "--batch-size", "0", "--limit", "1",
                                                    "-o", str(t / "s.jsonl")],
    "generate-limit-not-a-number": lambda b, r, c, t: ["generate", str(r), "--limit", "three", "-o", str(t / "s.jsonl")],
    "compress-bits-unknown": lambda b, r, c, t: ["compress", str(r), "--bits", "3", "-o", str(t / "m.spinnet")],
    "dynamics-checkpoints-unknown": lambda b, r, c, t: ["dynamics", str(r), "--checkpoints", "some", "-o", str(t / "dy"),
                                                        "--no-progress"],
    "gpt-eval-rates-not-numbers": lambda b, r, c, t: ["gpt-eval", "--validate", "--rates", "a,b", "--dry-run",
                                                      "--base-url", "http://127.0.0.1:9/v1", "--out", str(t / "g")],
    "gpt-eval-repeats-zero": lambda b, r, c, t: ["gpt-eval", str(t / "s.jsonl"), "--repeats", "0", "--dry-run",
                                                 "--base-url", "http://127.0.0.1:9/v1", "--out", str(t / "g")],
    "dim-probe-permutations-negative": lambda b, r, c, t: ["dim-probe", str(r), "--text", str(c), "--permutations", "-1",
                                                           "-o", str(t / "d"), "--no-progress"],
    "dim-probe-layers-not-numbers": lambda b, r, c, t: ["dim-probe", str(r), "--text", str(c), "--layers", "x,y",
                                                        "-o", str(t / "d"), "--no-progress"],
    "dim-probe-categories-missing": lambda b, r, c, t: ["dim-probe", str(r), "--text", str(c), "--categories",
                                                        str(b["missing.yaml"]), "-o", str(t / "d"), "--no-progress"],
    "dim-probe-categories-binary": lambda b, r, c, t: ["dim-probe", str(r), "--text", str(c), "--categories",
                                                       str(b["binary.yaml"]), "-o", str(t / "d"), "--no-progress"],
    "tokenizer-report-binary": lambda b, r, c, t: ["tokenizer", "report", str(b["binary.txt"]), "-t", "char",
                                                   "-o", str(t / "r.csv")],
    "tokenizer-train-empty-dir": lambda b, r, c, t: ["tokenizer", "train", str(b["empty_dir"]), "-o", str(t / "tok"),
                                                     "--no-progress"],
    "childes-compare-samples-missing": lambda b, r, c, t: ["childes-compare", "--childes", str(_tiny_cha(t)),
                                                           "--samples", str(b["missing.txt"]), "-o", str(t / "cc"),
                                                           "--no-progress"],
    "childes-compare-samples-empty": lambda b, r, c, t: ["childes-compare", "--childes", str(_tiny_cha(t)),
                                                         "--samples", str(b["empty.jsonl"]), "-o", str(t / "cc"),
                                                         "--no-progress"],
    "childes-compare-samples-latin1": lambda b, r, c, t: ["childes-compare", "--childes", str(_tiny_cha(t)),
                                                          "--samples", str(b["latin1.jsonl"]), "-o", str(t / "cc"),
                                                          "--no-progress"],
    "childes-compare-samples-truncated": lambda b, r, c, t: ["childes-compare", "--childes", str(_tiny_cha(t)),
                                                             "--samples", str(b["truncated_mid.jsonl"]),
                                                             "-o", str(t / "cc"), "--no-progress"],
    # childes-age (apply and --fit) and corpora build-cds
    "childes-age-missing": lambda b, r, c, t: ["childes-age", str(b["missing"]), "-o", str(t / "a.csv")],
    "childes-age-empty-dir": lambda b, r, c, t: ["childes-age", str(b["empty_dir"]), "-o", str(t / "a.csv")],
    "childes-age-empty": lambda b, r, c, t: ["childes-age", str(b["empty.cha"]), "-o", str(t / "a.csv")],
    "childes-age-binary": lambda b, r, c, t: ["childes-age", str(b["binary.cha"]), "-o", str(t / "a.csv")],
    "childes-age-latin1": lambda b, r, c, t: ["childes-age", str(b["latin1.cha"]), "-o", str(t / "a.csv")],
    "childes-age-samples-truncated": lambda b, r, c, t: ["childes-age", str(b["truncated_mid.jsonl"]),
                                                         "-o", str(t / "a.csv")],
    "childes-age-no-output": lambda b, r, c, t: ["childes-age", str(_tiny_cha(t))],
    "childes-age-fit-samples": lambda b, r, c, t: ["childes-age", "--fit", str(b["truncated.jsonl"]),
                                                   "--model", str(t / "m")],
    "corpora-build-cds-missing": lambda b, r, c, t: ["corpora", "build-cds", "--childes", str(b["missing"]), "-o", str(t / "cds")],
    "corpora-build-cds-binary": lambda b, r, c, t: ["corpora", "build-cds", "--childes", str(b["binary.cha"]), "-o", str(t / "cds")],
    "corpora-build-cds-latin1": lambda b, r, c, t: ["corpora", "build-cds", "--childes", str(b["latin1.cha"]), "-o", str(t / "cds")],
    # figures / report
    "figures-missing": lambda b, r, c, t: ["figures", str(b["missing"]), "-o", str(t / "f")],
    "figures-empty-dir": lambda b, r, c, t: ["figures", str(b["empty_dir"]), "-o", str(t / "f")],
    "figures-wrong-type": lambda b, r, c, t: ["figures", str(b["binary.csv"]), "-o", str(t / "f")],
    "figures-csv-latin1": lambda b, r, c, t: ["figures", str(_results_with(t / "res", "rates.csv", NON_UTF8)),
                                              "-o", str(t / "f")],
    "figures-csv-binary": lambda b, r, c, t: ["figures", str(_results_with(t / "res", "rates.csv", BINARY)),
                                              "-o", str(t / "f")],
    "figures-csv-empty": lambda b, r, c, t: ["figures", str(_results_with(t / "res", "rates.csv", b"")),
                                             "-o", str(t / "f")],
    "figures-metrics-latin1": lambda b, r, c, t: ["figures", str(_run_with_metrics(r, t / "res" / "run", NON_UTF8).parent),
                                                  "-o", str(t / "f")],
    "report-missing": lambda b, r, c, t: ["report", str(b["missing"]), "-o", str(t / "r.html")],
    "report-empty-dir": lambda b, r, c, t: ["report", str(b["empty_dir"]), "-o", str(t / "r.html")],
    "report-wrong-type": lambda b, r, c, t: ["report", str(b["binary.csv"]), "-o", str(t / "r.html")],
    "report-csv-latin1": lambda b, r, c, t: ["report", str(_results_with(t / "res", "rates.csv", NON_UTF8)),
                                             "-o", str(t / "r.html")],
    "report-meta-binary": lambda b, r, c, t: ["report", str(_meta_with(t / "res", BINARY)), "-o", str(t / "r.html"),
                                              "--no-redraw"],
}


def _tiny_cha(tmp: Path) -> Path:
    """A complete, minimal CHAT file (headers, two child utterances, @End)."""
    path = tmp / "tiny.cha"
    path.write_text("@UTF8\n@Begin\n@Languages:\teng\n@Participants:\tCHI Eve Target_Child, MOT Mother Mother\n"
                    "@ID:\teng|Brown|CHI|1;6.|female|||Target_Child|||\n@ID:\teng|Brown|MOT|||||Mother|||\n"
                    "*CHI:\tmore cookie .\n*MOT:\tyou want more ?\n*CHI:\tthe dog runned .\n@End\n",
                    encoding="utf-8")
    return path


def _bin(tmp: Path) -> Path:
    """A tokenized corpus whose .bin is random bytes with no sidecar."""
    path = tmp / "corpus.bin"
    path.write_bytes(BINARY)
    return path


def _meta_with(root: Path, data: bytes) -> Path:
    (root / "dynamics").mkdir(parents=True)
    (root / "dynamics" / "meta.json").write_bytes(data)
    return root


def _torn_metrics(run: Path, dest: Path, middle: bool) -> Path:
    copy_run(run, dest)
    path = dest / "metrics_stream.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    return dest


def _short_metrics(run: Path, dest: Path) -> Path:
    """A metrics stream cut at a line boundary: it ends steps before the run's own checkpoints."""
    copy_run(run, dest)
    path = dest / "metrics_stream.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:2]), encoding="utf-8")
    return dest


def _expect_one_error_line(argv: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    err_lines = [line for line in captured.err.splitlines() if line.strip()]
    error_lines = [line for line in err_lines if line.startswith("error: ")]
    assert exit_info.value.code == 2, (argv, exit_info.value.code, captured.out[-2000:], captured.err[-2000:])
    assert len(error_lines) == 1, (argv, captured.err)
    assert "Traceback" not in captured.err + captured.out
    return error_lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_error_line_and_exit_2(case, bad, run, corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders (results/...) land in the test's own folder
    argv = CASES[case](bad, run, corpus, tmp_path)
    line = _expect_one_error_line(argv, capsys)
    assert len(line) < 400, line


def test_the_matrix_covers_every_main_command():
    commands = {argv_id.split("-")[0] for argv_id in CASES}
    for name in ("corpora", "tokenizer", "train", "generate", "compress", "gpt", "dim", "childes", "diagnose",
                 "dynamics", "figures", "report"):
        assert name in commands, name


@pytest.mark.parametrize("which", ["cha_cut", "cha_noend"])
def test_a_chat_file_cut_short_is_an_error_not_r_nan(which, shared_data, tmp_path, capsys):
    cha = _cha(tmp_path, shared_data)[which]
    line = _expect_one_error_line(["childes-compare", "--childes", str(cha.parent), "-o", str(tmp_path / "cc"),
                                   "--no-progress"], capsys)
    assert cha.name in line and "@End" in line, line


def test_a_torn_last_metrics_line_is_a_documented_warning(run, tmp_path, capsys):
    """The metrics stream's one tolerant rule (trainers.metrics.read_metrics): a torn LAST line, the
    mark of a crash mid-write, is dropped -- and the command says so instead of staying silent."""
    dest = copy_run(run, tmp_path / "run")
    path = dest / "metrics_stream.jsonl"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) - 20], encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["dynamics", str(dest), "--checkpoints", "none", "-o", str(tmp_path / "dy"), "--no-progress"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0
    assert "warning:" in captured.err and "torn last line" in captured.err, captured.err


def test_a_metrics_stream_cut_at_a_line_boundary_is_a_warning_naming_both_steps(run, tmp_path, capsys):
    dest = _short_metrics(run, tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        main(["dynamics", str(dest), "--checkpoints", "none", "-o", str(tmp_path / "dy"), "--no-progress"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0
    assert "warning:" in captured.err and "cut short" in captured.err, captured.err
    assert "ends at step 1 but latest/ is at step 6" in " ".join(captured.err.split()), captured.err


def test_an_intact_metrics_stream_gives_no_warning(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["dynamics", str(run), "--checkpoints", "none", "-o", str(tmp_path / "dy"), "--no-progress"])
    assert exit_info.value.code == 0
    assert "warning" not in capsys.readouterr().err


def test_no_bad_input_case_wrote_outputs_for_the_rejected_run(bad, run, corpus, tmp_path, capsys, monkeypatch):
    """generate --limit -3 used to write 47 stories: the rejected command leaves nothing behind."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "s.jsonl"
    _expect_one_error_line(["generate", str(run), "--limit", "-3", "-o", str(out)], capsys)
    assert not out.exists()
    assert not (tmp_path / "meta.json").exists()


def test_resume_of_a_mistyped_run_folder_names_the_folder(corpus, tmp_path, capsys):
    line = _expect_one_error_line(["train", "-c", "spinnet-tiny", "--data", str(corpus), "--resume",
                                   "-o", str(tmp_path / "rnu"), "--no-progress"], capsys)
    assert "rnu" in line and "latest" in line, line
    assert not (tmp_path / "rnu").exists()



def test_training_on_five_stories_says_which_val_fraction_to_set(tmp_path, capsys):
    """The first-hour case: the 5-story sample with the default val_fraction=0.1 puts no story on the
    validation side; the error names the setting that works."""
    corpus = tmp_path / "five.txt"
    corpus.write_text("<|endoftext|>".join(stories(5)), encoding="utf-8")
    line = _expect_one_error_line(["train", "-c", "spinnet-tiny", "--data", str(corpus), "-o", str(tmp_path / "run"),
                                   "--no-progress"], capsys)
    assert "--set train.val_fraction=0.2" in line, line
    from corpora.documents import split_documents

    train, val = split_documents(stories(5), 0.2, 0)  # the suggested fraction does split
    assert len(val) == 1 and len(train) == 4


def _corrupt(run: Path, dest: Path, kind: str) -> Path:
    copy_run(run, dest)
    best = dest / "best"
    if kind == "truncated-weights":
        data = (best / "model.safetensors").read_bytes()
        (best / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif kind == "latin1-state":
        (best / "trainer_state.json").write_bytes(b'{"iter_num": 3, "note": "caf\xe9"}')
    elif kind == "truncated-config":
        (best / "config.json").write_text('{"model": ', encoding="utf-8")
    return best


CORRUPT_COMMANDS = {
    "generate": lambda ckpt, t: ["generate", str(ckpt), "--limit", "1", "--max-new-tokens", "2", "-o", str(t / "s.jsonl")],
    "diagnose": lambda ckpt, t: ["diagnose", str(ckpt), "-o", str(t / "d.csv")],
    "compress": lambda ckpt, t: ["compress", str(ckpt), "-o", str(t / "m.spinnet")],
    "dim-probe": lambda ckpt, t: ["dim-probe", str(ckpt), "--no-progress", "--max-docs", "2", "--permutations", "0",
                                  "--bootstrap", "0", "--no-controls", "-o", str(t / "dp")],
}
@pytest.mark.parametrize("kind", ["truncated-weights", "latin1-state", "truncated-config"])
@pytest.mark.parametrize("command", sorted(CORRUPT_COMMANDS))
def test_a_corrupt_checkpoint_is_one_error_line(kind, command, run, tmp_path, capsys):
    ckpt = _corrupt(run, tmp_path / "run", kind)
    _expect_one_error_line(CORRUPT_COMMANDS[command](ckpt, tmp_path), capsys)
