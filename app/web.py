"""The HTTP API and pages, served by Faust's web server: ingestion, recommendations, state,
health, the demo page at ``/`` and Prometheus metrics at ``/metrics``.

Views are declared here with :func:`route` and bound to one wired product by
:func:`add_views`; a view reaches the product's pieces as ``self.product``. Views speak HTTP
only: what a list holds is decided by ``app.serving``, through the refresher.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

import aiohttp
import orjson
import prometheus_client
from aiohttp.web import StreamResponse  # what view.error returns; faust.web.Response is not
from aiokafka.errors import KafkaError
from faust import web
from faust.types import TopicT
from redis.exceptions import RedisError, WatchError
from swagger_ui.utils import SWAGGER_UI_PY_ROOT
from yarl import URL

from app import experiments, serving
from app.api import openapi_document
from app.models import COUNT, LAST_AT, WEIGHT, ItemRecord, UserState
from app.neighbours import NoNeighbours
from app.ops import metrics
from app.play import NothingToPlay, PlayRefused
from app.stores.catalogue import encode_item
from app.tables import changelog_topic
from app.topics import ERASE_HEADER, HIDE_HEADER, partition_for
from app.validation import (
    InvalidEvent,
    identifier,
    parse_item_ids,
    parse_items,
    parse_request,
    parse_session,
)

if TYPE_CHECKING:
    from app.factory import Product

T = TypeVar("T")
RETRY_AFTER_SECONDS = "5"
STATIC = Path(__file__).parent / "static"
SWAGGER_UI_ASSETS = SWAGGER_UI_PY_ROOT / "static"
"""Swagger UI's release pinned with swagger-ui-py, shipped in its wheel: nothing is fetched."""


@cache
def static_page(name: str) -> str:
    """A page of ``app/static``, read on its first request."""
    return (STATIC / name).read_text(encoding="utf-8")


@aiohttp.web.middleware
async def json_errors(
    request: aiohttp.web.Request,
    handler: Callable[[aiohttp.web.Request], Awaitable[StreamResponse]],
) -> StreamResponse:
    """aiohttp's own refusals (no such path, method not allowed) in the API's one error shape."""
    try:
        return await handler(request)
    except aiohttp.web.HTTPException as error:
        if error.status < 400:
            raise
        return aiohttp.web.json_response(
            {"error": f"{request.method} {request.path}: {error.reason.lower()}"},
            status=error.status,
            headers={name: value for name, value in error.headers.items() if name == "Allow"},
        )


