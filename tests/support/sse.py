"""Reading Server-Sent Events back, as a client does (the gateway only writes them)."""

from __future__ import annotations


def parse_frames(text: str) -> list[dict[str, str]]:
    """Splits an event stream into frames ({'event': ..., 'data': ...}; comments as
    {'comment': ...}), as a browser's EventSource reads them."""
    frames: list[dict[str, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                frame["comment"] = line[1:].strip()
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            frame[name] = frame[name] + "\n" + value if name in frame else value
        frames.append(frame)
    return frames
