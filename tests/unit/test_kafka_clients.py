"""How the product's Kafka clients connect: one set of options from the settings, for Faust's
clients and the product's own alike."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import faust

from app import kafka_clients
from app.factory import faust_app
from app.settings import Settings

APP = Path(__file__).resolve().parents[2] / "app"
CLIENT_CLASSES = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "AIOKafkaClient"}

SASL_SSL = Settings(
    kafka_broker="kafka://broker-1:9093,broker-2:9093",
    kafka_security_protocol="SASL_SSL",
    kafka_username="recsys",
    kafka_password="secret",
)


def test_plaintext_clients_get_the_bootstrap_servers_and_nothing_else():
    assert kafka_clients.client_options(Settings()) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_clients_authenticate_with_scram_over_tls_that_checks_the_broker():
    options = kafka_clients.client_options(SASL_SSL)
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "broker-1:9093,broker-2:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "recsys",
        "sasl_plain_password": "secret",
    }
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_sasl_without_tls_sends_the_credentials_without_a_tls_context():
    settings = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_username="recsys",
        kafka_password="secret",
    )
    options = kafka_clients.client_options(settings)
    assert (options["security_protocol"], options["sasl_mechanism"]) == ("SASL_PLAINTEXT", "PLAIN")
    assert options["ssl_context"] is None


def test_tls_alone_gives_a_context_and_no_sasl():
    options = kafka_clients.client_options(Settings(kafka_security_protocol="SSL"))
    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in options


def test_the_faust_app_gets_the_same_credentials():
    credentials = faust_app(SASL_SSL).conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("recsys", "secret")
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"


def test_a_plaintext_faust_app_has_no_credentials():
    assert faust_app(Settings()).conf.broker_credentials is None


def test_every_kafka_client_of_the_product_is_built_by_kafka_clients():
    builders = {}
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
                name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                if name in CLIENT_CLASSES:
                    builders.setdefault(str(path.relative_to(APP)), []).append(name)
    assert builders == {"kafka_clients.py": ["AIOKafkaConsumer", "AIOKafkaAdminClient"]}