@aiohttp.web.middleware
async def timed_requests(
    request: aiohttp.web.Request,
    handler: Callable[[aiohttp.web.Request], Awaitable[StreamResponse]],
) -> StreamResponse:
    """Time every request under its route's template and its status, refusals and unknown paths
    included; never under the client's path, where each user id would be a new series."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except aiohttp.web.HTTPException as error:
        status = error.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics.http_request_seconds.labels(route, str(status)).observe(
            time.perf_counter() - started
        )


class ListQuery(NamedTuple):
    """What a list request asks of its list: how many items, their titles, which to leave out."""

    n: int
    titled: bool
    exclude: frozenset[str]
    category: str | None


class ProductView(web.View):
    """A view bound to one wired product (see :func:`add_views`)."""

    product: ClassVar[Product]

    def user_id(self, raw: str) -> str:
        """A user id from the URL, validated like an event's (raises InvalidEvent)."""
        return identifier(raw, "user_id", self.product.settings.max_id_length)

    def count(self, request: web.Request, default: int) -> int | web.Response:
        """The ``n`` query parameter, or the 400 that says what is wrong with it."""
        limit = self.product.settings.cache_size
        raw = request.query.get("n", str(default))
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= limit:
            return self.error(400, f"n: must be a whole number from 1 to {limit}")
        return int(raw)

    def titled(self, request: web.Request) -> bool | web.Response:
        """Whether ``?fields=title`` asks for the items' titles, or the 400 that says what is
        wrong with ``fields``."""
        fields = request.query.get("fields")
        if fields not in (None, "title"):
            return self.error(400, f"fields: must be title, got {fields[:20]!r}")
        return fields == "title"

    def count_and_titles(self, request: web.Request) -> tuple[int, bool] | web.Response:
        """A list request's ``n`` and whether ``fields=title`` asks for titles, or the 400
        that says what is wrong with them."""
        n = self.count(request, 10)
        if isinstance(n, StreamResponse):
            return n
        titled = self.titled(request)
        if isinstance(titled, StreamResponse):
            return titled
        return n, titled

    def list_query(self, request: web.Request) -> ListQuery | web.Response:
        """The list filters of the query (``n``, ``fields``, ``exclude``, ``category``), or the
        400 that says what is wrong with them."""
        sized = self.count_and_titles(request)
        if isinstance(sized, StreamResponse):
            return sized
        exclude = frozenset(item for item in request.query.get("exclude", "").split(",") if item)
        return ListQuery(*sized, exclude, request.query.get("category") or None)

    def shown(self, query: ListQuery, entry: serving.ServedList) -> list[dict[str, Any]]:
        """The items of a list the query asks for, as JSON: available, filtered, the first n."""
        catalogue = self.product.refresher.catalogue
        visible = catalogue.visible(entry["items"], query.exclude, query.category)[: query.n]
        return self.scored(visible, query.titled)

    def scored(self, ranked: Iterable[tuple[str, float]], titled: bool) -> list[dict[str, Any]]:
        """A list's items as JSON, with each one's catalogue title when ``titled`` (null when
        it has none)."""
        if not titled:
            return [{"item_id": item, "score": score} for item, score in ranked]
        titles = self.product.refresher.catalogue.titles
        return [
            {"item_id": item, "score": score, "title": titles.get(item)} for item, score in ranked
        ]

    def recovered(self) -> bool:
        """Whether the tables have recovered from their changelogs, so writes build on them."""
        app = self.product.faust
        return app.tables.recovery.completed.is_set() and not app.in_recovery

    def service_unavailable(self, reason: str) -> web.Response:
        return self.error(503, reason, headers={"Retry-After": RETRY_AFTER_SECONDS})

    async def owner_response(self, request: web.Request, user_id: str) -> web.Response | None:
        """The owner worker's answer when another worker holds this user; None when we do.

        Like Faust's ``table_route``, but locates the partition without producer metadata.
        """
        app, settings, table = self.product.faust, self.product.settings, self.product.user_state
        partition = partition_for(user_id.encode(), settings.partitions)
        topic = changelog_topic(settings)
        hosts = app.router.table_metadata(table.name)
        owner = next((url for url, tps in hosts.items() if partition in tps.get(topic, ())), None)
        if owner is None:
            return self.service_unavailable(f"no worker holds partition {partition} right now")
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
                return self.text(
                    await reply.text(), content_type=reply.content_type, status=reply.status
                )
        except aiohttp.ClientError as error:
            # The owner died or is moving: the group reassigns its partitions within seconds.
            return self.service_unavailable(f"the worker holding this user is unreachable: {error}")

    async def held_state(self, request: web.Request, user_id: str) -> UserState | web.Response:
        """The user's table state, read here if this worker holds them; otherwise the answer
        of the worker that does, or 404 when nobody has an event of theirs."""
        routed = await self.owner_response(request, user_id)
        if routed is not None:
            return routed
        state = self.product.states.get(user_id)
        if state is None:
            return self.error(404, f"user {user_id!r} has no events")
        return state

    async def read_valid(
        self, request: web.Request, parse: Callable[[Any], T], refusal: str
    ) -> T | web.Response:
        """The request's JSON body as ``parse`` validates it, or the 4xx that says why not:
        ``refusal`` with the index, field and problem of the first bad entry."""
        payload = await self.read_json(request)
        if isinstance(payload, StreamResponse):
            return payload
        try:
            return parse(payload)
        except InvalidEvent as error:
            return self.error(400, refusal, **error.as_dict())

    async def read_json(self, request: web.Request) -> Any:
        """The request's JSON body, or the 4xx response that says why there is none."""
        limit = self.product.settings.max_body_bytes
        if (request.content_length or 0) > limit:
            return self.error(413, f"body: larger than {limit} bytes")
        body = await request.read()
        if len(body) > limit:
            return self.error(413, f"body: larger than {limit} bytes")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as error:
            return self.error(400, f"body: not valid JSON: {error}")

    async def produce(
        self,
        topic: TopicT,
        messages: list[tuple[bytes, bytes]],
        what: str,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> web.Response:
        """202 once Kafka acknowledged every message; 503 with Retry-After when it did not."""
        try:
            async with asyncio.timeout(self.product.settings.produce_timeout):
                pending = [
                    await topic.send(key=key, value=value, headers=headers)
                    for key, value in messages
                ]
                await asyncio.gather(*pending)
        except (TimeoutError, KafkaError) as error:
            return self.service_unavailable(f"Kafka did not acknowledge the {what}: {error!r}")
        return self.json({"accepted": len(messages)}, status=202)


ROUTES: dict[str, type[ProductView]] = {}
"""Every view declared with :func:`route`, by path, in declaration order."""


def route(path: str) -> Callable[[type[ProductView]], type[ProductView]]:
    """Declare a view at a path (as aiohttp's ``RouteTableDef``); see :func:`add_views`."""

    def declare(view: type[ProductView]) -> type[ProductView]:
        ROUTES[path] = view
        return view

    return declare


def add_views(product: Product) -> None:
    """Serve every declared view on the product's Faust app, each bound to the product."""
    for path, view in ROUTES.items():
        product.faust.page(path)(type(view.__name__, (view,), {"product": product}))
    product.faust.web.add_static("/docs/static/", SWAGGER_UI_ASSETS)


@route("/")
class DemoPage(ProductView):
    """``GET /``: pick a user, click items, watch the list change. One static HTML file that
    drives the JSON API from the browser: no build step and no template. Registered before
    Faust's own index page, so this one is served."""

    async def get(self, request: web.Request) -> web.Response:
        return self.html(static_page("index.html"))


@route("/openapi.json")
class OpenAPI(ProductView):
    """``GET /openapi.json``: the API as OpenAPI 3.1, with this deployment's limits."""

    async def get(self, request: web.Request) -> web.Response:
        return self.json(openapi_document(self.product.settings))


@route("/docs")
class Docs(ProductView):
    """``GET /docs``: the API description read in Swagger UI, served by this worker."""

    async def get(self, request: web.Request) -> web.Response:
        return self.html(static_page("docs.html"))


@route("/metrics")
class Metrics(ProductView):
    """``GET /metrics``: this worker's metrics in the Prometheus text format (an admin read when
    a key is set)."""

    async def get(self, request: web.Request) -> web.Response:
        with contextlib.suppress(RedisError, OSError):  # the gauges keep their last values
            metrics.export_check(*await self.product.stores.models.last_check())
        # In headers: aiohttp refuses a content_type argument that carries a charset.
        return self.bytes(
            prometheus_client.generate_latest(),
            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
        )


@route("/events")
class Events(ProductView):
    """``POST /events``: one event or ``{"events": [...]}``; 202 once Kafka acknowledged all."""

    async def post(self, request: web.Request) -> web.Response:
        settings = self.product.settings
        parse = partial(parse_request, settings=settings, now=time.time())
        actions = await self.read_valid(request, parse, "invalid event")
        if isinstance(actions, StreamResponse):
            return actions
        messages = [(action.user_id.encode(), action.dumps()) for action in actions]
        response = await self.produce(self.product.topics.user_actions, messages, "events")
        if response.status == 202:
            configured = self.product.settings.action_weights
            for action in actions:
                metrics.events_accepted.labels(
                    metrics.action_label(action.action, configured)
                ).inc()
        return response


@route("/items")
class Items(ProductView):
    """``POST /items``: one item or ``{"items": [...]}`` into the catalogue, via topic ``items``."""

    async def post(self, request: web.Request) -> web.Response:
        settings = self.product.settings
        parse = partial(
            parse_items,
            max_items=settings.max_items_per_request,
            max_id_length=settings.max_id_length,
        )
        records = await self.read_valid(request, parse, "invalid item")
        if isinstance(records, StreamResponse):
            return records
        messages = [(record.item_id.encode(), encode_item(record)) for record in records]
        return await self.produce(self.product.topics.items, messages, "items")


@route("/items/{item_id}")
class Item(ProductView):
    """``GET /items/{item_id}``: one catalogue record as the worker stores it."""

    async def get(self, request: web.Request, item_id: str) -> web.Response:
        try:
            item_id = identifier(item_id, "item_id", self.product.settings.max_id_length)
        except InvalidEvent as error:
            return self.error(400, f"item id: {error.problem}")
        try:
            record = await self.product.stores.catalogue.get(item_id)
        except (RedisError, OSError) as error:
            return self.service_unavailable(f"Redis unavailable: {error}")
        if record is None:
            return self.error(404, f"item {item_id!r} is not in the catalogue")
        return self.json(dataclasses.asdict(record))

    async def delete(self, request: web.Request, item_id: str) -> web.Response:
        """Withdraw the item: recorded as unavailable (via topic ``items``), so no list and no
        similar-items answer shows it again; its record and factors stay."""
        try:
            item_id = identifier(item_id, "item_id", self.product.settings.max_id_length)
            record = await self.product.stores.catalogue.get(item_id)
        except InvalidEvent as error:
            return self.error(400, f"item id: {error.problem}")
        except (RedisError, OSError) as error:
            return self.service_unavailable(f"Redis unavailable: {error}")
        withdrawn = dataclasses.replace(record or ItemRecord(item_id), available=False)
        message = (item_id.encode(), encode_item(withdrawn))
        return await self.produce(self.product.topics.items, [message], "withdrawal")


@route("/recommend/{user_id}")
class Recommend(ProductView):
    """``GET /recommend/{user_id}?n=10``: the cached list, or the owner computes and caches it."""

    async def get(self, request: web.Request, user_id: str) -> web.Response:
        try:
            user_id = self.user_id(user_id)
        except InvalidEvent as error:
            return self.error(400, f"user id: {error.problem}")
        query = self.list_query(request)
        if isinstance(query, StreamResponse):
            return query
        refresher = self.product.refresher
        try:
            entry = await self.product.stores.lists.get_list(user_id)
            metrics.cache_requests.labels("miss" if entry is None else "hit").inc()
            if entry is not None and entry["model_version"] != refresher.model_version:
                refresher.mark_stale(user_id)
            if entry is None:
                routed = await self.owner_response(request, user_id)
                if routed is not None:
                    return routed
                entry = await refresher.recommend_now(user_id)
        except (RedisError, OSError):
            entry = self.product.recovery.list_without_redis(user_id)
        arm = refresher.experiment.arm_of(user_id)
        refresher.arms.count(arm.name, "served")
        return self.json(
            {
                "user_id": user_id,
                "items": self.shown(query, entry),
                "source": entry["source"],
                "model_version": entry["model_version"],
                "updated_at": entry["updated_at"],
                "event_count": entry["event_count"],
                "arm": arm.name,
                "recommendation_id": experiments.recommendation_id(arm),
            }
        )


@route("/experiments")
class Experiments(ProductView):
    """``GET /experiments``: each arm of the running experiment, its live HR@10 and
    click-through with 95% intervals, over every worker's counts."""

    async def get(self, request: web.Request) -> web.Response:
        experiment = self.product.refresher.experiment
        try:
            counts = await self.product.stores.experiments.counts(experiment.name)
        except (RedisError, OSError) as error:
            return self.service_unavailable(f"Redis unavailable: {error}")
        return self.json(experiments.report(experiment, counts))


@route("/recommend")
class SessionRecommend(ProductView):
    """``POST /recommend`` with ``{"items": [...]}``: the list of an anonymous visitor who
    did those actions, folded in on the fly, with the filters of ``GET /recommend/{user_id}``;
    nothing is stored or sent to Kafka, so it is a read."""

    async def post(self, request: web.Request) -> web.Response:
        query = self.list_query(request)
        if isinstance(query, StreamResponse):
            return query
        settings = self.product.settings
        parse = partial(parse_session, settings=settings, now=time.time())
        actions = await self.read_valid(request, parse, "invalid session")
        if isinstance(actions, StreamResponse):
            return actions
        popular = await self.product.recovery.trending()
        entry = self.product.refresher.session_list(actions, popular)
        return self.json(
            {
                "items": self.shown(query, entry),
                "source": entry["source"],
                "model_version": entry["model_version"],
                "event_count": entry["event_count"],
            }
        )


@route("/users/{user_id}")
class UserInteractions(ProductView):
    """``GET /users/{user_id}``: the user's accumulated table state, read on its owner."""

    async def get(self, request: web.Request, user_id: str) -> web.Response:
        try:
            user_id = self.user_id(user_id)
        except InvalidEvent as error:
            return self.error(400, f"user id: {error.problem}")
        state = await self.held_state(request, user_id)
        if isinstance(state, StreamResponse):
            return state
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
                "hidden": state.hidden,
                "impressions": state.impressions,
            }
        )

    async def delete(self, request: web.Request, user_id: str) -> web.Response:
        """Erase the user: an erasure message in their partition of ``user-actions``, behind
        their events, removes their table state (a tombstone), held history and cached list,
        and a replay meets it again. 202 once Kafka has it; it applies within a batch."""
        try:
            user_id = self.user_id(user_id)
        except InvalidEvent as error:
            return self.error(400, f"user id: {error.problem}")
        erasure = (user_id.encode(), orjson.dumps({"user_id": user_id, "erased_at": time.time()}))
        return await self.produce(
            self.product.topics.user_actions, [erasure], "erasure", headers=[(ERASE_HEADER, b"1")]
        )


