"""HTTP over a UNIX socket: the OpenAI-compatible endpoints (/v1/...) and the native ones (/ask,
/search, /status, /metrics, /health, /openapi.json), on the standard library's http.server.

Owns request parsing, limits, admission (one generation at a time plus a bounded queue), peer
checks and the error-to-status mapping. Models, stores and threads belong to ``daemon.Engine``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import socketserver
import struct
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .config import LENGTHS, METHODS, SEARCH_MODES, one_of
from .errors import BusyError, EdgeLlamaError, RequestError
from .render import answer_body, cite

if TYPE_CHECKING:
    from .daemon import Engine

__all__ = ["UnixHTTPServer", "LoopbackHTTPServer", "read_token", "Admission", "Metrics", "ROUTES", "openapi_document",
           "MAX_BODY_BYTES", "MAX_QUESTION_CHARS", "MAX_TOKENS_CAP"]

log = logging.getLogger("edgellama.server")

MAX_BODY_BYTES = 1_000_000
MAX_QUESTION_CHARS = 4_000
MAX_TOKENS_CAP = 1_024
MAX_EMBED_INPUTS = 256


# -- admission and metrics ------------------------------------------------------------------------


class Admission:
    """One generation runs (the CPU is the limit); ``max_queue`` more may wait; beyond, 503."""

    def __init__(self, *, max_queue: int):
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self.active = 0  # running + waiting

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self.active >= 1 + self.max_queue:
                raise BusyError(f"busy: {self.active} requests are running or queued (max_queue {self.max_queue})",
                                retry_after=2)
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1


@dataclass
class Metrics:
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    tokens: int = 0
    prompt_tokens: int = 0
    generation_seconds: float = 0.0
    last_tokens_per_second: float = 0.0
    refused_peers: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, path: str, status: int) -> None:
        with self._lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1

    def generation(self, *, prompt_tokens: int, tokens: int, seconds: float, tokens_per_second: float) -> None:
        with self._lock:
            self.tokens += tokens
            self.prompt_tokens += prompt_tokens
            self.generation_seconds += seconds
            if tokens:
                self.last_tokens_per_second = tokens_per_second


# -- request helpers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Stream:
    """A server-sent-events reply: ``produce(write)`` calls ``write(frame)`` for each SSE frame as
    it is ready, so tokens reach the client while the model generates. ``release`` runs at the end."""

    produce: Callable[[Callable[[bytes], None]], None]
    release: Callable[[], None] = lambda: None


def sse(data: Any, *, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return ((f"event: {event}\n" if event else "") + f"data: {text}\n\n").encode()


def _text(body: dict, key: str, *, limit: int = MAX_QUESTION_CHARS) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"'{key}' must be a non-empty string")
    if len(value) > limit:
        raise RequestError(f"'{key}' is {len(value)} characters; the limit is {limit}", http_status=413)
    return value


def _int(body: dict, key: str, default: int, *, low: int, high: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{key}' must be an integer")
    if not low <= value <= high:
        raise RequestError(f"'{key}' must be between {low} and {high}, got {value}")
    return value


def _bool(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise RequestError(f"'{key}' must be true or false")
    return value


def _error_body(err: EdgeLlamaError) -> dict:
    return {"error": {"message": str(err), "type": type(err).__name__, "code": err.http_status}}


# -- endpoints ------------------------------------------------------------------------------------


def health(engine: "Engine", body: dict) -> Reply:
    if engine.stopping:
        return Reply(503, {"status": "stopping"})
    if not engine.ready:
        return Reply(503, {"status": "loading", "stage": engine.stage}, headers=(("Retry-After", "1"),))
    return Reply(200, {"status": "ok", "pid": os.getpid(), "db": str(engine.settings.db),
                       "model": engine.generator.name, "embedder": engine.embedder.name})


def status(engine: "Engine", body: dict) -> Reply:
    return Reply(200, engine.status())


def metrics(engine: "Engine", body: dict) -> Reply:
    return Reply(200, engine.prometheus(), content_type="text/plain; version=0.0.4")


def openapi(engine: "Engine", body: dict) -> Reply:
    return Reply(200, openapi_document())


def search(engine: "Engine", body: dict) -> Reply:
    from .retrieve import scored_chunk_to_dict

    query = _text(body, "query")
    k = _int(body, "k", engine.settings.top_k, low=1, high=100)
    mode = body.get("mode", "hybrid")
    if mode not in SEARCH_MODES:
        raise RequestError(f"'mode' must be {one_of(SEARCH_MODES)}")
    found = engine.search(query=query, k=k, mode=mode)
    return Reply(200, {"results": [scored_chunk_to_dict(f) for f in found]})


def _ask_options(engine: "Engine", body: dict) -> dict:
    s = engine.settings
    return {
        "top_k": _int(body, "top_k", s.top_k, low=1, high=50),
        "max_tokens": _int(body, "max_tokens", s.max_tokens, low=1, high=MAX_TOKENS_CAP),
        "context_tokens": _int(body, "context_tokens", s.context_tokens, low=1,
                               high=engine.plan.n_ctx.value if engine.plan else s.n_ctx),
    }


def ask(engine: "Engine", body: dict) -> Reply | Stream:
    from .answer import answer_to_dict

    question = _text(body, "question")
    options = _ask_options(engine, body)
    if not _bool(body, "stream", False):
        with engine.admission.slot():
            return Reply(200, answer_to_dict(engine.ask(question=question, **options)))
    slot = engine.admission.slot()
    slot.__enter__()  # admitted before the 200 goes out, so a full queue is still a clean 503

    def produce(write: Callable[[bytes], None]) -> None:
        answer = engine.ask(question=question, on_token=lambda t: write(sse({"text": t}, event="token")), **options)
        write(sse(answer_to_dict(answer), event="answer"))

    return Stream(produce, lambda: slot.__exit__(None, None, None))


def summarize(engine: "Engine", body: dict) -> Reply | Stream:
    from .summarize import final_summary, piece_to_event, summary_to_dict

    targets = [k for k in ("path", "all", "topic") if body.get(k) not in (None, False)]
    if len(targets) != 1:
        raise RequestError("give exactly one of 'path', 'all': true or 'topic'")
    request: dict[str, Any] = {"length": body.get("length", "medium"), "method": body.get("method")}
    if not isinstance(request["length"], str) or request["length"] not in LENGTHS:
        raise RequestError(f"'length' must be one of {', '.join(LENGTHS)}")
    if request["method"] is not None and (not isinstance(request["method"], str) or request["method"] not in METHODS):
        raise RequestError(f"'method' must be one of {', '.join(METHODS)}")
    if targets == ["path"]:
        request["path"] = engine.summary_path(_text(body, "path"))
    elif targets == ["topic"]:
        request["topic"] = _text(body, "topic")
    elif body["all"] is not True:
        raise RequestError("'all' must be true")
    if not _bool(body, "stream", False):
        with engine.admission.slot():
            return Reply(200, summary_to_dict(final_summary(engine.summarize(**request))))
    slot = engine.admission.slot()
    slot.__enter__()

    def produce(write: Callable[[bytes], None]) -> None:
        for piece in engine.summarize(**request):
            event, data = piece_to_event(piece)
            write(sse(data, event=event))

    return Stream(produce, lambda: slot.__exit__(None, None, None))


def models(engine: "Engine", body: dict) -> Reply:
    created = int(engine.started_at)
    return Reply(200, {"object": "list", "data": [
        {"id": engine.generator.name, "object": "model", "created": created, "owned_by": "edgellama"},
        {"id": engine.embedder.name, "object": "model", "created": created, "owned_by": "edgellama"},
    ]})


def embeddings(engine: "Engine", body: dict) -> Reply:
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise RequestError("'input' must be a string or a non-empty list of strings")
    if len(inputs) > MAX_EMBED_INPUTS or sum(map(len, inputs)) > MAX_BODY_BYTES:
        raise RequestError(f"at most {MAX_EMBED_INPUTS} inputs per request", http_status=413)
    vectors = engine.embed(inputs)
    tokens = sum(engine.embedder.count_tokens(i) for i in inputs)
    return Reply(200, {
        "object": "list", "model": engine.embedder.name,
        "data": [{"object": "embedding", "index": i, "embedding": [float(x) for x in v]} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })


def _last_user_text(messages: Any, *, limit: int) -> str:
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    for message in reversed(messages):
        if not isinstance(message, dict):
            raise RequestError("each message must be an object with 'role' and 'content'")
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # the newer list-of-parts form
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            return _text({"content": content}, "content", limit=limit)
    raise RequestError("'messages' has no user message")


def _cited_text(answer: dict) -> str:
    """The answer as an OpenAI client shows it: the same words as ``ask`` prints, then the sources,
    so any client sees them. Only a verified answer has streamed, and it is the text's start."""
    return "\n".join(answer_body(answer)) + _sources_line(answer)


