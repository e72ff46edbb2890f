"""A small OpenAI-compatible Chat Completions server on loopback, with a pluggable backend.

`evalsuite gpt-eval` without `--base-url` starts this server on 127.0.0.1 (a free port) and
points the ordinary `openai` client at it, so the embedded judge goes through exactly the same
code path (retries, validation, cache) as a remote one.

A backend is anything with `model_name` and `complete(request: dict) -> dict`, where `request` is
the decoded Chat Completions body and the result is a Chat Completions response (the server fills
in id/object/created/model when absent). A backend raises `BackendHTTPError` to answer with an
HTTP error (the test servers use this to script 429s and 500s).

Real backend: `LlamaCppBackend` runs a GGUF model through llama-cpp-python (schema-constrained
JSON via its response_format support). It is used only when the package is installed and a model
file is given (`--judge-gguf` or $EVALSUITE_JUDGE_GGUF). We never stand in a heuristic for a
judge: with no real model, `default_backend` raises a `UserError` that names the options.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from corpora.errors import UserError

GGUF_ENV = "EVALSUITE_JUDGE_GGUF"


class ChatBackend(Protocol):
    model_name: str

    def complete(self, request: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class BackendHTTPError(Exception):
    """Raised by a backend to make the server answer with this status, body and headers."""

    status: int
    message: str = "error"
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: bytes | None = None


def chat_response(
    content: str | None,
    *,
    model: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    finish_reason: str = "stop",
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Chat Completions response body with one choice."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": finish_reason,
        "logprobs": {"content": logprobs} if logprobs is not None else None,
    }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class DropConnection(Exception):  # noqa: N818 - it is an instruction, not an error
    """Raised by a backend to make the server reset the connection without answering (TCP RST),
    as a crashing proxy or server does; the fault tests use it."""


class _Handler(BaseHTTPRequestHandler):
    server: _ChatHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # the library never prints

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        # The client may have given up (e.g. its timeout); nothing to do then.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": {"message": message, "type": "server_error", "code": status}}).encode()
        self._send(status, body, headers)

    def _reset(self) -> None:
        # SO_LINGER 0: close() sends RST instead of FIN, so the client sees "connection reset".
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the socket may have been reset on purpose
            super().finish()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            name = self.server.backend.model_name
            body = {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "evalsuite"}]}
            self._send(200, json.dumps(body).encode())
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route {self.path}")
            return
        try:
            request = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._error(400, "request body is not JSON")
            return
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            self._error(400, "'messages' must be a list")
            return
        self.server.count_request(request)
        try:
            response = self.server.backend.complete(request)
        except DropConnection:
            self._reset()
            return
        except BackendHTTPError as err:
            if err.raw_body is not None:
                self._send(err.status, err.raw_body, err.headers)
            else:
                self._error(err.status, err.message, err.headers)
            return
        except Exception as err:  # noqa: BLE001 - a backend crash is a 500 for the client, as on any server
            self._error(500, f"backend error: {type(err).__name__}: {err}")
            return
        response.setdefault("id", f"chatcmpl-{uuid.uuid4().hex[:24]}")
        response.setdefault("object", "chat.completion")
        response.setdefault("created", int(time.time()))
        response.setdefault("model", self.server.backend.model_name)
        self._send(200, json.dumps(response).encode())


class _ChatHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], backend: ChatBackend):
        super().__init__(address, _Handler)
        self.backend = backend
        self.requests_seen = 0
        self._count_lock = threading.Lock()

    def count_request(self, request: dict[str, Any]) -> None:
        with self._count_lock:
            self.requests_seen += 1


class ChatServer:
    """Run a backend behind /v1/chat/completions on 127.0.0.1 in a background thread.

    >>> with ChatServer(backend) as server:
    ...     openai.OpenAI(base_url=server.base_url, api_key="EMPTY")
    """

    def __init__(self, backend: ChatBackend, host: str = "127.0.0.1", port: int = 0):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise UserError(f"the embedded judge server binds to loopback only, not {host}")
        self._httpd = _ChatHTTPServer((host, port), backend)
        # A short poll interval makes stop() quick (serve_forever checks for shutdown between polls).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="judge-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests_seen(self) -> int:
        return self._httpd.requests_seen

    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LlamaCppBackend:
    """A GGUF model through llama-cpp-python, on CPU. Its create_chat_completion speaks the same
    request/response dicts as the OpenAI API and constrains JSON output to a schema."""

    def __init__(self, model_path: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise UserError(
                "the local judge needs llama-cpp-python: pip install llama-cpp-python (or pass --base-url)"
            ) from None
        path = Path(model_path)
        if not path.is_file():
            raise UserError(f"judge model file not found: {path}")
        self.model_name = path.stem
        self._llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count() or 2,
                          logits_all=True, verbose=False)
        self._lock = threading.Lock()  # one llama context: one request at a time

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        response_format = request.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            schema = response_format.get("json_schema", {}).get("schema")
            response_format = {"type": "json_object", "schema": schema}
        kwargs = {
            "messages": request["messages"],
            "temperature": float(request.get("temperature", 0.0)),
            "top_p": float(request.get("top_p", 1.0)),
            "max_tokens": request.get("max_tokens") or request.get("max_completion_tokens"),
            "seed": request.get("seed"),
            "response_format": response_format,
        }
        if request.get("logprobs"):
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = int(request.get("top_logprobs") or 5)
        with self._lock:
            response = self._llm.create_chat_completion(**kwargs)
        response["model"] = self.model_name
        return response


def default_backend(gguf: str | Path | None = None) -> ChatBackend:
    """The embedded judge's backend, or a UserError that names the ways to get a judge."""
    path = gguf or os.environ.get(GGUF_ENV)
    if path:
        return LlamaCppBackend(path)
    raise UserError(
        "no judge configured, and no local judge model is installed. Options: "
        "(1) --base-url URL --model NAME for any OpenAI-compatible server (OpenAI with OPENAI_API_KEY; "
        "a local llama.cpp `llama-server -m model.gguf` at http://127.0.0.1:8080/v1; vLLM `vllm serve MODEL` "
        "at http://127.0.0.1:8000/v1; ollama at http://127.0.0.1:11434/v1); "
        f"(2) pip install llama-cpp-python and pass --judge-gguf FILE.gguf (or set ${GGUF_ENV}) "
        "to run that model here on a loopback server"
    )