async def produce_hide(
    view: ProductView, user_id: str, item_ids: list[str], hidden: bool
) -> web.Response:
    """Produce a hide (or a show-again) of these items for the user: a message in the user's
    partition of ``user-actions`` (``HIDE_HEADER``), so the hide lands in their table state and
    a replay meets it again."""
    message = orjson.dumps({"user_id": user_id, "item_ids": item_ids})
    return await view.produce(
        view.product.topics.user_actions,
        [(user_id.encode(), message)],
        "hide",
        headers=[(HIDE_HEADER, b"1" if hidden else b"0")],
    )


@route("/users/{user_id}/hidden")
class HiddenItems(ProductView):
    """``POST /users/{user_id}/hidden`` with ``{"items": [...]}``: never list these items to
    the user again. 202 once Kafka has it; the user's list is rewritten within a batch."""

    async def post(self, request: web.Request, user_id: str) -> web.Response:
        try:
            user_id = self.user_id(user_id)
        except InvalidEvent as error:
            return self.error(400, f"user id: {error.problem}")
        parse = partial(parse_item_ids, settings=self.product.settings)
        item_ids = await self.read_valid(request, parse, "invalid item")
        if isinstance(item_ids, StreamResponse):
            return item_ids
        return await produce_hide(self, user_id, item_ids, hidden=True)


