"""How every Kafka client of the product reaches the brokers: the address, TLS and SASL of the
settings, in one place, so that no client connects without them.

Faust's clients (the stream's consumer, the producer behind ``POST /events``, topic creation)
take :func:`faust_credentials`; the product's own aiokafka clients (the trainer's changelog
reader, replay and catch-up, dump and restore, consumer lag) are built here from
:func:`client_options`, which is Faust's own translation of the same credentials, so both kinds
connect alike. Building a client connects nowhere; starting it does.
"""

from __future__ import annotations

from ssl import SSLContext
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import CredentialsT

from app.settings import Settings


def ssl_context(settings: Settings) -> SSLContext | None:
    """The TLS context of the settings' CA and client certificate files, verifying the broker's
    host name; ``None`` without TLS."""
    if not settings.kafka_tls:
        return None
    return create_ssl_context(
        cafile=settings.kafka_ssl_cafile or None,
        certfile=settings.kafka_ssl_certfile or None,
        keyfile=settings.kafka_ssl_keyfile or None,
    )


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The Faust app's ``broker_credentials``; ``None`` for ``PLAINTEXT``."""
    context = ssl_context(settings)
    if settings.kafka_sasl:
        return faust.SASLCredentials(
            username=settings.kafka_username,
            password=settings.kafka_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    return None if context is None else faust.SSLCredentials(context)


def client_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments that every aiokafka client of the product is built with."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        **credentials_to_aiokafka_auth(faust_credentials(settings)),
    }


def consumer(settings: Settings, **options: Any) -> AIOKafkaConsumer:
    """A consumer of the settings' brokers; ``options`` are the consumer's own (group, ...)."""
    return AIOKafkaConsumer(**client_options(settings), **options)


def admin(settings: Settings) -> AIOKafkaAdminClient:
    """An admin client of the settings' brokers."""
    return AIOKafkaAdminClient(**client_options(settings))
