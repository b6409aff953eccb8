"""Server-Sent Events framing."""

from __future__ import annotations

import json

from support.sse import parse_frames

from services.gateway import sse


def test_a_message_is_one_data_line_whatever_it_contains() -> None:
    frame = sse.data_frame({"log": "line 1\nline 2\r\n", "name": "größe"})
    assert frame.endswith(b"\n\n")
    text = frame.decode()
    assert text.count("\n") == 2
    assert text.startswith("data: ")
    assert json.loads(text[len("data: ") :]) == {"log": "line 1\nline 2\r\n", "name": "größe"}


def test_errors_are_named_events() -> None:
    frame = sse.error_frame({"code": 14, "message": "gone", "details": []})
    assert parse_frames(frame.decode()) == [
        {"event": "error", "data": '{"code":14,"message":"gone","details":[]}'}
    ]


def test_parse_frames_reads_back_data_comments_and_multiline_data() -> None:
    stream = (
        sse.data_frame({"a": 1}) + sse.KEEPALIVE + b"event: x\ndata: one\ndata: two\n\n"
    ).decode()
    assert parse_frames(stream) == [
        {"data": '{"a":1}'},
        {"comment": "keepalive"},
        {"event": "x", "data": "one\ntwo"},
    ]
