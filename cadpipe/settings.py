"""Settings shared by the services, read from the environment once, in each service's main().

Each service composes its own pydantic BaseSettings from these pieces; a missing or malformed
value fails at start with a message naming the variable.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

MODEL_CONFIG = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

MIB = 1024 * 1024


class LoggingSettings(BaseSettings):
    """How every service logs (cadpipe.logs.configure_logging): read with the rest of its
    settings, so that a bad value stops it with EX_CONFIG like any other."""

    model_config = MODEL_CONFIG

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


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


class GrpcServerSettings(LoggingSettings):
    model_config = MODEL_CONFIG

    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no metrics endpoint")
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    readiness_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often health asks the service's dependencies"
    )


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


# --- loading and showing settings ------------------------------------------------------------

EX_CONFIG = 78
"""sysexits.h's configuration error: the exit status of a service whose settings are invalid."""

_SECRET_NAME = re.compile(r"password|secret|token|credential|private_key|access_key", re.I)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")

S = TypeVar("S", bound=BaseSettings)


def configuration_problems(error: ValidationError) -> list[str]:
    """One line per problem, naming the environment variable; a secret's value is never
    repeated."""
    problems = []
    for item in error.errors():
        loc = [str(part) for part in item.get("loc", ())]
        field = loc[0] if loc else ""
        where = f"{field.upper()}{''.join(f'[{p}]' for p in loc[1:])}" if field else ""
        if item.get("type") == "missing":
            problem = "required, but not set"
        else:
            problem = str(item.get("msg", "invalid"))
            value = item.get("input")
            if field and not _SECRET_NAME.search(field) and isinstance(value, str | int | float):
                problem += f" (got {str(value)[:80]!r})"
        problems.append(f"{where}: {problem}" if where else problem)
    return problems


def load_settings(cls: type[S], service: str) -> S:
    """cls() from the environment; on invalid settings, logs every problem (one line naming
    each variable, no traceback) and exits with EX_CONFIG."""
    try:
        settings = cls()
    except ValidationError as error:
        problems = configuration_problems(error)
        logger.error(
            "%s cannot start, invalid configuration: %s",
            service,
            "; ".join(problems),
            extra={"problems": problems},
        )
        raise SystemExit(EX_CONFIG) from None
    return settings


@dataclass(frozen=True)
class SettingSummary:
    name: str
    """The environment variable."""
    value: str
    secret: bool
    from_environment: bool


def summarize(settings: BaseSettings) -> list[SettingSummary]:
    """Every setting as an operator may see it: secrets as "set" or "unset", credentials in
    URLs removed, and whether the value came from the environment or is the default."""
    out = []
    for name in sorted(type(settings).model_fields):
        value = getattr(settings, name)
        secret = isinstance(value, SecretStr) or bool(_SECRET_NAME.search(name))
        if secret:
            shown = "set" if value not in (None, "") else "unset"
        elif value is None:
            shown = ""
        elif isinstance(value, list | tuple | set | frozenset):
            shown = ",".join(str(v) for v in value)
        else:
            shown = _URL_CREDENTIALS.sub("***@", str(value))
        out.append(SettingSummary(name.upper(), shown, secret, name in settings.model_fields_set))
    return out
