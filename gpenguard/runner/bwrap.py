"""The bubblewrap backend, for hosts without Docker: the same spec, enforced with namespaces,
seccomp BPF, cgroups (or rlimits) and a timeout.

The sandbox sees a read-only minimal root: /usr (and its /bin, /lib links), the Python that
runs gpenguard with its site-packages, and gpenguard itself; plus the job's binds. It has its
own user, pid, net, ipc, uts and cgroup namespaces (`--unshare-all`), no capabilities, a new
session (no TIOCSTI into the caller's terminal), and dies with its parent.

Differences from Docker, stated rather than hidden:
- bubblewrap cannot mount a tmpfs ``noexec``, so the job can execute a file it wrote to /tmp.
  Such a program inherits everything that confines the job: the seccomp filter, no_new_privs,
  no capabilities, the namespaces and limits (the escape battery checks this). torch needs a
  writable temp dir at import, so /tmp stays writable.
- Limits use a cgroup (pids, memory) when the caller may create one (root); otherwise rlimits:
  RLIMIT_NPROC (counted per host uid) and RLIMIT_AS, where an allocation past the limit raises
  MemoryError inside the job, which is reported as SandboxOOM. The kernel exempts root from
  RLIMIT_NPROC, so a root caller without a usable cgroup is refused rather than run unbounded.
  tmpfs pages are not counted by RLIMIT_AS, so every tmpfs (/tmp, /dev/shm, /dev) has a size.
- Run as root, the sandbox user (65534 inside) maps to host root, still without capabilities;
  run gpenguard as an unprivileged user to get an unprivileged host uid as well.
- bwrap itself is pid 1 in the sandbox. It starts with an empty environment and reads its
  command line from a file descriptor (``--args``), and its /proc/1/cmdline and environ are
  masked as well: the job sees neither the caller's environment nor the paths bwrap was given.
- /proc hides what Docker's default masked and read-only paths hide (those this kernel has).
  /sys is not mounted at all.
- What stays visible: /proc/self/mountinfo names the host paths of the Python that runs the job
  (its prefix and site-packages); job files are mounted from a neutral per-run folder
  (runner/mounts.py), and the output folder is the publisher's staging folder.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gpenguard.errors import SandboxError, SandboxTimeout
from gpenguard.runner.interface import (
    EventSink,
    JobOutput,
    RunResult,
    finish,
    stderr_reader,
    stdout_reader,
)
from gpenguard.runner.mounts import neutral_sources
from gpenguard.runner.seccomp import bpf_fd, compile_bpf, load_profile
from gpenguard.runner.spec import (
    MASKED_PATHS,
    READONLY_PATHS,
    SandboxSpec,
    check_binds_on_host,
    validate_spec,
)

GPENGUARD_SRC = "/opt/gpenguard-src"
DEV_NODES = ("null", "zero", "full", "random", "urandom")
DEV_BYTES = 64 * 2**10
"""/dev holds only device nodes and links; it is read-only, and this small besides."""
PID1_MASKED = ("/proc/1/cmdline", "/proc/1/environ")
"""bwrap's own init is pid 1 in the sandbox: its argv and environment are the caller's."""


@dataclass(frozen=True, slots=True)
class HostRuntime:
    """The host paths bound read-only to give the sandbox a Python with gpenguard's deps."""

    python: str
    """The interpreter that runs the job (the spec's ``python`` is replaced by it)."""
    ro_paths: tuple[str, ...]
    """Bound at the same path, read-only."""
    symlinks: tuple[tuple[str, str], ...]
    """(target, link) pairs recreating merged-/usr links such as /bin -> usr/bin."""
    gpenguard_package: str
    """The gpenguard package directory, bound at /opt/gpenguard-src/gpenguard."""
    masked_files: tuple[str, ...] = ()
    """/proc files hidden behind /dev/null: those of Docker's lists that this kernel has."""
    masked_dirs: tuple[str, ...] = ()
    """/proc folders hidden behind an empty read-only tmpfs."""

    @classmethod
    def current(cls) -> HostRuntime:
        """This interpreter, its prefix and site-packages, /usr, and the loader cache.

        The interpreter keeps the path it was started by (a virtualenv's ``bin/python`` link),
        so inside the sandbox it still finds its ``pyvenv.cfg`` and the environment's packages.
        """
        import gpenguard

        ro: list[str] = ["/usr"]
        links: list[tuple[str, str]] = []
        for top in map(Path, ("/bin", "/sbin", "/lib", "/lib64", "/lib32")):
            if top.is_symlink():
                links.append((str(top.readlink()), str(top)))
            elif top.is_dir():
                ro.append(str(top))
        if Path("/etc/ld.so.cache").is_file():
            ro.append("/etc/ld.so.cache")
        python = Path(sys.executable).absolute()
        prefixes = {sys.base_prefix, sys.prefix, *_link_chain_dirs(python), *_site_dirs()}
        for path in sorted({str(q) for p in prefixes for q in (Path(p).absolute(), Path(p).resolve())}, key=len):
            if Path(path).is_dir() and not any(path == p or path.startswith(p + "/") for p in ro):
                ro.append(path)
        hidden = [
            Path(p) for p in (*MASKED_PATHS, *READONLY_PATHS) if p.startswith("/proc/") and p != "/proc/sys" and Path(p).exists()
        ]
        return cls(
            python=str(python),
            ro_paths=tuple(sorted(set(ro))),
            symlinks=tuple(links),
            gpenguard_package=str(Path(gpenguard.__file__).resolve().parent),
            masked_files=tuple(str(p) for p in hidden if not p.is_dir()),
            masked_dirs=tuple(str(p) for p in hidden if p.is_dir()),
        )


