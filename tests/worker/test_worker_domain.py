"""The worker's rules, without I/O: judging a run, naming outputs, the report, the log."""

from __future__ import annotations

import signal
import sys
import types

import pytest

from services.worker import sandbox_runner as runner
from services.worker.domain.job import InvalidJob, Limits, job_from_event, printable
from services.worker.domain.joblog import LogRecord, clean_output, cut, render_log
from services.worker.domain.outputs import ProducedFile, plan_outputs
from services.worker.domain.report import REPORT_SCHEMA, finish_report
from services.worker.domain.verdict import (
    SandboxOutcome,
    Verdict,
    judge,
    last_exception_line,
    outputs_over_total,
)

LIMITS = Limits(
    timeout_seconds=120,
    address_space=2 * 1024**3,
    cpu_seconds=120,
    processes=64,
    file_size=1024**3,
    open_files=256,
)
TRACEBACK = """\
Traceback (most recent call last):
  File "/tmp/p_v1.py", line 7, in <module>
    raise ValueError("the requested wall thickness 0.0 mm is below the 0.8 mm minimum")
ValueError: the requested wall thickness 0.0 mm is below the 0.8 mm minimum
"""


# --- the job -------------------------------------------------------------------------------


def test_the_script_key_comes_from_project_and_version_never_from_the_event() -> None:
    job = job_from_event("box", 3, "input/box/box_v3.py", "")
    assert job.script_key == "input/box/box_v3.py"
    with pytest.raises(InvalidJob, match="is not the script of"):
        job_from_event("box", 3, "input/other/other_v1.py", "")


@pytest.mark.parametrize(
    ("project", "version", "sha256"),
    [("../etc", 1, ""), ("", 1, ""), ("box", 0, ""), ("box", 1, "not-a-digest")],
)
def test_an_event_that_names_no_script_is_invalid(project: str, version: int, sha256: str) -> None:
    with pytest.raises(InvalidJob):
        job_from_event(project, version, "", sha256)


# --- judging a run -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "reason", "error_start"),
    [
        (SandboxOutcome(exit_code=0), "ok", ""),
        (SandboxOutcome(exit_code=1), "exception", "ValueError: the requested wall"),
        (SandboxOutcome(timed_out=True, signal=9), "timeout", "the script ran longer"),
        (SandboxOutcome(exit_code=runner.EXIT_MEMORY), "limit_exceeded", "memory limit"),
        (SandboxOutcome(exit_code=runner.EXIT_FILE_SIZE), "limit_exceeded", "file size"),
        (SandboxOutcome(exit_code=runner.EXIT_PROCESSES), "limit_exceeded", "process"),
        (SandboxOutcome(exit_code=runner.EXIT_OPEN_FILES), "limit_exceeded", "open files"),
        (
            SandboxOutcome(signal=signal.SIGXCPU, cpu_seconds=120),
            "limit_exceeded",
            "CPU time",
        ),
        # A script that sends itself SIGXCPU has not hit the CPU limit.
        (SandboxOutcome(signal=signal.SIGXCPU, cpu_seconds=1), "killed", "FreeCAD"),
        (
            SandboxOutcome(signal=signal.SIGKILL, memory_cgroup_oom=True),
            "limit_exceeded",
            "memory limit exceeded",
        ),
        (
            SandboxOutcome(signal=signal.SIGKILL, cpu_seconds=121),
            "limit_exceeded",
            "CPU time",
        ),
        (SandboxOutcome(signal=signal.SIGKILL, cpu_seconds=3), "killed", "the job was"),
        (SandboxOutcome(signal=signal.SIGSEGV), "killed", "FreeCAD crashed (SIGSEGV)"),
        # The supervisor's word decides a set-up failure, never the exit status alone.
        (
            SandboxOutcome(exit_code=runner.EXIT_SETUP_FAILED, script_started=False),
            "worker_error",
            "the sandbox could not be set up",
        ),
        (
            SandboxOutcome(exit_code=runner.EXIT_OK, script_started=False),
            "worker_error",
            "the sandbox could not be set up",
        ),
        (
            SandboxOutcome(exit_code=runner.EXIT_SETUP_FAILED),
            "exception",
            f"the script exited with status {runner.EXIT_SETUP_FAILED}",
        ),
        (SandboxOutcome(failure="no fork"), "worker_error", "the sandbox failed: no fork"),
        (SandboxOutcome(exit_code=7), "exception", "the script exited with status 7"),
    ],
)
def test_how_a_run_ended_decides_its_exit_reason(
    outcome: SandboxOutcome, reason: str, error_start: str
) -> None:
    verdict = judge(outcome, LIMITS, TRACEBACK)
    assert verdict.exit_reason == reason
    assert verdict.error.startswith(error_start)
    assert verdict.ok == (reason == "ok")


