"""Hostile scripts through the real worker (`python -m services.worker`, FreeCAD, nats-server,
moto's S3 server), one per thing issue 13 found a script could still do: leave shared memory
behind, reach kernel attack surface, make the worker upload gigabytes, pass its own failure off
as the worker's, leave its scratch behind, read earlier tenants in the zygote's memory, be the
one the OOM killer spares, forge log lines. One worker serves the module (conftest)."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.polling import wait_until_blocking
from worker_harness import (
    FREECAD_LIB,
    FREECAD_PYTHON,
    REPO,
    STL_SCRIPT,
    WorkerProcess,
    keys,
    log_uid,
    probe_result,
    read_text,
    sample,
    submit,
    wait_marker,
    worker_env,
)
from worker_shared import SharedWorker

from cadpipe import layout
from cadpipe.adapters import s3
from cadpipe.devstack import MotoS3
from cadpipe.settings import NatsSettings
from services.worker import seccomp_filter
from services.worker.domain.outputs import ProducedFile, plan_outputs
from services.worker.domain.report import finish_report

pytestmark = pytest.mark.freecad


def project_name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


async def run(
    worker: SharedWorker, js: Any, project: str, body: str, version: int = 1
) -> tuple[dict[str, Any], str]:
    await submit(js, worker.bucket, project, version, body.encode())
    marker = await wait_marker(worker.bucket, project, version, within=worker.timeout_seconds + 20)
    return marker, read_text(worker.bucket, marker["log_key"])


# --- 1. System V IPC ---------------------------------------------------------------------------

SHM_SCRIPT = """\
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
IPC_PRIVATE, IPC_CREAT = 0, 0o1000
size = 32 * 1024 * 1024
found = {}
shmid = libc.shmget(IPC_PRIVATE, ctypes.c_size_t(size), IPC_CREAT | 0o600)
found["shmid"] = shmid
if shmid >= 0:
    address = libc.shmat(shmid, None, 0)
    ctypes.memset(address, 0x41, size)
    libc.shmdt(ctypes.c_void_p(address))
found["msgid"] = libc.msgget(IPC_PRIVATE, IPC_CREAT | 0o600)
found["semid"] = libc.semget(IPC_PRIVATE, 4, IPC_CREAT | 0o600)
print("CADPIPE_PROBE " + json.dumps(found))
with open(os.path.join(os.environ["FREECAD_OUTPUT"], "t.stl"), "w") as f:
    f.write("solid t\\nendsolid t\\n")
