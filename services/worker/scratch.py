"""Scratch directories on the worker's disk, and reading back what a job left in them.

    {scratch_root}/                      0711 root   (shared by the workers of one machine)
      w-{host}-{pid}-{rand}/             0711 root   one per worker process, flock'ed while alive
        home/                            0700 root   HOME of the zygote
        j-{rand}/                        0711 root   one per job (an opaque name: no project)
          job.json                       0600 root   the script's name, read by the job only
          stdout.log, stderr.log         0600 root   the job's streams (outside its reach)
          passwd, group                  0644 root   shown to the job as /etc/passwd, /etc/group
          sandbox/                       0700 uid    the job's /tmp, HOME and working directory
            {project}_v{N}.py            0400 uid    the script, read from S3 by the worker
            output/                      0700 uid    FREECAD_OUTPUT
            .cadpipe/report.json                     the geometry report, written after the script

(w: the worker's group.) Directories are traversable but not listable (0711), and a job's own
files belong to a uid no other job has, in a group no job is in, so one job cannot read
another's even on a machine without mount namespaces. The worker reaches them through its
group, so it needs no CAP_DAC_OVERRIDE (it runs with CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID,
CAP_CHOWN and CAP_KILL only, on Kubernetes).

Everything read back is read as data from a job that may be hostile: no symlink is followed, a
file must be a regular file owned by the job's uid with a single link (so it cannot be a hard
link to someone else's file), and sizes are capped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import socket
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.worker import sandbox_runner as runner
from services.worker.domain.job import Job
from services.worker.domain.joblog import cut
from services.worker.domain.outputs import ProducedFile

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
MAX_REPORT_BYTES = 4 * 1024 * 1024
MAX_WALK_ENTRIES = 10_000
MAX_WALK_DEPTH = 8
JOB_DIR_MODE = 0o2770


@dataclass(frozen=True)
class OutputFile:
    path: str
    """Absolute path on the worker's disk."""
    size: int
    sha256: str


class UnsafeOutput(ValueError):
    """A produced file changed into something that is not the job's own regular file."""