def _sources_line(answer: dict) -> str:
    if not answer["sources"]:
        return ""
    cited = "; ".join(cite(s["line_start"], s["line_end"], s["page"], path=s["path"]) for s in answer["sources"])
    return f"\n\nSources: {cited}"


def chat_completions(engine: "Engine", body: dict) -> Reply | Stream:
    from .answer import answer_to_dict

    messages = body.get("messages")
    stream = _bool(body, "stream", False)
    rag = _bool(body, "rag", True)
    # With retrieval the last user message is the question; without, the context window is the limit.
    question = _last_user_text(messages, limit=MAX_QUESTION_CHARS if rag else MAX_BODY_BYTES)
    max_tokens = _int(body, "max_tokens", engine.settings.max_tokens if rag else 256, low=1, high=MAX_TOKENS_CAP)
    ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    model = engine.generator.name

    def chunk(delta: dict, finish: str | None = None, **extra) -> bytes:
        return sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    if not rag:
        messages = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
        engine.check_chat_fits(messages, max_tokens=max_tokens)

    def run(on_token: Callable[[str], None] | None) -> tuple[str, dict, list]:
        if rag:
            answer = answer_to_dict(engine.ask(question=question, max_tokens=max_tokens, on_token=on_token))
            usage = {"prompt_tokens": answer["timings"]["prompt_tokens"],
                     "completion_tokens": answer["timings"]["completion_tokens"]}
            return _cited_text(answer), usage, answer["sources"] if answer["kind"] != "abstain" else []
        text, usage = engine.chat(messages, max_tokens=max_tokens, on_token=on_token)
        return text, usage, []

    if not stream:
        with engine.admission.slot():
            text, usage, sources = run(None)
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return Reply(200, {
            "id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage, "sources": sources,
        })
    slot = engine.admission.slot()
    slot.__enter__()

    def produce(write: Callable[[bytes], None]) -> None:
        sent: list[str] = []

        def on_token(t: str) -> None:
            sent.append(t)
            write(chunk({"content": t}))

        write(chunk({"role": "assistant", "content": ""}))
        text, usage, sources = run(on_token)
        streamed = "".join(sent)
        # The verified answer may differ from what streamed (a quote, the sources line): send the rest.
        rest = text[len(streamed):] if text.startswith(streamed) else ("\n\n" + text if streamed else text)
        if rest:
            write(chunk({"content": rest}))
        write(chunk({}, "stop", sources=sources))
        write(sse("[DONE]"))

    return Stream(produce, lambda: slot.__exit__(None, None, None))


