import asyncio

from cadpipe import messaging
from cadpipe.v1 import events_pb2


async def test_streams_are_ensured_idempotently_and_deduplicate_by_msg_id(js) -> None:
    await messaging.ensure_streams(js)  # a second replica starting does no harm
    event = events_pb2.ScriptUploaded(
        project="dedupe-test", version=1, key="input/dedupe-test/dedupe-test_v1.py"
    )
    headers = {"Nats-Msg-Id": messaging.uploaded_msg_id("dedupe-test", 1)}
    first = await js.publish(
        messaging.uploaded_subject("dedupe-test"), messaging.encode(event), headers=headers
    )
    again = await js.publish(
        messaging.uploaded_subject("dedupe-test"), messaging.encode(event), headers=headers
    )
    assert again.duplicate and not first.duplicate
    sub = await js.pull_subscribe(messaging.uploaded_subject("dedupe-test"), durable=None)
    [msg] = await asyncio.wait_for(sub.fetch(1, timeout=2), 5)
    assert messaging.decode(msg.data, events_pb2.ScriptUploaded) == event