def _link_chain_dirs(path: Path) -> list[str]:
    """The folders of every link on the way from `path` to the real interpreter, and its own:
    all must exist in the sandbox for ``execve(path)`` to get there."""
    dirs = [str(path.parent)]
    for _ in range(40):  # the kernel's own limit on nested links
        if not path.is_symlink():
            break
        path = (path.parent / path.readlink()).absolute()
        dirs.append(str(path.parent))
    return dirs


def _site_dirs() -> list[str]:
    import site

    return [p for p in (*site.getsitepackages(), site.getusersitepackages()) if Path(p).is_dir()]


def bwrap_argv(spec: SandboxSpec, runtime: HostRuntime, *, bwrap: str = "bwrap", seccomp_fd: int | None) -> list[str]:
    """The full bubblewrap command line for a spec; pure, so it is tested as a value.

    bwrap performs its operations in order: /proc's masks come after ``--proc``, and the
    host's Python is bound after the /tmp tmpfs, so a virtualenv under /tmp stays visible.
    """
    uid, gid = spec.user
    argv = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--uid", str(uid),
        "--gid", str(gid),
        "--hostname", "gpenguard-sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--clearenv",
        "--proc", "/proc",
    ]  # fmt: skip
    for path in (*runtime.masked_files, *PID1_MASKED):
        # As runc masks: /dev/null bound over the file (a read-only bind would be nodev: EACCES).
        argv += ["--dev-bind", "/dev/null", path]
    for path in runtime.masked_dirs:
        argv += ["--tmpfs", path, "--remount-ro", path]
    # The job's own /proc/sys would be writable for its own namespaces (the sandbox user is the
    # namespace owner); nothing legitimate needs it, so it is an empty read-only tmpfs.
    argv += ["--tmpfs", "/proc/sys", "--remount-ro", "/proc/sys"]
    # Not `--dev`: its tmpfs has no size cap and belongs to the sandbox user.
    argv += ["--perms", "0755", "--size", str(DEV_BYTES), "--tmpfs", "/dev"]
    for node in DEV_NODES:
        argv += ["--dev-bind", f"/dev/{node}", f"/dev/{node}"]
    for index, name in enumerate(("stdin", "stdout", "stderr")):
        argv += ["--symlink", f"/proc/self/fd/{index}", f"/dev/{name}"]
    argv += ["--symlink", "/proc/self/fd", "/dev/fd", "--dir", "/dev/shm", "--remount-ro", "/dev"]
    argv += ["--perms", "1777", "--size", str(spec.shm_bytes), "--tmpfs", "/dev/shm"]
    for path, options in spec.tmpfs:
        flags = options.split(",")
        size = next((f.split("=", 1)[1] for f in flags if f.startswith("size=")), None)
        argv += ["--perms", "1777"]
        if size is not None:
            argv += ["--size", size]
        # NOTE: bwrap mounts tmpfs nosuid,nodev but cannot add noexec (see the module notes).
        argv += ["--tmpfs", path]
    for path in runtime.ro_paths:
        argv += ["--ro-bind", path, path]
    for target, link in runtime.symlinks:
        argv += ["--symlink", target, link]
    argv += ["--ro-bind", runtime.gpenguard_package, f"{GPENGUARD_SRC}/gpenguard"]
    for bind in spec.binds:
        argv += ["--ro-bind" if bind.read_only else "--bind", bind.source, bind.target]
    # Last: the root itself (a tmpfs bwrap made) becomes read-only, like Docker's read_only.
    argv += ["--remount-ro", "/"]
    env = dict(spec.env)
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["PYTHONPATH"] = GPENGUARD_SRC
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--chdir", "/"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    command = list(spec.command)
    if command and command[0] in {"python", "python3"}:
        command[0] = runtime.python
    return [*argv, "--", *command]


