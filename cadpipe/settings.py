"""Settings shared by the services, read from the environment once, in each service's main().

Each service composes its own pydantic BaseSettings from these pieces; a missing or malformed
value fails at start with a message naming the variable.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MODEL_CONFIG = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)


class S3Settings(BaseSettings):
    model_config = MODEL_CONFIG

    s3_bucket: str = Field(min_length=3, max_length=63, description="Bucket holding everything")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto); unset for AWS"
    )
    aws_region: str = "us-east-1"
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None


class MongoSettings(BaseSettings):
    model_config = MODEL_CONFIG

    mongodb_uri: SecretStr = Field(
        description="mongodb://... for a real server; mongomock://NAME for an in-process one"
    )
    mongodb_database: str = "cadpipe"


class NatsSettings(BaseSettings):
    model_config = MODEL_CONFIG

    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)


class GrpcServerSettings(BaseSettings):
    model_config = MODEL_CONFIG

    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no metrics endpoint")
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)


class GrpcSecuritySettings(BaseSettings):
    """Who a gRPC server believes, and TLS on its port (cadpipe.callers, docs/security.md)."""

    model_config = MODEL_CONFIG

    service_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Internal token the gateway sends (x-cadpipe-service-token); when set, only "
        "calls carrying it are served, and they must name their caller",
    )
    grpc_tls_cert_file: str | None = Field(default=None, description="PEM server certificate")
    grpc_tls_key_file: str | None = Field(default=None, description="PEM key of that certificate")
    grpc_tls_client_ca_file: str | None = Field(
        default=None,
        description="PEM CA: clients must present a certificate it signed (mutual TLS)",
    )

    @model_validator(mode="after")
    def _tls_complete(self) -> GrpcSecuritySettings:
        if bool(self.grpc_tls_cert_file) != bool(self.grpc_tls_key_file):
            raise ValueError("grpc_tls_cert_file and grpc_tls_key_file go together")
        if self.grpc_tls_client_ca_file and not self.grpc_tls_cert_file:
            raise ValueError("grpc_tls_client_ca_file (mutual TLS) needs grpc_tls_cert_file")
        return self
