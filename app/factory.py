"""The composition root: :func:`create_app` wires the whole worker from one settings object.

Nothing else in ``app`` builds a Faust app, opens a Redis client or registers an agent, timer or
view; importing any module connects nowhere. ``python -m app`` calls :func:`create_app` with
the settings read from the environment; a test calls it with its own settings (for example the
``memory://`` store) and drives the pieces it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TableT

from app import agents, background, web
from app.agents import EventProcessor
from app.kafka_clients import faust_credentials
from app.neighbours import FittedUsers, UserNeighbours
from app.ops.logs import logging_config
from app.play import Player
from app.redis_recovery import RedisRecovery
from app.refresher import ListRefresher
from app.replay import CatchUpWatch
from app.security import client_headers, request_guard
from app.settings import Settings
from app.stores import Stores
from app.tables import TableStates, user_state_table
from app.topics import Topics


@dataclass(frozen=True)
class Product:
    """Every piece of one worker, wired together; :attr:`faust` is the app Faust runs."""

    settings: Settings
    faust: faust.App
    stores: Stores
    topics: Topics
    user_state: TableT
    states: TableStates
    refresher: ListRefresher
    recovery: RedisRecovery
    processor: EventProcessor
    catch_up: CatchUpWatch
    player: Player
    neighbours: UserNeighbours


def faust_app(settings: Settings) -> faust.App:
    """The Faust app alone: broker and its credentials, store, web server, topic and producer
    settings. Faust reads none of its own environment variables (``env={}``): they would win
    over these, and ``PRODUCER_ACKS=1`` would break the promise that a 202 means every in-sync
    replica has the event."""
    return faust.App(
        settings.app_id,
        env={},
        broker=settings.kafka_broker,
        broker_credentials=faust_credentials(settings),
        store=settings.store,
        datadir=settings.data_dir,
        web_host=settings.web_host,
        web_bind=settings.web_bind or settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        # Every topic Faust creates without a factor of its own: changelogs, the assignor's.
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        producer_acks=-1,
        producer_linger=0.005,
        autodiscover=False,
        logging_config=logging_config(
            f"{settings.app_id}:{settings.web_port}", json_lines=settings.log_format == "json"
        ),
        # A worker killed without leaving its group holds its partitions this long (Faust: 60 s).
        broker_session_timeout=settings.session_timeout,
        web_application_options={
            "client_max_size": settings.max_body_bytes,
            "middlewares": [web.timed_requests, web.json_errors, request_guard(settings)],
        },
    )


def create_app(settings: Settings, stores: Stores | None = None) -> Product:
    """Build and wire a worker: topics, table, stores, refresher, recovery, agents, timers and
    views. ``stores`` replaces the Redis stores built from ``settings.redis_url``."""
    settings.validate()
    app = faust_app(settings)
    stores = stores or Stores.connect(settings)
    topics = Topics.declare(app, settings)
    table = user_state_table(app, settings)
    states = TableStates(table)
    fitted_users = FittedUsers(settings, stores.models)
    refresher = ListRefresher(settings, stores, states, fitted_users.of)
    product = Product(
        settings=settings,
        faust=app,
        stores=stores,
        topics=topics,
        user_state=table,
        states=states,
        refresher=refresher,
        recovery=RedisRecovery(settings, stores, refresher),
        processor=EventProcessor(settings, topics, table, refresher),
        catch_up=CatchUpWatch(settings, stores, app),
        player=Player(settings.demo_events, settings.web_url, client_headers(settings)),
        neighbours=UserNeighbours(settings, fitted_users, refresher),
    )
    agents.add_agents(product)
    background.add_jobs(product)
    web.add_views(product)
    return product
