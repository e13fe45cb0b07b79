"""A broker of a test's own whose only listener for clients is SASL_SSL with SCRAM-SHA-512: a CA,
a broker certificate for 127.0.0.1 and localhost, and passwords, all made for that test.

The certificates come from the JDK's ``keytool`` (the broker needs Java anyway), so the test
needs no Python package beyond the product's. The broker also talks to itself over the SASL_SSL
listener (``inter.broker.listener.name``), as user ``broker``; its controller listener stays
PLAINTEXT on a port of its own, which clients never use.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.services import KafkaBroker

MECHANISM = "SCRAM-SHA-512"
BROKER_USER = "broker"
CLIENT_USER = "recsys"
BROKER_NAMES = "SAN=ip:127.0.0.1,dns:localhost"
"""What clients check the broker's certificate against: the address they connect to."""


def make_certificates(folder: Path, password: str) -> tuple[Path, Path]:
    """A CA and a broker key pair signed by it for :data:`BROKER_NAMES`, valid 2 days; returns
    the CA's PEM file (what clients trust) and the broker's PKCS#12 keystore (``password``)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_pem, request, signed = folder / "ca.pem", folder / "broker.csr", folder / "broker.pem"
    ca = ("-keystore", str(folder / "ca.p12"), "-storetype", "PKCS12", "-storepass", password)
    keystore = folder / "broker.p12"
    broker = ("-keystore", str(keystore), "-storetype", "PKCS12", "-storepass", password)
    new_key = ("-genkeypair", "-keyalg", "RSA", "-keysize", "2048", "-validity", "2")
    sign = ("-gencert", "-rfc", "-validity", "2", "-ext", BROKER_NAMES)
    steps = [
        [*new_key, "-alias", "ca", "-dname", "CN=recsys test CA", "-ext", "bc:c=ca:true", *ca],
        ["-exportcert", "-rfc", "-alias", "ca", "-file", str(ca_pem), *ca],
        [*new_key, "-alias", "broker", "-dname", "CN=localhost", *broker],
        ["-certreq", "-alias", "broker", "-file", str(request), *broker],
        [*sign, "-alias", "ca", "-infile", str(request), "-outfile", str(signed), *ca],
        ["-importcert", "-noprompt", "-alias", "ca", "-file", str(ca_pem), *broker],
        ["-importcert", "-alias", "broker", "-file", str(signed), *broker],
    ]
    for step in steps:
        subprocess.run(["keytool", *step], check=True, capture_output=True, timeout=60)
    return ca_pem, keystore


@dataclass(frozen=True)
class SecureBroker:
    """The broker (not started yet) and what a client needs to reach it."""

    broker: KafkaBroker
    ca_file: Path
    password: str
    """The password of user :data:`CLIENT_USER`."""

    def client_env(self, password: str | None = None) -> dict[str, str]:
        """The ``RECSYS_`` settings of a client of this broker (``password``: another one)."""
        return {
            "RECSYS_KAFKA_BROKER": f"kafka://{self.broker.bootstrap}",
            "RECSYS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "RECSYS_KAFKA_SASL_MECHANISM": MECHANISM,
            "RECSYS_KAFKA_USERNAME": CLIENT_USER,
            "RECSYS_KAFKA_PASSWORD": self.password if password is None else password,
            "RECSYS_KAFKA_SSL_CAFILE": str(self.ca_file),
        }


def sasl_ssl_broker(folder: Path) -> SecureBroker:
    """Certificates, passwords and the broker's configuration under ``folder``."""
    store_password, broker_password, client_password = (secrets.token_hex(12) for _ in range(3))
    ca_file, keystore = make_certificates(folder / "tls", store_password)
    overlay = f"""
listeners=SASL_SSL://127.0.0.1:@KAFKA_PORT@,CONTROLLER://127.0.0.1:@KAFKA_CONTROLLER_PORT@
advertised.listeners=SASL_SSL://127.0.0.1:@KAFKA_PORT@
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms={MECHANISM}
sasl.mechanism.inter.broker.protocol={MECHANISM}
listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required \
username="{BROKER_USER}" password="{broker_password}";
ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={store_password}
ssl.key.password={store_password}
ssl.truststore.type=PEM
ssl.truststore.location={ca_file}
"""
    users = {BROKER_USER: broker_password, CLIENT_USER: client_password}
    format_args = [
        arg
        for user, password in users.items()
        for arg in ("--add-scram", f"{MECHANISM}=[name={user},password={password}]")
    ]
    broker = KafkaBroker(folder / "kafka", overlay=overlay, format_args=format_args)
    return SecureBroker(broker, ca_file, client_password)
