"""The Faust application, its Redis stores and the settings they are built from."""

from __future__ import annotations

import faust
from redis.asyncio import Redis

from app.cache import RecommendationStore
from app.catalogue_store import CatalogueStore
from app.logs import logging_config
from app.model_store import ModelStore
from app.security import request_guard
from app.settings import Settings

settings = Settings.from_env()

app = faust.App(
    settings.app_id,
    broker=settings.kafka_broker,
    store=settings.store,
    datadir=settings.data_dir,
    web_host=settings.web_host,
    web_bind=settings.web_bind or settings.web_host,
    web_port=settings.web_port,
    topic_partitions=settings.partitions,
    topic_allow_declare=True,
    producer_acks=-1,
    producer_linger=0.005,
    autodiscover=False,
    logging_config=logging_config(f"{settings.app_id}:{settings.web_port}"),
    # A worker killed without leaving its group holds its partitions this long (Faust: 60 s).
    broker_session_timeout=settings.session_timeout,
    web_application_options={
        "client_max_size": settings.max_body_bytes,
        "middlewares": [request_guard(settings)],
    },
)

redis = Redis.from_url(settings.redis_url)
store = RecommendationStore(redis, settings.redis_prefix, settings.cache_ttl)
models = ModelStore(redis, settings.redis_prefix)
catalogue = CatalogueStore(redis, settings.redis_prefix)