@route("/users/{user_id}/hidden/{item_id}")
class HiddenItem(ProductView):
    """``DELETE /users/{user_id}/hidden/{item_id}``: list the item to the user again."""

    async def delete(self, request: web.Request, user_id: str, item_id: str) -> web.Response:
        try:
            user_id = self.user_id(user_id)
        except InvalidEvent as error:
            return self.error(400, f"user id: {error.problem}")
        try:
            item_id = identifier(item_id, "item_id", self.product.settings.max_id_length)
        except InvalidEvent as error:
            return self.error(400, f"item id: {error.problem}")
        return await produce_hide(self, user_id, [item_id], hidden=False)


@route("/users/{user_id}/similar")
class SimilarUsers(ProductView):
    """``GET /users/{user_id}/similar?n=10``: the users whose fitted factors are closest by
    cosine to this user's, solved now from their state on the worker holding it."""

    async def get(self, request: web.Request, user_id: str) -> web.Response:
        try:
            user_id = self.user_id(user_id)
        except InvalidEvent as error:
            return self.error(400, f"user id: {error.problem}")
        n = self.count(request, 10)
        if isinstance(n, StreamResponse):
            return n
        state = await self.held_state(request, user_id)
        if isinstance(state, StreamResponse):
            return state
        try:
            found, version = await self.product.neighbours.similar(user_id, state.weights(), n)
        except NoNeighbours as error:
            return self.error(404, str(error))
        except (RedisError, OSError) as error:
            return self.service_unavailable(f"Redis unavailable: {error}")
        return self.json(
            {
                "user_id": user_id,
                "users": [{"user_id": other, "score": score} for other, score in found],
                "model_version": version,
            }
        )