"""


def sysv_ipc_of(uid: int) -> list[str]:
    """Lines of /proc/sysvipc/{shm,msg,sem} (this machine's IPC namespace) created by uid."""
    left = []
    for kind in ("shm", "msg", "sem"):
        with open(f"/proc/sysvipc/{kind}") as f:
            header, *rows = f.read().splitlines()
        columns = header.split()
        for row in rows:
            fields = dict(zip(columns, row.split(), strict=False))
            if fields.get("cuid") == str(uid) or fields.get("uid") == str(uid):
                left.append(f"{kind}: {row}")
    return left


async def test_shared_memory_dies_with_its_job(shared_worker: SharedWorker, shared_js: Any) -> None:
    w, project = shared_worker, project_name("sysvipc")
    marker, log = await run(w, shared_js, project, SHM_SCRIPT)

    assert marker["status"] == "completed", log
    found = probe_result(log)
    assert found["shmid"] >= 0 and found["msgid"] >= 0 and found["semid"] >= 0, found
    left = await asyncio.to_thread(sysv_ipc_of, log_uid(log))
    await asyncio.to_thread(_ipcrm, left)
    assert left == []


def _ipcrm(lines: list[str]) -> None:
    """Cleans up after a failing run: these outlive every process."""
    for line in lines:
        kind, ident = line.split(": ")[0], line.split()[2]
        option = {"shm": "-m", "msg": "-q", "sem": "-s"}[kind]
        subprocess.run(["ipcrm", option, ident], check=False)


# --- 2. seccomp --------------------------------------------------------------------------------


def seccomp_script() -> str:
    table = seccomp_filter.SYSCALLS[os.uname().machine]
    denied = {name: table[name] for name in seccomp_filter.DENIED if name in table}
    return f"""\
import ctypes, errno, json, os, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(nr, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return result, ctypes.get_errno()

def outcome(result, err):
    return "allowed" if result >= 0 else errno.errorcode.get(err, str(err))

found = {{}}
for name, nr in {denied!r}.items():
    found[name] = outcome(*call(nr, 0, 0, 0, 0, 0))
CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17
for flag_name, flag in (("user", CLONE_NEWUSER), ("net", CLONE_NEWNET)):
    result, err = call({table["unshare"]}, flag)
    found["unshare_" + flag_name] = outcome(result, err)
    result, err = call({table["clone"]}, flag | SIGCHLD, 0, 0, 0, 0)
    if result == 0:
        os._exit(0)  # a namespaced child got through: leave at once
    if result > 0:
        os.waitpid(result, 0)
    found["clone_" + flag_name] = outcome(result, err)
found["clone3"] = outcome(*call({table["clone3"]}, 0, 0))
ran = []
thread = threading.Thread(target=lambda: ran.append(True))
thread.start()
thread.join()
found["thread"] = bool(ran)
pid = os.fork()
if pid == 0:
    os._exit(7)
found["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
found["subprocess"] = subprocess.run(["/bin/echo", "hi"], capture_output=True).stdout.decode()
print("CADPIPE_PROBE " + json.dumps(found))
import Part
Part.makeBox(1, 2, 3).exportStep(os.path.join(os.environ["FREECAD_OUTPUT"], "box.step"))
"""


async def test_seccomp_refuses_namespaces_and_kernel_surface(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("seccomp")
    marker, log = await run(w, shared_js, project, seccomp_script())

    found = probe_result(log)
    refused = {name: found[name] for name in seccomp_filter.DENIED if name in found}
    assert refused and set(refused.values()) == {"EPERM"}, refused
    for call in ("unshare_user", "unshare_net", "clone_user", "clone_net"):
        assert found[call] == "EPERM", (call, found)
    assert found["clone3"] == "ENOSYS"  # glibc falls back to clone(2)
    # Threads, fork and subprocesses work, and so does FreeCAD.
    assert found["thread"] is True and found["fork"] == 7 and found["subprocess"] == "hi\n"
    assert marker["status"] == "completed", log
    assert "seccomp" in log


def _raw_report_outside_the_sandbox(script: bytes, tmp: Path) -> tuple[Any, list[Any]]:
    """The sample run by FreeCAD's Python directly (no sandbox, no filter) and measured with
    the same report code: the baseline the worker's reports must equal."""
    output = tmp / "output"
    output.mkdir()
    (tmp / "script.py").write_bytes(script)
    code = (
        "import json, runpy, sys\n"
        f"sys.path.append({FREECAD_LIB!r}); sys.path.insert(0, {str(REPO / 'services/worker')!r})\n"
        "import FreeCAD, Part, Mesh, Import, sandbox_report\n"
        f"runpy.run_path({str(tmp / 'script.py')!r}, run_name='__main__')\n"
        f"print('REPORT ' + json.dumps(sandbox_report.geometry_report({str(output)!r})))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "FREECAD_OUTPUT": str(output)}
    out = subprocess.run(
        [FREECAD_PYTHON, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp,
        check=True,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("REPORT "))
    produced = [
        ProducedFile(str(p.relative_to(output)), p.stat().st_size)
        for p in sorted(output.rglob("*"))
        if p.is_file()
    ]
    return json.loads(line[len("REPORT ") :]), produced


@pytest.mark.parametrize("name", ["box_with_hole.py", "bracket.py", "cylinder_template.py"])
async def test_samples_report_the_same_under_the_filter(
    shared_worker: SharedWorker, shared_js: Any, tmp_path: Path, name: str
) -> None:
    w, project = shared_worker, project_name("samples")
    marker, log = await run(w, shared_js, project, sample(name).decode())
    assert marker["status"] == "completed", log
    stored = json.loads(read_text(w.bucket, marker["report_key"]))

    raw, produced = await asyncio.to_thread(_raw_report_outside_the_sandbox, sample(name), tmp_path)
    plan = plan_outputs(project, 1, produced, 64)
    expected = finish_report(raw, plan, project=project, version=1)
    assert _same_report(stored, expected)


def _same_report(a: Any, b: Any) -> bool:
    """Equal, with floats equal to 1e-9 relative (two runs of OCCT are deterministic)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_report(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_report(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9)
    assert a == b, (a, b)
    return True


# --- 3. outputs' total size --------------------------------------------------------------------


async def test_sparse_outputs_past_the_total_are_refused_before_upload(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("sparse")
    script = (
        "import os\n"
        "for i in range(3):\n"
        "    with open(os.path.join(os.environ['FREECAD_OUTPUT'], f'huge{i}.stl'), 'wb') as f:\n"
        "        f.truncate(60 * 1024 * 1024)  # a few KiB on disk, 60 MiB to read\n"
    )
    marker, log = await run(w, shared_js, project, script)

    assert marker["status"] == "error", log
    assert marker["exit_reason"] == "limit_exceeded"
    assert "output size limit exceeded (100 MiB" in marker["error"]
    assert "huge1.stl" in marker["error"]
    assert marker["outputs"] == []
    assert keys(w.bucket, layout.output_prefix(project, 1)) == []


# --- 4. the verdict is the supervisor's --------------------------------------------------------


@pytest.mark.parametrize("status", [120, 0])
async def test_a_scripts_exit_status_is_never_a_worker_error(
    shared_worker: SharedWorker, shared_js: Any, status: int
) -> None:
    w, project = shared_worker, project_name("exit")
    script = (
        "import os, sys\n"
        "print('cadpipe: the sandbox could not be set up', file=sys.stderr, flush=True)\n"
        f"os._exit({status})\n"
    )
    marker, log = await run(w, shared_js, project, script)

    assert marker["status"] == "error", log
    if status == 0:
        assert marker["exit_reason"] == "no_outputs"
    else:
        assert marker["exit_reason"] == "exception"
        assert marker["error"] == f"the script exited with status {status}"


# --- 5. scratch removal ------------------------------------------------------------------------

DEEP_SCRIPT = """\
import os
os.chdir("/tmp")
os.mkdir("deep")
os.chdir("deep")
for _ in range(5000):
    os.mkdir("d")
    os.chdir("d")
open("bottom.txt", "w").write("x")
os.chmod("/tmp/deep", 0o500)
"""


def job_dirs_of(root: str) -> list[str]:
    return glob.glob(os.path.join(root, "w-*", "j-*"))


async def test_a_deep_tree_is_removed_with_its_job(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("deep")
    marker, log = await run(w, shared_js, project, DEEP_SCRIPT)

    assert marker["exit_reason"] == "no_outputs", log
    assert marker["attempts"] == 1
    try:
        await asyncio.to_thread(
            wait_until_blocking, lambda: not job_dirs_of(w.scratch_root), within=10
        )
    except TimeoutError:
        left = {d: sorted(os.listdir(d)) for d in job_dirs_of(w.scratch_root)}
        raise AssertionError(f"job directories stayed: {left}") from None


def _deep_leftover(root: str, uid: int, depth: int) -> str:
    """A dead worker's scratch (its lock free) holding a job tree depth levels deep, made by
    uid, with a directory it made unwritable on top."""
    worker_dir = os.path.join(root, "w-gone-1-abcdef")
    sandbox = os.path.join(worker_dir, "j-0123456789abcdef", "sandbox")
    os.makedirs(sandbox)
    Path(worker_dir, ".lock").touch()
    os.chown(sandbox, uid, uid)
    code = (
        "import os\n"
        f"os.chdir({sandbox!r})\n"
        "os.mkdir('deep'); os.chdir('deep')\n"
        f"for _ in range({depth}):\n"
        "    os.mkdir('d'); os.chdir('d')\n"
        f"os.chmod({sandbox!r} + '/deep', 0o500)\n"
    )
    subprocess.run([FREECAD_PYTHON, "-c", code], user=uid, group=uid, check=True, timeout=60)
    return worker_dir


async def test_a_worker_starts_next_to_deep_leftovers_and_removes_them(
    moto_server: MotoS3, bucket: s3.Bucket, nats_settings: NatsSettings
) -> None:
    root = tempfile.mkdtemp(prefix="cadpipe-worker-test-", dir="/var/tmp")
    os.chmod(root, 0o711)
    try:
        leftover = await asyncio.to_thread(_deep_leftover, root, 254321, 5000)
        env = worker_env(moto_server.env(bucket.name), nats_settings.nats_url, root)
        worker = WorkerProcess(env)
        try:
            await asyncio.to_thread(worker.start, 60)
            assert not await asyncio.to_thread(os.path.lexists, leftover)
        finally:
            await asyncio.to_thread(worker.stop)
    finally:
        await asyncio.to_thread(subprocess.run, ["rm", "-rf", "--", root], check=False)


# --- 6. nothing of another tenant in a job's memory --------------------------------------------


def memory_scan_script(name: str) -> str:
    """Counts where name is in the job's own writable memory (name is in the script masked,
    and the copy it unmasks is skipped, as is the scan's buffer)."""
    masked = bytes(b ^ 0x5A for b in name.encode()).hex()
    return f"""\
import ctypes, json, sys
needle = bytes(b ^ 0x5A for b in bytes.fromhex({masked!r}))
buffer = bytearray(4 << 20)
buffer_at = ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))
skip = [(id(needle), id(needle) + sys.getsizeof(needle)), (buffer_at, buffer_at + len(buffer))]
with open("/proc/self/maps") as maps:
    regions = [line.split() for line in maps]
hits, scanned = [], 0
# The job is not dumpable (its uid changed), so /proc/self/mem is closed to it; its own
# writable mappings it reads directly.
for fields in regions:
    low, high = (int(x, 16) for x in fields[0].split("-"))
    where = fields[5] if len(fields) > 5 else "[anon]"
    if not fields[1].startswith("rw") or where in ("[vvar]", "[vsyscall]"):
        continue
    at = low
    while at < high:
        got = min(len(buffer), high - at)
        ctypes.memmove(buffer_at, at, got)
        scanned += got
        pos = buffer.find(needle, 0, got)
        while pos >= 0:
            address = at + pos
            if not any(lo <= address < hi for lo, hi in skip):
                hits.append(where)
            pos = buffer.find(needle, pos + 1, got)
        at += got if at + got >= high else max(1, got - len(needle) + 1)
print("CADPIPE_PROBE " + json.dumps({{"hits": hits, "scanned": scanned}}))
"""


def zygotes_of(worker_pid: int) -> list[int]:
    """The FreeCAD zygotes the worker started (sandbox_runner.py zygote, its children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if ppid == worker_pid and b"zygote" in argv and any(b"sandbox_runner" in a for a in argv):
            found.append(int(entry))
    return found


def memory_hits(pid: int, needle: bytes) -> list[str]:
    """The mappings of a process (read as root through /proc/{pid}/mem) that hold needle."""
    hits = []
    with open(f"/proc/{pid}/maps") as maps:
        regions = [line.split() for line in maps]
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for fields in regions:
            where = fields[5] if len(fields) > 5 else "[anon]"
            if not fields[1].startswith("r") or where in ("[vvar]", "[vsyscall]"):
                continue
            low, high = (int(x, 16) for x in fields[0].split("-"))
            at, tail = low, b""
            while at < high:
                try:
                    mem.seek(at)
                    chunk = mem.read(min(4 << 20, high - at))
                except OSError:  # a guard page or a device mapping
                    break
                if not chunk:
                    break
                if needle in tail + chunk:
                    hits.append(where)
                    break
                tail = chunk[-len(needle) :]
                at += len(chunk)
    return hits


async def test_a_later_job_finds_nothing_of_an_earlier_project_in_its_memory(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w = shared_worker
    # A long name next to a short one: the zygote's allocator would not reuse the blocks the
    # victim's request left for the reader's, so any copy of it would stay.
    victim = f"tenantvictim-{uuid.uuid4().hex}{uuid.uuid4().hex}"[:64]
    reader = project_name("r")
    marker, log = await run(w, shared_js, victim, STL_SCRIPT)
    assert marker["status"] == "completed", log
    # Every job is a fork of a zygote: what is not in the zygotes' memory now, right after the
    # victim's request (before a later one can overwrite it), no later job can inherit.
    assert w.process.process is not None
    zygotes = await asyncio.to_thread(zygotes_of, w.process.process.pid)
    assert zygotes, "no zygote found under the worker"
    for pid in zygotes:
        assert await asyncio.to_thread(memory_hits, pid, victim.encode()) == [], pid
    for version in (1, 2):  # both job slots of the worker
        _, log = await run(w, shared_js, reader, memory_scan_script(victim), version=version)
        found = probe_result(log)
        assert found["scanned"] > 10 * 1024 * 1024, found
        assert found["hits"] == [], found
    # The scan finds what is there: the job's own project name (its script's name).
    _, log = await run(w, shared_js, reader, memory_scan_script(reader), version=3)
    assert probe_result(log)["hits"], log


# --- 7. the OOM killer's choice ----------------------------------------------------------------


async def test_a_job_is_the_oom_killers_first_choice(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("oom")
    script = (
        "import json\n"
        "found = {'oom_score_adj': open('/proc/self/oom_score_adj').read().strip(),\n"
        "         'cgroups': open('/proc/self/cgroup').read()}\n"
        "print('CADPIPE_PROBE ' + json.dumps(found))\n"
    )
    _, log = await run(w, shared_js, project, script)
    found = probe_result(log)
    assert found["oom_score_adj"] == "1000"
    v1_memory = "/sys/fs/cgroup/memory/cgroup.procs"  # a v1 memory hierarchy on this machine
    if await asyncio.to_thread(os.path.isfile, v1_memory):
        assert ":memory:/cadpipe/job-" in found["cgroups"], found["cgroups"]
        assert "memory cgroup" in log
    # The worker and its zygote keep the default.
    assert w.process.process is not None
    worker_adj = Path(f"/proc/{w.process.process.pid}/oom_score_adj")
    assert (await asyncio.to_thread(worker_adj.read_text)).strip() == "0"


async def test_a_jobs_processes_share_one_memory_limit(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    """RLIMIT_AS is per process: two children of 450 MiB each stay under it (768 MiB) and
    would hold 900 MiB together; the job's memory cgroup (768 MiB) holds them both (the kernel
    kills one, and the other fits with room to spare: no thrashing at the edge)."""
    if not await asyncio.to_thread(os.path.isfile, "/sys/fs/cgroup/memory/cgroup.procs"):
        pytest.skip("no cgroup v1 memory hierarchy on this machine")
    w, project = shared_worker, project_name("memgroup")
    script = (
        "import json, os, time\n"
        "children = []\n"
        "for _ in range(2):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        block = b'x' * (450 * 1024 * 1024)  # touched, so resident\n"
        "        time.sleep(0.5)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "ends = [os.waitpid(pid, 0)[1] for pid in children]\n"
        "print('CADPIPE_PROBE ' + json.dumps({'signals': [os.WTERMSIG(s) if os.WIFSIGNALED(s)\n"
        "                                               else 0 for s in ends]}))\n"
    )
    marker, log = await run(w, shared_js, project, script)
    assert marker["status"] == "error", log
    if marker["exit_reason"] == "limit_exceeded":  # the OOM killer chose the job itself
        assert "memory cgroup" in marker["error"]
    else:
        assert 9 in probe_result(log)["signals"], log


# --- 8. forged log lines and reports -----------------------------------------------------------


async def test_output_names_cannot_forge_log_lines(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("forge")
    script = (
        STL_SCRIPT + "out = os.environ['FREECAD_OUTPUT'].encode()\n"
        "open(out + b'/x\\nexit reason:  forged\\n.txt', 'w').write('x')\n"
        "open(out + b'/bad\\xff\\xfename.txt', 'w').write('x')\n"
        "open(out + b'/bad\\xff\\nname.step', 'w').write('x')\n"
    )
    marker, log = await run(w, shared_js, project, script)

    assert marker["status"] == "completed", log
    header = log.split("===== stdout =====", 1)[0]
    assert "exit reason:  forged" not in header.splitlines()
    assert [line for line in header.splitlines() if line.startswith("exit reason:")] == [
        "exit reason:  ok"
    ]
    assert "x\\nexit reason:  forged\\n.txt" in header
    assert "bad\\xff\\xfename.txt" in header


@pytest.mark.parametrize(
    "forged",
    [
        "'[' * 200000 + ']' * 200000",
        "{'files': [{'path': ['tiny.stl'], 'kind': 'mesh'}, {'path': {'a': 1}}, 7]}",
        "{'files': {'path': 'tiny.stl'}, 'freecad_version': ['x']}",
    ],
    ids=["deep", "unhashable-path", "wrong-types"],
)
async def test_a_forged_report_is_rejected_as_data(
    shared_worker: SharedWorker, shared_js: Any, forged: str
) -> None:
    w, project = shared_worker, project_name("report")
    # The report is written by the job's own process after the script: the script can
    # replace what writes it.
    script = STL_SCRIPT + (
        "import json\n"
        f"forged = {forged}\n"
        "json.dump = lambda obj, f, **kw: f.write(forged if isinstance(forged, str)\n"
        "                                          else json.dumps(forged))\n"
    )
    marker, log = await run(w, shared_js, project, script)

    assert marker["status"] == "completed", log
    assert marker["attempts"] == 1
    report = json.loads(read_text(w.bucket, marker["report_key"]))
    assert report["not_measured"] == ["tiny.stl"]
