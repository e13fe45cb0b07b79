"""The request guard (API key, body limits) on a bare aiohttp app: who gets through, and how."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.security import key_matches, needs_key, request_guard
from app.settings import Settings

KEY = "s3cret-key"


@pytest.fixture
async def client_for() -> AsyncIterator:
    """A client of a tiny app behind the guard; the app records which handlers ran."""
    clients: list[TestClient] = []

    async def make(settings: Settings) -> tuple[TestClient, list[str]]:
        reached: list[str] = []

        async def handler(request: web.Request) -> web.Response:
            reached.append(f"{request.method} {request.path}")
            return web.json_response({"body": (await request.read()).decode()})

        app = web.Application(middlewares=[request_guard(settings)], client_max_size=100)
        for path in ("/events", "/items", "/admin/retrain"):
            app.router.add_post(path, handler)
        for path in ("/recommend/{user}", "/popular", "/health", "/metrics", "/router"):
            app.router.add_get(path, handler)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client, reached

    yield make
    for client in clients:
        await client.close()


def keyed(**overrides) -> Settings:
    return Settings(api_key=KEY, max_body_bytes=100, **overrides)


async def test_without_a_configured_key_writes_and_admin_reads_are_open(client_for):
    client, reached = await client_for(Settings(max_body_bytes=100))
    assert (await client.post("/events", data=b"{}")).status == 200
    assert (await client.get("/metrics")).status == 200
    assert reached == ["POST /events", "GET /metrics"]


@pytest.mark.parametrize("path", ["/events", "/items", "/admin/retrain"])
async def test_a_write_without_the_key_gets_401_and_reaches_no_handler(client_for, path):
    client, reached = await client_for(keyed())
    response = await client.post(path, data=b"{}")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "API key" in (await response.json())["error"]
    assert reached == []


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}, {"X-API-Key": KEY}],
    ids=["bearer", "bearer lower case", "x-api-key"],
)
async def test_the_key_is_accepted_as_a_bearer_token_or_an_x_api_key_header(client_for, headers):
    client, reached = await client_for(keyed())
    assert (await client.post("/events", data=b"{}", headers=headers)).status == 200
    assert reached == ["POST /events"]


@pytest.mark.parametrize(
    "presented", ["", "s3cret", f"{KEY}x", KEY.upper(), f"Basic {KEY}", "s3cret-kéy"]
)
async def test_anything_but_the_exact_key_gets_401(client_for, presented):
    client, reached = await client_for(keyed())
    for headers in ({"X-API-Key": presented}, {"Authorization": presented}):
        assert (await client.post("/events", data=b"{}", headers=headers)).status == 401
    assert reached == []


async def test_public_reads_are_open_by_default_and_admin_reads_need_the_key(client_for):
    client, _ = await client_for(keyed())
    assert (await client.get("/recommend/u1")).status == 200
    assert (await client.get("/popular")).status == 200
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/router")).status == 401
    assert (await client.get("/metrics", headers={"X-API-Key": KEY})).status == 200


async def test_with_keyed_reads_every_read_but_health_needs_the_key(client_for):
    client, _ = await client_for(keyed(api_key_for_reads=True))
    assert (await client.get("/recommend/u1")).status == 401
    assert (await client.get("/recommend/u1", headers={"X-API-Key": KEY})).status == 200
    assert (await client.get("/health")).status == 200


async def test_a_refused_client_is_answered_before_its_body_is_read(client_for):
    client, _ = await client_for(keyed())
    response = await client.post("/events", data=b"x" * 1000)
    assert response.status == 401, "401, not 413: the body of a refused client is never read"


async def test_a_body_over_the_limit_gets_413_whether_declared_or_chunked(client_for):
    client, reached = await client_for(Settings(max_body_bytes=100))

    async def chunked():
        for _ in range(5):
            yield b"x" * 50

    assert (await client.post("/events", data=b"x" * 101)).status == 413
    assert (await client.post("/events", data=chunked())).status == 413
    assert reached == []


async def test_the_handler_gets_the_body_the_guard_read(client_for):
    client, _ = await client_for(Settings(max_body_bytes=100))
    response = await client.post("/events", data=b'{"user_id": "u1"}')
    assert (await response.json())["body"] == '{"user_id": "u1"}'


def test_keys_are_compared_whole_and_exactly():
    assert key_matches(KEY, KEY)
    assert not key_matches(None, KEY)
    assert not key_matches(KEY[:-1], KEY)
    assert not key_matches("ключ", KEY), "a non-ASCII key is refused, not an error"


@pytest.mark.parametrize("path", ["/health", "/livez", "/readyz"])
def test_the_probes_never_need_the_key(path):
    assert not needs_key(keyed(api_key_for_reads=True), "GET", path)


def test_the_demo_page_is_a_public_read_but_opens_no_other_path():
    assert not needs_key(keyed(), "GET", "/")
    assert needs_key(keyed(api_key_for_reads=True), "GET", "/")
    assert needs_key(keyed(), "POST", "/")
    for admin_path in ("/metrics", "/router", "/table/user-state", "/x"):
        assert needs_key(keyed(), "GET", admin_path), admin_path


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/docs/static/swagger-ui.css"])
def test_the_api_description_is_a_public_read(path):
    assert not needs_key(keyed(), "GET", path)
    assert needs_key(keyed(api_key_for_reads=True), "GET", path)


def test_a_sessions_list_is_a_public_read_but_no_other_post_is():
    assert not needs_key(keyed(), "POST", "/recommend")
    assert needs_key(keyed(api_key_for_reads=True), "POST", "/recommend")
    for write in ("/recommend/u1", "/events", "/recommendations"):
        assert needs_key(keyed(), "POST", write), write
