"""The ASGI middleware that gives each request an id, limits its body and records metrics.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: that one costs a task and a stream
per request, a large share of a sub-millisecond prediction.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException

from healthpredict.serving.metrics import ServiceMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
REQUEST_ID_HEADER = "x-request-id"
# Process prefix + counter: unique, and far cheaper than uuid4 (os.urandom on every request).
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ServiceMiddleware:
    """Request id, body size limit and request metrics for every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, max_body_bytes: int) -> None:
        """Wrap ``app``."""
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        try:
            if _declared_length(scope) > self.max_body_bytes:
                await _send_problem(send_with_id, 413, self._too_large())
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.observe(
                endpoint, scope["method"], status[0], time.perf_counter() - started
            )

    def _too_large(self) -> str:
        return f"request body larger than {self.max_body_bytes} bytes"

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that stops a streamed (chunked) body at the limit."""
        seen = [0]

        async def limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body_bytes:
                    # FastAPI re-raises HTTPException from body reading as the response.
                    raise HTTPException(413, self._too_large())
            return message

        return limited


def _request_id(scope: Scope) -> str:
    """The caller's X-Request-ID when it is safe to echo and log, else a new one."""
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            if _SAFE_REQUEST_ID.match(text):
                return text
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _send_problem(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail, "errors": []}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
