"""The gateway's settings, read from the environment once, in main()."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from cadpipe.settings import MIB, MODEL_CONFIG, LoggingSettings

SCRIPT_SERVICE = "cadpipe.v1.ScriptService"
STATUS_SERVICE = "cadpipe.v1.StatusService"
ARTIFACT_SERVICE = "cadpipe.v1.ArtifactService"
MONITORING_SERVICE = "cadpipe.v1.MonitoringService"
GENERATION_SERVICE = "cadpipe.v1.GenerationService"
GENERATE_METHOD = f"{GENERATION_SERVICE}.Generate"


class Settings(LoggingSettings):
    model_config = MODEL_CONFIG

    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port")

    # gRPC targets (host:port, or any grpc target such as dns:///scripts:50051). An empty value
    # leaves that backend out: its routes answer 503 and /readyz does not wait for it.
    scripts_addr: str = Field(default="127.0.0.1:50051", description="cadpipe.v1.ScriptService")
    watcher_addr: str = Field(
        default="127.0.0.1:50052", description="cadpipe.v1.StatusService and ArtifactService"
    )
    generator_addr: str = Field(
        default="",
        description="cadpipe.v1.GenerationService (text to CAD, /api/.../generate), e.g. "
        "127.0.0.1:50054; empty: those routes answer 503 and /readyz does not wait for it",
    )
    monitoring_addr: str | None = Field(
        default=None,
        description="cadpipe.v1.MonitoringService (/api/monitoring/...); unset: WATCHER_ADDR, "
        "as the watcher serves it",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Prometheus /metrics on a port of its own (0: none), kept off the API port",
    )

    grpc_deadline_seconds: float = Field(default=30.0, gt=0, description="Per unary call")
    grpc_max_message_bytes: int = Field(default=16 * MIB, ge=MIB, description="Largest response")
    readiness_timeout_seconds: float = Field(
        default=2.0, gt=0, description="/readyz: per backend health check"
    )
    max_body_bytes: int = Field(
        default=2 * MIB, ge=1, description="Largest request body; more is 413"
    )
    sse_keepalive_seconds: float = Field(
        default=15.0, gt=0, description="Idle time before an SSE `: keepalive` comment"
    )
    cors_allow_origins: str = Field(
        default="",
        description="Comma-separated origins browsers may call from ('*': any); empty: no CORS",
    )
    shutdown_grace_seconds: float = Field(
        default=10.0, ge=0, description="In-flight HTTP requests get this long after SIGTERM"
    )

    # --- who may call (docs/security.md) ---------------------------------------------------
    auth_mode: Literal["bearer", "none"] = Field(
        default="bearer",
        description="bearer: every /api route but the public ones needs a token; none: no "
        "authentication at all (a trusted network only)",
    )
    api_tokens: bool = Field(
        default=True, description="Accept API tokens (MongoDB api_tokens); needs MONGODB_URI"
    )
    mongodb_uri: SecretStr | None = Field(
        default=None, description="Where the api_tokens collection lives"
    )
    mongodb_database: str = "cadpipe"
    api_token_cache_seconds: float = Field(
        default=10.0, ge=0, description="How long a verified API token is trusted (revocation lag)"
    )
    jwt_secret: SecretStr | None = Field(default=None, description="Key of HS256/384/512 JWTs")
    jwt_public_key: SecretStr | None = Field(
        default=None, description="PEM public key of RS*/PS*/ES*/EdDSA JWTs"
    )
    jwt_algorithms: str = Field(default="HS256", description="Comma-separated, one key family")
    jwt_audience: str | None = Field(default=None, description="Required `aud`, when set")
    jwt_issuer: str | None = Field(default=None, description="Required `iss`, when set")
    jwt_admin_claim: str = Field(
        default="cadpipe_admin",
        description="Claim that makes an admin: true, or a string/list holding JWT_ADMIN_VALUE",
    )
    jwt_admin_value: str = "admin"
    jwt_leeway_seconds: float = Field(default=30.0, ge=0, description="Clock skew allowed")
    public_paths: str = Field(
        default="/api/monitoring/health",
        description="Comma-separated /api paths served without a token",
    )
    admin_path_prefixes: str = Field(
        default="/api/monitoring/",
        description="Comma-separated path prefixes only admin identities may call",
    )
    upload_rate_per_second: float = Field(
        default=1.0, ge=0, description="Per token, on routes that write; 0: no limit"
    )
    upload_burst: int = Field(default=20, ge=1, description="Writes a token may make at once")
    generation_rate_per_minute: float = Field(
        default=6.0,
        ge=0,
        description="Per token, generations started (each costs provider calls); 0: no limit "
        "beyond the one on writes",
    )
    generation_burst: int = Field(
        default=3, ge=1, description="Generations a token may start at once"
    )

    # --- the gRPC side -------------------------------------------------------------------
    service_token: SecretStr | None = Field(
        default=None, min_length=16, description="Sent to the backends as x-cadpipe-service-token"
    )
    grpc_tls_ca_file: str | None = Field(
        default=None, description="PEM CA of the backends' certificates: calls use TLS when set"
    )
    grpc_tls_cert_file: str | None = Field(
        default=None, description="PEM client certificate (mutual TLS)"
    )
    grpc_tls_key_file: str | None = Field(default=None, description="Key of that certificate")
    grpc_tls_server_name: str | None = Field(
        default=None, description="Name to verify in the backends' certificates, if not the host"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.auth_mode == "bearer":
            if not self.api_tokens and not self.jwt_configured:
                raise ValueError(
                    "auth_mode bearer needs API tokens (api_tokens=true and mongodb_uri) or JWT "
                    "(jwt_secret or jwt_public_key); auth_mode=none turns authentication off"
                )
            if self.api_tokens and self.mongodb_uri is None:
                raise ValueError(
                    "api_tokens needs mongodb_uri (the api_tokens collection); set "
                    "api_tokens=false to accept JWTs only, or auth_mode=none"
                )
        if self.jwt_secret is not None and self.jwt_public_key is not None:
            raise ValueError("set one of jwt_secret and jwt_public_key, not both")
        if self.jwt_configured:
            algorithms = self.jwt_algorithm_list()
            symmetric = {a for a in algorithms if a.startswith("HS")}
            if not algorithms or "none" in {a.lower() for a in algorithms}:
                raise ValueError("jwt_algorithms must name signing algorithms (not 'none')")
            # one key for both families would let a public key be used as an HMAC secret
            if symmetric and symmetric != set(algorithms):
                raise ValueError("jwt_algorithms must not mix HS* with public-key algorithms")
            if symmetric and self.jwt_secret is None:
                raise ValueError(f"jwt_algorithms {sorted(symmetric)} need jwt_secret")
            if not symmetric and self.jwt_public_key is None:
                raise ValueError("public-key jwt_algorithms need jwt_public_key")
        if bool(self.grpc_tls_cert_file) != bool(self.grpc_tls_key_file):
            raise ValueError("grpc_tls_cert_file and grpc_tls_key_file go together")
        if self.grpc_tls_cert_file and not self.grpc_tls_ca_file:
            raise ValueError("a client certificate (mutual TLS) needs grpc_tls_ca_file")
        return self

    @property
    def jwt_configured(self) -> bool:
        return self.jwt_secret is not None or self.jwt_public_key is not None

    def jwt_algorithm_list(self) -> list[str]:
        return [a.strip() for a in self.jwt_algorithms.split(",") if a.strip()]

    def public_path_list(self) -> list[str]:
        return [p.strip() for p in self.public_paths.split(",") if p.strip()]

    def admin_prefix_list(self) -> list[str]:
        return [p.strip() for p in self.admin_path_prefixes.split(",") if p.strip()]

    def backend_addresses(self) -> dict[str, str]:
        """gRPC target per proto service, configured ones only."""
        wanted = {
            SCRIPT_SERVICE: self.scripts_addr,
            STATUS_SERVICE: self.watcher_addr,
            ARTIFACT_SERVICE: self.watcher_addr,
            GENERATION_SERVICE: self.generator_addr,
            MONITORING_SERVICE: (
                self.watcher_addr if self.monitoring_addr is None else self.monitoring_addr
            ),
        }
        return {service: address.strip() for service, address in wanted.items() if address.strip()}

    def cors_origins(self) -> list[str]:
        return [origin.strip() for origin in self.cors_allow_origins.split(",") if origin.strip()]