def _args_fd(args: list[str]) -> int:
    """bwrap's options as a NUL-separated file for ``--args``, so they are not in its cmdline."""
    fd = os.memfd_create("gpenguard-bwrap-args", 0)
    os.write(fd, b"".join(arg.encode() + b"\0" for arg in args))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class _Limits:
    """A cgroup (v2 or v1) holding the job, when we may make one; rlimits otherwise."""

    def __init__(self, spec: SandboxSpec, *, use_cgroup: bool = True) -> None:
        self.spec = spec
        self.dirs: list[Path] = []
        name = f"gpenguard-{uuid.uuid4().hex[:12]}"
        root = Path("/sys/fs/cgroup")
        try:
            if not use_cgroup:
                raise OSError("cgroups not wanted")
            if (root / "cgroup.controllers").is_file():
                group = root / name
                group.mkdir()
                self.dirs.append(group)
                (group / "pids.max").write_text(str(spec.pids_limit))
                (group / "memory.max").write_text(str(spec.memory_bytes))
                (group / "memory.swap.max").write_text("0")
            elif (root / "pids").is_dir() and (root / "memory").is_dir():
                pids, memory = root / "pids" / name, root / "memory" / name
                pids.mkdir()
                self.dirs.append(pids)
                memory.mkdir()
                self.dirs.append(memory)
                (pids / "pids.max").write_text(str(spec.pids_limit))
                (memory / "memory.limit_in_bytes").write_text(str(spec.memory_bytes))
                swap = memory / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(str(spec.memory_bytes))
        except OSError:
            self.cleanup()
            self.dirs = []
        if not self.dirs and os.geteuid() == 0:
            # NOTE: the kernel never applies RLIMIT_NPROC to root's processes (a forced
            # fallback measured 32k forks), so as root, no cgroup means no pids limit: refuse.
            raise SandboxError(
                "running as root, the bwrap backend needs a pids/memory cgroup to enforce the "
                "limits, and none could be created",
                hint="run gpenguard as an unprivileged user (rlimits then apply), or use --backend docker",
            )

    @property
    def cgroup(self) -> bool:
        return bool(self.dirs)

    def enter(self) -> None:
        """Runs in the child between fork and exec: join the cgroup or set rlimits."""
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.spec.nofile, self.spec.nofile))
        if self.spec.fsize_bytes is not None:  # the results file cannot grow past its budget
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.spec.fsize_bytes, self.spec.fsize_bytes))
        if self.dirs:
            for group in self.dirs:
                (group / "cgroup.procs").write_text(str(os.getpid()))
            return
        own = _processes_of(os.getuid())
        resource.setrlimit(resource.RLIMIT_NPROC, (own + self.spec.pids_limit,) * 2)
        resource.setrlimit(resource.RLIMIT_AS, (self.spec.memory_bytes,) * 2)

    def oom_killed(self) -> bool:
        for group in self.dirs:
            for name in ("memory.events", "memory.oom_control"):
                path = group / name
                if path.exists():
                    fields = dict(line.split() for line in path.read_text().splitlines() if len(line.split()) == 2)
                    if int(fields.get("oom_kill", "0")) > 0:
                        return True
        return False

    def kill_all(self) -> None:
        for group in self.dirs:
            procs = group / "cgroup.procs"
            try:
                pids = [int(p) for p in procs.read_text().split()]
            except OSError:
                continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> None:
        for group in reversed(self.dirs):
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    self.kill_all()
                    time.sleep(0.02)


