"""Access control and request hardening for the HTTP API, as one aiohttp middleware.

With ``RECSYS_API_KEY`` set, a request needs the key, sent as ``Authorization: Bearer <key>``
or ``X-API-Key: <key>``, when it can change something (any method but GET, HEAD and OPTIONS:
``POST /events``, ``POST /items``, ``POST /admin/...``; not ``POST /recommend``, a session's
list, which stores nothing) or reads something outside the public
read API (Faust's own pages, ``/metrics``). The public reads need it only with
``RECSYS_API_KEY_FOR_READS``; ``/health``, ``/livez`` and ``/readyz`` stay open for probes.
Keys are compared in constant time.

The middleware also reads every request body before any view runs, within a size limit (413)
and a time limit (408): a slow or oversized upload is refused without tying up a view. The view
then gets the body aiohttp cached.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from app.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS = frozenset({"/health", "/livez", "/readyz"})
PUBLIC_READ_PREFIXES = ("/recommend/", "/users/", "/similar/", "/popular", "/items", "/docs/")
"""The read API and its description. Any other path a GET reaches (Faust's built-in pages)
counts as admin."""
PUBLIC_READ_PATHS = frozenset({"/", "/openapi.json", "/demo/play"})
"""Public reads matched exactly: the demo page (as a prefix, "/" would open every path)."""
READ_ONLY_POSTS = frozenset({"/recommend"})
"""POSTs that are reads: a session's list takes the visitor's actions in the body and stores
nothing, so a shop's pages call it like ``GET /recommend/{user_id}``."""


def presented_key(request: web.Request) -> str | None:
    """The key a request carries in ``Authorization: Bearer`` or ``X-API-Key``, if any."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("X-API-Key")


def key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing reveals nothing about the key."""
    if presented is None:
        return False
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8")
    )


def is_public_read(method: str, path: str) -> bool:
    if method == "POST":
        return path in READ_ONLY_POSTS
    return method in SAFE_METHODS and (
        path in PUBLIC_READ_PATHS
        or any(
            path == prefix.rstrip("/") or path.startswith(prefix.rstrip("/") + "/")
            for prefix in PUBLIC_READ_PREFIXES
        )
    )


def client_headers(settings: Settings) -> dict[str, str]:
    """What the product's own clients (``feed``) send: the API key, when one is set."""
    return {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}


def needs_key(settings: Settings, method: str, path: str) -> bool:
    """Whether this request must carry the API key under these settings."""
    if not settings.api_key or path in OPEN_PATHS:
        return False
    return not is_public_read(method, path) or settings.api_key_for_reads


def _refusal(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def request_guard(settings: Settings) -> Middleware:
    """The middleware: API key first (no body is read for a refused client), then the body."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if needs_key(settings, request.method, request.path) and not key_matches(
            presented_key(request), settings.api_key
        ):
            return _refusal(
                401,
                "authorization: send the API key as 'Authorization: Bearer <key>' or 'X-API-Key'",
                **{"WWW-Authenticate": "Bearer"},
            )
        if request.body_exists:
            limit = settings.max_body_bytes
            if (request.content_length or 0) > limit:
                return _refusal(413, f"body: larger than {limit} bytes")
            try:
                async with asyncio.timeout(settings.body_read_timeout):
                    await request.read()
            except TimeoutError:
                response = _refusal(
                    408, f"body: not received within {settings.body_read_timeout:g} s"
                )
                response.force_close()
                return response
            except web.HTTPRequestEntityTooLarge:
                return _refusal(413, f"body: larger than {limit} bytes")
        return await handler(request)

    return guard
