"""The gateway's settings, read from the environment once, in main()."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from cadpipe.settings import MODEL_CONFIG

MIB = 1024 * 1024

SCRIPT_SERVICE = "cadpipe.v1.ScriptService"
STATUS_SERVICE = "cadpipe.v1.StatusService"
ARTIFACT_SERVICE = "cadpipe.v1.ArtifactService"


class Settings(BaseSettings):
    model_config = MODEL_CONFIG

    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port")

    # gRPC targets (host:port, or any grpc target such as dns:///scripts:50051). An empty value
    # leaves that backend out: its routes answer 503 and /readyz does not wait for it.
    scripts_addr: str = Field(default="127.0.0.1:50051", description="cadpipe.v1.ScriptService")
    watcher_addr: str = Field(
        default="127.0.0.1:50052", description="cadpipe.v1.StatusService and ArtifactService"
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

    def backend_addresses(self) -> dict[str, str]:
        """gRPC target per proto service, configured ones only."""
        wanted = {
            SCRIPT_SERVICE: self.scripts_addr,
            STATUS_SERVICE: self.watcher_addr,
            ARTIFACT_SERVICE: self.watcher_addr,
        }
        return {service: address.strip() for service, address in wanted.items() if address.strip()}

    def cors_origins(self) -> list[str]:
        return [origin.strip() for origin in self.cors_allow_origins.split(",") if origin.strip()]
