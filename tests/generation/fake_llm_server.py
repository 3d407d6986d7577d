"""A loopback HTTP server that speaks the OpenAI chat-completions and Anthropic messages
protocols, answering from a script, for testing the real SDK clients end to end.

``POST /v1/chat/completions`` answers as OpenAI does (``choices[0].message.content``,
``finish_reason``, ``usage.prompt_tokens``/``completion_tokens``, errors as
``{"error": {"message", "type", ...}}``); ``POST /v1/messages`` as Anthropic does
(``content[0].text``, ``stop_reason``, ``usage.input_tokens``/``output_tokens``, errors
as ``{"type": "error", "error": {...}}``). Each request takes the next behaviour from the
script: a :class:`Reply`, an :class:`HttpError` (429 with ``retry-after``, 500, 401 ...),
a :class:`Respond` (a function of the prompt) or a :class:`Hang` (holds the connection,
bounded, so the server thread always ends).
Every request is recorded (path, headers, JSON body) for assertions.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    text: str
    finish: str = "stop"  # "stop" or "length" (mapped to end_turn / max_tokens for Anthropic)
    prompt_tokens: int | None = None  # None: len(prompt) // 4
    completion_tokens: int | None = None  # None: len(text) // 4


@dataclass(frozen=True)
class HttpError:
    status: int
    message: str
    headers: dict = field(default_factory=dict)
    echo_auth: bool = False  # append the request's credentials to the message (a careless server)


@dataclass(frozen=True)
class Respond:
    """Answer from the prompt: ``fn(prompt)`` returns the :class:`Reply` (or another
    behaviour). With ``repeat``, it stays at the head of the script and answers every
    later request too (a model that reads what it is sent)."""

    fn: object
    repeat: bool = False


@dataclass(frozen=True)
class Hang:
    seconds: float  # how long the connection is held before a (useless) answer


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict
    body: dict

    @property
    def prompt(self) -> str:
        content = self.body["messages"][-1]["content"]
        if isinstance(content, list):
            return "".join(block.get("text", "") for block in content)
        return content


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                429: "rate_limit_error", 500: "api_error", 503: "overloaded_error"}


class FakeLLMServer:
    """Use as a context manager; ``script(...)`` queues behaviours, ``requests`` records."""

    def __init__(self) -> None:
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.requests: list[Recorded] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # keep test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                record = Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with outer._lock:
                    outer.requests.append(record)
                    behaviour = outer._queue.popleft() if outer._queue else HttpError(500, "script exhausted")
                    if isinstance(behaviour, Respond) and behaviour.repeat:
                        outer._queue.appendleft(behaviour)
                if isinstance(behaviour, Respond):
                    behaviour = behaviour.fn(record.prompt)
                outer._answer(self, record, behaviour)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )

    # -- lifecycle --------------------------------------------------------------

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._released.set()  # wake any hanging handler
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    def script(self, *behaviours) -> None:
        with self._lock:
            self._queue.extend(behaviours)

    # -- answers ----------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler, record: Recorded, behaviour) -> None:
        anthropic = record.path.rstrip("/").endswith("/v1/messages")
        if not anthropic and not record.path.rstrip("/").endswith("/chat/completions"):
            behaviour = HttpError(404, f"no route {record.path}")
        if isinstance(behaviour, Hang):
            self._released.wait(behaviour.seconds)
            behaviour = Reply("too late")
        try:
            if isinstance(behaviour, HttpError):
                message = behaviour.message
                if behaviour.echo_auth:
                    message += f" (credentials sent: {record.headers.get('authorization') or record.headers.get('x-api-key')})"
                kind = _ERROR_TYPES.get(behaviour.status, "api_error")
                if anthropic:
                    payload = {"type": "error", "error": {"type": kind, "message": message}}
                else:
                    payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
                self._send(handler, behaviour.status, payload, behaviour.headers)
                return
            prompt_tokens = behaviour.prompt_tokens if behaviour.prompt_tokens is not None else len(record.prompt) // 4
            completion_tokens = (
                behaviour.completion_tokens if behaviour.completion_tokens is not None else len(behaviour.text) // 4
            )
            model = record.body.get("model", "fake-model")
            if anthropic:
                payload = {
                    "id": f"msg_{len(self.requests)}",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": behaviour.text}],
                    "stop_reason": "max_tokens" if behaviour.finish == "length" else "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
                }
            else:
                payload = {
                    "id": f"chatcmpl-{len(self.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": behaviour.text},
                            "finish_reason": behaviour.finish,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
            self._send(handler, 200, payload, {})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout): nothing to tell it

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        for k, v in headers.items():
            handler.send_header(k, str(v))
        handler.end_headers()
        handler.wfile.write(data)