def test_a_limit_names_its_value_and_the_exception() -> None:
    verdict = judge(
        SandboxOutcome(exit_code=runner.EXIT_MEMORY), LIMITS, "Traceback (x)\nMemoryError\n"
    )
    assert verdict.error == "memory limit exceeded (2 GiB address space): MemoryError"


def test_the_error_is_the_line_the_last_traceback_ends_with() -> None:
    chained = TRACEBACK + (
        "\nDuring handling of the above exception, another exception occurred:\n\n"
        'Traceback (most recent call last):\n  File "/tmp/p_v1.py", line 9\n'
        "RuntimeError: wrapped\ncadpipe: limit exceeded: memory\n"
    )
    assert last_exception_line(chained) == "RuntimeError: wrapped"
    syntax = '  File "/tmp/p_v1.py", line 1\n    def (\n        ^\nSyntaxError: invalid syntax\n'
    assert last_exception_line(syntax) == "SyntaxError: invalid syntax"
    assert last_exception_line("") == ""


# --- outputs -------------------------------------------------------------------------------


def files(*paths: str) -> list[ProducedFile]:
    return [ProducedFile(p, 10) for p in paths]


def test_recognised_formats_keep_their_names_in_any_case() -> None:
    plan = plan_outputs(
        "bracket",
        2,
        files("bracket.FCStd", "bracket.STEP", "bracket.STL", "part.stp", "part.IGS", "notes.txt"),
        max_outputs=64,
    )
    assert [(o.name, o.format, o.content_type) for o in plan.outputs] == [
        ("bracket.FCStd", "fcstd", "application/vnd.freecad.fcstd"),
        ("bracket.STEP", "step", "model/step"),
        ("bracket.STL", "stl", "model/stl"),
        ("part.IGS", "iges", "model/iges"),
        ("part.stp", "step", "model/step"),
    ]
    assert plan.outputs[0].key == "output/bracket/v2/bracket.FCStd"
    assert plan.ignored == ("notes.txt (not a recognised CAD format)",)


def test_files_that_meet_under_one_name_do_not_overwrite_each_other() -> None:
    plan = plan_outputs(
        "p", 1, files("part.step", "a/part.step", "b/part.step", "b/part-2.step"), 64
    )
    assert sorted(o.name for o in plan.outputs) == [
        "part-2-2.step",
        "part-2.step",
        "part-3.step",
        "part.step",
    ]
    assert len({o.key for o in plan.outputs}) == 4
    assert next(o for o in plan.outputs if o.path == "part.step").name == "part.step"


def test_names_are_made_safe_and_report_json_stays_ours() -> None:
    plan = plan_outputs(
        "p", 1, files('we"ird na\nme.stl', "..hidden.obj", "report.json.stl", "\u00fcber.step"), 64
    )
    assert sorted(o.name for o in plan.outputs) == [
        "ber.step",
        "hidden.obj",
        "report.json.stl",
        "we_ird_na_me.stl",
    ]


