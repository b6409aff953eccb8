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


@pytest.mark.parametrize(("cores", "expected"), [(1, 2), (2, 3), (8, 9), (64, 64), (200, 64)])
def test_concurrency_defaults_to_one_job_more_than_the_cores_it_may_use(
    monkeypatch: pytest.MonkeyPatch, cores: int, expected: int
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert Settings(**REQUIRED).concurrency == expected
    assert Settings(**REQUIRED, concurrency=1).concurrency == 1
