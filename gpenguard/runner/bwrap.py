"""The bubblewrap backend, for hosts without Docker: the same spec, enforced with namespaces,
seccomp BPF, cgroups (or rlimits) and a timeout.

The sandbox sees a read-only minimal root: /usr (and its /bin, /lib links), the Python that
runs gpenguard with its site-packages, and gpenguard itself; plus the job's binds. It has its
own user, pid, net, ipc, uts and cgroup namespaces (`--unshare-all`), no capabilities, a new
session (no TIOCSTI into the caller's terminal), and dies with its parent.

Differences from Docker, stated rather than hidden:
- bubblewrap cannot mount a tmpfs ``noexec`` (nor is its /dev tmpfs noexec), so the job can
  execute a file it wrote to /tmp. Such a program inherits everything that confines the job:
  the seccomp filter, no_new_privs, no capabilities, the namespaces and limits (the escape
  battery checks this). torch needs a writable temp dir at import, so /tmp stays writable.
- Limits use a cgroup (pids, memory) when the caller may create one (root); otherwise rlimits:
  RLIMIT_NPROC (counted per host uid) and RLIMIT_AS, where an allocation past the limit raises
  MemoryError inside the job, which is reported as SandboxOOM. The kernel exempts root from
  RLIMIT_NPROC, so a root caller without a usable cgroup is refused rather than run unbounded.
- Run as root, the sandbox user (65534 inside) maps to host root, still without capabilities;
  run gpenguard as an unprivileged user to get an unprivileged host uid as well.
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
from dataclasses import dataclass
from pathlib import Path

from gpenguard.errors import SandboxError, SandboxTimeout
from gpenguard.runner.interface import EventSink, RunResult, finish, parse_event
from gpenguard.runner.seccomp import bpf_fd, compile_bpf, load_profile
from gpenguard.runner.spec import SandboxSpec, check_binds_on_host, validate_spec

GPENGUARD_SRC = "/opt/gpenguard-src"
STDOUT_LIMIT = 4 * 2**20


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

    @classmethod
    def current(cls) -> HostRuntime:
        """This interpreter, its prefix and site-packages, /usr, and the loader cache."""
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
        for prefix in {sys.base_prefix, sys.prefix, *(_site_dirs())}:
            real = os.path.realpath(prefix)
            if Path(real).is_dir() and not any(real == p or real.startswith(p + "/") for p in ro):
                ro.append(real)
        return cls(
            python=_interpreter(),
            ro_paths=tuple(sorted(set(ro))),
            symlinks=tuple(links),
            gpenguard_package=str(Path(gpenguard.__file__).resolve().parent),
        )


def _interpreter() -> str:
    """The real binary; in a virtualenv its own ``bin/`` entry, whose ``pyvenv.cfg`` (bound with
    the venv's prefix) puts the venv's site-packages on the path: the real binary alone would
    start without them."""
    if sys.prefix != sys.base_prefix:
        return str(Path(os.path.realpath(sys.prefix)) / "bin" / Path(sys.executable).name)
    return os.path.realpath(sys.executable)


def _site_dirs() -> list[str]:
    import site

    return [p for p in (*site.getsitepackages(), site.getusersitepackages()) if Path(p).is_dir()]


def bwrap_argv(spec: SandboxSpec, runtime: HostRuntime, *, bwrap: str = "bwrap", seccomp_fd: int | None) -> list[str]:
    """The full bubblewrap command line for a spec; pure, so it is tested as a value."""
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
    ]  # fmt: skip
    for path in runtime.ro_paths:
        argv += ["--ro-bind", path, path]
    for target, link in runtime.symlinks:
        argv += ["--symlink", target, link]
    argv += ["--ro-bind", runtime.gpenguard_package, f"{GPENGUARD_SRC}/gpenguard"]
    # The job's own /proc/sys would be writable for its own namespaces (the sandbox user is the
    # namespace owner); nothing legitimate needs it, so it is an empty read-only tmpfs.
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/proc/sys", "--remount-ro", "/proc/sys"]
    for path, options in spec.tmpfs:
        flags = options.split(",")
        size = next((f.split("=", 1)[1] for f in flags if f.startswith("size=")), None)
        argv += ["--perms", "1777"]
        if size is not None:
            argv += ["--size", size]
        # NOTE: bwrap mounts tmpfs nosuid,nodev but cannot add noexec (see the module notes).
        argv += ["--tmpfs", path]
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
        self.bwrap = found

    def output_owner(self, user: tuple[int, int]) -> tuple[int, int]:
        """The host uid/gid the sandbox user writes as: the caller's own (see module notes)."""
        return os.getuid(), os.getgid()

    def run(self, spec: SandboxSpec, *, on_event: EventSink | None = None) -> RunResult:
        validate_spec(spec)
        check_binds_on_host(spec)
        if spec.gpus:
            raise SandboxError("the bwrap backend does not pass GPUs through; use --backend docker for GPU runs")
        # There is no engine default under bwrap: no profile in the spec means gpenguard's own.
        limits = _Limits(spec, use_cgroup=self.use_cgroup)
        fd = bpf_fd(compile_bpf(spec.seccomp if spec.seccomp is not None else load_profile()))
        argv = bwrap_argv(spec, self.runtime, bwrap=self.bwrap, seccomp_fd=fd)
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(fd,),
                preexec_fn=limits.enter,
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:  # the latter: limits could not be set
            limits.cleanup()
            raise SandboxError(f"cannot start bubblewrap: {exc}") from exc
        finally:
            os.close(fd)
        out = _Stream(on_event)
        err: list[bytes] = []
        readers = [
            threading.Thread(target=out.follow, args=(process.stdout,), daemon=True),
            threading.Thread(target=lambda: err.append(process.stderr.read() if process.stderr else b""), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            try:
                code = process.wait(timeout=spec.timeout_s)
            except subprocess.TimeoutExpired as exc:
                _killpg(process)
                limits.kill_all()
                process.wait()
                raise SandboxTimeout(f"the sandboxed job ran past its {spec.timeout_s:g} s limit and was killed") from exc
            duration = time.monotonic() - started
            for reader in readers:
                reader.join(timeout=10)
            oom = limits.oom_killed()
        finally:
            _killpg(process)
            limits.kill_all()
            limits.cleanup()
        stderr = b"".join(err).decode("utf-8", "replace")
        return finish(
            self.name, spec, code=code, oom=oom, stderr=stderr, events=tuple(out.events),
            stdout=out.text(), duration_s=duration,
        )


class _Stream:
    def __init__(self, on_event: EventSink | None) -> None:
        self.on_event = on_event
        self.events: list[dict[str, object]] = []
        self._chunks: list[bytes] = []
        self._size = 0

    def follow(self, pipe: object) -> None:
        for line in iter(pipe.readline, b""):  # type: ignore[attr-defined]
            if self._size < STDOUT_LIMIT:
                self._chunks.append(line)
                self._size += len(line)
            event = parse_event(line.decode("utf-8", "replace"))
            if event is not None:
                self.events.append(dict(event))
                if self.on_event is not None:
                    self.on_event(event)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")


def _killpg(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