@route("/popular")
class Popular(ProductView):
    """``GET /popular?n=10&half_life=3600``: trending items by time-decayed action weight."""

    async def get(self, request: web.Request) -> web.Response:
        settings = self.product.settings
        sized = self.count_and_titles(request)
        if isinstance(sized, StreamResponse):
            return sized
        n, titled = sized
        raw = request.query.get("half_life", f"{settings.popularity_half_life:g}")
        try:
            half_life = float(raw)
        except ValueError:
            half_life = None
        if half_life not in settings.half_lives:
            kept = ", ".join(f"{value:g}" for value in settings.half_lives)
            return self.error(400, f"half_life: must be one of {kept} (seconds), got {raw[:20]!r}")
        refresher = self.product.refresher
        depth = n + len(refresher.catalogue.withheld(time.time()))
        popular = await self.product.recovery.trending(half_life, depth)
        entry = refresher.popular_list(popular, (), half_life)
        shown = self.scored(entry["items"][:n], titled)
        return self.json(
            {
                "items": shown,
                "half_life_seconds": half_life,
                "as_of": popular.as_of,
            }
        )


@route("/demo/play")
class DemoPlay(ProductView):
    """``/demo/play``: the demo page's Play button. ``POST {"events_per_second": 20}`` starts
    replaying the bundled history through ``POST /events`` from the shop's clock (see
    ``app.play``), ``GET`` says how far it is, ``DELETE`` stops it."""

    async def get(self, request: web.Request) -> web.Response:
        return self.json(self.product.player.status())

    async def post(self, request: web.Request) -> web.Response:
        payload = await self.read_json(request)
        if isinstance(payload, StreamResponse):
            return payload
        rate = payload.get("events_per_second") if isinstance(payload, dict) else None
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 1 <= rate <= 1000:
            return self.error(400, "events_per_second: must be a number from 1 to 1000")
        refresher = self.product.refresher
        try:
            shop_clock = (await refresher.trending(depth=1)).as_of
        except (RedisError, OSError) as error:
            return self.service_unavailable(f"Redis unavailable: {error}")
        try:
            progress = await self.product.player.start(float(rate), shop_clock)
        except NothingToPlay as error:
            return self.error(404, str(error))
        except PlayRefused as error:
            return self.error(409, str(error))
        return self.json(progress.as_dict(playing=True), status=202)

    async def delete(self, request: web.Request) -> web.Response:
        await self.product.player.stop()
        return self.json(self.product.player.status())


