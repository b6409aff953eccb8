"""The script service's settings, read from the environment once, in main()."""

from __future__ import annotations

from pydantic import Field

from cadpipe.settings import (
    MIB,
    MODEL_CONFIG,
    GrpcSecuritySettings,
    GrpcServerSettings,
    MongoSettings,
    NatsSettings,
    S3Settings,
)


class Settings(S3Settings, MongoSettings, NatsSettings, GrpcServerSettings, GrpcSecuritySettings):
    model_config = MODEL_CONFIG

    grpc_port: int = Field(default=50051, ge=0, le=65535)

    max_script_bytes: int = Field(default=MIB, ge=1, le=64 * MIB, description="Largest script")
    max_metadata_entries: int = Field(default=32, ge=0, le=256)
    max_metadata_key_chars: int = Field(default=128, ge=1, le=128)
    max_metadata_value_chars: int = Field(default=1024, ge=1, le=1536)
    # AWS S3 allows 2 KB of user metadata per object (keys and values, UTF-8). The caller's
    # metadata travels as one JSON header next to ours (sha256, uploaded-at, idempotency-key:
    # under 300 bytes), so its encoded form is kept under this budget.
    max_metadata_bytes: int = Field(default=1536, ge=2, le=1536)

    max_version_attempts: int = Field(
        default=100, ge=1, description="Conditional puts one upload may try before ABORTED"
    )
    puts_in_flight: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Conditional puts of one project a replica has in flight at once "
        "(1: strictly one after the other)",
    )
    idempotency_wait_seconds: float = Field(
        default=5.0, ge=0, description="How long a replay waits for a concurrent first upload"
    )
    idempotency_stale_seconds: float = Field(
        default=60.0, gt=0, description="A claim older than this, still pending, is taken over"
    )
    outbox_poll_seconds: float = Field(
        default=1.0, gt=0, description="Publisher scan for entries left by other replicas"
    )
    outbox_max_backoff_seconds: float = Field(default=5.0, gt=0)
    publish_timeout_seconds: float = Field(default=2.0, gt=0)
    reconcile_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Reconciler passes over projects whose stored version could not be recorded",
    )
    reconcile_full_every: int = Field(
        default=120,
        ge=0,
        description="Every that many passes (and at start) the reconciler covers every project; "
        "0: never",
    )
