"""The job's seccomp filter: a small classic-BPF program, built and installed with the standard
library only (ctypes and prctl), because it runs in the job under Debian's /usr/bin/python3, not
in the worker's virtualenv. sandbox_runner.py loads this file by path.

Installed last in the job's set-up (after its namespaces, mounts, uid change and no_new_privs),
it refuses what a script has no use for and what is kernel attack surface even for an
unprivileged process: new namespaces (a user namespace makes every namespaced privileged call
reachable), setns, the mount family, bpf, perf_event_open, the key ring, ptrace and the
calls that reach into another process as ptrace does (process_vm_readv/writev, pidfd_getfd,
process_madvise, kcmp), kernel modules, kexec, reboot, swap, accounting, io_uring, userfaultfd,
open_by_handle_at, syslog, quotactl, chroot, and iopl/ioperm on x86_64. Refused calls fail with
EPERM, so a script sees an ordinary PermissionError.

- clone(2) is allowed unless its flags ask for a namespace: threads and fork() use clone.
- clone3(2) passes its flags in a struct the filter cannot read, so it fails with ENOSYS, as
  under Docker's and systemd's filters; glibc then falls back to clone(2) (threads still start).
- The architecture is checked first: a syscall made through another ABI (int 0x80 on x86_64,
  i.e. i386 numbers; x32 numbers) is refused, never judged with the wrong table.
- Only x86_64 and aarch64 are known; on any other machine install() raises instead of
  installing a filter with the wrong numbers.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Sequence

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
X32_SYSCALL_BIT = 0x40000000

# Classic BPF opcodes (linux/filter.h).
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6].
OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARG0_LOW = 16  # little-endian (both architectures): the low 32 bits of args[0]

NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME (unshare; in clone's low byte no signal number reaches it)
)

DENIED = (
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "process_madvise",
    "kcmp",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "userfaultfd",
    "open_by_handle_at",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "syslog",
    "quotactl",
    "lookup_dcookie",
    "chroot",
    "iopl",
    "ioperm",
)
"""Refused outright (EPERM). A name missing from an architecture's table does not exist there."""

# From the kernel's headers: asm/unistd_64.h (x86_64) and asm-generic/unistd.h (aarch64);
# tests/worker/test_worker_seccomp.py checks them against the headers when those are installed.
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "clone": 56,
        "clone3": 435,
        "unshare": 272,
        "setns": 308,
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "mount_setattr": 442,
        "bpf": 321,
        "perf_event_open": 298,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "pidfd_getfd": 438,
        "process_madvise": 440,
        "kcmp": 312,
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "kexec_load": 246,
        "kexec_file_load": 320,
        "reboot": 169,
        "swapon": 167,
        "swapoff": 168,
        "acct": 163,
        "userfaultfd": 323,
        "open_by_handle_at": 304,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "syslog": 103,
        "quotactl": 179,
        "lookup_dcookie": 212,
        "chroot": 161,
        "iopl": 172,
        "ioperm": 173,
    },
    "aarch64": {
        "clone": 220,
        "clone3": 435,
        "unshare": 97,
        "setns": 268,
        "mount": 40,
        "umount2": 39,
        "pivot_root": 41,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "mount_setattr": 442,
        "bpf": 280,
        "perf_event_open": 241,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
        "ptrace": 117,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "pidfd_getfd": 438,
        "process_madvise": 440,
        "kcmp": 272,
        "init_module": 105,
        "finit_module": 273,
        "delete_module": 106,
        "kexec_load": 104,
        "kexec_file_load": 294,
        "reboot": 142,
        "swapon": 224,
        "swapoff": 225,
        "acct": 89,
        "userfaultfd": 282,
        "open_by_handle_at": 265,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "syslog": 116,
        "quotactl": 60,
        "lookup_dcookie": 18,
        "chroot": 51,
    },
}
AUDIT_ARCH = {"x86_64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64}


class UnsupportedArchitecture(RuntimeError):
    """No syscall table for this machine: no filter rather than a wrong one."""


Instruction = tuple[int, int, int, int]
"""(code, jt, jf, k) as in struct sock_filter."""


def _ret(value: int) -> Instruction:
    return (RET_K, 0, 0, value)


def program(machine: str) -> list[Instruction]:
    """The filter for machine (os.uname().machine)."""
    if machine not in SYSCALLS:
        raise UnsupportedArchitecture(
            f"no seccomp syscall table for {machine!r} (known: {', '.join(SYSCALLS)})"
        )
    table = SYSCALLS[machine]
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    enosys = SECCOMP_RET_ERRNO | errno.ENOSYS
    denied = [table[name] for name in DENIED if name in table]
    # Layout after the header: one JEQ per denied number, then clone, clone3, unshare; the
    # tail is: ALLOW, EPERM, ENOSYS, then the flag check (load arg0, JSET, ALLOW, EPERM).
    body: list[tuple[int, str]] = [(nr, "eperm") for nr in denied]
    body += [(table["clone"], "flags"), (table["clone3"], "enosys"), (table["unshare"], "flags")]
    prog: list[Instruction] = [
        (LD_W_ABS, 0, 0, OFFSET_ARCH),
        (JEQ_K, 1, 0, AUDIT_ARCH[machine]),
        _ret(SECCOMP_RET_KILL_PROCESS),
        (LD_W_ABS, 0, 0, OFFSET_NR),
    ]
    if machine == "x86_64":
        # x32 calls are the same numbers with bit 30 set: none of them is allowed to slip by.
        prog.append((JGE_K, len(body) + 1, 0, X32_SYSCALL_BIT))  # to EPERM, past the ALLOW
    start = len(prog)
    n = len(body)
    # Indices of the tail, relative to the start of the body.
    allow, to_eperm, to_enosys, flags = n, n + 1, n + 2, n + 3
    targets = {"eperm": to_eperm, "enosys": to_enosys, "flags": flags}
    for i, (nr, target) in enumerate(body):
        prog.append((JEQ_K, targets[target] - i - 1, 0, nr))
    assert len(prog) - start == allow
    prog += [
        _ret(SECCOMP_RET_ALLOW),
        _ret(eperm),
        _ret(enosys),
        (LD_W_ABS, 0, 0, OFFSET_ARG0_LOW),
        (JSET_K, 1, 0, NAMESPACE_FLAGS),
        _ret(SECCOMP_RET_ALLOW),
        _ret(eperm),
    ]
    for code, jt, jf, _ in prog:
        if code in (JEQ_K, JGE_K, JSET_K) and not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError("seccomp program: jump out of range")
    return prog


def encode(prog: Sequence[Instruction]) -> bytes:
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(machine: str | None = None) -> int:
    """Installs the filter on the calling thread (and everything it starts afterwards); sets
    no_new_privs first, which the kernel requires of an unprivileged caller. Returns the
    number of instructions. Irreversible."""
    prog = program(machine or os.uname().machine)
    code = encode(prog)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(prog), ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    result = libc.prctl(
        PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog), 0, 0
    )
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")
    return len(prog)
