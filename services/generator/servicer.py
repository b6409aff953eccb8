"""The gRPC entrypoint: request message -> use case (generating.Generator) -> response message.
Errors are cadpipe.errors, mapped to status codes by the server interceptor."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from cadpipe.callers import current_caller
from cadpipe.v1 import generation_pb2, generation_pb2_grpc
from services.generator import domain
from services.generator.generating import Generator
from services.generator.messages import ai_metrics_message, expected_input, generation_message

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self, generator: Generator, limits: domain.Limits) -> None:
        self._generator = generator
        self._limits = limits

    async def Generate(
        self, request: generation_pb2.GenerateRequest, context: Context
    ) -> generation_pb2.Generation:
        # another identity's project is not found, whatever else is wrong with the request
        domain.check_project(request.project)
        await self._generator.check_access(request.project, current_caller(), creating=True)
        new = domain.check_request(
            project=request.project,
            prompt=request.prompt,
            expected=expected_input(request.expect),
            parent_version=request.parent_version,
            max_rounds=request.max_rounds,
            idempotency_key=request.idempotency_key,
            limits=self._limits,
        )
        generation, replayed = await self._generator.start(new, current_caller())
        return generation_message(generation, replayed=replayed)

    async def GetGeneration(
        self, request: generation_pb2.GetGenerationRequest, context: Context
    ) -> generation_pb2.Generation:
        domain.check_project(request.project)
        domain.check_generation_id(request.id)
        return generation_message(
            await self._generator.get(request.project, request.id, current_caller())
        )

    async def ListGenerations(
        self, request: generation_pb2.ListGenerationsRequest, context: Context
    ) -> generation_pb2.ListGenerationsResponse:
        domain.check_project(request.project)
        found, token = await self._generator.page(
            request.project,
            current_caller(),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return generation_pb2.ListGenerationsResponse(
            generations=[generation_message(g) for g in found], next_page_token=token
        )

    async def GetAiMetrics(
        self, request: generation_pb2.GetAiMetricsRequest, context: Context
    ) -> generation_pb2.AiMetrics:
        return ai_metrics_message(await self._generator.summary(request.window_seconds))
