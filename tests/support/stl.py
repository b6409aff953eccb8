"""Reading STL files back, binary or ASCII."""

from __future__ import annotations

import re
import struct


def stl_triangles(body: bytes) -> int:
    """Triangles in an STL file, binary or ASCII; AssertionError for anything else."""
    if len(body) >= 84:
        (count,) = struct.unpack_from("<I", body, 80)
        if len(body) == 84 + 50 * count:
            return int(count)
    text = body.decode("ascii")
    assert text.lstrip().startswith("solid"), "neither binary nor ASCII STL"
    return len(re.findall(r"^\s*facet normal", text, flags=re.MULTILINE))