# One table drives dispatch and the OpenAPI document, so they cannot drift apart.
# path -> (method, handler, needs the models loaded, summary)
ROUTES: dict[str, tuple[str, Callable, bool, str]] = {
    "/health": ("GET", health, False, "503 while loading, 200 when the daemon can answer"),
    "/status": ("GET", status, False, "index counts, queue, watcher state, last errors, resource plan"),
    "/metrics": ("GET", metrics, False, "Prometheus text metrics"),
    "/openapi.json": ("GET", openapi, False, "this document"),
    "/search": ("POST", search, True, "the chunks that best match a query, with file and lines"),
    "/ask": ("POST", ask, True, "a cited answer from the indexed documents; stream=true for events"),
    "/summarize": ("POST", summarize, True,
                   "a cited summary of an indexed file or folder ('path'), of everything ('all') or of a "
                   "'topic'; stream=true sends progress, section and document events, then the summary"),
    "/v1/models": ("GET", models, True, "the loaded models (OpenAI-compatible)"),
    "/v1/chat/completions": ("POST", chat_completions, True,
                             "OpenAI-compatible chat; answers the last user message from the documents "
                             "(rag=false for plain chat), sources in an extra 'sources' field"),
    "/v1/embeddings": ("POST", embeddings, True, "OpenAI-compatible embeddings from the bundled embedder"),
}