@route("/similar/{item_id}")
class Similar(ProductView):
    """``GET /similar/{item_id}?n=10``: items closest by cosine of their ALS factors, or of
    their catalogue content (TF-IDF) while they have no factors yet."""

    async def get(self, request: web.Request, item_id: str) -> web.Response:
        try:
            item_id = identifier(item_id, "item_id", self.product.settings.max_id_length)
        except InvalidEvent as error:
            return self.error(400, f"item id: {error.problem}")
        sized = self.count_and_titles(request)
        if isinstance(sized, StreamResponse):
            return sized
        n, titled = sized
        refresher = self.product.refresher
        found = serving.similar_items(refresher.model, refresher.catalogue, item_id, n)
        if found is None:
            return self.error(404, f"item {item_id!r} has neither factors nor catalogue content")
        ranked, source = found
        shown = self.scored(ranked, titled)
        return self.json(
            {
                "item_id": item_id,
                "items": shown,
                "source": source,
                "model_version": refresher.model_version,
            }
        )


@route("/admin/retrain")
class Retrain(ProductView):
    """``POST /admin/retrain``: ask the deployment's trainer for a full fit now."""

    async def post(self, request: web.Request) -> web.Response:
        try:
            await self.product.stores.models.request_retrain()
        except (RedisError, OSError) as error:
            return self.service_unavailable(f"Redis unavailable: {error}")
        return self.json(
            {"requested": True, "model_version": self.product.refresher.model_version},
            status=202,
        )


