"""The FreeCAD side of the sandbox: runs untrusted FreeCAD scripts, one fresh process per job.

Executed by the Python FreeCAD's modules are built for (Debian's /usr/bin/python3), never by the
worker's virtualenv, so it uses the standard library only and is started by path:

    python3 -I sandbox_runner.py probe            capabilities and FreeCAD version, one JSON line
    python3 -I sandbox_runner.py zygote LIBDIR    imports FreeCAD once, then forks a job per request
    python3 -I sandbox_runner.py once LIBDIR      runs one request in a fresh interpreter

Requests and replies are JSON lines on stdin and stdout (see SandboxRequest in sandbox.py).
Every job is three processes deep:

    zygote (root, FreeCAD imported, never runs user code, holds no secret)
      └ supervisor (root): new PID namespace for its child, wall-clock deadline, reports the result
          └ job (PID 1 of that namespace): new mount and network namespaces, read-only view of
            the machine with its scratch directory as /tmp, unprivileged uid of its own, rlimits,
            no new privileges, an environment built from nothing; then the user script.

The job is PID 1 of its namespace, so when it ends, or the supervisor kills it at the deadline,
the kernel kills every process the script started, however it tried to detach. The worker's own
process (which holds the S3 and NATS credentials) is never forked into a job: the zygote is a
separate program started with an empty environment.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import json
import os
import resource
import runpy
import select
import signal
import sys
import time
import traceback
from typing import Any

# Exit codes of the job process; the worker maps them to exit reasons (verdict.judge).
EXIT_OK = 0
EXIT_EXCEPTION = 1
EXIT_MEMORY = 3
EXIT_FILE_SIZE = 4
EXIT_PROCESSES = 5
EXIT_OPEN_FILES = 6
EXIT_SETUP_FAILED = 120

SANDBOX_TMP = "/tmp"
OUTPUT_DIR_NAME = "output"
REPORT_DIR_NAME = ".cadpipe"
REPORT_FILE_NAME = "report.json"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
_MOUNT_OPTION_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}

_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_lib().unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(
        _lib().mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            None,
        ),
        f"mount {target}",
    )


def prctl(option: int, value: int) -> None:
    _check(_lib().prctl(ctypes.c_int(option), ctypes.c_ulong(value), 0, 0, 0), "prctl")


def write_line(fd: int, message: dict[str, Any]) -> None:
    """One JSON line in one write(): lines from concurrent supervisors never interleave, as long
    as they stay under PIPE_BUF (4096 bytes); error strings are cut to keep them there."""
    os.write(fd, json.dumps(message).encode() + b"\n")


# --- the job process (PID 1 of its namespace) ------------------------------------------------


def _mounts() -> list[tuple[str, set[str]]]:
    """Mount points with their per-mount options, from /proc/self/mountinfo."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        for line in info:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            found.append((point, set(fields[5].split(","))))
    return found


def _hide(paths: list[str]) -> None:
    """Covers paths the job must not read even though they are readable to everyone: mounted
    secrets (a Kubernetes service account or IRSA token is a credential to exchange elsewhere,
    even for a job without network: it could print it into its log)."""
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        elif os.path.lexists(path):
            mount("/dev/null", path, None, MS_BIND)


def _read_only_view(sandbox_dir: str, identity_files: dict[str, str], hidden: list[str]) -> None:
    """Makes this mount namespace a read-only, nosuid copy of the machine, with the job's own
    scratch directory as its only writable place, at /tmp; a /proc of the new PID namespace
    only, so no other process (the worker's environment included) is visible; mounted secrets
    covered; and /etc/passwd and /etc/group naming the job's uid (FreeCAD asks getpwuid() for
    the home directory)."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for point, options in _mounts():
        if "ro" in options or point == "/proc":
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        for name, flag in _MOUNT_OPTION_FLAGS.items():
            if name in options:
                flags |= flag
        try:
            mount(None, point, None, flags)
        except OSError as error:
            # A mount point hidden under a later mount (a stacked /dev/shm) cannot be reached
            # by path; the mount on top of it is what the job sees, and it is made read-only.
            if error.errno not in (errno.EINVAL, errno.ENOENT):
                raise
    _hide(hidden)
    for target, source in identity_files.items():
        mount(source, target, None, MS_BIND)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    mount(sandbox_dir, SANDBOX_TMP, None, MS_BIND)
    mount(None, SANDBOX_TMP, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
    # Anything left writable for everyone (/var/tmp, /dev/shm) is read-only now; /tmp is ours.


def _tasks_of(uid: int) -> int:
    """Processes and threads of uid, which RLIMIT_NPROC counts."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