class JobDir:
    def __init__(self, path: str, uid: int, gid: int, script_name: str, owned: bool) -> None:
        self.path = path
        self.uid = uid
        self.gid = gid
        self.script_name = script_name
        self._owned = owned
        """Files the job made belong to uid (False when the sandbox cannot switch uids)."""
        self.sandbox_dir = os.path.join(path, "sandbox")
        self.output_dir = os.path.join(self.sandbox_dir, runner.OUTPUT_DIR_NAME)
        self.stdout_path = os.path.join(path, "stdout.log")
        self.stderr_path = os.path.join(path, "stderr.log")
        self.passwd_path = os.path.join(path, "passwd")
        self.group_path = os.path.join(path, "group")
        self.job_file = os.path.join(path, "job.json")
        self.report_path = os.path.join(
            self.sandbox_dir, runner.REPORT_DIR_NAME, runner.REPORT_FILE_NAME
        )

    @property
    def identity_files(self) -> dict[str, str]:
        return {"/etc/passwd": self.passwd_path, "/etc/group": self.group_path}

    # --- reading back ---

    def _is_own_file(self, st: os.stat_result) -> bool:
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return False
        return not self._owned or st.st_uid == self.uid

    def produced_files(self) -> tuple[list[ProducedFile], list[str]]:
        """Regular files under the output directory, and notes on what was passed over."""
        found: list[ProducedFile] = []
        rejected: list[str] = []
        seen = 0

        def walk(directory: str, prefix: str, depth: int) -> None:
            nonlocal seen
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError as error:
                rejected.append(f"{prefix or '.'} (unreadable: {error.strerror})")
                return
            for entry in entries:
                seen += 1
                if seen > MAX_WALK_ENTRIES:
                    rejected.append(f"{prefix}... (more than {MAX_WALK_ENTRIES} entries)")
                    return
                rel = prefix + entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if depth < MAX_WALK_DEPTH:
                        walk(entry.path, rel + "/", depth + 1)
                elif self._is_own_file(st):
                    found.append(ProducedFile(rel, st.st_size))
                else:
                    rejected.append(f"{rel} (not a regular file of the job's own)")

        if os.path.isdir(self.output_dir) and not os.path.islink(self.output_dir):
            walk(self.output_dir, "", 0)
        return found, rejected

    def _open_own(self, path: str) -> int:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        if not self._is_own_file(os.fstat(fd)):
            os.close(fd)
            raise UnsafeOutput(path)
        return fd

    def output_file(self, rel: str, planned_size: int | None = None) -> OutputFile:
        """The produced file at rel, hashed; refused if it is not the job's own regular file,
        or (given planned_size, the size the output plan was checked with) if it is larger."""
        path = os.path.join(self.output_dir, rel)
        fd = self._open_own(path)
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "rb") as f:
            if planned_size is not None and os.fstat(f.fileno()).st_size > planned_size:
                raise UnsafeOutput(f"{path} grew after it was listed")
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
                if planned_size is not None and size > planned_size:
                    raise UnsafeOutput(f"{path} grew after it was listed")
        return OutputFile(path, size, digest.hexdigest())

    def read_report(self) -> Any:
        """The sandbox's raw geometry report, or None when there is none (or it is unusable)."""
        try:
            fd = self._open_own(self.report_path)
        except (OSError, UnsafeOutput):
            return None
        with os.fdopen(fd, "rb") as f:
            body = f.read(MAX_REPORT_BYTES + 1)
        if len(body) > MAX_REPORT_BYTES:
            return None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's stack
            return None

    def read_stream(self, path: str, keep: int) -> str:
        """A stream the job wrote, whole if it is small, else its head and tail."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size <= keep:
                    return f.read().decode("utf-8", "replace")
                head = f.read(keep // 2).decode("utf-8", "replace")
                f.seek(size - keep // 2)
                tail = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return cut(head, tail, size, keep)

    def remove(self) -> None:
        remove_tree(self.path)


class ScratchRoot:
    def __init__(self, root: str, uid_for_job: Callable[[], int], *, drop_privileges: bool) -> None:
        self.root = root
        self._uid_for_job = uid_for_job
        self._drop_privileges = drop_privileges
        self.worker_dir = ""
        self._lock_fd = -1

    @property
    def zygote_home(self) -> str:
        return os.path.join(self.worker_dir, "home")

    def open(self) -> None:
        """Claims a directory of this worker's own, and removes those of workers that died."""
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        os.chmod(self.root, 0o711)
        self._remove_stale()
        name = f"w-{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
        self.worker_dir = os.path.join(self.root, name)
        os.mkdir(self.worker_dir, 0o711)
        os.chmod(self.worker_dir, 0o711)
        self._lock_fd = os.open(
            os.path.join(self.worker_dir, LOCK_NAME), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600
        )
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        os.mkdir(self.zygote_home, 0o700)

    def close(self) -> None:
        if self.worker_dir:
            remove_tree(self.worker_dir)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _remove_stale(self) -> None:
        """A worker's directory whose lock nobody holds belongs to a worker that is gone (killed
        mid-job): its scratch is garbage."""
        for entry in os.scandir(self.root):
            if not entry.name.startswith("w-") or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                fd = os.open(os.path.join(entry.path, LOCK_NAME), os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            logger.info("removing the scratch of a worker that is gone: %s", entry.path)
            try:
                remove_tree(entry.path)
            except Exception:  # leftovers must never stop a worker from starting
                logger.exception("could not remove %s", entry.path)
            finally:
                os.close(fd)

    def new_job(self, job: Job, script: bytes) -> JobDir:
        uid = self._uid_for_job() if self._drop_privileges else os.getuid()
        gid = uid if self._drop_privileges else os.getgid()
        # An opaque name: the paths the zygote is told name no project (its memory is every
        # later job's); the script's name is in job.json, which only this job reads.
        path = os.path.join(self.worker_dir, f"j-{secrets.token_hex(8)}")
        jd = JobDir(path, uid, gid, f"{job.project}_v{job.version}.py", self._drop_privileges)
        os.mkdir(path, 0o711)
        os.chmod(path, 0o711)  # umask-proof
        _write(jd.job_file, json.dumps({"script_name": jd.script_name}).encode(), 0o600)
        for stream in (jd.stdout_path, jd.stderr_path):
            os.close(os.open(stream, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        _write(jd.passwd_path, _passwd(uid, gid).encode(), 0o644)
        _write(jd.group_path, f"root:x:0:\nnogroup:x:65534:\ncadpipe:x:{gid}:\n".encode(), 0o644)
        # Owned by the job's uid, group the worker's: the worker reads and removes what the job
        # leaves through the group bits (set-group-ID directories, and the job's umask 007), so
        # it needs no CAP_DAC_OVERRIDE; other jobs, of other uids and not in that group, get
        # nothing.
        for directory in (jd.sandbox_dir, jd.output_dir):
            os.mkdir(directory)
            os.chmod(directory, JOB_DIR_MODE)
        script_path = os.path.join(jd.sandbox_dir, jd.script_name)
        _write(script_path, script, 0o440)
        if self._drop_privileges:
            for owned in (jd.sandbox_dir, jd.output_dir, script_path):
                os.chown(owned, uid, os.getegid())
        return jd


def remove_tree(path: str) -> None:
    """Removes a scratch tree, however deep a job made it: a loop with a stack of names, one
    directory open at a time, every call relative to a directory descriptor (so neither
    Python's recursion limit nor PATH_MAX is reached; shutil.rmtree and os.walk recurse). What
    a job made unwritable to the worker's group (a chmod of its own) is removed by a process of
    the job's uid, which owns it (GNU chmod and rm walk with fts, without recursion limits).
    Never raises: what cannot be removed is logged."""
    try:
        remove_iteratively(path)
        return
    except OSError:
        pass
    for tree, uid in _foreign_directories(path):
        subprocess.run(
            [
                "/bin/sh",
                "-c",
                'chmod -R u+rwx -- "$1"; rm -rf -- "$1"/* "$1"/.[!.]* "$1"/..?*',
                "-",
                tree,
            ],
            user=uid,
            group=uid,
            extra_groups=[],
            env={"PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=60,
        )
    try:
        remove_iteratively(path)
    except OSError as error:
        logger.warning("could not remove all of %s: %s", path, error)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_iteratively(path: str) -> None:
    """rm -rf of path without recursion; raises OSError (after removing what it could reach)
    if something is in the way. Symbolic links are removed, never followed."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    names: list[str] = []
    try:
        while True:
            with os.scandir(fd) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            child = ""
            for name, is_dir in entries:
                if is_dir:
                    child = name
                    break
                os.unlink(name, dir_fd=fd)
            if child:
                try:
                    inner = os.open(child, _DIR_FLAGS, dir_fd=fd)
                except PermissionError:
                    # A directory of the worker's own that the job made unreadable (no uid
                    # switch); one of another uid stays unreadable, and the caller steps in.
                    os.chmod(child, 0o700, dir_fd=fd)
                    inner = os.open(child, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
                names.append(child)
                continue
            if not names:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def _foreign_directories(path: str, depth: int = 3) -> list[tuple[str, int]]:
    """Directories near the top of path that belong to another uid (a job's sandbox/), where
    the removal has to continue as that uid."""
    found: list[tuple[str, int]] = []
    level = [path]
    for _ in range(depth):
        below: list[str] = []
        for directory in level:
            try:
                with os.scandir(directory) as it:
                    for entry in it:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        uid = entry.stat(follow_symlinks=False).st_uid
                        if uid != os.geteuid():
                            found.append((entry.path, uid))
                        else:
                            below.append(entry.path)
            except OSError:
                continue
        level = below
    return found


def _passwd(uid: int, gid: int) -> str:
    return (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        f"cadpipe:x:{uid}:{gid}:cadpipe job:{runner.SANDBOX_TMP}:/usr/sbin/nologin\n"
    )


def _write(path: str, body: bytes, mode: int) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    os.chmod(path, mode)
