"""Generations as the API and the events carry them (generation.proto), and requests' fields as
the domain takes them. Scripts are not in the messages: every round's script is its version's."""

from __future__ import annotations

from cadpipe.timestamps import to_timestamp
from cadpipe.v1 import generation_pb2
from services.generator import domain
from services.generator.domain import Generation, Round
from services.generator.ports import Expected, Measured


def expected_input(message: generation_pb2.ExpectedGeometry) -> domain.ExpectedInput:
    return domain.ExpectedInput(
        bbox_mm=(message.bbox.x_mm, message.bbox.y_mm, message.bbox.z_mm),
        bbox_tolerance_mm=message.bbox_tolerance_mm,
        volume_mm3=message.volume_mm3,
        volume_tolerance=message.volume_tolerance,
        solids=message.solids,
    )


def expected_message(expected: Expected | None) -> generation_pb2.ExpectedGeometry | None:
    if expected is None:
        return None
    message = generation_pb2.ExpectedGeometry(
        bbox_tolerance_mm=expected.bbox_tolerance_mm if expected.bbox_mm else 0.0,
        volume_mm3=expected.volume_mm3 or 0.0,
        volume_tolerance=expected.volume_tolerance if expected.volume_mm3 else 0.0,
        solids=expected.solids or 0,
    )
    if expected.bbox_mm:
        x, y, z = expected.bbox_mm
        message.bbox.CopyFrom(generation_pb2.BoundingBox(x_mm=x, y_mm=y, z_mm=z))
    return message


def measured_message(measured: Measured | None) -> generation_pb2.MeasuredGeometry | None:
    if measured is None:
        return None
    x, y, z = measured.bbox_mm
    return generation_pb2.MeasuredGeometry(
        bbox=generation_pb2.BoundingBox(x_mm=x, y_mm=y, z_mm=z),
        volume_mm3=measured.volume_mm3,
        area_mm2=measured.area_mm2,
        solids=measured.solids,
        valid=measured.valid,
    )


def round_message(r: Round) -> generation_pb2.GenerationRound:
    message = generation_pb2.GenerationRound(
        round=r.round,
        version=r.version,
        state=r.state,
        feedback=r.feedback,
        measured=measured_message(r.measured),
        provider=r.provider,
        model=r.model,
        tokens_in=r.tokens_in,
        tokens_out=r.tokens_out,
        cost_usd=r.cost_usd,
        latency_seconds=r.latency_seconds,
    )
    if r.started_at:
        message.started_at.CopyFrom(to_timestamp(r.started_at))
    if r.finished_at:
        message.finished_at.CopyFrom(to_timestamp(r.finished_at))
    return message


def generation_message(g: Generation, *, replayed: bool = False) -> generation_pb2.Generation:
    message = generation_pb2.Generation(
        id=g.id,
        project=g.project,
        prompt=g.prompt,
        expect=expected_message(g.expected),
        parent_version=g.parent_version,
        max_rounds=g.max_rounds,
        state=g.state,
        round=g.round,
        result_version=g.result_version,
        error=g.error,
        provider=g.provider,
        model=g.model,
        rounds=[round_message(r) for r in g.rounds],
        created_at=to_timestamp(g.created_at),
        replayed=replayed,
    )
    if g.updated_at:
        message.updated_at.CopyFrom(to_timestamp(g.updated_at))
    if g.finished_at:
        message.finished_at.CopyFrom(to_timestamp(g.finished_at))
    return message


def ai_metrics_message(summary: domain.AiSummary) -> generation_pb2.AiMetrics:
    return generation_pb2.AiMetrics(
        generations=summary.by_state,
        first_round_success_rate=summary.first_round_success_rate,
        success_rate=summary.success_rate,
        mean_rounds=summary.mean_rounds,
        p95_rounds=summary.p95_rounds,
        providers=[
            generation_pb2.ProviderMetrics(
                provider=s.provider,
                model=s.model,
                calls=s.calls,
                errors=s.errors,
                latency_p50_seconds=domain.percentile(s.latencies, 0.5),
                latency_p95_seconds=domain.percentile(s.latencies, 0.95),
                tokens_in=s.tokens_in,
                tokens_out=s.tokens_out,
                cost_usd=s.cost_usd,
            )
            for s in summary.providers
        ],
    )
