# ruff: noqa: PTH101, PTH108, PTH110, PTH116, PTH118, PTH123, PTH208  (stdlib-only payload; os calls mirror the syscalls probed)
"""Escape attempts run INSIDE the sandbox; each reports whether it got through.

This file is sent into the sandbox as `python -c <source> <json args>`; it imports only the
standard library. Every payload is harmless even if it succeeded (connect, write a marker,
read a file, attach and detach). It prints one JSON line: {"event": "probes", "results": {...}}
where each result is {"escaped": bool, "detail": str}. The host asserts on these AND checks the
host side (listeners, files) itself.
"""

import ctypes
import errno
import json
import os
import socket
import subprocess
import sys

ARGS = json.loads(sys.argv[1])
RESULTS = {}
LIBC = ctypes.CDLL(None, use_errno=True)


def probe(name):
    def wrap(func):
        try:
            escaped, detail = func()
        except Exception as exc:  # an exception means the attempt failed
            escaped, detail = False, f"{type(exc).__name__}: {exc}"
        RESULTS[name] = {"escaped": bool(escaped), "detail": str(detail)[:300]}
        return func

    return wrap


def _errno():
    code = ctypes.get_errno()
    return f"errno {code} ({errno.errorcode.get(code, '?')})"


@probe("tcp_egress")
def _tcp():
    reached = []
    for host, port in ARGS["listeners"]:
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                conn.sendall(b"escaped")
            reached.append(f"{host}:{port}")
        except OSError as exc:
            last = f"{host}:{port} {exc}"
    return bool(reached), ",".join(reached) or last


@probe("abstract_unix_socket")
def _abstract():
    # Abstract AF_UNIX names live in the network namespace (the containerd-shim escape,
    # CVE-2020-15257, connected to one); the host listens on this one.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect("\0" + ARGS["abstract"])
        sock.sendall(b"escaped")
    return True, "connected to @" + ARGS["abstract"]


@probe("dns")
def _dns():
    return True, socket.getaddrinfo("example.com", 443)


@probe("write_rootfs")
def _rootfs():
    # /var/tmp is world-writable in the image: only the read-only root stops this one.
    errors = []
    for path in ("/var/tmp/gpenguard-escape", "/usr/lib/gpenguard-escape", "/gpenguard-escape"):
        try:
            with open(path, "w") as handle:
                handle.write("escaped")
            return True, path
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror}")
    return False, "; ".join(errors)


@probe("write_weights")
def _weights():
    with open(ARGS["weights"], "ab") as handle:
        handle.write(b"escaped")
    return True, ARGS["weights"]


@probe("read_unmounted_host_file")
def _host_file():
    with open(ARGS["secret"]) as handle:
        return True, handle.read()


@probe("mount")
def _mount():
    result = LIBC.mount(b"none", b"/tmp", b"tmpfs", 0, None)
    return result == 0, _errno() if result else "mounted"


@probe("unshare_userns")
def _unshare():
    result = LIBC.unshare(0x10000000)  # CLONE_NEWUSER: the usual first step to regain caps
    return result == 0, _errno() if result else "unshared"


@probe("ptrace_sibling")
def _ptrace():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        LIBC.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
        result = LIBC.ptrace(16, child.pid, None, None)  # PTRACE_ATTACH
        detail = _errno() if result else "attached"
        if result == 0:
            LIBC.ptrace(17, child.pid, None, None)  # PTRACE_DETACH
        return result == 0, detail
    finally:
        child.kill()
        child.wait()


@probe("setuid_binary")
def _setuid():
    helper = ARGS.get("setuid_helper")
    if not helper or not os.path.exists(helper):
        raise AssertionError(f"setuid helper {helper} missing: the probe could not run")
    mode = os.stat(helper).st_mode
    if not mode & 0o4000:
        raise AssertionError(f"{helper} is not setuid: the probe could not run")
    euid = subprocess.run([helper, "-u"], capture_output=True, text=True, check=True).stdout.strip()
    return euid == "0", f"euid after exec of setuid-root {helper}: {euid}"


@probe("write_proc_sys")
def _proc_sys():
    with open("/proc/sys/kernel/hostname", "w") as handle:
        handle.write("escaped")
    return True, "wrote /proc/sys/kernel/hostname"


@probe("docker_socket")
def _docker_socket():
    for path in ("/var/run/docker.sock", "/run/docker.sock"):
        if os.path.exists(path):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(path)
                return True, f"connected to {path}"
    return False, "no docker socket visible"


