"""gpenguard's seccomp profile: the JSON Docker takes, and the same rules as BPF for bubblewrap.

One profile (``gpenguard/data/seccomp.json``, linked from ``sandbox/seccomp.json``) serves both
backends: Docker receives the JSON text; bubblewrap receives a classic-BPF program compiled
from it here with libseccomp (through ctypes, the library runc itself uses).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import tempfile
from importlib import resources
from typing import Any

from gpenguard.errors import SandboxError

_ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000
_ATTR_OPTIMIZE = 8  # SCMP_FLTATR_CTL_OPTIMIZE
_COMPARE = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}


def for_gvisor(profile_json: str) -> str:
    """The profile as gVisor (runsc ``--oci-seccomp``) must get it: clone3 allowed.

    gVisor ignores a rule's ``errnoRet`` and answers EPERM, so the ENOSYS rule that sends libc
    back to the filterable clone would make every pthread_create fail (torch then runs on one
    thread, OpenBLAS complains). gVisor's own kernel answers clone3 with ENOSYS itself, and any
    namespace it ever made would be gVisor's, not the host's.
    """
    profile = json.loads(profile_json)
    for rule in profile.get("syscalls", []):
        if rule.get("names") == ["clone3"]:
            rule["action"] = "SCMP_ACT_ALLOW"
            rule.pop("errnoRet", None)
            rule["comment"] = "gVisor answers ENOSYS itself (it ignores errnoRet)"
    return json.dumps(profile)


def load_profile() -> str:
    """The shipped profile as JSON text (what Docker's API wants in `security_opt`)."""
    return resources.files("gpenguard").joinpath("data/seccomp.json").read_text(encoding="utf-8")


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def _action(rule: dict[str, Any], default_errno: int) -> int:
    action = rule.get("action", rule.get("defaultAction"))
    if action == "SCMP_ACT_ALLOW":
        return _ACT_ALLOW
    if action == "SCMP_ACT_ERRNO":
        return _ACT_ERRNO | (int(rule.get("errnoRet", rule.get("defaultErrnoRet", default_errno))) & 0xFFFF)
    raise SandboxError(f"seccomp action {action!r} is not supported by the BPF compiler")


def compile_bpf(profile_json: str) -> bytes:
    """The profile as a BPF program for this machine's architecture (bwrap --seccomp FD)."""
    name = ctypes.util.find_library("seccomp")
    if name is None:
        raise SandboxError("libseccomp is not installed; it is needed to apply seccomp under bubblewrap")
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    )
    lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)

    profile = json.loads(profile_json)
    default_errno = int(profile.get("defaultErrnoRet", 1))
    ctx = lib.seccomp_init(_action({"action": profile["defaultAction"]}, default_errno))
    if not ctx:
        raise SandboxError("libseccomp could not create a filter")
    try:
        # A binary search over syscall numbers instead of a linear walk of ~200 rules: torch's
        # thread pool makes many futex calls, each of which runs the filter (libseccomp >= 2.5;
        # older versions refuse the attribute and keep the linear filter).
        lib.seccomp_attr_set.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)
        lib.seccomp_attr_set(ctx, _ATTR_OPTIMIZE, 2)
        for rule in profile["syscalls"]:
            action = _action(rule, default_errno)
            args = rule.get("args") or []
            array = (_ArgCmp * max(1, len(args)))(
                *[_ArgCmp(a["index"], _COMPARE[a["op"]], a["value"], a.get("valueTwo", 0)) for a in args]
            )
            for syscall in rule["names"]:
                number = lib.seccomp_syscall_resolve_name(syscall.encode())
                if number < 0:
                    continue  # not a syscall on this architecture (e.g. `open` on arm64)
                result = lib.seccomp_rule_add_array(ctx, action, number, len(args), array)
                if result < 0:
                    raise SandboxError(f"libseccomp refused the rule for {syscall}: errno {-result}")
        with tempfile.TemporaryFile() as handle:
            result = lib.seccomp_export_bpf(ctx, handle.fileno())
            if result < 0:
                raise SandboxError(f"libseccomp could not export the filter: errno {-result}")
            handle.seek(0)
            program = handle.read()
    finally:
        lib.seccomp_release(ctx)
    if not program or len(program) % 8:
        raise SandboxError("libseccomp produced an empty or malformed BPF program")
    return program


def bpf_fd(program: bytes) -> int:
    """A readable descriptor holding the program, positioned at its start, for bwrap."""
    read_end, write_end = os.pipe()
    if len(program) > 60_000:
        os.close(read_end)
        os.close(write_end)
        raise SandboxError("seccomp program too large for a pipe")
    os.write(write_end, program)
    os.close(write_end)
    return read_end
