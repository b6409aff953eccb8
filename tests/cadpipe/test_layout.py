import datetime as dt

import pytest

from cadpipe import layout


@pytest.mark.parametrize(
    "name",
    ["../x", "a/b", "", "x" * 65, "p\u0430rt", "part.v2", "a b", "..", "a\\b", "\uff50art", "x\n"],
)
def test_project_names_that_could_escape_or_confuse_are_refused(name: str) -> None:
    with pytest.raises(layout.InvalidProject):
        layout.check_project(name)


@pytest.mark.parametrize("name", ["part", "Part-2", "a_b", "x" * 64, "0"])
def test_plain_project_names_are_accepted(name: str) -> None:
    assert layout.check_project(name) == name


def test_keys_follow_the_bucket_contract() -> None:
    at = dt.datetime(2026, 11, 24, 10, 15, 0, tzinfo=dt.UTC)
    assert layout.script_key("part", 3) == "input/part/part_v3.py"
    assert (
        layout.output_key("part", 3, "MyHeadlessModel.step")
        == "output/part/v3/MyHeadlessModel.step"
    )
    assert layout.log_key("part", 3, "error", at) == "logs/part/part_v3_error_20261124_101500.log"
    assert layout.marker_key("part", 3) == "processed/part/part_v3.py.done"
    assert layout.started_key("part", 3) == "started/part/part_v3.json"


def test_keys_parse_back() -> None:
    at = dt.datetime(2026, 11, 24, 10, 15, 0, tzinfo=dt.UTC)
    assert layout.parse_script_key("input/part/part_v12.py") == ("part", 12)
    assert layout.parse_script_key("input/part/other_v1.py") is None
    assert layout.parse_script_key("input/part/part_v0.py") is None
    assert layout.parse_marker_key("processed/p/p_v2.py.done") == ("p", 2)
    assert layout.parse_started_key("started/p/p_v2.json") == ("p", 2)
    assert layout.parse_started_key("started/p/q_v2.json") is None
    parsed = layout.parse_log_key(layout.log_key("p_1", 7, "info", at))
    assert parsed == layout.LogName("p_1", 7, "info", at)


def test_versions_start_at_one() -> None:
    with pytest.raises(ValueError):
        layout.script_key("part", 0)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.STEP", "step"),
        ("a.stp", "step"),
        ("b.FCStd", "fcstd"),
        ("c.igs", "iges"),
        ("d.txt", None),
        ("stl", None),
    ],
)
def test_output_formats_are_recognised_by_extension(name: str, fmt: str | None) -> None:
    assert layout.output_format(name) == fmt