_REQUEST_SCHEMAS: dict[str, dict] = {
    "/search": {"type": "object", "required": ["query"], "properties": {
        "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS},
        "k": {"type": "integer", "minimum": 1, "maximum": 100},
        "mode": {"type": "string", "enum": list(SEARCH_MODES)}}},
    "/ask": {"type": "object", "required": ["question"], "properties": {
        "question": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_CAP},
        "context_tokens": {"type": "integer", "minimum": 1},
        "stream": {"type": "boolean"}}},
    "/summarize": {"type": "object", "properties": {
        "path": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS,
                 "description": "absolute path of an indexed file or folder inside the daemon's folders"},
        "all": {"type": "boolean"},
        "topic": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS},
        "length": {"type": "string", "enum": list(LENGTHS)},
        "method": {"type": "string", "enum": list(METHODS)},
        "stream": {"type": "boolean"}}},
    "/v1/chat/completions": {"type": "object", "required": ["messages"], "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["role", "content"],
                     "properties": {"role": {"type": "string"}, "content": {"type": "string"}}}},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_CAP},
        "stream": {"type": "boolean"}, "rag": {"type": "boolean"}}},
    "/v1/embeddings": {"type": "object", "required": ["input"], "properties": {
        "model": {"type": "string"},
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                                  "minItems": 1, "maxItems": MAX_EMBED_INPUTS}]}}},
}


def openapi_document() -> dict:
    error = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    paths: dict[str, dict] = {}
    for path, (method, _, needs_models, summary) in ROUTES.items():
        responses: dict[str, Any] = {"200": {"description": "OK"}}
        if method == "POST":
            responses.update({"400": error, "413": error})
        if needs_models or path == "/health":
            responses["503"] = error
        op: dict[str, Any] = {"summary": summary, "operationId": path.strip("/").replace("/", "_").replace(".", "_"),
                              "responses": responses}
        if path in _REQUEST_SCHEMAS:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _REQUEST_SCHEMAS[path]}}}
        paths[path] = {method.lower(): op}
    return {
        "openapi": "3.0.3",
        "info": {"title": "EdgeLlama", "version": "0.1.0",
                 "description": "Local, offline answers from your own documents, over a UNIX socket."},
        "paths": paths,
        "components": {"schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
            "message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": "integer"}}}}}}},
    }


