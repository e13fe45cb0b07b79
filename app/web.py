"""HTTP API served by Faust's web server: ingestion, recommendations, state and health."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka.errors import KafkaError
from faust import web
from redis.exceptions import RedisError
from yarl import URL

from app import ranker
from app.agents import recommender
from app.events import InvalidEvent, identifier, parse_request
from app.faust_app import app, models, settings, store
from app.models import COUNT, LAST_AT, WEIGHT
from app.tables import user_state
from app.topics import partition_for, user_actions

RETRY_AFTER_SECONDS = "5"


def _user_id(raw: str) -> str:
    """A user id from the URL, validated like an event's (raises InvalidEvent)."""
    return identifier(raw, "user_id", settings.max_id_length)


def _count(view: web.View, request: web.Request, default: int) -> int | web.Response:
    raw = request.query.get("n", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= settings.cache_size:
        return view.error(400, f"n: must be a whole number from 1 to {settings.cache_size}")
    return int(raw)


async def _owner_response(
    view: web.View, request: web.Request, user_id: str
) -> web.Response | None:
    """The owner worker's answer when another worker holds this user; None when we do.

    Like Faust's ``table_route``, but locates the partition without producer metadata.
    """
    partition = partition_for(user_id.encode())
    topic = user_state.changelog_topic.get_topic_name()
    hosts = app.router.table_metadata(user_state.name)
    owner = next((url for url, tps in hosts.items() if partition in tps.get(topic, ())), None)
    if owner is None:
        return _service_unavailable(view, f"no worker holds partition {partition} right now")
    owner_url = URL(owner)
    if (owner_url.host, owner_url.port) == (
        app.conf.canonical_url.host,
        app.conf.canonical_url.port,
    ):
        return None
    target = request.url.with_host(owner_url.host).with_port(owner_url.port)
    async with app.http_client.request(request.method, target, headers=request.headers) as reply:
        return view.text(await reply.text(), content_type=reply.content_type, status=reply.status)


def _service_unavailable(view: web.View, reason: str) -> web.Response:
    return view.error(503, reason, headers={"Retry-After": RETRY_AFTER_SECONDS})


@app.page("/events")
class Events(web.View):
    """``POST /events``: one event or ``{"events": [...]}``; 202 once Kafka acknowledged all."""

    async def post(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > settings.max_body_bytes:
            return self.error(413, f"body: larger than {settings.max_body_bytes} bytes")
        body = await request.read()
        if len(body) > settings.max_body_bytes:
            return self.error(413, f"body: larger than {settings.max_body_bytes} bytes")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            return self.error(400, f"body: not valid JSON: {error}")
        try:
            actions = parse_request(payload, settings, time.time())
        except InvalidEvent as error:
            return self.error(400, "invalid event", **error.as_dict())
        try:
            async with asyncio.timeout(settings.produce_timeout):
                pending = [
                    await user_actions.send(key=action.user_id.encode(), value=action.dumps())
                    for action in actions
                ]
                await asyncio.gather(*pending)
        except (TimeoutError, KafkaError) as error:
            return _service_unavailable(self, f"Kafka did not acknowledge the events: {error!r}")
        return self.json({"accepted": len(actions)}, status=202)


@app.page("/recommend/{user_id}")
class Recommend(web.View):
    """``GET /recommend/{user_id}?n=10``: the cached list, or the owner computes and caches it."""

    async def get(self, request: web.Request, user_id: str) -> web.Response:
        try:
            user_id = _user_id(user_id)
        except InvalidEvent as error:
            return self.error(400, f"user id: {error.problem}")
        n = _count(self, request, 10)
        if isinstance(n, web.Response):
            return n
        try:
            entry = await store.get_list(user_id)
            if entry is not None and entry["model_version"] != recommender.model_version:
                recommender.mark_stale(user_id)
            if entry is None:
                routed = await _owner_response(self, request, user_id)
                if routed is not None:
                    return routed
                entry = await recommender.recommend_now(user_id)
        except (RedisError, OSError) as error:
            return _service_unavailable(self, f"Redis unavailable: {error}")
        return self.json(
            {
                "user_id": user_id,
                "items": [{"item_id": item, "score": score} for item, score in entry["items"][:n]],
                "source": entry["source"],
                "model_version": entry["model_version"],
                "updated_at": entry["updated_at"],
            }
        )


@app.page("/users/{user_id}")
class UserInteractions(web.View):
    """``GET /users/{user_id}``: the user's accumulated table state, read on its owner."""

    async def get(self, request: web.Request, user_id: str) -> web.Response:
        try:
            user_id = _user_id(user_id)
        except InvalidEvent as error:
            return self.error(400, f"user id: {error.problem}")
        routed = await _owner_response(self, request, user_id)
        if routed is not None:
            return routed
        state = user_state.get(user_id.encode())
        if state is None:
            return self.error(404, f"user {user_id!r} has no events")
        return self.json(
            {
                "user_id": user_id,
                "event_count": state.event_count,
                "last_event_at": state.last_event_at,
                "interactions": {
                    item_id: {
                        "weight": entry[WEIGHT],
                        "count": entry[COUNT],
                        "last_at": entry[LAST_AT],
                    }
                    for item_id, entry in state.items.items()
                },
            }
        )


@app.page("/popular")
class Popular(web.View):
    """``GET /popular?n=10&half_life=3600``: trending items by time-decayed action weight."""

    async def get(self, request: web.Request) -> web.Response:
        n = _count(self, request, 10)
        if isinstance(n, web.Response):
            return n
        raw = request.query.get("half_life", f"{settings.popularity_half_life:g}")
        try:
            half_life = float(raw)
        except ValueError:
            half_life = None
        if half_life not in settings.half_lives:
            kept = ", ".join(f"{value:g}" for value in settings.half_lives)
            return self.error(400, f"half_life: must be one of {kept} (seconds), got {raw[:20]!r}")
        try:
            ranked = await store.popular(n, half_life)
        except (RedisError, OSError) as error:
            return _service_unavailable(self, f"Redis unavailable: {error}")
        entry = recommender.popular_list(ranked, (), time.time(), half_life)
        return self.json(
            {
                "items": [{"item_id": item, "score": score} for item, score in entry["items"]],
                "half_life_seconds": half_life,
            }
        )


@app.page("/similar/{item_id}")
class Similar(web.View):
    """``GET /similar/{item_id}?n=10``: items closest by cosine of their ALS factors."""

    async def get(self, request: web.Request, item_id: str) -> web.Response:
        try:
            item_id = identifier(item_id, "item_id", settings.max_id_length)
        except InvalidEvent as error:
            return self.error(400, f"item id: {error.problem}")
        n = _count(self, request, 10)
        if isinstance(n, web.Response):
            return n
        model = recommender.model
        if model is None or item_id not in model.item_positions:
            return self.error(404, f"item {item_id!r} has no factors yet")
        return self.json(
            {
                "item_id": item_id,
                "items": [
                    {"item_id": other, "score": score}
                    for other, score in ranker.similar_items(model, item_id, n)
                ],
                "source": "factors",
                "model_version": model.version,
            }
        )


@app.page("/admin/retrain")
class Retrain(web.View):
    """``POST /admin/retrain``: ask the deployment's trainer for a full fit now."""

    async def post(self, request: web.Request) -> web.Response:
        try:
            await models.request_retrain()
        except (RedisError, OSError) as error:
            return _service_unavailable(self, f"Redis unavailable: {error}")
        return self.json(
            {"requested": True, "model_version": recommender.model_version}, status=202
        )


@app.page("/health")
class Health(web.View):
    """``GET /health``: 200 once tables are recovered and Redis answers, 503 before."""

    async def get(self, request: web.Request) -> web.Response:
        recovered = app.tables.recovery.completed.is_set() and not app.in_recovery
        try:
            redis_ok = await store.ping()
        except (RedisError, OSError):
            redis_ok = False
        body = {
            "status": "ready" if recovered and redis_ok else "starting",
            "recovered": recovered,
            "redis": redis_ok,
            "model_version": recommender.model_version,
        }
        return self.json(body, status=200 if body["status"] == "ready" else 503)
