"""The generator's settings, read from the environment once, in main()."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from cadpipe.settings import (
    MODEL_CONFIG,
    GrpcSecuritySettings,
    GrpcServerSettings,
    MongoSettings,
    NatsSettings,
)


class Settings(MongoSettings, NatsSettings, GrpcServerSettings, GrpcSecuritySettings):
    model_config = MODEL_CONFIG

    grpc_port: int = Field(default=50054, ge=0, le=65535)

    scripts_addr: str = Field(
        default="127.0.0.1:50051", description="cadpipe.v1.ScriptService: every attempt's upload"
    )
    watcher_addr: str = Field(
        default="127.0.0.1:50052",
        description="cadpipe.v1.StatusService and ArtifactService: runs' status and reports",
    )
    call_timeout_seconds: float = Field(default=30.0, gt=0, description="Per gRPC call")
    # TLS towards the script service and the watcher, as the gateway's GRPC_TLS_* (the
    # GRPC_TLS_* settings here are this server's own port)
    client_tls_ca_file: str | None = Field(
        default=None, description="PEM CA of the services' certificates: calls use TLS when set"
    )
    client_tls_cert_file: str | None = Field(default=None, description="mutual TLS: our cert")
    client_tls_key_file: str | None = Field(default=None, description="Key of that certificate")
    client_tls_server_name: str | None = Field(
        default=None, description="Name to verify in the services' certificates, if not the host"
    )

    # --- the script writer ---------------------------------------------------------------
    generator_provider: Literal["templates", "openai"] = Field(
        default="templates",
        description="templates: the built-in catalogue, offline; openai: any server speaking "
        "the OpenAI chat completions protocol (OpenAI, OpenRouter, Ollama, vLLM, ...)",
    )
    openai_base_url: str = Field(
        default="https://api.openai.com/v1", description="e.g. http://127.0.0.1:11434/v1 (Ollama)"
    )
    openai_model: str = Field(default="gpt-4o-mini")
    openai_api_key: SecretStr | None = Field(
        default=None, description="Bearer key; unset for servers that need none (Ollama)"
    )
    openai_timeout_seconds: float = Field(default=120.0, gt=0)
    openai_max_retries: int = Field(default=2, ge=0, le=10)
    freecad_version: str = Field(
        default="",
        description="The FreeCAD version told to the model until a worker's report names the "
        "one it runs; empty: '0.20 or 1.0' (Debian 12's and 13's freecad)",
    )

    # --- limits ------------------------------------------------------------------------------
    max_prompt_chars: int = Field(default=4000, ge=1, le=100_000)
    max_rounds: int = Field(default=5, ge=1, le=20, description="Most rounds a request may ask")
    default_max_rounds: int = Field(default=3, ge=1, le=20)
    max_script_bytes: int = Field(default=1024 * 1024, ge=1)
    generation_deadline_seconds: float = Field(
        default=900.0, gt=0, description="A generation still running after this ends failed"
    )

    # --- running -----------------------------------------------------------------------------
    max_concurrent_generations: int = Field(
        default=32, ge=1, description="Generations this instance drives at once; more queue"
    )
    generator_id: str = Field(
        default="", description="This instance's name on its leases; empty: host name and pid"
    )
    lease_seconds: float = Field(
        default=30.0, gt=0, description="A generation whose runner is silent this long resumes"
    )
    resume_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often lapsed generations are looked for"
    )
    completion_poll_seconds: float = Field(
        default=2.0, gt=0, description="Status check while waiting for a completion event"
    )
    publish_timeout_seconds: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.default_max_rounds > self.max_rounds:
            raise ValueError("default_max_rounds must not exceed max_rounds")
        if bool(self.client_tls_cert_file) != bool(self.client_tls_key_file):
            raise ValueError("client_tls_cert_file and client_tls_key_file go together")
        if self.client_tls_cert_file and not self.client_tls_ca_file:
            raise ValueError("a client certificate (mutual TLS) needs client_tls_ca_file")
        return self
