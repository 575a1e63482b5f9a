"""Request-level protections, as plain ASGI middleware (no framework version needed).

- HostCheck: refuses Host headers other than the allowed names. A server on 127.0.0.1
  is otherwise reachable from any web page through DNS rebinding.
- BodyLimit: refuses request bodies over a byte limit, by Content-Length up front and by
  counting what actually arrives (chunked uploads have no Content-Length).
- OriginCheck: refuses state-changing requests (POST...) sent by a page from another origin;
  the page could not read the answer, but the server would still do the work.
- SecurityHeaders: nosniff, no referrer, no framing, on every response.
- SafeJSONResponse: JSON bodies stay valid UTF-8 when a file name is not (U+FFFD).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.paths import printable

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True when binding to ``host`` keeps the server on this machine only."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: may resolve anywhere


def _host_name(header: str) -> str:
    """'example.org:8000' -> 'example.org'; '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


async def _error(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    await JSONResponse({"error": message}, status_code=status)(scope, receive, send)


class HostCheck:
    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {h.lower().strip("[]") for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = _host_name(Headers(scope=scope).get("host", ""))
            if host not in self.allowed:
                await _error(
                    scope,
                    receive,
                    send,
                    400,
                    f"host {host!r} not allowed; this server answers to: "
                    f"{', '.join(sorted(self.allowed))}",
                )
                return
        await self.app(scope, receive, send)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class OriginCheck:
    """A POST whose Origin header is not this server's own is refused (403). Requests without
    Origin (curl, scripts) and same-origin ones from the page itself go through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method", "GET") not in SAFE_METHODS:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            host = headers.get("host", "")
            if origin is not None and not _same_origin(origin, host, scope.get("scheme", "http")):
                await _error(
                    scope,
                    receive,
                    send,
                    403,
                    f"cross-origin request refused: Origin {origin!r} is not this server",
                )
                return
        await self.app(scope, receive, send)


def _same_origin(origin: str, host: str, scheme: str) -> bool:
    """True when the Origin header names the host and port the request was sent to (each
    side's port defaulting by its own scheme: https://host is not http://host)."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (sandboxed frames, file: pages) or garbage

    def default(s: str) -> str:
        return "443" if s in ("https", "wss") else "80"

    return _with_port(parts.netloc, default(parts.scheme)) == _with_port(host, default(scheme))


def _with_port(netloc: str, default: str) -> str:
    netloc = netloc.strip().lower()
    if netloc.endswith("]") or ":" not in netloc.rsplit("]", 1)[-1]:
        return f"{netloc}:{default}"
    return netloc


class SafeJSONResponse(JSONResponse):
    """JSONResponse whose body is always valid UTF-8: a path that is not valid UTF-8
    (surrogate escapes) would otherwise fail to encode and turn the answer into a 500."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return printable(text).encode("utf-8")


class BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so frameworks pass it through as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit:,} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _error(scope, receive, send, 413, BodyTooLarge(self.max_bytes).detail)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _error(scope, receive, send, 413, exc.detail)


class SecurityHeaders:
    HEADERS = (
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.HEADERS:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