def limits_mode() -> str:
    """How the bwrap backend would enforce limits here: ``cgroup``, ``rlimit``, or ``none``."""
    root = Path("/sys/fs/cgroup")
    parent = root if (root / "cgroup.controllers").is_file() else root / "pids"
    probe = parent / f"gpenguard-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        return "none" if os.geteuid() == 0 else "rlimit"
    return "cgroup"


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                continue
    return count


class BwrapBackend:
    """Run a spec under bubblewrap with the host's Python."""

    name = "bwrap"

    def __init__(self, runtime: HostRuntime | None = None, bwrap: str | None = None, *, use_cgroup: bool = True) -> None:
        """`use_cgroup=False` forces the rlimit fallback (what an unprivileged caller gets)."""
        self.runtime = runtime or HostRuntime.current()
        self.use_cgroup = use_cgroup
        found = bwrap or shutil.which("bwrap")
        if found is None:
            raise SandboxError("bubblewrap (bwrap) is not installed", hint="apt-get install bubblewrap, or use --backend docker")
        self.bwrap = str(Path(found).absolute())

    def output_owner(self, user: tuple[int, int]) -> tuple[int, int]:
        """The host uid/gid the sandbox user writes as: the caller's own (see module notes)."""
        return os.getuid(), os.getgid()

    def run(self, spec: SandboxSpec, *, on_event: EventSink | None = None) -> RunResult:
        validate_spec(spec)
        check_binds_on_host(spec)
        if spec.gpus:
            raise SandboxError("the bwrap backend does not pass GPUs through; use --backend docker for GPU runs")
        with neutral_sources(spec) as staged:
            return self._run(staged, on_event)

    def _run(self, spec: SandboxSpec, on_event: EventSink | None) -> RunResult:
        # There is no engine default under bwrap: no profile in the spec means gpenguard's own.
        limits = _Limits(spec, use_cgroup=self.use_cgroup)
        fd = bpf_fd(compile_bpf(spec.seccomp if spec.seccomp is not None else load_profile()))
        argv = bwrap_argv(spec, self.runtime, bwrap=self.bwrap, seccomp_fd=fd)
        split = argv.index("--")
        args = _args_fd(argv[1:split])  # bwrap takes options from --args, the command from argv
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                [self.bwrap, "--args", str(args), *argv[split:]],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(fd, args),
                preexec_fn=limits.enter,
                start_new_session=True,
                env={},  # bwrap is pid 1 in the sandbox: the caller's environment stays out
            )
        except (OSError, subprocess.SubprocessError) as exc:  # the latter: limits could not be set
            limits.cleanup()
            raise SandboxError(f"cannot start bubblewrap: {exc}") from exc
        finally:
            os.close(fd)
            os.close(args)

        def stop() -> None:
            _killpg(process)
            limits.kill_all()

        out, err = stdout_reader(on_event), stderr_reader()
        readers = [
            threading.Thread(target=_follow, args=(process.stdout, out, stop), daemon=True),
            threading.Thread(target=_follow, args=(process.stderr, err, stop), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            try:
                code = process.wait(timeout=spec.timeout_s)
            except subprocess.TimeoutExpired as exc:
                stop()
                process.wait()
                raise SandboxTimeout(f"the sandboxed job ran past its {spec.timeout_s:g} s limit and was killed") from exc
            duration = time.monotonic() - started
            for reader in readers:
                reader.join(timeout=10)
            oom = limits.oom_killed()
        finally:
            stop()
            limits.cleanup()
        for stream in (out, err):
            if stream.overflow is not None:
                raise SandboxError(stream.overflow, hint=err.text()[-2000:] or None)
        return finish(
            self.name, spec, code=code, oom=oom, stderr=err.text(), events=tuple(out.events),
            stdout=out.text(), duration_s=duration,
        )


def _follow(pipe: IO[bytes] | None, stream: JobOutput, stop: Callable[[], None]) -> None:
    """Read one pipe in bounded chunks to its end; past the stream's budget, kill the job."""
    if pipe is None:
        return
    fd = pipe.fileno()
    while chunk := os.read(fd, 2**16):
        if not stream.feed(chunk):
            stop()
    stream.close()


def _killpg(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