def _apply_limits(limits: dict[str, int], shared_uid: bool) -> None:
    def set_limit(which: int, value: int | None, hard: int | None = None) -> None:
        if value is not None and value > 0:
            resource.setrlimit(which, (value, hard if hard is not None else value))

    set_limit(resource.RLIMIT_AS, limits.get("address_space"))
    cpu = limits.get("cpu_seconds")
    # The soft limit sends SIGXCPU (terminates); the hard limit a second later is SIGKILL, for a
    # script that ignores SIGXCPU.
    set_limit(resource.RLIMIT_CPU, cpu, (cpu + 1) if cpu else None)
    processes = limits.get("processes")
    if processes and shared_uid:
        # RLIMIT_NPROC counts every task of the uid, and without a uid of its own the job
        # shares the worker's: allow what runs already, plus the job's share.
        processes += _tasks_of(os.getuid())
    set_limit(resource.RLIMIT_NPROC, processes)
    set_limit(resource.RLIMIT_FSIZE, limits.get("file_size"))
    set_limit(resource.RLIMIT_NOFILE, limits.get("open_files"))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _enter_sandbox(request: dict[str, Any], go_fd: int) -> str:
    """Everything between fork() and the user script; runs as root and ends unprivileged.
    Returns the directory the job sees as its scratch (HOME, cwd, /tmp)."""
    # Wait until the supervisor has put this process into its pids cgroup.
    os.read(go_fd, 1)
    os.close(go_fd)
    os.setsid()
    # The log files live outside the scratch directory, where the job cannot reach them by path
    # once its view of the machine is narrowed: open them first.
    null = os.open("/dev/null", os.O_RDONLY)
    out = os.open(request["stdout_path"], os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    err = os.open(request["stderr_path"], os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    # The kernel's OOM killer takes a job before the worker or the zygote (which keep 0).
    _set_oom_score_adj(OOM_SCORE_ADJ_JOB)
    flags = 0
    if request["mount_namespace"]:
        flags |= CLONE_NEWNS
    if request["network_namespace"]:
        flags |= CLONE_NEWNET
    if request.get("ipc_namespace"):
        # System V IPC (shared memory above all) of its own: what the job leaves there goes
        # away with its namespace, instead of outliving the job on the machine.
        flags |= CLONE_NEWIPC
    if flags:
        unshare(flags)
    home = request["sandbox_dir"]
    if request["mount_namespace"]:
        _read_only_view(
            request["sandbox_dir"],
            request.get("identity_files") or {},
            request.get("hidden_paths") or [],
        )
        home = SANDBOX_TMP

    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    # Nothing the zygote holds (its pipes to the worker above all) stays open in the job; the
    # one kept is the pipe that tells the supervisor the script starts (closed before it does).
    keep = request.get("_started_fd", -1)
    top = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if keep >= 3:
        os.closerange(3, keep)
        os.closerange(keep + 1, top)
    else:
        os.closerange(3, top)

    if request["drop_privileges"]:
        uid, gid = request["uid"], request["gid"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    # The job dies with its supervisor (set after the uid change, which clears it), and neither
    # it nor anything it starts can gain privileges again (setuid binaries, file capabilities).
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    _apply_limits(request["limits"], shared_uid=not request["drop_privileges"])

    # Files the job makes stay readable to the worker's group (see scratch.py), no one else's.
    os.umask(0o007)
    os.chdir(home)
    os.environ.clear()
    os.environ.update(
        {
            "PATH": SANDBOX_PATH,
            "HOME": home,
            "LANG": "C.UTF-8",
            "FREECAD_OUTPUT": os.path.join(home, OUTPUT_DIR_NAME),
        }
    )
    # As in a normal Python start (the zygote ignores SIGCHLD, which would break subprocess).
    for name in ("SIGINT", "SIGTERM", "SIGCHLD", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if request.get("seccomp"):
        # Last: everything above needed mount(2) and unshare(2); the script gets neither.
        _seccomp().install()
    return home


OOM_SCORE_ADJ_JOB = 1000


def _set_oom_score_adj(value: int) -> None:
    with open("/proc/self/oom_score_adj", "w", encoding="ascii") as f:
        f.write(str(value))


_seccomp_module: Any = None


def _seccomp() -> Any:
    """seccomp_filter.py, loaded by path (this file runs outside the worker's package)."""
    global _seccomp_module
    if _seccomp_module is None:
        import importlib.util

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_filter.py")
        spec = importlib.util.spec_from_file_location("cadpipe_seccomp_filter", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _seccomp_module = module
    return _seccomp_module


def _reopen_stdio() -> None:
    # Line-buffered and written through, so a job killed at its deadline keeps what it printed.
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = open(  # lives as long as the process
            fd, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
        )
        setattr(sys, name, stream)


def _exit_code_for(error: BaseException) -> int:
    """Tells a limit the sandbox imposed from a bug in the script."""
    if isinstance(error, MemoryError):
        return EXIT_MEMORY
    if isinstance(error, OSError):
        if error.errno == errno.EFBIG:
            return EXIT_FILE_SIZE
        if error.errno in (errno.EMFILE, errno.ENFILE):
            return EXIT_OPEN_FILES
        if error.errno == errno.EAGAIN and isinstance(error, BlockingIOError):
            return EXIT_PROCESSES  # fork()/thread start refused by RLIMIT_NPROC
    return EXIT_EXCEPTION


def _print_script_traceback(error: BaseException, script_path: str) -> None:
    """The traceback from the script's first frame on: this runner's and runpy's frames above
    it say nothing to the script's author. A SyntaxError has no frame in the script and prints
    as Python prints it (file, line, caret)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != script_path:
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb)


def run_script(script_path: str, home: str) -> int:
    """Runs the user script as __main__ (freecadcmd would not) and turns an exception into a
    traceback on stderr and a non-zero exit (freecadcmd exits 0)."""
    main_pid = os.getpid()
    sys.argv = [script_path]
    sys.path.insert(0, os.path.dirname(script_path))
    code = EXIT_OK
    try:
        runpy.run_path(script_path, run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0):
            print(f"the script called sys.exit({stop.code!r})", file=sys.stderr)
            code = EXIT_EXCEPTION
    except BaseException as error:  # every failure of the script is reported
        _print_script_traceback(error, script_path)
        code = _exit_code_for(error)
        if code != EXIT_EXCEPTION:
            print(f"cadpipe: limit exceeded: {_LIMIT_NAMES[code]}", file=sys.stderr)
        del error
    if os.getpid() != main_pid:
        os._exit(code)  # a process the script forked: only the job itself writes the report
    if code == EXIT_OK:
        try:
            report = _report_module.geometry_report(os.path.join(home, OUTPUT_DIR_NAME))
            report_dir = os.path.join(home, REPORT_DIR_NAME)
            os.makedirs(report_dir, exist_ok=True)
            with open(os.path.join(report_dir, REPORT_FILE_NAME), "w", encoding="utf-8") as f:
                json.dump(report, f)
        except Exception:  # a report failure must not fail a good run
            print("cadpipe: the geometry report failed:", file=sys.stderr)
            traceback.print_exc()
    return code


_LIMIT_NAMES = {
    EXIT_MEMORY: "memory",
    EXIT_FILE_SIZE: "file size",
    EXIT_PROCESSES: "processes",
    EXIT_OPEN_FILES: "open files",
}


def _rehome_freecad(home: str) -> None:
    """FreeCAD was initialised in the zygote, whose HOME its user paths (cache, config, macros)
    point into; point them into the job's scratch directory instead."""
    import FreeCAD

    zygote_home = _zygote_home.rstrip("/")
    for key, value in FreeCAD.ConfigDump().items():
        if zygote_home and value.startswith(zygote_home + "/"):
            FreeCAD.ConfigSet(key, home + value[len(zygote_home) :])
    FreeCAD.ConfigSet("UserHomePath", home)
    FreeCAD.ConfigSet("PATH", SANDBOX_PATH)


_zygote_home = ""


def _job_main(request: dict[str, Any], go_fd: int, started_fd: int = -1) -> None:
    """The job process; never returns. Writes one byte to started_fd, and closes it, just
    before the script runs: the supervisor tells a set-up failure from the script's own exit
    status by that byte, which the script cannot write (the pipe is closed by then)."""
    code = EXIT_SETUP_FAILED
    try:
        try:
            if request.get("seccomp"):
                _seccomp()  # loaded while the worker's code is still readable by path
            script_name = _script_name(request)  # as root, before the view narrows
            home = _enter_sandbox({**request, "_started_fd": started_fd}, go_fd)
            _reopen_stdio()
            if "FreeCAD" in sys.modules:
                _rehome_freecad(home)
            else:
                _import_freecad(request["freecad_lib_dir"])
            script = os.path.join(home, script_name)
            if started_fd >= 0:
                os.write(started_fd, b"s")
                os.close(started_fd)
        except BaseException:  # reported in the job's stderr, then exit
            traceback.print_exc()
            print("cadpipe: the sandbox could not be set up", file=sys.stderr)
            code = EXIT_SETUP_FAILED
        else:
            code = run_script(script, home)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        # No interpreter or FreeCAD teardown: it could only write state the job does not need.
        os._exit(code)


# --- the supervisor --------------------------------------------------------------------------


def _wait_with_deadline(pid: int, timeout: float) -> tuple[int, Any, bool]:
    """wait4() on pid; kills it (and, as PID 1 of its namespace, everything it started) at the
    deadline. Returns (wait status, rusage, timed out)."""
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            _kill_group(pid)
            _, status, usage = os.wait4(pid, 0)
            break
        if pidfd >= 0:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            poller.poll(max(1, int(left * 1000)))
        else:
            time.sleep(min(left, 0.01))
    if pidfd >= 0:
        os.close(pidfd)
    return status, usage, timed_out


def _kill_group(pid: int) -> None:
    """The job leads its own process group (setsid): kill the group, the job included."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_uid(uid: int) -> None:
    """Kills every process running as uid (kill(-1) as that uid reaches exactly those): the
    clean-up when there is no PID namespace to take them all down."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _pids_cgroup(request: dict[str, Any]) -> str | None:
    parent = request.get("pids_cgroup")
    if not parent:
        return None
    path = os.path.join(parent, "job-" + request["id"])
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "pids.max"), "w", encoding="ascii") as f:
        f.write(str(request["limits"]["processes"]))
    return path


def supervise(request: dict[str, Any], out_fd: int) -> None:
    """Runs one job to its end and writes its result line to out_fd."""
    job_id = request["id"]
    started = time.monotonic()
    cgroup = None
    memory_cgroup = None
    try:
        if request["pid_namespace"]:
            unshare(CLONE_NEWPID)
        cgroup = _pids_cgroup(request)
        memory_cgroup = _memory_cgroup(request)
        read_fd, write_fd = os.pipe()
        started_read, started_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(write_fd)
            os.close(started_read)
            _job_main(request, read_fd, started_write)
        os.close(read_fd)
        os.close(started_write)
        for group in (cgroup, memory_cgroup):
            if group:
                with open(os.path.join(group, "cgroup.procs"), "w", encoding="ascii") as f:
                    f.write(str(pid))
        os.write(write_fd, b"g")
        os.close(write_fd)
        status, usage, timed_out = _wait_with_deadline(pid, float(request["timeout"]))
        script_started = _read_started(started_read)
        if not request["pid_namespace"]:
            # Without a PID namespace nothing takes the job's children down with it: kill its
            # process group, and with a uid of its own, every process of that uid (a child
            # that left the group with setsid() included).
            _kill_group(pid)
            if request["drop_privileges"]:
                _kill_uid(request["uid"])
        result: dict[str, Any] = {
            "id": job_id,
            "event": "finished",
            "timed_out": timed_out,
            "exit_code": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "wall_seconds": time.monotonic() - started,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss_kb": usage.ru_maxrss,
            "script_started": script_started,
            "memory_cgroup_oom": _oom_killed(memory_cgroup) if memory_cgroup else False,
        }
    except Exception as error:  # the worker needs to hear of any failure
        message = f"{type(error).__name__}: {error}"[:1000]
        result = {"id": job_id, "event": "failed", "error": message}
    finally:
        for group in (cgroup, memory_cgroup):
            if group:
                _remove_cgroup(group)
    write_line(out_fd, result)


def _memory_cgroup(request: dict[str, Any]) -> str | None:
    """A cgroup v1 memory cgroup of the job's own, limited to its memory limit: resident
    memory counted for the job, and an OOM kill there is the job's alone."""
    parent = request.get("memory_cgroup")
    limit = request["limits"].get("address_space")
    if not parent or not limit:
        return None
    path = os.path.join(parent, "job-" + request["id"])
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "memory.limit_in_bytes"), "w", encoding="ascii") as f:
        f.write(str(limit))
    return path


def _oom_killed(path: str) -> bool:
    """Whether the kernel's OOM killer acted in the job's memory cgroup (oom_kill, since
    Linux 4.13; under_oom / failcnt as a fallback)."""
    try:
        with open(os.path.join(path, "memory.oom_control"), encoding="ascii") as f:
            fields = dict(line.split() for line in f if len(line.split()) == 2)
    except OSError:
        return False
    if "oom_kill" in fields:
        return int(fields["oom_kill"]) > 0
    return fields.get("under_oom") == "1"


def _read_started(fd: int) -> bool:
    """Whether the job said its script starts. Every writer of the pipe is gone (the job wrote
    and closed it, or died), so the read cannot block."""
    try:
        return os.read(fd, 1) == b"s"
    finally:
        os.close(fd)


def _script_name(request: dict[str, Any]) -> str:
    """The script's file name, from job.json beside the sandbox directory (written by the
    worker), so that the request the zygote reads names no project: a later job, forked from
    the zygote, inherits its memory."""
    if "script_name" in request:
        return str(request["script_name"])
    with open(request["job_file"], encoding="utf-8") as f:
        name = str(json.load(f)["script_name"])
    if "/" in name or name.startswith("."):
        raise ValueError(f"bad script name in {request['job_file']}")
    return name


def _remove_cgroup(path: str) -> None:
    """rmdir of the job's cgroup, which is busy until the kernel has released the last of its
    processes (a moment after a fork bomb's PID namespace is torn down)."""
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY:
                return
            time.sleep(0.02)


# --- entry points ----------------------------------------------------------------------------


def _import_freecad(lib_dir: str) -> Any:
    if lib_dir not in sys.path:
        sys.path.append(lib_dir)
    import FreeCAD
    import Import  # type: ignore[import-not-found]  # noqa: F401 - STEP/IGES, loaded once
    import Mesh  # noqa: F401
    import Part  # noqa: F401

    return FreeCAD


def _warm_freecad() -> None:
    """FreeCAD 1.0 builds its material library on the first Part object a process makes (about
    95 ms); built once here, every job forked from the zygote has it. FreeCAD 0.20 has no
    Materials module."""
    try:
        import Materials  # type: ignore[import-not-found]
    except Exception:  # ImportError on 0.20; anything else: a cache, not a requirement
        return
    manager = getattr(Materials, "MaterialManager", None)
    if manager is not None:
        try:
            manager()
        except Exception as error:  # a cache, not a requirement
            print(f"cadpipe: could not warm FreeCAD's materials: {error}", file=sys.stderr)


def _freecad_version(freecad: Any) -> str:
    return ".".join(freecad.Version()[:3])


def zygote(lib_dir: str) -> None:
    """Imports FreeCAD once, then forks a supervisor per request line. Each job starts from this
    clean, already-initialised state: nothing a script does reaches the next one."""
    global _zygote_home
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # never outlive the worker
    # A terminal's Ctrl-C reaches the whole process group, the zygote included: stopping it is
    # the worker's job, in order (jobs set SIGINT back to Python's default before the script).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _zygote_home = os.environ.get("HOME", "")
    freecad = _import_freecad(lib_dir)
    _warm_freecad()
    _seccomp()
    out_fd = sys.stdout.fileno()
    version = _freecad_version(freecad)
    write_line(out_fd, {"event": "ready", "pid": os.getpid(), "freecad_version": version})
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    for line in sys.stdin.buffer:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            try:
                supervise(request, out_fd)
            finally:
                os._exit(0)
        write_line(out_fd, {"id": request["id"], "event": "started", "pid": pid})


def once() -> None:
    """One job in a fresh interpreter: this process supervises, its child imports FreeCAD after
    entering the sandbox. The slower, simpler alternative to the zygote."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    request = json.loads(sys.stdin.buffer.readline())
    out_fd = sys.stdout.fileno()
    write_line(out_fd, {"id": request["id"], "event": "started", "pid": os.getpid()})
    supervise(request, out_fd)


def _probe_child(flags: int) -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            unshare(flags)
            if flags & CLONE_NEWNS:
                # mount(2) itself, as the job uses it: a seccomp or AppArmor profile may allow
                # the namespace and deny the mounts.
                mount(None, "/", None, MS_REC | MS_PRIVATE)
                mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
            os._exit(0)
        except OSError:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def _probe_seccomp() -> bool:
    """The job's filter installs here, refuses a user namespace, and leaves threads working."""
    pid = os.fork()
    if pid == 0:
        try:
            import threading

            _seccomp().install()
            try:
                unshare(0x10000000)  # CLONE_NEWUSER
                os._exit(1)
            except OSError as error:
                if error.errno != errno.EPERM:
                    os._exit(1)
            started: list[bool] = []
            thread = threading.Thread(target=lambda: started.append(True))
            thread.start()
            thread.join()
            os._exit(0 if started else 1)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def probe(lib_dir: str) -> None:
    """What this machine allows, for the worker to decide (and say) how strong the sandbox is."""
    can_setuid = False
    pid = os.fork()
    if pid == 0:
        try:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            os._exit(0)
        except OSError:
            os._exit(1)
    can_setuid = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    freecad_version = ""
    try:
        freecad_version = _freecad_version(_import_freecad(lib_dir))
    except ImportError as error:
        freecad_version = ""
        print(f"FreeCAD cannot be imported from {lib_dir}: {error}", file=sys.stderr)
    write_line(
        sys.stdout.fileno(),
        {
            "event": "probe",
            "freecad_version": freecad_version,
            "setuid": can_setuid,
            "network_namespace": _probe_child(CLONE_NEWNET),
            "mount_namespace": _probe_child(CLONE_NEWNS),
            "pid_namespace": _probe_child(CLONE_NEWPID),
            "ipc_namespace": _probe_child(CLONE_NEWIPC),
            "seccomp": _probe_seccomp(),
        },
    )


_report_module: Any = None
REPORT_MODULE = "sandbox_report.py"
"""The geometry report's code, beside this file."""


def _load_report_module() -> Any:
    """sandbox_report.py, loaded by path: this runner is started with -I, so its directory is
    not on sys.path; loaded at start, before any job hides the filesystem."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), REPORT_MODULE)
    spec = importlib.util.spec_from_file_location("cadpipe_sandbox_report", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> None:
    global _report_module
    _report_module = _load_report_module()
    command = argv[1] if len(argv) > 1 else ""
    lib_dir = argv[2] if len(argv) > 2 else "/usr/lib/freecad/lib"
    if command == "zygote":
        zygote(lib_dir)
    elif command == "once":
        once()
    elif command == "probe":
        probe(lib_dir)
    else:
        sys.exit("usage: sandbox_runner.py probe|zygote|once [FREECAD_LIB_DIR]")


if __name__ == "__main__":
    main(sys.argv)