# -- HTTP plumbing --------------------------------------------------------------------------------


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of a UNIX socket."""
    if sock.family != socket.AF_UNIX:
        return None
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", data)


def peer_groups(sock: socket.socket) -> set[int] | None:
    """The supplementary groups of the process at the other end (SO_PEERGROUPS, Linux 4.13+), as
    the kernel saw them at connect(); None where the option is missing."""
    if sock.family != socket.AF_UNIX:
        return None
    option = getattr(socket, "SO_PEERGROUPS", 59)  # 59 on Linux; Python 3.11 lacks the constant
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, option, 4 * 256)
    except OSError:
        return None
    return set(struct.unpack(f"{len(data) // 4}I", data))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edgellama"
    server: "UnixHTTPServer"

    def address_string(self) -> str:
        return "unix"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s", fmt % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def __getattr__(self, name: str):
        # Any other method (PUT, HEAD, TRACE, ...) gets a JSON 405, not http.server's HTML 501.
        if name.startswith("do_"):
            return lambda: self._dispatch(name[3:])
        raise AttributeError(name)

    def _dispatch(self, method: str) -> None:
        engine = self.server.engine
        path = self.path.split("?", 1)[0]
        route = ROUTES.get(path)
        label = path if route else "other"
        try:
            token = getattr(self.server, "token", None)
            if token is not None and not hmac.compare_digest(
                    self.headers.get("Authorization", "").encode(), b"Bearer " + token):
                raise RequestError("unauthorized: the TCP listener needs 'Authorization: Bearer <token>'",
                                   http_status=401)
            creds = peer_credentials(self.connection)
            if creds is not None and not engine.peer_allowed(*creds, groups=peer_groups(self.connection)):
                engine.metrics.refused_peers += 1
                log.warning("refused peer pid=%d uid=%d gid=%d", *creds)
                raise RequestError("forbidden: this user may not use the daemon", http_status=403)
            if route is None:
                raise RequestError(f"no such endpoint: {path}", http_status=404)
            expected, handler, needs_models, _ = route
            body = self._read_body(method)
            if method != expected:
                raise RequestError(f"{path} takes {expected}, not {method}", http_status=405)
            if needs_models and not engine.ready:
                raise BusyError("the daemon is still loading its models", retry_after=1)
            engine.requests.__enter__()
            try:
                result = handler(engine, body)
                if isinstance(result, Stream):
                    self._send_stream(result)
                    status_code = 200
                else:
                    self._send(result)
                    status_code = result.status
            finally:
                engine.requests.__exit__(None, None, None)
        except EdgeLlamaError as err:
            status_code = err.http_status
            headers = (("Retry-After", str(err.retry_after)),) if isinstance(err, BusyError) else ()
            self._send(Reply(status_code, _error_body(err), headers=headers))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            status_code = 499  # the client went away
        except Exception as err:  # a bug: log it, answer 500, keep serving
            log.exception("%s %s failed", method, path)
            status_code = 500
            self._send(Reply(500, {"error": {"message": f"internal error: {type(err).__name__}", "type": "InternalError",
                                             "code": 500}}))
        engine.metrics.request(label, status_code)

    def _read_body(self, method: str) -> dict:
        if method != "POST":
            return {}
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise RequestError("chunked request bodies are not accepted: send Content-Length", http_status=411)
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise RequestError("bad Content-Length") from None
        if length > MAX_BODY_BYTES:
            if length <= 16 * MAX_BODY_BYTES:
                # Read and drop it, so the client can finish sending and then read our 413.
                remaining = length
                while remaining > 0 and (block := self.rfile.read(min(remaining, 65536))):
                    remaining -= len(block)
            else:
                self.close_connection = True  # the unread body would otherwise be parsed as the next request
            raise RequestError(f"request body is {length} bytes; the limit is {MAX_BODY_BYTES}", http_status=413)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw) if raw else {}
        except (ValueError, UnicodeDecodeError) as err:
            raise RequestError(f"malformed JSON: {err}") from None
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        return body

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.body, (dict, list)):
            data = json.dumps(reply.body, ensure_ascii=False).encode()
        else:
            data = str(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_stream(self, stream: Stream) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def write(frame: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                self.wfile.flush()

            try:
                stream.produce(write)
            except (BrokenPipeError, ConnectionResetError):
                raise
            except EdgeLlamaError as err:  # once a stream has begun, an error travels as its last event
                write(sse(_error_body(err), event="error"))
            except Exception as err:
                log.exception("stream %s failed", self.path)
                write(sse({"error": {"message": f"internal error: {type(err).__name__}", "type": "InternalError",
                                     "code": 500}}, event="error"))
            self.wfile.write(b"0\r\n\r\n")
        finally:
            stream.release()


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """HTTP on a UNIX socket, a thread per connection. The socket is created with mode 0660."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, path: str, engine: "Engine"):
        self.engine = engine
        old = os.umask(0o117)  # the socket is born 0660: no window between bind() and chmod()
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)


def read_token(path) -> bytes:
    """The bearer token for the TCP listener: the file must be private (mode 0600 or stricter)."""
    try:
        st = os.stat(path)
        token = open(path, "rb").read().strip()
    except OSError as err:
        raise EdgeLlamaError(f"cannot read token_file {path}: {err.strerror or err}") from None
    if st.st_mode & 0o077:
        raise EdgeLlamaError(f"token_file {path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    if len(token) < 16:
        raise EdgeLlamaError(f"token_file {path} holds fewer than 16 characters")
    return token


class LoopbackHTTPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The optional TCP listener: loopback only (config refuses other addresses), bearer token."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, engine: "Engine", *, token: bytes):
        import ipaddress

        if not ipaddress.ip_address(host).is_loopback:  # config checks too; this is the last line
            raise EdgeLlamaError(f"refusing to listen on {host}: not a loopback address")
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.engine = engine
        self.token = token
        super().__init__((host, port), _Handler)