def test_outputs_beyond_the_limit_are_left_out_and_said_so() -> None:
    plan = plan_outputs("p", 1, files("a.stl", "b.stl", "c.stl"), max_outputs=2)
    assert [o.name for o in plan.outputs] == ["a.stl", "b.stl"]
    assert plan.ignored == ("c.stl (more than 2 outputs)",)


# --- the report ----------------------------------------------------------------------------


def test_the_report_keeps_known_fields_of_stored_files_only() -> None:
    plan = plan_outputs("p", 4, files("m.step", "m.stl"), 64)
    raw = {
        "freecad_version": "0.20.2",
        "files": [
            {
                "path": "m.step",
                "kind": "brep",
                "solids": [
                    {
                        "valid": True,
                        "volume": 3497.3,
                        "area": 1750.8,
                        "bounding_box": {
                            "x_min": 0,
                            "y_min": 0,
                            "z_min": 0,
                            "x_max": 20,
                            "y_max": 20,
                            "z_max": 10,
                        },
                        "faces": 7,
                        "evil": "<script>",
                    },
                    "not a solid",
                ],
                "shells": 1,
                "faces": 7,
            },
            {"path": "m.stl", "kind": "mesh", "triangles": 520, "closed": True, "volume": "x"},
            {"path": "../../etc/passwd", "kind": "mesh", "triangles": 1},
        ],
        "extra": "ignored",
    }
    report = finish_report(raw, plan, project="p", version=4)

    assert report["schema"] == REPORT_SCHEMA
    assert [f["name"] for f in report["files"]] == ["m.step", "m.stl"]
    step, stl = report["files"]
    assert step["key"] == "output/p/v4/m.step"
    assert step["solids"] == [
        {
            "valid": True,
            "volume": 3497.3,
            "area": 1750.8,
            "bounding_box": {
                "x_min": 0,
                "y_min": 0,
                "z_min": 0,
                "x_max": 20,
                "y_max": 20,
                "z_max": 10,
            },
            "faces": 7,
        }
    ]
    assert stl["triangles"] == 520 and stl["closed"] is True and "volume" not in stl
    assert report["all_solids_valid"] is True
    assert "extra" not in report


def test_a_missing_report_still_names_the_outputs_it_does_not_measure() -> None:
    plan = plan_outputs("p", 1, files("m.step"), 64)
    report = finish_report(None, plan, project="p", version=1)
    assert report["files"] == []
    assert report["not_measured"] == ["m.step"]
    assert report["all_solids_valid"] is False


# --- the log -------------------------------------------------------------------------------

FREECADCMD_NOISE = (
    "FreeCAD 0.20.2, Libs: 0.20.2R\n"
    "(c) Juergen Riegel, Werner Mayer, Yorik van Havre and others 2001-2022\n"
    "FreeCAD is free and open-source software licensed under the terms of LGPL2+ license.\n"
    "FreeCAD wouldn't be possible without FreeCAD community.\n"
    "  #####                 ####  ###   ####  \n"
    "  #     ##  #### ####  #     #   #  #   # \n"
    "hello from the script\n"
    "Recompute......\n\t\t\t\t\t\t(100 %)\t\t\x1b[32;1m\n"
    "saving......\n\t\t(0 %)\t\t(1 %)\t\t(2 %)\n"
    "\x1b[32;1m Step File Name : /tmp/x.step(434 ents)  Write  Done\x1b[0m\n"
)


def test_freecads_banner_and_progress_are_trimmed_from_the_log() -> None:
    assert clean_output(FREECADCMD_NOISE) == (
        "hello from the script\n Step File Name : /tmp/x.step(434 ents)  Write  Done\n"
    )
    assert clean_output("# a comment the script printed\n") == ("# a comment the script printed\n")


