"""A real HTTP server on 127.0.0.1 that speaks three LLM wire formats with scripted answers.

Endpoints (matched by path suffix, so any base-URL prefix works):
  POST .../chat/completions  -> "chat"       (OpenAI chat completions; also Gemini's OpenAI endpoint)
  POST .../responses         -> "responses"  (OpenAI responses API)
  POST .../messages          -> "messages"   (Anthropic messages API)
  GET  .../models            -> the served models' list (OpenAI format), set by `FakeProvider.serve_models`

Each endpoint has a queue of scripted `Reply`s, consumed in order. `Reply.structured(data)` answers a
structured-output request in the endpoint's own wire format: the JSON as the message content (OpenAI chat
`response_format`, responses `text.format`), or a `tool_use` block calling the request's tool with `data`
as its input (Anthropic). An empty queue answers HTTP 418
with "fakeprovider: no scripted reply", a non-retryable error, so a test that under-scripts fails
loudly instead of hanging. Replies added with `when=` (a test of the request body) form a queue of their
own, used for the requests that match it, so concurrent callers of one endpoint can be told apart.
A reply can be held until a `threading.Event` is set (`hold=`) and can set one once it is sent
(`release=`): a test holds some calls in flight until another call has been answered. Every request is
recorded (path, headers, JSON body, how many others were in flight when it arrived) and the server tracks
the largest number of requests it was handling at once. It runs in a background thread.

A reply can be held until the server has received a number of requests (`after_requests`), so a test can
cancel a call that is known to be in flight; `FakeProvider(prompt_cache=True)` computes each answer's usage
from its prompt with a simulated provider prompt cache (`PromptCache`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Endpoint = Literal["chat", "responses", "messages"]
Matcher = Callable[[Any], bool]  # a test of a request's decoded JSON body
HOLD_LIMIT_S = 60.0  # a held reply answers anyway after this long (counted in `hold_timeouts`), never hangs
_SUFFIXES: tuple[tuple[str, Endpoint], ...] = (
    ("/chat/completions", "chat"),
    ("/responses", "responses"),
    ("/messages", "messages"),
)


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build with `Reply.answer`, `Reply.error` or `Reply.garbage`."""

    kind: Literal["text", "json", "error", "garbage"]
    text: str = ""
    data: Any = None  # kind "json": the structured answer
    thinking: str = ""  # Anthropic: a thinking block before the text
    input_tokens: int = 10
    output_tokens: int = 5
    cached_tokens: int = 0  # prompt tokens read from the cache (part of input_tokens)
    cache_write_tokens: int = 0  # Anthropic: prompt tokens written to the cache (part of input_tokens)
    reasoning_tokens: int = 0
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_type: str = "application/json"
    delay_s: float = 0.0  # wait this long before answering (longer than a client timeout = a hang)
    after_requests: int = 0  # hold the answer until the server has received this many requests in all
    hold: threading.Event | None = None  # answer only once this is set
    release: threading.Event | None = None  # set this once the answer is sent

    @classmethod
    def answer(cls, text: str, **kw: Any) -> Reply:
        return cls(kind="text", text=text, **kw)

    @classmethod
    def structured(cls, data: Any, **kw: Any) -> Reply:
        return cls(kind="json", text=json.dumps(data), data=data, **kw)

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "scripted error",
        retry_after: float | None = None,
        delay_s: float = 0.0,
    ) -> Reply:
        headers = (("retry-after", f"{retry_after:g}"),) if retry_after is not None else ()
        return cls(kind="error", status=status, text=message, headers=headers, delay_s=delay_s)

    @classmethod
    def garbage(
        cls, body: bytes = b"<html>upstream proxy error</html>", content_type: str = "application/json"
    ) -> Reply:
        return cls(kind="garbage", body=body, content_type=content_type)


@dataclass(frozen=True)
class RecordedRequest:
    endpoint: Endpoint | None
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # the decoded JSON body, or None when it was not JSON
    received_at: float
    others_in_flight: int = 0  # requests the server was already handling when this one arrived


@dataclass
class _State:
    queues: dict[Endpoint, deque[Reply]] = field(
        default_factory=lambda: {"chat": deque(), "responses": deque(), "messages": deque()}
    )
    requests: list[RecordedRequest] = field(default_factory=list)
    routes: list[tuple[Endpoint, Matcher, deque[Reply]]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    hold_timeouts: int = 0
    holds: list[threading.Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)  # notified on every request received
    stopping: threading.Event = field(default_factory=threading.Event)
    prompt_cache: PromptCache | None = None
    models: tuple[str, ...] = ("fake-model",)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)


