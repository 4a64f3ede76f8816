"""The HTTP API: the OpenAI-compatible endpoints (/v1/...) and the native ones (/ask, /search,
/summarize, /status, /metrics, /health, /openapi.json), as a Starlette app.

Owns request validation, body limits, the JSON shapes, admission to the generation queue, the
error-to-status mapping, cancelling work whose client hung up, and the OpenAPI document (built from
the table that routes requests). Models and stores belong to ``engine.Engine``; sockets, peers and
connection limits to ``server.py``. Starlette is imported only when the app is built.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .config import LENGTHS, METHODS, SEARCH_MODES, one_of
from .errors import BusyError, ClientGoneError, EdgeLlamaError, RequestError
from .render import answer_body, cite

if TYPE_CHECKING:
    from .engine import Deadline, Engine

__all__ = ["ROUTES", "openapi_document", "build_app", "refusal_app", "MAX_BODY_BYTES", "MAX_QUESTION_CHARS",
           "MAX_TOKENS_CAP"]

log = logging.getLogger("edgellama.api")

MAX_BODY_BYTES = 1_000_000
MAX_DRAINED_BYTES = 16 * MAX_BODY_BYTES  # an oversized body up to this is read and dropped, so its 413 is seen
MAX_QUESTION_CHARS = 4_000
MAX_TOKENS_CAP = 1_024
MAX_EMBED_INPUTS = 256


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


def health(engine: "Engine", body: dict, deadline: "Deadline") -> Reply:
    code, report = engine.health()
    loading = report["status"] == "loading"
    return Reply(code, report, headers=(("Retry-After", "1"),) if loading else ())


def status(engine: "Engine", body: dict, deadline: "Deadline") -> Reply:
    return Reply(200, engine.status())


def metrics(engine: "Engine", body: dict, deadline: "Deadline") -> Reply:
    return Reply(200, engine.prometheus(), content_type="text/plain; version=0.0.4")


def openapi(engine: "Engine", body: dict, deadline: "Deadline") -> Reply:
    return Reply(200, openapi_document())


def search(engine: "Engine", body: dict, deadline: "Deadline") -> Reply:
    from .retrieve import scored_chunk_to_dict

    query = _text(body, "query")
    k = _int(body, "k", engine.settings.top_k, low=1, high=100)
    mode = body.get("mode", "hybrid")
    if mode not in SEARCH_MODES:
        raise RequestError(f"'mode' must be {one_of(SEARCH_MODES)}")
    found = engine.search(query=query, k=k, mode=mode)
    return Reply(200, {"results": [scored_chunk_to_dict(f) for f in found]})


def show(engine: "Engine", body: dict, deadline: "Deadline") -> Reply:
    """GET /show?path=CITATION&context=N: the lines a citation names, as indexed. Confined like
    /summarize (an absolute path inside the served folders or indexed); it reads only the index."""
    from dataclasses import replace

    from .show import MAX_CONTEXT, excerpt_to_dict, locate, show_lines

    raw = _text(body, "path")
    context = body.get("context", "0")
    if not (isinstance(context, str) and context.isascii() and context.isdigit()) or int(context) > MAX_CONTEXT:
        raise RequestError(f"'context' must be a whole number of lines, at most {MAX_CONTEXT}")
    with engine.reader() as store:
        location = locate(store, raw)
    location = replace(location, path=engine.summary_path(location.path))
    with engine.reader() as store:
        excerpt = show_lines(store=store, location=location, context=int(context))
    return Reply(200, excerpt_to_dict(excerpt))


def _ask_options(engine: "Engine", body: dict) -> dict:
    s = engine.settings
    return {
        "top_k": _int(body, "top_k", s.top_k, low=1, high=50),
        "max_tokens": _int(body, "max_tokens", s.max_tokens, low=1, high=MAX_TOKENS_CAP),
        "context_tokens": _int(body, "context_tokens", s.context_tokens, low=1,
                               high=engine.plan.n_ctx.value if engine.plan else s.n_ctx),
    }


def ask(engine: "Engine", body: dict, deadline: "Deadline") -> Reply | Stream:
    from .answer import answer_to_dict

    question = _text(body, "question")
    options = _ask_options(engine, body)
    if not _bool(body, "stream", False):
        with engine.admission.slot():
            return Reply(200, answer_to_dict(engine.ask(question=question, deadline=deadline, **options)))
    slot = engine.admission.slot()
    slot.__enter__()  # admitted before the 200 goes out, so a full queue is still a clean 503

    def produce(write: Callable[[bytes], None]) -> None:
        answer = engine.ask(question=question, on_token=lambda t: write(sse({"text": t}, event="token")),
                            deadline=deadline, **options)
        write(sse(answer_to_dict(answer), event="answer"))

    return Stream(produce, lambda: slot.__exit__(None, None, None))


def summarize(engine: "Engine", body: dict, deadline: "Deadline") -> Reply | Stream:
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
            return Reply(200, summary_to_dict(final_summary(engine.summarize(**request, deadline=deadline))))
    slot = engine.admission.slot()
    slot.__enter__()

    def produce(write: Callable[[bytes], None]) -> None:
        for piece in engine.summarize(**request, deadline=deadline):
            event, data = piece_to_event(piece)
            write(sse(data, event=event))

    return Stream(produce, lambda: slot.__exit__(None, None, None))


def models(engine: "Engine", body: dict, deadline: "Deadline") -> Reply:
    created = int(engine.started_at)
    return Reply(200, {"object": "list", "data": [
        {"id": engine.generator.name, "object": "model", "created": created, "owned_by": "edgellama"},
        {"id": engine.embedder.name, "object": "model", "created": created, "owned_by": "edgellama"},
    ]})


def embeddings(engine: "Engine", body: dict, deadline: "Deadline") -> Reply:
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


def chat_completions(engine: "Engine", body: dict, deadline: "Deadline") -> Reply | Stream:
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
            answer = answer_to_dict(engine.ask(question=question, max_tokens=max_tokens, on_token=on_token,
                                               deadline=deadline))
            usage = {"prompt_tokens": answer["timings"]["prompt_tokens"],
                     "completion_tokens": answer["timings"]["completion_tokens"]}
            return _cited_text(answer), usage, answer["sources"] if answer["kind"] != "abstain" else []
        text, usage = engine.chat(messages, max_tokens=max_tokens, on_token=on_token, deadline=deadline)
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
        # Only a verified answer streams; its evidence and the sources line follow as the rest.
        rest = text[len(streamed):] if text.startswith(streamed) else ("\n\n" + text if streamed else text)
        if rest:
            write(chunk({"content": rest}))
        write(chunk({}, "stop", sources=sources))
        write(sse("[DONE]"))

    return Stream(produce, lambda: slot.__exit__(None, None, None))


# One table drives dispatch and the OpenAPI document, so they cannot drift apart.
# path -> (method, handler, needs the models loaded, summary)
ROUTES: dict[str, tuple[str, Callable, bool, str]] = {
    "/health": ("GET", health, False, "503 while loading or when the database does not answer, 200 when the "
                                      "daemon can answer"),
    "/status": ("GET", status, False, "index counts, queue, watcher state, last errors, resource plan"),
    "/metrics": ("GET", metrics, False, "Prometheus text metrics"),
    "/openapi.json": ("GET", openapi, False, "this document"),
    "/search": ("POST", search, True, "the chunks that best match a query, with file and lines"),
    "/ask": ("POST", ask, True, "a cited answer from the indexed documents; stream=true for events"),
    "/show": ("GET", show, True, "the lines a citation names ('path' such as /abs/file.md:15-25 or "
                                 "/abs/file.pdf:page 3), as indexed; 'context' lines around them"),
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


# GET endpoints that take query parameters (the rest take none).
_QUERY_PARAMETERS: dict[str, list[dict]] = {
    "/show": [
        {"name": "path", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1,
                                                                      "maxLength": MAX_QUESTION_CHARS},
         "description": "absolute path of an indexed file, optionally with :LINES, :page N or :page N:LINES"},
        {"name": "context", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 0, "maximum": 1000}},
    ],
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
        if path in _QUERY_PARAMETERS:
            op["parameters"] = _QUERY_PARAMETERS[path]
            responses.update({"400": error, "403": error, "404": error})
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




# -- the ASGI app ---------------------------------------------------------------------------------


def _internal_error(err: Exception) -> dict:
    return {"error": {"message": f"internal error: {type(err).__name__}", "type": "InternalError", "code": 500}}


def _reply_response(reply: Reply):
    from starlette.responses import Response

    if isinstance(reply.body, (dict, list)):
        data = json.dumps(reply.body, ensure_ascii=False).encode()
    else:
        data = str(reply.body).encode()
    response = Response(data, status_code=reply.status)
    response.raw_headers = _raw_headers(("Content-Type", reply.content_type), ("Content-Length", str(len(data))),
                                        *reply.headers)
    return response


def _raw_headers(*headers: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as given: names in their usual case (Starlette would lower them, which HTTP allows
    but a client matching names exactly would miss) and the content type without an added charset."""
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _error_response(err: EdgeLlamaError, *, close: bool = False):
    headers: tuple[tuple[str, str], ...] = ()
    if isinstance(err, BusyError):
        headers += (("Retry-After", str(err.retry_after)),)
    if close:
        headers += (("Connection", "close"),)
    return _reply_response(Reply(err.http_status, _error_body(err), headers=headers))