def test_the_log_says_what_happened_first_then_the_streams() -> None:
    job = job_from_event("box", 2, "", "")
    plan = plan_outputs("box", 2, files("m.step"), 64)
    text = render_log(
        LogRecord(
            job=job,
            status="error",
            verdict=Verdict("timeout", "the script ran longer than 120 s and was stopped"),
            attempt=1,
            started_at="2026-01-01T00:00:00.000Z",
            finished_at="2026-01-01T00:02:00.100Z",
            duration_seconds=120.1,
            freecad_version="0.20.2",
            worker="host/1",
            sandbox="zygote",
            outcome=SandboxOutcome(timed_out=True, wall_seconds=120.0, max_rss_kb=2048),
            outputs=plan.outputs,
            stdout="working\n",
            stderr=FREECADCMD_NOISE,
        )
    )
    head, streams = text.split("===== stdout =====")
    assert "exit reason:  timeout" in head
    assert "error:        the script ran longer than 120 s and was stopped" in head
    assert "duration:     120.100 s (script 120.000 s" in head
    assert "peak memory 2 MiB" in head
    assert streams.startswith("\nworking\n===== stderr =====\nhello from the script")


def test_a_long_stream_keeps_its_head_and_tail() -> None:
    assert cut("ab", "yz", 10, 4) == "ab\n[... 6 bytes cut by the worker ...]\nyz"
    assert cut("ab", "", 2, 4) == "ab"


# --- what a hostile job cannot do to the worker's records ---------------------------------


def test_names_are_one_escaped_line_in_the_log_header() -> None:
    assert printable("x\nexit reason:  ok\r\u2028.txt") == "x\\nexit reason:  ok\\r\\u2028.txt"
    # os.scandir keeps bytes that are not UTF-8 as lone surrogates; the log must still encode.
    name = b"bad\xff.txt".decode("utf-8", "surrogateescape")
    assert printable(name) == "bad\\xff.txt"
    printable(name).encode("utf-8")


def test_outputs_past_the_total_name_the_file() -> None:
    produced = [ProducedFile(f"f{i}.stl", 60 * 1024 * 1024) for i in range(3)]
    plan = plan_outputs("p", 1, produced, 64)
    verdict = outputs_over_total(plan, 100 * 1024 * 1024)
    assert verdict is not None and verdict.exit_reason == "limit_exceeded"
    assert "f1.stl (60 MiB)" in verdict.error and "100 MiB" in verdict.error
    assert outputs_over_total(plan, 180 * 1024 * 1024) is None


@pytest.mark.parametrize(
    "raw",
    [
        {"files": [{"path": ["a.stl"]}, {"path": {"x": 1}}, 7, None]},
        {"files": {"path": "a.stl"}, "freecad_version": 3},
        [[[[]]]],
        "report",
    ],
)
def test_a_report_of_the_wrong_shape_is_data_not_a_crash(raw: object) -> None:
    plan = plan_outputs("p", 1, [ProducedFile("a.stl", 10)], 64)
    report = finish_report(raw, plan, project="p", version=1)
    assert report["files"] == [] and report["not_measured"] == ["a.stl"]


# --- FreeCAD 0.20 and 1.0 ----------------------------------------------------------------------


def test_the_zygote_builds_freecad_1_0s_material_library_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """FreeCAD 1.0 (Debian 13) has a Materials module whose MaterialManager builds the library
    every job would otherwise build on its first Part object; 0.20 (Debian 12) has none."""
    built: list[str] = []

    class MaterialManager:
        def __init__(self) -> None:
            built.append("library")

    monkeypatch.setitem(
        sys.modules, "Materials", types.SimpleNamespace(MaterialManager=MaterialManager)
    )
    runner._warm_freecad()
    assert built == ["library"]

    monkeypatch.setitem(sys.modules, "Materials", None)  # FreeCAD 0.20: import fails
    runner._warm_freecad()
    assert built == ["library"] and capsys.readouterr().err == ""

    def broken() -> None:
        raise RuntimeError("no material directories")

    monkeypatch.setitem(sys.modules, "Materials", types.SimpleNamespace(MaterialManager=broken))
    runner._warm_freecad()  # a cache, not a requirement: the zygote still starts
    assert "could not warm FreeCAD's materials: no material directories" in capsys.readouterr().err