@route("/admin/rollback")
class Rollback(ProductView):
    """``POST /admin/rollback``: serve the model published before the current one again."""

    async def post(self, request: web.Request) -> web.Response:
        try:
            version = await self.product.stores.models.roll_back()
        except WatchError:
            return self.error(409, "the published model changed during the rollback; try again")
        except (RedisError, OSError) as error:
            return self.service_unavailable(f"Redis unavailable: {error}")
        if version is None:
            return self.error(409, "no earlier model is kept to roll back to")
        return self.json({"rolled_back": True, "model_version": version})


@route("/livez")
class Liveness(ProductView):
    """``GET /livez``: 200 while the process answers HTTP; the liveness probe. It asks nothing
    outside the process: a Kafka or Redis outage is no reason to restart a worker."""

    async def get(self, request: web.Request) -> web.Response:
        return self.json({"status": "live"})


@route("/readyz")
class Readiness(ProductView):
    """``GET /readyz``: 200 once the tables have recovered, 503 before; the readiness probe.
    Redis is not asked: reads keep answering without it, so its outage must not take every
    replica out of service."""

    async def get(self, request: web.Request) -> web.Response:
        if self.recovered():
            return self.json({"status": "ready", "recovered": True})
        return self.json(
            {"status": "recovering", "recovered": False},
            status=503,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )


@route("/health")
class Health(ProductView):
    """``GET /health``: 200 once tables are recovered and Redis answers, 503 before. Kept for
    compatibility; probes use ``/livez`` and ``/readyz``."""

    async def get(self, request: web.Request) -> web.Response:
        recovered = self.recovered()
        last_check, refused, last_rollback = None, 0, None
        try:
            redis_ok = await self.product.stores.lists.ping()
            last_check, refused = await self.product.stores.models.last_check()
            last_rollback = await self.product.stores.models.last_rollback()
        except (RedisError, OSError):
            redis_ok = False
        body = {
            "status": "ready" if recovered and redis_ok else "starting",
            "recovered": recovered,
            "redis": redis_ok,
            "model_version": self.product.refresher.model_version,
            "last_check": last_check,
            "candidates_refused": refused,
            "last_rollback": last_rollback,
        }
        return self.json(body, status=200 if body["status"] == "ready" else 503)