def fake_tokens(text: str) -> int:
    """The fake tokenizer of the prompt cache simulation: one token per 4 bytes of UTF-8."""
    return -(-len(text.encode()) // 4)


class PromptCache:
    """Simulates the providers' prompt caches, so usage comes from the prompts themselves.

    Anthropic (explicit): the prompt up to the last block marked `cache_control` (system prompt included)
    is looked up; a hit is read from the cache, a miss is written to it. OpenAI (automatic): the longest
    prefix shared with an earlier prompt is read, in whole blocks of 128 tokens from 1,024 tokens on. As at
    the providers, an entry is usable only once the request that wrote it has been answered, so requests
    sent at the same time all miss.
    """

    def __init__(self) -> None:
        self.anthropic: set[str] = set()
        self.openai: list[str] = []

    def usage(self, endpoint: Endpoint, body: Any) -> tuple[int, int, int, Callable[[], None]]:
        """(input tokens, cache reads, cache writes, what to do once answered)."""
        if endpoint == "messages":
            return self._anthropic(body)
        text = _flat_prompt(body)
        shared = max((_common_prefix(text, seen) for seen in self.openai), default=0)
        tokens = fake_tokens(text[:shared]) if shared else 0
        cached = tokens // 128 * 128 if tokens >= 1024 else 0
        return fake_tokens(text), cached, 0, lambda: self.openai.append(text)

    def _anthropic(self, body: Any) -> tuple[int, int, int, Callable[[], None]]:
        system = body.get("system") or ""
        parts = [system if isinstance(system, str) else json.dumps(system)]
        prefix = ""
        for message in body.get("messages", []):
            content = message["content"]
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for block in blocks:
                parts.append(block.get("text", ""))
                if "cache_control" in block:
                    prefix = "\n".join(parts)
        total = fake_tokens("\n".join(parts))
        if not prefix:
            return total, 0, 0, lambda: None
        if prefix in self.anthropic:
            return total, fake_tokens(prefix), 0, lambda: None
        return total, 0, fake_tokens(prefix), lambda: self.anthropic.add(prefix)


def _flat_prompt(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    items = body.get("messages") or body.get("input") or []
    texts = [body.get("instructions") or ""] + [str(m.get("content", "")) for m in items if isinstance(m, dict)]
    return "\n".join(texts)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _chat_body(reply: Reply, model: str, request: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        },
    }


def _responses_body(reply: Reply, model: str, request: Any) -> dict[str, Any]:
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [
            {"type": "reasoning", "id": "rs_fake", "summary": []},
            {
                "type": "message",
                "id": "msg_fake",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            },
        ],
        "usage": {
            "input_tokens": reply.input_tokens,
            "input_tokens_details": {"cached_tokens": reply.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": reply.input_tokens + reply.output_tokens,
        },
    }


def _messages_body(reply: Reply, model: str, request: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.thinking:
        content.append({"type": "thinking", "thinking": reply.thinking, "signature": "sig-fake"})
    tools = request.get("tools") if isinstance(request, dict) else None
    if reply.kind == "json" and tools:
        tool = {"type": "tool_use", "id": "toolu_fake", "name": tools[0]["name"], "input": reply.data}
        content.append(tool)
    else:
        content.append({"type": "text", "text": reply.text})
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if content[-1]["type"] == "tool_use" else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens - reply.cached_tokens - reply.cache_write_tokens,
            "cache_read_input_tokens": reply.cached_tokens,
            "cache_creation_input_tokens": reply.cache_write_tokens,
            "output_tokens": reply.output_tokens,
        },
    }


_BODIES = {"chat": _chat_body, "responses": _responses_body, "messages": _messages_body}


def _error_body(endpoint: Endpoint | None, status: int, message: str) -> dict[str, Any]:
    kind = "rate_limit_error" if status == 429 else "api_error" if status >= 500 else "invalid_request_error"
    if endpoint == "messages":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": str(status)}}