async def _read_json(request) -> dict:
    """The JSON object a POST carries, read within the limits. An oversized body is read and
    dropped up to 16 MB, so a client still sending it can read the 413; past that the connection
    closes. h11 frames every request, so an unread body never becomes the next request."""
    if request.method != "POST":
        return {}
    try:
        declared = int(request.headers.get("content-length", "0"))
    except ValueError:
        raise RequestError("bad Content-Length") from None
    if declared > MAX_DRAINED_BYTES:
        raise _Oversized(declared)
    raw, size = bytearray(), 0
    async for block in request.stream():
        size += len(block)
        if size > MAX_DRAINED_BYTES:
            raise _Oversized(size)
        if size <= MAX_BODY_BYTES:
            raw += block
    if size > MAX_BODY_BYTES:
        raise RequestError(f"request body is {size} bytes; the limit is {MAX_BODY_BYTES}", http_status=413)
    try:
        body = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(f"malformed JSON: {err}") from None
    except RecursionError:
        raise RequestError("malformed JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


class _Oversized(RequestError):
    """A body past what we drain: answered 413, then the connection closes."""

    def __init__(self, size: int):
        super().__init__(f"request body is {size} bytes; the limit is {MAX_BODY_BYTES}", http_status=413)


async def _run(request, deadline: "Deadline", work: Callable[[], Any]) -> Any:
    """``work()`` in a worker thread, while this task watches the connection: when the client
    hangs up, the deadline says so and the work stops at its next check (a token, a model call)."""
    import anyio

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        deadline.client_gone = True

    outcome: dict[str, Any] = {}
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            outcome["value"] = await anyio.to_thread.run_sync(work)
        except Exception as err:  # raised outside the group, which would wrap it in an ExceptionGroup
            outcome["error"] = err
        finally:
            group.cancel_scope.cancel()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _event_stream(engine: "Engine", stream: Stream, deadline: "Deadline", state: dict):
    """Server-sent events from a producer thread, started at once: its frames cross to the event
    loop through a queue. When the response ends early (the client hung up) the producer stops at
    its next token; once a stream has begun, an error travels as its last event."""
    import asyncio

    from starlette.responses import StreamingResponse

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server is gone
            deadline.client_gone = True

    def write(frame: bytes) -> None:
        if deadline.client_gone:
            raise ClientGoneError("the client went away")
        put(frame)

    def produce() -> None:
        try:
            stream.produce(write)
        except ClientGoneError:
            pass
        except EdgeLlamaError as err:
            put(sse(_error_body(err), event="error"))
        except Exception as err:
            log.exception("stream %s failed", state["path"])
            put(sse(_internal_error(err), event="error"))
        finally:
            stream.release()
            engine.requests.__exit__(None, None, None)
            put(None)

    finished = False

    async def frames():
        nonlocal finished
        while (frame := await queue.get()) is not None:
            yield frame
        finished = True

    response = StreamingResponse(frames())
    response.raw_headers = _raw_headers(("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"))

    async def respond(scope, receive, send) -> None:
        try:
            await response(scope, receive, send)
        finally:
            if not finished:  # cancelled by a disconnect, or never begun
                deadline.client_gone = True
                state["gone"] = True

    engine.requests.__enter__()
    threading.Thread(target=produce, name="edgellama-stream", daemon=True).start()
    return respond


def build_app(engine: "Engine", *, token: Callable[[], bytes] | None = None):
    """The ASGI app over ``engine``. With ``token`` (the TCP listener), every request must carry
    ``Authorization: Bearer <token()>``; ``token`` is read per request, so SIGHUP can change it."""
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.routing import Route

    async def endpoint(request):
        path = request.url.path
        _, handler, needs_models, _ = ROUTES[path]
        try:
            # A GET's query parameters are its body (GET /show); the rest read JSON.
            body = dict(request.query_params) if request.method == "GET" else await _read_json(request)
            if needs_models and not engine.ready:
                raise BusyError("the daemon is still loading its models", retry_after=1)
            deadline = engine.deadline()
            engine.requests.__enter__()
            try:
                result = await _run(request, deadline, lambda: handler(engine, body, deadline))
            finally:
                engine.requests.__exit__(None, None, None)
            if isinstance(result, Stream):
                return _event_stream(engine, result, deadline, request.scope["edgellama"])
            return _reply_response(result)
        except (ClientGoneError, ClientDisconnect):  # hung up, or cut off while sending its body
            request.scope["edgellama"]["gone"] = True
            return _reply_response(Reply(499, {}))  # nobody reads it; uvicorn drops it
        except _Oversized as err:
            return _error_response(err, close=True)
        except EdgeLlamaError as err:
            return _error_response(err)
        except Exception as err:  # a bug: log it, answer 500, keep serving
            log.exception("%s %s failed", request.method, path)
            return _reply_response(Reply(500, _internal_error(err)))

    async def not_found(request, exc):
        return _error_response(RequestError(f"no such endpoint: {request.url.path}", http_status=404))

    async def wrong_method(request, exc):
        expected = ROUTES[request.url.path][0]
        return _error_response(RequestError(f"{request.url.path} takes {expected}, not {request.method}",
                                            http_status=405))

    app = Starlette(routes=[Route(path, endpoint, methods=[method]) for path, (method, *_) in ROUTES.items()],
                    exception_handlers={404: not_found, 405: wrong_method})
    if token is not None:
        app = _bearer_token(app, token)
    return _observed(engine, app)


def _bearer_token(app, token: Callable[[], bytes]):
    unauthorized = RequestError("unauthorized: the TCP listener needs 'Authorization: Bearer <token>'", http_status=401)

    async def checked(scope, receive, send):
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + token()):
                await _error_response(unauthorized)(scope, receive, send)
                return
        await app(scope, receive, send)

    return checked


def refusal_app(engine: "Engine"):
    """What a connection refused by the peer check gets for each request: 403."""
    forbidden = RequestError("forbidden: this user may not use the daemon", http_status=403)

    async def refuse(scope, receive, send):
        if scope["type"] == "http":
            await _error_response(forbidden)(scope, receive, send)

    return _observed(engine, refuse)


def _observed(engine: "Engine", app):
    """Counts every request in /metrics by endpoint and status (499: the client hung up)."""

    async def observed(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        state = scope["edgellama"] = {"status": 0, "gone": False, "path": scope["path"]}

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        try:
            await app(scope, receive, sending)
        finally:
            label = scope["path"] if scope["path"] in ROUTES else "other"
            engine.metrics.request(label, 499 if state["gone"] or not state["status"] else state["status"])

    return observed
