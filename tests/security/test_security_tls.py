"""Calls between services over TLS and mutual TLS, chosen by settings, with a throwaway CA made
here: the gateway reaches a script service that requires client certificates; plaintext
clients, clients without a certificate and clients of another CA do not."""

from __future__ import annotations

import datetime as dt
import ipaddress
import pathlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from security_stack import JWT_SECRET, SCRIPT, s3_env

from cadpipe.adapters import s3
from cadpipe.callers import channel_credentials
from cadpipe.devstack import MotoS3, NatsServer
from cadpipe.settings import S3Settings
from services.gateway import bootstrap as gateway
from services.gateway.settings import Settings as GatewaySettings
from services.scripts import bootstrap as scripts
from services.scripts.settings import Settings as ScriptsSettings


@dataclass(frozen=True)
class Issued:
    cert: pathlib.Path
    key: pathlib.Path


class Authority:
    """A CA that signs server and client certificates into a directory."""

    def __init__(self, directory: pathlib.Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            self._builder(subject, self.key.public_key())
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = directory / f"{name}-ca.pem"
        self.pem.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(
        subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
        )

    def issue(self, common_name: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            self._builder(subject, key.public_key())
            .issuer_name(self.certificate.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("scripts.cadpipe.test"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        issued = Issued(
            self.directory / f"{self.name}-{common_name}.pem",
            self.directory / f"{self.name}-{common_name}.key",
        )
        issued.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued


@pytest.fixture
def pki(tmp_path: pathlib.Path) -> dict[str, object]:
    ca = Authority(tmp_path, "cadpipe")
    rogue = Authority(tmp_path, "rogue")
    return {
        "ca": ca,
        "server": ca.issue("scripts", server=True),
        "client": ca.issue("gateway", server=False),
        "rogue": rogue,
        "rogue_client": rogue.issue("gateway", server=False),
    }


@asynccontextmanager
async def script_service(moto: MotoS3, **tls: str) -> AsyncIterator[int]:
    unique = uuid.uuid4().hex[:10]
    values = s3_env(moto, f"cadpipe-tls-{unique}")
    s3.Bucket(s3.make_client(S3Settings(**values)), values["s3_bucket"]).create_if_missing()
    with NatsServer() as nats:
        settings = ScriptsSettings.model_validate(
            {
                **values,
                "mongodb_uri": f"mongomock://tls-{unique}",
                "nats_url": nats.url,
                "grpc_host": "127.0.0.1",
                "grpc_port": 0,
                "shutdown_grace_seconds": 0.5,
                "service_token": "s" * 32,
                **tls,
            }
        )
        async with scripts.start(settings) as running:
            yield running.port


def _as_alice() -> dict[str, str]:
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, JWT_SECRET)
    return {"Authorization": f"Bearer {token}"}


async def _health(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_the_gateway_reaches_a_service_that_requires_client_certificates(
    moto_server: MotoS3, pki: dict[str, object]
) -> None:
    ca, server, client = pki["ca"], pki["server"], pki["client"]
    rogue, rogue_client = pki["rogue"], pki["rogue_client"]
    assert isinstance(ca, Authority) and isinstance(rogue, Authority)
    assert isinstance(server, Issued) and isinstance(client, Issued)
    assert isinstance(rogue_client, Issued)
    async with script_service(
        moto_server,
        grpc_tls_cert_file=str(server.cert),
        grpc_tls_key_file=str(server.key),
        grpc_tls_client_ca_file=str(ca.pem),
    ) as port:
        target = f"127.0.0.1:{port}"
        good = channel_credentials(str(ca.pem), str(client.cert), str(client.key))
        assert await _health(target, good) == grpc.StatusCode.OK
        # plaintext, no client certificate, a certificate of another CA, a server not trusted
        assert await _health(target, None) == grpc.StatusCode.UNAVAILABLE
        no_certificate = channel_credentials(str(ca.pem))
        assert await _health(target, no_certificate) == grpc.StatusCode.UNAVAILABLE
        foreign = channel_credentials(str(ca.pem), str(rogue_client.cert), str(rogue_client.key))
        assert await _health(target, foreign) == grpc.StatusCode.UNAVAILABLE
        distrust = channel_credentials(str(rogue.pem), str(client.cert), str(client.key))
        assert await _health(target, distrust) == grpc.StatusCode.UNAVAILABLE

        settings = GatewaySettings.model_validate(
            {
                "http_host": "127.0.0.1",
                "http_port": 0,
                "scripts_addr": target,
                "watcher_addr": "",
                "api_tokens": False,
                "jwt_secret": JWT_SECRET,
                "service_token": "s" * 32,
                "grpc_tls_ca_file": str(ca.pem),
                "grpc_tls_cert_file": str(client.cert),
                "grpc_tls_key_file": str(client.key),
                "shutdown_grace_seconds": 0.5,
            }
        )
        async with (
            gateway.start(settings) as running,
            httpx.AsyncClient(base_url=running.url, timeout=10, headers=_as_alice()) as http,
        ):
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            stored = await http.post(
                "/api/projects/tls-part/upload-script", json={"script": SCRIPT}
            )
            assert stored.status_code == 200, stored.text


async def test_server_only_tls_and_a_name_other_than_the_address(
    moto_server: MotoS3, pki: dict[str, object]
) -> None:
    ca, server = pki["ca"], pki["server"]
    assert isinstance(ca, Authority) and isinstance(server, Issued)
    async with script_service(
        moto_server, grpc_tls_cert_file=str(server.cert), grpc_tls_key_file=str(server.key)
    ) as port:
        settings = GatewaySettings.model_validate(
            {
                "http_host": "127.0.0.1",
                "http_port": 0,
                "scripts_addr": f"localhost:{port}",  # not in the certificate: the override is
                "watcher_addr": "",
                "api_tokens": False,
                "jwt_secret": JWT_SECRET,
                "service_token": "s" * 32,
                "grpc_tls_ca_file": str(ca.pem),
                "grpc_tls_server_name": "scripts.cadpipe.test",
                "shutdown_grace_seconds": 0.5,
            }
        )
        async with (
            gateway.start(settings) as running,
            httpx.AsyncClient(base_url=running.url, timeout=10, headers=_as_alice()) as http,
        ):
            stored = await http.post(
                "/api/projects/tls-part/upload-script", json={"script": SCRIPT}
            )
            assert stored.status_code == 200, stored.text
        assert await _health(f"127.0.0.1:{port}", None) == grpc.StatusCode.UNAVAILABLE