def _queue_for(state: _State, endpoint: Endpoint | None, body: Any) -> deque[Reply] | None:
    """The first route whose test the body passes, else the endpoint's own queue."""
    if endpoint is None:
        return None
    for route_endpoint, matches, queue in state.routes:
        if route_endpoint == endpoint and matches(body):
            return queue
    return state.queues[endpoint]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        return

    def do_GET(self) -> None:
        if not self.path.split("?", 1)[0].endswith("/models"):
            self._send(404, _error_body(None, 404, f"fakeprovider: no GET {self.path}"))
            return
        with self.server.state.lock:
            models = self.server.state.models
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fakeprovider"} for m in models]
        self._send(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        path = self.path.split("?", 1)[0]
        endpoint = next((ep for suffix, ep in _SUFFIXES if path.endswith(suffix)), None)
        with state.lock:
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.requests.append(RecordedRequest(endpoint, path, headers, body, time.time(), state.in_flight))
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            queue = _queue_for(state, endpoint, body)
            reply = queue.popleft() if queue else None
            state.arrived.notify_all()
        try:
            self._answer(endpoint, reply, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired during our delay): nothing left to answer
        finally:
            with state.lock:
                state.in_flight -= 1

    def _answer(self, endpoint: Endpoint | None, reply: Reply | None, body: Any) -> None:
        if reply is None:
            what = endpoint or self.path
            self._send(418, _error_body(endpoint, 418, f"fakeprovider: no scripted reply for {what}"))
            return
        state = self.server.state
        answered: Callable[[], None] = lambda: None  # noqa: E731
        if state.prompt_cache is not None and reply.kind == "text" and endpoint is not None:
            # looked up on arrival, stored once answered: requests in flight together all miss
            total, read, written, answered = state.prompt_cache.usage(endpoint, body)
            reply = replace(
                reply, input_tokens=total, cached_tokens=read, cache_write_tokens=written,
                output_tokens=fake_tokens(reply.text),
            )  # fmt: skip
        if reply.after_requests:
            with state.arrived:
                state.arrived.wait_for(
                    lambda: len(state.requests) >= reply.after_requests or state.stopping.is_set()
                )
        if reply.delay_s > 0 and state.stopping.wait(reply.delay_s):
            return  # server shutting down
        if reply.hold is not None:
            state = self.server.state
            with state.lock:
                state.holds.append(reply.hold)  # so that `stop` can wake it
            if not reply.hold.wait(HOLD_LIMIT_S):
                with state.lock:
                    state.hold_timeouts += 1
            if state.stopping.is_set():
                return
        if reply.kind == "garbage":
            self._send_bytes(200, reply.body, reply.content_type, ())
        elif reply.kind == "error":
            self._send(reply.status, _error_body(endpoint, reply.status, reply.text), reply.headers)
        else:
            assert endpoint is not None
            model = body.get("model", "fake-model") if isinstance(body, dict) else "fake-model"
            self._send(200, _BODIES[endpoint](reply, model, body), reply.headers)
            answered()
        if reply.release is not None:
            reply.release.set()

    def _send(self, status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_bytes(
        self, status: int, data: bytes, content_type: str, headers: tuple[tuple[str, str], ...]
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog (5) drops connections when many calls start at once; a dropped SYN is
    # retried by the kernel only a second later, which would make a test's concurrency depend on timing.
    request_queue_size = 128
    state: _State


class FakeProvider:
    """Start with `start()` (or use as a context manager); script with `add(endpoint, *replies)`."""

    def __init__(self, *, prompt_cache: bool = False) -> None:
        """prompt_cache: usage is computed from each prompt with a simulated provider cache (`PromptCache`),
        whatever the replies script."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(prompt_cache=PromptCache() if prompt_cache else None)
        # serve_forever checks for shutdown between selects: a short interval keeps teardown quick
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fakeprovider",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve_models(self, *names: str) -> None:
        """What GET .../models lists."""
        with self._server.state.lock:
            self._server.state.models = names

    def add(self, endpoint: Endpoint, *replies: Reply, when: Matcher | None = None) -> None:
        """Script replies; with `when`, only for requests whose body passes it (checked in the order added)."""
        with self._server.state.lock:
            if when is None:
                self._server.state.queues[endpoint].extend(replies)
            else:
                self._server.state.routes.append((endpoint, when, deque(replies)))

    def requests(self, endpoint: Endpoint | None = None) -> list[RecordedRequest]:
        with self._server.state.lock:
            return [r for r in self._server.state.requests if endpoint is None or r.endpoint == endpoint]

    @property
    def max_in_flight(self) -> int:
        with self._server.state.lock:
            return self._server.state.max_in_flight

    @property
    def hold_timeouts(self) -> int:
        """Held replies that were answered because their event was never set."""
        with self._server.state.lock:
            return self._server.state.hold_timeouts

    def wait_for_requests(self, count: int, timeout_s: float = 60.0) -> bool:
        """Block until the server has received `count` requests in all (False if `timeout_s` passed first)."""
        state = self._server.state
        with state.arrived:
            return state.arrived.wait_for(lambda: len(state.requests) >= count, timeout=timeout_s)

    def pending(self, endpoint: Endpoint) -> int:
        with self._server.state.lock:
            return len(self._server.state.queues[endpoint])

    def start(self) -> FakeProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.state.stopping.set()  # wakes handlers that are in a scripted delay
        with self._server.state.lock:
            for hold in self._server.state.holds:
                hold.set()  # and those holding a reply
            self._server.state.arrived.notify_all()  # and those waiting for more requests
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
