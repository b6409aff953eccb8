"""Throwaway services with chosen google.api.http annotations, built as descriptors at test time
(each in its own package of the default pool), so route derivation and request building can be
tested on cases the cadpipe protos do not have."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, json_format
from google.protobuf.descriptor import FileDescriptor

F = descriptor_pb2.FieldDescriptorProto
_packages = itertools.count()


@dataclass
class Rpc:
    name: str
    rule: dict[str, Any] | None
    client_streaming: bool = False
    server_streaming: bool = False


def make_api(rpcs: Sequence[Rpc]) -> FileDescriptor:
    """One service `Api` whose methods all take `Req` (every scalar kind, a repeated string, a
    nested message, a map, an enum) and return `Req`."""
    package = f"gwtest{next(_packages)}"
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{package}/api.proto",
        package=package,
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    kind = file.enum_type.add(name="Kind")
    kind.value.add(name="KIND_UNSPECIFIED", number=0)
    kind.value.add(name="KIND_A", number=1)
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="x", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="x")
    req = file.message_type.add(name="Req")
    entry = req.nested_type.add(name="LabelsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    scalars = [
        ("id", F.TYPE_STRING),
        ("n", F.TYPE_INT32),
        ("big", F.TYPE_INT64),
        ("u", F.TYPE_UINT64),
        ("flag", F.TYPE_BOOL),
        ("ratio", F.TYPE_DOUBLE),
        ("small", F.TYPE_FLOAT),
        ("blob", F.TYPE_BYTES),
        ("page_size", F.TYPE_INT32),
    ]
    number = itertools.count(1)
    for name, type_ in scalars:
        req.field.add(
            name=name,
            number=next(number),
            type=type_,
            label=F.LABEL_OPTIONAL,
            json_name=_json(name),
        )
    req.field.add(
        name="kind", number=next(number), type=F.TYPE_ENUM, type_name=f".{package}.Kind",
        label=F.LABEL_OPTIONAL, json_name="kind",
    )  # fmt: skip
    req.field.add(
        name="tags",
        number=next(number),
        type=F.TYPE_STRING,
        label=F.LABEL_REPEATED,
        json_name="tags",
    )
    req.field.add(
        name="inner", number=next(number), type=F.TYPE_MESSAGE, type_name=f".{package}.Inner",
        label=F.LABEL_OPTIONAL, json_name="inner",
    )  # fmt: skip
    req.field.add(
        name="labels", number=next(number), type=F.TYPE_MESSAGE,
        type_name=f".{package}.Req.LabelsEntry", label=F.LABEL_REPEATED, json_name="labels",
    )  # fmt: skip
    service = file.service.add(name="Api")
    for rpc in rpcs:
        method = service.method.add(
            name=rpc.name,
            input_type=f".{package}.Req",
            output_type=f".{package}.Req",
            client_streaming=rpc.client_streaming,
            server_streaming=rpc.server_streaming,
        )
        if rpc.rule is not None:
            rule = json_format.ParseDict(rpc.rule, http_pb2.HttpRule())
            method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool = descriptor_pool.Default()
    pool.AddSerializedFile(file.SerializeToString())
    return pool.FindFileByName(file.name)


def _json(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)
