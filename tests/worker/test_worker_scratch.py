"""Scratch directories on disk: who owns what, what is read back, what is cleaned up.
Switching owners needs root (as the worker itself does)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.worker.domain.job import job_from_event
from services.worker.scratch import ScratchRoot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the worker's scratch needs root")

JOB_UID = 261_234


def open_root(path: Path, uid: int = JOB_UID) -> ScratchRoot:
    root = ScratchRoot(str(path), lambda: uid, drop_privileges=True)
    root.open()
    return root


def test_a_job_owns_its_sandbox_and_nothing_else(tmp_path: Path) -> None:
    root = open_root(tmp_path / "scratch")
    jd = root.new_job(job_from_event("box", 7, "", ""), b"print(1)\n")

    def mode_owner(path: str) -> tuple[int, int, int]:
        st = os.stat(path)
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    worker_gid = os.getegid()
    assert mode_owner(root.root) == (0o711, 0, 0)
    assert mode_owner(jd.path) == (0o711, 0, 0)
    assert mode_owner(jd.stdout_path) == (0o600, 0, 0)
    assert mode_owner(jd.sandbox_dir) == (0o2770, JOB_UID, worker_gid)
    assert mode_owner(jd.output_dir) == (0o2770, JOB_UID, worker_gid)
    assert mode_owner(os.path.join(jd.sandbox_dir, "box_v7.py")) == (0o440, JOB_UID, worker_gid)
    assert f"cadpipe:x:{JOB_UID}:{JOB_UID}:" in Path(jd.passwd_path).read_text()
    root.close()
    assert not os.path.exists(root.worker_dir)


def test_only_the_jobs_own_regular_files_are_outputs(tmp_path: Path) -> None:
    root = open_root(tmp_path / "scratch")
    jd = root.new_job(job_from_event("box", 1, "", ""), b"")
    out = Path(jd.output_dir)
    (out / "mine.step").write_bytes(b"step")
    os.chown(out / "mine.step", JOB_UID, JOB_UID)
    (out / "planted.step").write_bytes(b"root's file")  # owned by root, not by the job
    (out / "sub").mkdir()
    (out / "sub" / "deep.stl").write_bytes(b"stl")
    os.chown(out / "sub" / "deep.stl", JOB_UID, JOB_UID)
    os.chown(out / "sub", JOB_UID, JOB_UID)

    found, rejected = jd.produced_files()
    assert sorted(f.path for f in found) == ["mine.step", "sub/deep.stl"]
    assert rejected == ["planted.step (not a regular file of the job's own)"]
    assert jd.output_file("mine.step").size == 4
    root.close()


def test_what_a_job_locked_away_is_still_removed(scratch_root: str) -> None:
    root = open_root(Path(scratch_root))
    jd = root.new_job(job_from_event("box", 1, "", ""), b"")
    # As the job: a directory it makes unwritable, with a file in it.
    subprocess.run(
        ["/bin/sh", "-c", "mkdir locked && touch locked/f && chmod 500 locked"],
        cwd=jd.sandbox_dir,
        user=JOB_UID,
        group=JOB_UID,
        extra_groups=[],
        check=True,
    )
    # The worker on Kubernetes has no CAP_DAC_OVERRIDE: remove as it would, with these only.
    subprocess.run(
        [
            "setpriv",
            "--bounding-set=-all,+sys_admin,+setuid,+setgid,+kill,+chown",
            "--inh-caps=-all",
            sys.executable,
            "-c",
            "import sys; from services.worker.scratch import remove_tree; remove_tree(sys.argv[1])",
            jd.path,
        ],
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    assert not os.path.exists(jd.path)
    root.close()


def test_the_scratch_of_a_dead_worker_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    live = open_root(tmp_path / "scratch")
    dead = tmp_path / "scratch" / "w-host-1-dead"
    (dead / "j-box-v1-x" / "sandbox").mkdir(parents=True)
    (dead / ".lock").touch()

    newcomer = open_root(tmp_path / "scratch")
    assert not dead.exists()
    assert os.path.isdir(live.worker_dir)
    newcomer.close()
    live.close()
