from cadpipe import marker


def test_our_marker_round_trips() -> None:
    m = marker.Marker(
        status="error",
        outputs=(marker.MarkerOutput("output/p/v1/a.stl", "a.stl", "stl", 10, "ab", "model/stl"),),
        log_key="logs/p/p_v1_error_20261124_101500.log",
        error="ValueError: boom",
        duration_seconds=1.5,
        project="p",
        version=1,
    )
    assert marker.parse(m.to_json()) == m


def test_an_empty_marker_from_an_older_worker_means_success() -> None:
    parsed = marker.parse(b"")
    assert parsed.status == "completed" and parsed.legacy and parsed.outputs == ()
    assert marker.parse(b"done\n").status == "completed"