@probe("exec_from_tmp")
def _tmp_exec():
    # Ran at all = escaped; what it prints says whether it still ran under the same filter.
    path = "/tmp/escape.sh"
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\ngrep -E '^(NoNewPrivs|Seccomp):' /proc/self/status\n")
    os.chmod(path, 0o755)
    out = subprocess.run([path], capture_output=True, text=True, check=True).stdout
    return True, out


@probe("capabilities")
def _caps():
    with open("/proc/self/status") as handle:
        fields = dict(line.split(":\t", 1) for line in handle.read().splitlines() if ":\t" in line)
    eff, bnd = int(fields["CapEff"], 16), int(fields["CapBnd"], 16)
    return eff != 0 or bnd != 0 or os.geteuid() == 0, f"CapEff={eff:x} CapBnd={bnd:x} euid={os.geteuid()}"


def _hidden():
    # The host's secrets (its environment marker, host paths) travel reversed, so this job's
    # own command line does not contain them.
    return [text[::-1] for text in ARGS.get("hidden_reversed", [])]


@probe("host_environment")
def _host_environment():
    # Every process the job can see (bwrap's init is pid 1 under bwrap), and the job itself.
    found = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as handle:
                    data = handle.read().decode("utf-8", "replace")
            except OSError:
                continue
            found += [f"/proc/{pid}/{name}: {text}" for text in _hidden() if text in data]
    found += [f"os.environ: {text}" for text in _hidden() if text in "\0".join(f"{k}={v}" for k, v in os.environ.items())]
    return bool(found), "; ".join(found) or "no host marker in any environ or cmdline"


@probe("mountinfo_host_paths")
def _mountinfo():
    with open("/proc/self/mountinfo") as handle:
        text = handle.read()
    leaked = [path for path in _hidden() if path.startswith("/") and path in text]
    return bool(leaked), f"mountinfo names {leaked}" if leaked else "no job file's host folder in mountinfo"


@probe("masked_proc_files")
def _masked_proc_files():
    readable = []
    for path in ("/proc/timer_list", "/proc/keys", "/proc/kcore", "/proc/sched_debug", "/proc/latency_stats",
                 "/proc/timer_stats"):
        try:
            with open(path, "rb") as handle:
                head = handle.read(64)
        except OSError:
            continue
        if head:
            readable.append(path)
    return bool(readable), f"readable: {readable}" if readable else "all masked or absent"


@probe("masked_dirs")
def _masked_dirs():
    listed = []
    for path in ("/proc/acpi", "/proc/scsi", "/proc/asound", "/sys/firmware"):
        try:
            entries = os.listdir(path)
        except OSError:
            continue
        if entries:
            listed.append(f"{path}: {entries[:3]}")
    return bool(listed), "; ".join(listed) or "all empty or absent"


@probe("vmcoreinfo")
def _vmcoreinfo():
    with open("/sys/kernel/vmcoreinfo") as handle:
        text = handle.read().strip()
    return bool(text), text or "empty"


@probe("write_dev")
def _write_dev():
    with open("/dev/gpenguard-escape", "w") as handle:
        handle.write("escaped")
    return True, "created a file in /dev"


@probe("shm_over_its_size")
def _shm():
    # Past the spec's /dev/shm size a write must fail (ENOSPC); tmpfs pages are not counted by
    # RLIMIT_AS, so without a size an unprivileged bwrap caller's job holds host memory.
    cap = int(ARGS.get("shm_bytes", 64 << 20))
    path = "/dev/shm/gpenguard-fill"
    written = 0
    try:
        with open(path, "wb") as handle:
            block = b"\x01" * (1 << 20)
            while written <= cap:
                handle.write(block)
                written += len(block)
            handle.flush()
            os.fsync(handle.fileno())
        return True, f"wrote {written >> 20} MiB to /dev/shm (cap {cap >> 20} MiB)"
    finally:
        if os.path.exists(path):
            os.unlink(path)


@probe("output_is_writable")
def _output():
    # Positive control: the one writable place works, so the failures above are the sandbox.
    with open(os.path.join(ARGS["output"], "probe-ok.txt"), "w") as handle:
        handle.write("ok")
    return True, "wrote the output directory"


print(json.dumps({"event": "probes", "results": RESULTS}), flush=True)
