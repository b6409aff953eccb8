"""Scratch directories on disk: who owns what, what is read back, what is cleaned up.
Switching owners needs root (as the worker itself does)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.worker.domain.job import Isolation, Limits, job_from_event
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


def test_job_directories_name_no_project(tmp_path: Path) -> None:
    root = open_root(tmp_path / "scratch")
    jd = root.new_job(job_from_event("acme-secret-part", 3, "", ""), b"print(1)\n")
    assert "acme" not in jd.path and os.path.basename(jd.path).startswith("j-")
    assert Path(jd.job_file).read_text() == '{"script_name": "acme-secret-part_v3.py"}'
    assert stat.S_IMODE(os.stat(jd.job_file).st_mode) == 0o600
    root.close()


def test_a_tree_deeper_than_recursion_and_path_max_is_removed(tmp_path: Path) -> None:
    from services.worker.scratch import remove_tree

    top = tmp_path / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(3000):  # 3000 * 2 bytes: past PATH_MAX, past Python's recursion limit
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
    os.close(fd)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    (top / "link").symlink_to(outside)
    remove_tree(str(top))
    assert not top.exists()
    assert (outside / "keep").exists()  # a symlink is removed, never followed


def test_the_zygotes_request_names_no_project(tmp_path: Path) -> None:
    """Every later job is forked from the zygote's memory: what it is told must name no
    tenant (the job reads its script's name from its own job.json)."""
    from services.worker.sandbox import SandboxJob, request_for

    root = open_root(tmp_path / "scratch")
    project = "acme-secret-part"
    jd = root.new_job(job_from_event(project, 3, "", ""), b"print(1)\n")
    limits = Limits(10, 1 << 30, 10, 64, 1 << 20, 64)
    job = SandboxJob(
        id="0123456789abcdef",
        sandbox_dir=jd.sandbox_dir,
        script_name=jd.script_name,
        stdout_path=jd.stdout_path,
        stderr_path=jd.stderr_path,
        identity_files=jd.identity_files,
        uid=jd.uid,
        gid=jd.gid,
        limits=limits,
        job_file=jd.job_file,
    )
    isolation = Isolation(True, True, True, True, True)
    request = request_for(job, isolation, "/usr/lib/freecad/lib", "/sys/fs/cgroup/pids/x")
    assert "acme" not in json.dumps(request)
    root.close()


def test_a_deep_locked_tree_is_removed_without_dac_override() -> None:
    """As in the pod (no CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER): a job's tree
    deeper than Python's recursion limit, with directories it closed to the worker's group,
    is removed through the job's uid."""
    import shutil
    import tempfile

    if shutil.which("setpriv") is None:
        pytest.skip("needs util-linux's setpriv")
    base = tempfile.mkdtemp(prefix="cadpipe-scratch-test-", dir="/var/tmp")
    try:
        os.chmod(base, 0o711)
        job = os.path.join(base, "j-0123456789abcdef")
        sandbox = os.path.join(job, "sandbox")
        os.makedirs(sandbox)
        os.chmod(job, 0o711)
        os.chmod(sandbox, 0o2770)
        os.chown(sandbox, JOB_UID, os.getegid())
        build = (
            "import os\n"
            f"os.chdir({sandbox!r})\n"
            "os.mkdir('deep'); os.chdir('deep')\n"
            "for i in range(2000):\n"
            "    os.mkdir('d'); os.chdir('d')\n"
            "open('f', 'w').write('x')\n"
            "os.chmod('.', 0o000)  # the bottom, closed even to its owner\n"
            f"os.chmod({sandbox!r} + '/deep', 0o500)\n"
        )
        subprocess.run(
            ["/usr/bin/python3", "-c", build], user=JOB_UID, group=JOB_UID, check=True, timeout=60
        )
        remove = f"from services.worker.scratch import remove_tree\nremove_tree({job!r})\n"
        subprocess.run(
            [
                "setpriv",
                "--bounding-set=-all,+setuid,+setgid,+chown,+kill,+sys_admin",
                "--inh-caps=-all",
                sys.executable,
                "-c",
                remove,
            ],
            check=True,
            timeout=120,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert not os.path.lexists(job)
    finally:
        subprocess.run(["rm", "-rf", "--", base], check=False)
