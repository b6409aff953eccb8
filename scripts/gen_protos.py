"""Generates Python code (messages, stubs, typing stubs) from protos/ into cadpipe/v1.

The google/api annotations come from googleapis-common-protos, which ships the .proto files.
"""

from __future__ import annotations

import pathlib
import sys

import google.api
import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    protos = sorted((ROOT / "protos").rglob("*.proto"))
    googleapis = pathlib.Path(google.api.__path__[0]).parent.parent
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    out = ROOT / "cadpipe" / "v1"
    out.mkdir(exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT / 'protos'}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        return 1
    (out / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
