"""The job's seccomp filter as a program: its syscall numbers are the kernel's, it refuses an
unknown machine, and its jumps land where they should (the hostile test in
test_worker_hostile.py runs it for real in the worker)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from services.worker import seccomp_filter as sf

HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}


@pytest.mark.parametrize("machine", sorted(sf.SYSCALLS))
def test_syscall_numbers_are_the_kernels(machine: str) -> None:
    header = HEADERS[machine]
    if not header.is_file():
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    numbers = {
        name: int(nr)
        for name, nr in re.findall(r"#define __NR_(\w+)\s+(\d+)\b", header.read_text())
    }
    for name, nr in sf.SYSCALLS[machine].items():
        assert numbers.get(name) == nr, (machine, name, nr, numbers.get(name))
    # Every refused name that exists on the machine is in its table.
    missing = [name for name in sf.DENIED if name in numbers and name not in sf.SYSCALLS[machine]]
    assert missing == []


def test_an_unknown_machine_gets_no_filter() -> None:
    with pytest.raises(sf.UnsupportedArchitecture):
        sf.program("riscv64")


def _run(prog: list[sf.Instruction], nr: int, arch: int, arg0: int = 0) -> int:
    """A classic-BPF interpreter for the few opcodes the filter uses."""
    data = {sf.OFFSET_NR: nr, sf.OFFSET_ARCH: arch, sf.OFFSET_ARG0_LOW: arg0}
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == sf.LD_W_ABS:
            acc = data[k]
        elif code == sf.RET_K:
            return k
        elif code in (sf.JEQ_K, sf.JGE_K, sf.JSET_K):
            hit = {sf.JEQ_K: acc == k, sf.JGE_K: acc >= k, sf.JSET_K: bool(acc & k)}[code]
            pc += jt if hit else jf
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


@pytest.mark.parametrize("machine", sorted(sf.SYSCALLS))
def test_the_program_refuses_and_allows_what_it_says(machine: str) -> None:
    prog = sf.program(machine)
    table, arch = sf.SYSCALLS[machine], sf.AUDIT_ARCH[machine]
    eperm = sf.SECCOMP_RET_ERRNO | 1
    enosys = sf.SECCOMP_RET_ERRNO | 38
    for name in sf.DENIED:
        if name in table:
            assert _run(prog, table[name], arch) == eperm, name
    for name in ("clone", "unshare"):
        assert _run(prog, table[name], arch, 0x10000000) == eperm  # CLONE_NEWUSER
        assert _run(prog, table[name], arch, 0x40000000) == eperm  # CLONE_NEWNET
    thread_flags = 0x003D0F00  # what glibc's pthread_create passes to clone
    assert _run(prog, table["clone"], arch, thread_flags) == sf.SECCOMP_RET_ALLOW
    assert _run(prog, table["clone"], arch, 17) == sf.SECCOMP_RET_ALLOW  # fork: SIGCHLD
    assert _run(prog, table["clone3"], arch) == enosys
    assert _run(prog, 0, arch) == sf.SECCOMP_RET_ALLOW  # read / io_setup
    assert _run(prog, table["mount"], 0x40000003) == sf.SECCOMP_RET_KILL_PROCESS  # i386
    if machine == "x86_64":
        assert _run(prog, table["unshare"] | sf.X32_SYSCALL_BIT, arch, 0x10000000) == eperm
        assert _run(prog, 1 | sf.X32_SYSCALL_BIT, arch) == eperm


def test_it_installs_on_this_machine_in_a_child() -> None:
    if os.uname().machine not in sf.SYSCALLS:
        pytest.skip("no table for this machine")
    pid = os.fork()
    if pid == 0:
        try:
            sf.install()
            try:
                os.unshare(os.CLONE_NEWUSER)  # type: ignore[attr-defined]
            except AttributeError:  # Python < 3.12
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                os._exit(0 if libc.unshare(0x10000000) != 0 and ctypes.get_errno() == 1 else 2)
            except PermissionError:
                os._exit(0)
            os._exit(2)
        except BaseException:
            os._exit(3)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
