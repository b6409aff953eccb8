"""The worker's settings refuse what would run scripts unsafely without saying so."""

from __future__ import annotations

import pydantic
import pytest

from services.worker.settings import Settings

REQUIRED = {"s3_bucket": "cadpipe-test"}


def test_best_effort_isolation_needs_the_unsafe_development_flag() -> None:
    with pytest.raises(pydantic.ValidationError, match="development only"):
        Settings(**REQUIRED, sandbox_isolation="best_effort")
    allowed = Settings(
        **REQUIRED, sandbox_isolation="best_effort", sandbox_unsafe_development_only=True
    )
    assert allowed.sandbox_isolation == "best_effort"


def test_outputs_are_capped_in_total_by_default() -> None:
    assert Settings(**REQUIRED).max_output_bytes == 256 * 1024 * 1024


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (8, 8), (200, 64)])
def test_freecad_jobs_default_to_the_cores_and_twice_as_many_are_held(
    monkeypatch: pytest.MonkeyPatch, cores: int, expected: int
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    settings = Settings(**REQUIRED)
    assert (settings.concurrency, settings.jobs_in_flight) == (expected, 2 * expected)
    chosen = Settings(**REQUIRED, concurrency=1, jobs_in_flight=1)
    assert (chosen.concurrency, chosen.jobs_in_flight) == (1, 1)


def test_fewer_jobs_in_flight_than_freecad_jobs_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="JOBS_IN_FLIGHT"):
        Settings(**REQUIRED, concurrency=4, jobs_in_flight=2)
