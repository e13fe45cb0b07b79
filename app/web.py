"""HTTP API served by Faust's web server: ingestion, recommendations, state and health."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from aiohttp.web import StreamResponse  # what view.error returns; faust.web.Response is not
from aiokafka.errors import KafkaError
from faust import web
from faust.types import TopicT
from redis.exceptions import RedisError
from yarl import URL

from app import metrics, ranker
from app.agents import recommender
from app.catalogue import parse_items, to_json
from app.events import InvalidEvent, identifier, parse_request
from app.faust_app import app, models, settings, store
from app.models import COUNT, LAST_AT, WEIGHT
from app.redis_recovery import redis_recovery
from app.tables import user_state
from app.topics import items, partition_for, user_actions

RETRY_AFTER_SECONDS = "5"


def _user_id(raw: str) -> str:
    """A user id from the URL, validated like an event's (raises InvalidEvent)."""
    return identifier(raw, "user_id", settings.max_id_length)


def _count(view: web.View, request: web.Request, default: int) -> int | web.Response:
    raw = request.query.get("n", str(default))
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= settings.cache_size:
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
    try:
        async with app.http_client.request(
            request.method, target, headers=request.headers
        ) as reply:
            return view.text(
                await reply.text(), content_type=reply.content_type, status=reply.status
            )
    except aiohttp.ClientError as error:
        # The owner died or is moving: the group reassigns its partitions within seconds.
        return _service_unavailable(view, f"the worker holding this user is unreachable: {error}")


def _service_unavailable(view: web.View, reason: str) -> web.Response:
    return view.error(503, reason, headers={"Retry-After": RETRY_AFTER_SECONDS})


async def _read_json(view: web.View, request: web.Request) -> Any:
    """The request's JSON body, or the 4xx response that says why there is none."""
    if (request.content_length or 0) > settings.max_body_bytes:
        return view.error(413, f"body: larger than {settings.max_body_bytes} bytes")
    body = await request.read()
    if len(body) > settings.max_body_bytes:
        return view.error(413, f"body: larger than {settings.max_body_bytes} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return view.error(400, f"body: not valid JSON: {error}")


async def _produce(
    view: web.View, topic: TopicT, messages: list[tuple[bytes, bytes]], what: str
) -> web.Response:
    """202 once Kafka acknowledged every message; 503 with Retry-After when it did not."""
    try:
        async with asyncio.timeout(settings.produce_timeout):
            pending = [await topic.send(key=key, value=value) for key, value in messages]
            await asyncio.gather(*pending)
    except (TimeoutError, KafkaError) as error:
        return _service_unavailable(view, f"Kafka did not acknowledge the {what}: {error!r}")
    return view.json({"accepted": len(messages)}, status=202)


@app.page("/events")
class Events(web.View):
    """``POST /events``: one event or ``{"events": [...]}``; 202 once Kafka acknowledged all."""

    async def post(self, request: web.Request) -> web.Response:
        payload = await _read_json(self, request)
        if isinstance(payload, StreamResponse):
            return payload
        try:
            actions = parse_request(payload, settings, time.time())
        except InvalidEvent as error:
            metrics.events_invalid.inc()
            return self.error(400, "invalid event", **error.as_dict())
        messages = [(action.user_id.encode(), action.dumps()) for action in actions]
        response = await _produce(self, user_actions, messages, "events")
        if response.status == 202:
            for action in actions:
                metrics.events_accepted.labels(action.action).inc()
        return response


@app.page("/items")
class Items(web.View):
    """``POST /items``: one item or ``{"items": [...]}`` into the catalogue, via topic ``items``."""

    async def post(self, request: web.Request) -> web.Response:
        payload = await _read_json(self, request)
        if isinstance(payload, StreamResponse):
            return payload
        try:
            records = parse_items(payload, settings.max_items_per_request, settings.max_id_length)
        except InvalidEvent as error:
            return self.error(400, "invalid item", **error.as_dict())
        messages = [(record.item_id.encode(), to_json(record)) for record in records]
        return await _produce(self, items, messages, "items")


@app.page("/recommend/{user_id}")
class Recommend(web.View):
    """``GET /recommend/{user_id}?n=10``: the cached list, or the owner computes and caches it."""

    async def get(self, request: web.Request, user_id: str) -> web.Response:
        try:
            user_id = _user_id(user_id)
        except InvalidEvent as error:
            return self.error(400, f"user id: {error.problem}")
        n = _count(self, request, 10)
        if isinstance(n, StreamResponse):
            return n
        exclude = {item for item in request.query.get("exclude", "").split(",") if item}
        category = request.query.get("category") or None
        try:
            entry = await store.get_list(user_id)
            metrics.cache_requests.labels("miss" if entry is None else "hit").inc()
            if entry is not None and entry["model_version"] != recommender.model_version:
                recommender.mark_stale(user_id)
            if entry is None:
                routed = await _owner_response(self, request, user_id)
                if routed is not None:
                    return routed
                entry = await recommender.recommend_now(user_id)
        except (RedisError, OSError):
            entry = redis_recovery.list_without_redis(user_id)
        return self.json(
            {
                "user_id": user_id,
                "items": [
                    {"item_id": item, "score": score}
                    for item, score in recommender.visible(entry["items"], exclude, category)[:n]
                ],
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
        if isinstance(n, StreamResponse):
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
        except (RedisError, OSError):
            ranked = redis_recovery.last_popular(half_life)[:n]
        entry = recommender.popular_list(ranked, (), time.time(), half_life)
        return self.json(
            {
                "items": [{"item_id": item, "score": score} for item, score in entry["items"]],
                "half_life_seconds": half_life,
            }
        )


@app.page("/similar/{item_id}")
class Similar(web.View):
    """``GET /similar/{item_id}?n=10``: items closest by cosine of their ALS factors, or of
    their catalogue content (TF-IDF) while they have no factors yet."""

    async def get(self, request: web.Request, item_id: str) -> web.Response:
        try:
            item_id = identifier(item_id, "item_id", settings.max_id_length)
        except InvalidEvent as error:
            return self.error(400, f"item id: {error.problem}")
        n = _count(self, request, 10)
        if isinstance(n, StreamResponse):
            return n
        model, content = recommender.model, recommender.content
        if model is not None and item_id in model.item_positions:
            ranked = ranker.similar_items(model, item_id, n + len(recommender.unavailable))
            source = "factors"
        elif content is not None and item_id in content.item_positions:
            ranked, source = content.similar(item_id, n), "content"
        else:
            return self.error(404, f"item {item_id!r} has neither factors nor catalogue content")
        return self.json(
            {
                "item_id": item_id,
                "items": [
                    {"item_id": other, "score": score}
                    for other, score in recommender.visible(ranked, (), None)[:n]
                ],
                "source": source,
                "model_version": recommender.model_version,
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
