"""The watcher's pure rules: state machine, outcome decisions, polling schedule, formats, logs,
messages."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from watcher_fakes import LIGHT_POLL

from cadpipe import errors, layout, started
from cadpipe.marker import Marker, MarkerOutput
from cadpipe.v1 import status_pb2
from services.watcher import domain, messages
from services.watcher.domain import Found, Job, LogObject, Outcome, Policy, PollPolicy

T0 = dt.datetime(2026, 11, 24, 10, 0, 0, tzinfo=dt.UTC)
POLICY = Policy(
    timeout=dt.timedelta(seconds=600),
    error_log_grace=dt.timedelta(seconds=1),
    queue_timeout=dt.timedelta(seconds=1800),
)
POLL = PollPolicy(interval=0.1, max_interval=2.0, backoff_ratio=0.1)


def job(project: str = "part", version: int = 3) -> Job:
    """A queued job, uploaded at T0."""
    return domain.new_job(project, version, uploaded_at=T0)


def running(started_after: float = 0.0) -> Job:
    """The job a worker started `started_after` seconds after its upload."""
    return domain.start(job(), started.started(at(started_after), worker="w/1", attempt=1))


def output(name: str, project: str = "part", version: int = 3) -> MarkerOutput:
    fmt = layout.output_format(name) or "json"
    return MarkerOutput(
        key=layout.output_key(project, version, name),
        name=name,
        format=fmt,
        size_bytes=10,
        sha256="ab" * 32,
        content_type=layout.OUTPUT_FORMATS.get(fmt, "application/json"),
    )


def log(level: layout.LogLevel, at: dt.datetime = T0, version: int = 3) -> LogObject:
    key = layout.log_key("part", version, level, at)
    parsed = layout.parse_log_key(key)
    assert parsed is not None
    return LogObject(key=key, parsed=parsed, size_bytes=5)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# --- state machine -----------------------------------------------------------------------------


@pytest.mark.parametrize("terminal", ["completed", "error", "timeout"])
def test_pending_states_move_to_each_terminal_state_and_terminal_states_are_final(
    terminal: str,
) -> None:
    domain.check_transition("queued", "processing")
    domain.check_transition("queued", terminal)
    domain.check_transition("processing", terminal)
    with pytest.raises(domain.InvalidTransition):
        domain.check_transition("processing", "queued")
    for target in ("queued", "processing", "completed", "error", "timeout"):
        with pytest.raises(domain.InvalidTransition):
            domain.check_transition(terminal, target)
    with pytest.raises(domain.InvalidTransition):
        domain.check_transition("processing", "processing")
    with pytest.raises(domain.InvalidTransition):
        domain.check_transition("processing", "no_scripts")


def test_finishing_a_decided_job_again_is_refused() -> None:
    done = domain.finish(job(), Outcome(state="completed", finished_at=at(2)), detected_at=at(3))
    with pytest.raises(domain.InvalidTransition):
        domain.finish(done, Outcome(state="error", finished_at=at(4)), detected_at=at(5))


def test_new_job_checks_its_project_and_version() -> None:
    with pytest.raises(errors.InvalidArgument):
        domain.new_job("../x", 1, uploaded_at=T0)
    with pytest.raises(errors.InvalidArgument):
        domain.new_job("part", 0, uploaded_at=T0)
    assert job().script_key == "input/part/part_v3.py"
    assert job().state == "queued" and job().started_at is None


def test_a_start_moves_a_queued_job_to_processing_once() -> None:
    job_started = running(started_after=42)
    assert (job_started.state, job_started.started_at) == ("processing", at(42))
    with pytest.raises(domain.InvalidTransition):
        domain.start(job_started, started.started(at(50), worker="w/2", attempt=2))


# --- deciding ------------------------------------------------------------------------------


def test_our_completed_marker_decides_completed_with_its_own_outputs_only() -> None:
    stray = MarkerOutput(
        key="output/part/v2/old.stl",
        name="old.stl",
        format="stl",
        size_bytes=1,
        sha256="",
        content_type="model/stl",
    )
    marker = Marker(
        status="completed",
        outputs=(output("m.stl"), output("m.step"), stray),
        log_key=log("info").key,
        finished_at=at(1.5).isoformat(),
    )
    outcome = domain.decide(job(), Found(marker=marker), now=at(2), policy=POLICY)
    assert outcome is not None
    assert outcome.state == "completed"
    assert [o.name for o in outcome.outputs] == ["m.step", "m.stl"]  # never another version's
    assert (outcome.log_key, outcome.finished_at) == (log("info").key, at(1.5))


def test_our_error_marker_decides_error_with_its_message() -> None:
    marker = Marker(status="error", error="boom", exit_reason="exception")
    outcome = domain.decide(
        job(), Found(marker=marker, logs=(log("error"),)), now=at(2), policy=POLICY
    )
    assert outcome is not None
    assert (outcome.state, outcome.error, outcome.exit_reason) == ("error", "boom", "exception")
    assert outcome.log_key == log("error").key  # the marker named none: the version's error log


def test_an_error_marker_without_a_message_says_why() -> None:
    outcome = domain.decide(
        job(), Found(marker=Marker(status="error", exit_reason="timeout")), now=at(1), policy=POLICY
    )
    assert outcome is not None and "timeout" in outcome.error


def test_an_empty_marker_decides_completed_with_the_listed_outputs() -> None:
    found = Found(
        marker=Marker(status="completed", legacy=True),
        marker_written_at=at(4),
        outputs=(output("m.stl"),),
        logs=(log("info"),),
    )
    outcome = domain.decide(job(), found, now=at(5), policy=POLICY)
    assert outcome is not None
    assert (outcome.state, [o.name for o in outcome.outputs]) == ("completed", ["m.stl"])
    assert (outcome.log_key, outcome.finished_at) == (log("info").key, at(4))


def test_an_empty_marker_with_no_cad_file_is_an_error_linking_the_error_log() -> None:
    found = Found(
        marker=Marker(status="completed", legacy=True),
        marker_written_at=at(4),
        outputs=(output("report.json"),),  # not a CAD file: nothing to download
        logs=(log("info", at(1)), log("error", at(2)), log("info", at(3))),
    )
    outcome = domain.decide(job(), found, now=at(5), policy=POLICY)
    assert outcome is not None
    assert (outcome.state, outcome.error, outcome.exit_reason) == (
        "error",
        "finished without outputs",
        "no_outputs",
    )
    assert (outcome.log_key, outcome.finished_at) == (log("error", at(2)).key, at(4))


def test_an_empty_marker_with_no_outputs_links_its_info_log() -> None:
    found = Found(marker=Marker(status="completed", legacy=True), logs=(log("info"),))
    outcome = domain.decide(job(), found, now=at(5), policy=POLICY)
    assert outcome is not None
    assert (outcome.state, outcome.log_key) == ("error", log("info").key)


def test_an_empty_marker_counts_only_this_versions_outputs() -> None:
    found = Found(
        marker=Marker(status="completed", legacy=True), outputs=(output("m.stl", version=2),)
    )
    outcome = domain.decide(job(), found, now=at(5), policy=POLICY)
    assert outcome is not None and outcome.state == "error"
    assert (outcome.log_key, outcome.outputs) == ("", ())


def test_a_marker_wins_over_an_error_log_and_over_the_timeout() -> None:
    found = Found(
        marker=Marker(status="completed", legacy=True),
        outputs=(output("m.step"),),
        logs=(log("error"),),
    )
    outcome = domain.decide(job(), found, now=at(10_000), policy=POLICY)
    assert outcome is not None and outcome.state == "completed"


def test_an_error_log_alone_decides_error_only_after_the_grace_period() -> None:
    found = Found(logs=(log("info"), log("error", at(1))))
    assert domain.decide(job(), found, now=at(2), policy=POLICY) is None
    assert (
        domain.decide(job(), found, now=at(2.5), policy=POLICY, error_log_seen_since=at(2)) is None
    )
    outcome = domain.decide(job(), found, now=at(3), policy=POLICY, error_log_seen_since=at(2))
    assert outcome is not None
    assert (outcome.state, outcome.log_key) == ("error", log("error", at(1)).key)
    assert outcome.needs_error_summary and outcome.finished_at == at(1)


def test_an_error_log_at_the_timeout_decides_error_not_timeout() -> None:
    found = Found(logs=(log("error"),))
    outcome = domain.decide(
        running(), found, now=at(600), policy=POLICY, error_log_seen_since=at(600)
    )
    assert outcome is not None and outcome.state == "error"


def test_nothing_before_the_timeout_is_undecided_and_after_it_is_timeout() -> None:
    found = Found(logs=(log("info"),))
    assert domain.decide(running(), found, now=at(599.9), policy=POLICY) is None
    outcome = domain.decide(running(), found, now=at(600), policy=POLICY)
    assert outcome is not None
    assert (outcome.state, outcome.finished_at, outcome.log_key) == (
        "timeout",
        at(600),
        log("info").key,
    )
    assert outcome.error == "no result 600 s after the start"
    assert outcome.exit_reason == "timeout" and not outcome.needs_expiry


def test_the_processing_timeout_counts_from_the_start_not_the_upload() -> None:
    late_start = running(started_after=1000)  # waited 1000 s in the queue
    assert domain.decide(late_start, Found(), now=at(1599), policy=POLICY) is None
    outcome = domain.decide(late_start, Found(), now=at(1600), policy=POLICY)
    assert outcome is not None and outcome.exit_reason == "timeout"


def test_a_start_found_in_this_check_counts_too() -> None:
    record = started.started(at(1000), worker="w/1", attempt=1)
    assert domain.decide(job(), Found(started=record), now=at(1599), policy=POLICY) is None


def test_a_job_stored_processing_before_started_records_counts_from_its_upload() -> None:
    legacy = Job(project="part", version=3, state="processing", uploaded_at=T0)
    outcome = domain.decide(legacy, Found(), now=at(600), policy=POLICY)
    assert outcome is not None and outcome.exit_reason == "timeout"


def test_a_queued_job_waits_up_to_the_queue_limit_then_needs_the_expiry() -> None:
    assert domain.decide(job(), Found(), now=at(1799), policy=POLICY) is None
    outcome = domain.decide(job(), Found(), now=at(1801), policy=POLICY)
    assert outcome is not None and outcome.needs_expiry
    assert (outcome.state, outcome.exit_reason) == ("timeout", "queue_timeout")
    assert outcome.error == "never started: waited 1801 s in the queue (the limit is 1800 s)"


def test_an_expiry_in_s3_decides_timeout_with_its_reason() -> None:
    record = started.expired(at(1801), waited_seconds=1801, limit_seconds=1800)
    outcome = domain.decide(job(), Found(started=record), now=at(1802), policy=POLICY)
    assert outcome is not None and not outcome.needs_expiry
    assert (outcome.state, outcome.exit_reason, outcome.finished_at) == (
        "timeout",
        "queue_timeout",
        at(1801),
    )
    assert outcome.error.startswith("never started: waited 1801 s")


def test_a_marker_wins_over_a_queue_expiry_it_beat() -> None:
    found = Found(marker=Marker(status="completed"))  # the contract our worker writes
    outcome = domain.decide(job(), found, now=at(5000), policy=POLICY)
    assert outcome is not None and outcome.state == "completed"


def test_the_error_summary_is_the_end_of_the_log() -> None:
    outcome = Outcome(state="error", finished_at=T0, log_key="k", needs_error_summary=True)
    text = "\n".join(f"line {i}" for i in range(1000)) + "\nValueError: bad\n\n"
    summarised = domain.with_error_summary(outcome, text)
    assert summarised.error.endswith("ValueError: bad")
    assert len(summarised.error) <= domain.ERROR_SUMMARY_CHARS
    assert not summarised.needs_error_summary
    assert "k" in domain.with_error_summary(outcome, None).error


def test_duration_runs_from_upload_to_finish_or_to_detection_for_a_timeout() -> None:
    done = domain.finish(
        job(), Outcome(state="completed", finished_at=at(1.25)), detected_at=at(1.3)
    )
    assert done.duration_seconds == pytest.approx(1.25)
    assert (done.detected_at, done.event_published) == (at(1.3), False)
    late = domain.finish(
        running(), Outcome(state="timeout", finished_at=at(600)), detected_at=at(601)
    )
    assert late.duration_seconds == pytest.approx(601)


# --- polling schedule ----------------------------------------------------------------------


def test_young_versions_are_checked_every_interval_then_less_often_up_to_the_maximum() -> None:
    assert domain.next_check_in(job(), now=at(0.2), poll=POLL, policy=POLICY) == pytest.approx(0.1)
    assert domain.next_check_in(job(), now=at(5), poll=POLL, policy=POLICY) == pytest.approx(0.5)
    assert domain.next_check_in(job(), now=at(300), poll=POLL, policy=POLICY) == pytest.approx(2.0)


def test_the_next_check_never_passes_the_timeout_or_the_end_of_the_grace() -> None:
    assert domain.next_check_in(
        running(), now=at(599.5), poll=POLL, policy=POLICY
    ) == pytest.approx(0.5)
    assert domain.next_check_in(running(), now=at(700), poll=POLL, policy=POLICY) == 0.0
    assert domain.next_check_in(
        running(started_after=100), now=at(699.5), poll=POLL, policy=POLICY
    ) == pytest.approx(0.5)
    assert domain.next_check_in(
        job(), now=at(100), poll=POLL, policy=POLICY, error_log_seen_since=at(99.7)
    ) == pytest.approx(0.7)


def test_a_queued_job_is_checked_up_to_its_queue_limit() -> None:
    assert domain.next_check_in(job(), now=at(700), poll=POLL, policy=POLICY) == pytest.approx(2.0)
    assert domain.next_check_in(job(), now=at(1799.5), poll=POLL, policy=POLICY) == pytest.approx(
        0.5
    )


def test_a_queued_version_is_checked_less_often_than_a_started_one() -> None:
    assert domain.next_check_in(
        job(), now=at(0.2), poll=LIGHT_POLL, policy=POLICY
    ) == pytest.approx(0.5)
    assert domain.next_check_in(job(), now=at(8), poll=LIGHT_POLL, policy=POLICY) == pytest.approx(
        0.8
    )
    started_job = running(started_after=0.1)
    assert domain.next_check_in(
        started_job, now=at(0.2), poll=LIGHT_POLL, policy=POLICY
    ) == pytest.approx(0.1)


BUDGET = replace(LIGHT_POLL, queued_reads_per_second=20.0)


def test_queued_versions_share_a_read_budget_whatever_their_number() -> None:
    """Light checks (1 read) and full looks (3 reads) of n queued versions stretch so that
    together they read about queued_reads_per_second keys a second."""
    for queued in (1, 5, 40, 400):
        light = domain.next_check_in(job(), now=at(0.2), poll=BUDGET, policy=POLICY, queued=queued)
        full = domain.next_full_look_in(
            job(), now=at(0.2), poll=BUDGET, policy=POLICY, queued=queued
        )
        reads_per_second = queued * (1 / light + domain.FULL_LOOK_READS / full)
        assert reads_per_second <= 20.0 + 1e-9 or (light, full) == (0.5, 1.0), queued
    # few queued: the intervals of before
    assert domain.next_check_in(job(), now=at(0.2), poll=BUDGET, policy=POLICY, queued=3) == 0.5
    assert domain.next_full_look_in(job(), now=at(0.2), poll=BUDGET, policy=POLICY, queued=3) == 1.0
    # many: stretched past max_interval, as the budget asks
    assert domain.next_check_in(
        job(), now=at(0.2), poll=BUDGET, policy=POLICY, queued=40
    ) == pytest.approx(4.0)
    assert domain.next_full_look_in(
        job(), now=at(0.2), poll=BUDGET, policy=POLICY, queued=40
    ) == pytest.approx(12.0)


def test_the_read_budget_stretches_neither_started_versions_nor_deadlines() -> None:
    started_job = running(started_after=0.1)
    assert domain.next_check_in(
        started_job, now=at(0.2), poll=BUDGET, policy=POLICY, queued=400
    ) == pytest.approx(0.1)
    assert domain.next_check_in(
        job(), now=at(1799.5), poll=BUDGET, policy=POLICY, queued=400
    ) == pytest.approx(0.5)


def test_full_looks_come_every_full_interval_then_back_off_and_never_pass_a_deadline() -> None:
    assert domain.next_full_look_in(job(), now=at(0.2), poll=LIGHT_POLL, policy=POLICY) == 1.0
    assert domain.next_full_look_in(
        job(), now=at(15), poll=LIGHT_POLL, policy=POLICY
    ) == pytest.approx(1.5)
    assert domain.next_full_look_in(job(), now=at(300), poll=LIGHT_POLL, policy=POLICY) == 2.0
    assert domain.next_full_look_in(
        running(), now=at(599.5), poll=LIGHT_POLL, policy=POLICY
    ) == pytest.approx(0.5)
    assert domain.next_full_look_in(
        job(), now=at(100), poll=LIGHT_POLL, policy=POLICY, error_log_seen_since=at(99.7)
    ) == pytest.approx(0.7)
    # without a full interval every check is a full look, as before light checks
    assert domain.next_full_look_in(job(), now=at(0.2), poll=POLL, policy=POLICY) == 0.1


def test_a_light_look_reads_one_key_and_a_full_look_reads_the_logs_too() -> None:
    assert domain.plan_look(job(), full=False) == domain.Look(
        started=True, marker=False, logs=False
    )
    assert domain.plan_look(running(), full=False) == domain.Look(
        started=False, marker=True, logs=False
    )
    assert domain.plan_look(job(), full=True) == domain.Look(started=True, marker=True, logs=True)
    assert domain.plan_look(running(), full=True) == domain.Look(
        started=False, marker=True, logs=True
    )


def test_a_light_look_decides_only_from_a_marker_or_an_expiry() -> None:
    light = Found(logs_read=False)
    # past both limits, but without the logs a light look cannot tell error from timeout
    assert domain.decide(job(), light, now=at(1801), policy=POLICY) is None
    assert domain.decide(running(), light, now=at(601), policy=POLICY) is None
    marker = Found(marker=Marker(status="completed", exit_reason="ok"), logs_read=False)
    decided = domain.decide(running(), marker, now=at(1), policy=POLICY)
    assert decided is not None and decided.state == "completed"
    expiry = started.expired(at(1800), waited_seconds=1800, limit_seconds=1800)
    decided = domain.decide(
        job(), Found(started=expiry, logs_read=False), now=at(1801), policy=POLICY
    )
    assert decided is not None and decided.exit_reason == "queue_timeout"


# --- outputs, formats, logs ----------------------------------------------------------------


def test_formats_aliases_and_unknown_formats() -> None:
    assert [domain.normalise_format(f) for f in ("STL", "stp", "igs", ".step", "FCStd")] == [
        "stl",
        "step",
        "iges",
        "step",
        "fcstd",
    ]
    for bad in ("dwg", "", "stl.exe", "json"):
        with pytest.raises(errors.InvalidArgument):
            domain.normalise_format(bad)


def test_pick_output_names_the_formats_the_version_has_when_it_lacks_one() -> None:
    outputs = (output("m.step"), output("m.stl"), output("report.json"))
    assert domain.pick_output("part", 3, outputs, "stl").name == "m.stl"
    with pytest.raises(
        errors.NotFound, match=r"version 3 .* no iges output; it produced: step, stl"
    ):
        domain.pick_output("part", 3, outputs, "iges")
    other_version = (output("m.iges", version=2),)
    with pytest.raises(errors.NotFound, match="no CAD file"):
        domain.pick_output("part", 3, other_version, "iges")


def test_formats_leave_out_the_report() -> None:
    assert domain.formats_of([output("report.json"), output("b.stl"), output("a.stl")]) == ["stl"]


def test_outputs_listed_under_the_version_prefix() -> None:
    assert domain.output_from_listing("part", 3, "output/part/v3/a.STP", 5) == MarkerOutput(
        key="output/part/v3/a.STP",
        name="a.STP",
        format="step",
        size_bytes=5,
        sha256="",
        content_type="model/step",
    )
    assert domain.output_from_listing("part", 3, "output/part/v3/report.json", 5) is not None
    assert domain.output_from_listing("part", 3, "output/part/v3/notes.txt", 5) is None
    assert domain.output_from_listing("part", 3, "output/part/v3/sub/a.stl", 5) is None
    assert domain.output_from_listing("part", 3, "output/part/v30/a.stl", 5) is None


def test_log_names_must_be_logs_of_the_project() -> None:
    name = "part_v3_info_20261124_101500.log"
    assert domain.log_key_for_name("part", name) == f"logs/part/{name}"
    for bad in (
        "../part_v3_info_20261124_101500.log",
        "other_v3_info_20261124_101500.log",
        "part_v3_debug_20261124_101500.log",
        "part_v3.log",
        "",
    ):
        with pytest.raises(errors.InvalidArgument):
            domain.log_key_for_name("part", bad)
    assert domain.log_object("part", "logs/part/" + name, 1) is not None
    assert domain.log_object("other", "logs/part/" + name, 1) is None


def test_long_logs_keep_their_end() -> None:
    assert domain.tail_text(b"short", 10) == "short"
    text = domain.tail_text(b"a" * 50 + b"THE END", 7)
    assert text.endswith("THE END") and "50 earlier bytes" in text


# --- messages ------------------------------------------------------------------------------


def test_job_finished_carries_what_listeners_need() -> None:
    done = domain.finish(
        job(),
        Outcome(state="completed", finished_at=at(1), outputs=(output("m.stl"),), log_key="lk"),
        detected_at=at(1.1),
    )
    event = messages.job_finished(done)
    assert (event.project, event.version, event.status, event.log_key) == (
        "part",
        3,
        "completed",
        "lk",
    )
    assert [o.key for o in event.outputs] == ["output/part/v3/m.stl"]
    assert event.uploaded_at.ToDatetime(tzinfo=dt.UTC) == T0
    assert event.finished_at.ToDatetime(tzinfo=dt.UTC) == at(1)
    assert event.detected_at.ToDatetime(tzinfo=dt.UTC) == at(1.1)
    assert event.duration_seconds == pytest.approx(1.0)
    with pytest.raises(domain.InvalidTransition):
        messages.job_finished(job())

    status = messages.status_from_finished(event)
    assert status == messages.project_status("part", done)


def test_project_status_without_jobs_is_no_scripts() -> None:
    status = messages.project_status("part", None)
    assert (status.state, status.version) == ("no_scripts", 0)


def test_a_watcher_hears_later_versions_and_each_step_of_a_version_only() -> None:
    def status(version: int, state: str) -> status_pb2.ProjectStatus:
        return status_pb2.ProjectStatus(project="part", version=version, state=state)

    assert messages.supersedes(status(1, "queued"), status(0, "no_scripts"))
    assert messages.supersedes(status(1, "processing"), status(1, "queued"))
    assert messages.supersedes(status(1, "timeout"), status(1, "queued"))
    assert not messages.supersedes(status(1, "queued"), status(1, "processing"))
    assert not messages.supersedes(status(1, "processing"), status(1, "processing"))
    assert messages.supersedes(status(1, "processing"), status(0, "no_scripts"))
    assert messages.supersedes(status(1, "completed"), status(1, "processing"))
    assert messages.supersedes(status(2, "processing"), status(1, "completed"))
    assert not messages.supersedes(status(1, "completed"), status(1, "completed"))  # an echo
    assert not messages.supersedes(status(1, "processing"), status(1, "completed"))
    assert not messages.supersedes(status(1, "completed"), status(2, "processing"))  # older news
