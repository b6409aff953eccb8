"""Validation of custom resources (KEDA's ScaledObject) against the CustomResourceDefinitions
their projects publish, vendored in tests/deploy/schemas: kubernetes-validate knows only the
built-in kinds.

The API server validates a custom resource with the CRD's OpenAPI v3 schema, and with
`kubectl apply`'s strict field validation (the default since Kubernetes 1.27) an unknown field
is an error, as kubernetes-validate's strict mode makes it for built-in kinds. So every object
schema that declares its properties is closed here (additionalProperties: false), except where
the CRD keeps unknown fields on purpose (x-kubernetes-preserve-unknown-fields) or declares a
map (additionalProperties given).
"""

from __future__ import annotations

import copy
import functools
import pathlib
from typing import Any

import jsonschema
import yaml

SCHEMAS = pathlib.Path(__file__).resolve().parent / "schemas"

Obj = dict[str, Any]


class UnknownKind(LookupError):
    """No vendored CRD serves this apiVersion and kind."""


@functools.cache
def _schemas() -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> the schema the CRD serves for it."""
    found: dict[tuple[str, str], Obj] = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                    found[(f"{group}/{version['name']}", kind)] = schema
    return found


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        for value in schema.values():
            _strict(value)
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


def is_custom(obj: Obj) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in _schemas()


def validate(obj: Obj) -> list[str]:
    """Every violation of the CRD's schema, as "path: message" lines ([] when valid)."""
    try:
        schema = _schemas()[(obj.get("apiVersion", ""), obj.get("kind", ""))]
    except KeyError:
        raise UnknownKind(f"no CRD for {obj.get('apiVersion')} {obj.get('kind')}") from None
    validator = jsonschema.Draft7Validator(schema)
    return sorted(
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(obj)
    )
