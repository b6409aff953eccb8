"""gRPC status → HTTP and the JSON error body."""

from __future__ import annotations

import grpc
from gateway_fakes import bad_request_details

from services.gateway.errors import HTTP_STATUS, GatewayError, from_rpc_error, http_status

# grpc-gateway v2, runtime.HTTPStatusFromCode
GRPC_GATEWAY_V2 = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


def test_every_grpc_code_maps_as_grpc_gateway_v2_does() -> None:
    assert {code.name: http_status(code) for code in grpc.StatusCode} == GRPC_GATEWAY_V2
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


def test_the_error_body_carries_the_grpc_code_number() -> None:
    error = GatewayError(grpc.StatusCode.NOT_FOUND, "version 9 does not exist")
    assert error.http_status == 404
    assert error.body() == {"code": 5, "message": "version 9 does not exist", "details": []}


def test_the_gateway_may_choose_a_more_precise_http_status() -> None:
    error = GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "too big", http=413)
    assert error.http_status == 413
    assert error.body()["code"] == 3


def _rpc_error(
    code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str | bytes], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


def test_a_backend_error_keeps_its_code_message_and_rich_details() -> None:
    error = from_rpc_error(
        _rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad script",
            bad_request_details("script", "line 2 column 1"),
        )
    )
    assert error.http_status == 400
    assert error.body() == {
        "code": 3,
        "message": "bad script",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [{"field": "script", "description": "line 2 column 1"}],
            }
        ],
    }


def test_details_the_gateway_cannot_read_do_not_hide_the_status() -> None:
    garbage = _rpc_error(
        grpc.StatusCode.UNAVAILABLE, "down", (("grpc-status-details-bin", b"\xff\xff"),)
    )
    assert from_rpc_error(garbage).body() == {"code": 14, "message": "down", "details": []}

    from google.protobuf import any_pb2
    from google.rpc import status_pb2

    unknown = any_pb2.Any(type_url="type.googleapis.com/acme.Secret", value=b"\x08\x01")
    status = status_pb2.Status(code=9, message="no", details=[unknown])
    error = from_rpc_error(
        _rpc_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            "no",
            (("grpc-status-details-bin", status.SerializeToString()),),
        )
    )
    assert error.http_status == 400
    assert error.body()["details"] == [{"@type": "type.googleapis.com/acme.Secret"}]
