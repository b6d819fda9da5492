"""The Docker backend: the spec becomes `containers.create` kwargs, then create, start, stream,
wait, and always remove.

`container_kwargs` is pure so the exact hardening handed to the engine is tested as a value.

Two OCI runtimes: ``runc`` (the engine's default: namespaces on the host kernel) and ``runsc``
(gVisor: the job's system calls are served by a user-space kernel, so a kernel bug reachable
from the job is no longer a host escape). runsc is registered with the engine in
/etc/docker/daemon.json, with ``--network=none`` and the ptrace (or systrap) platform; see
sandbox/README.md, and ``--oci-seccomp`` so the spec's seccomp profile applies inside gVisor
too. gVisor's own threads count against the pids cgroup (with the ptrace platform, several host
threads per task of the job), and when that cgroup is exhausted the whole sandbox dies instead
of the job's fork failing. So under runsc the job's limit is RLIMIT_NPROC, which gVisor's own
kernel enforces per sandbox (fork fails with EAGAIN), and the pids cgroup is a host-side
backstop sized for gVisor: RUNSC_PIDS_PER_TASK per allowed task plus RUNSC_PIDS.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from gpenguard.errors import SandboxError, SandboxTimeout
from gpenguard.runner.interface import (
    STDERR_CAP,
    STDOUT_CAP,
    EventSink,
    JobOutput,
    RunResult,
    finish,
    stdout_reader,
)
from gpenguard.runner.mounts import neutral_sources
from gpenguard.runner.seccomp import for_gvisor
from gpenguard.runner.spec import (
    HOST_IMAGE,
    MASKED_PATHS,
    SandboxSpec,
    check_binds_on_host,
    validate_spec,
)

DEFAULT_IMAGE = "gpenguard-sandbox:latest"
RUNTIMES = ("runc", "runsc")
LOG_FILE_SIZE = f"{(STDOUT_CAP + STDERR_CAP) // 2**20}m"
READ_GRACE_S = 60.0
"""After the job ends, how long the host may take to read the rest of its (bounded) output."""
RUNSC_PIDS = 128
"""Host threads gVisor itself needs (sentry, gofer), whatever the job does."""
RUNSC_PIDS_PER_TASK = 8
"""Host threads per task of the job under gVisor (measured: about 6 with the ptrace platform)."""


def container_kwargs(spec: SandboxSpec, runtime: str = "runc") -> dict[str, Any]:
    """The docker SDK's `containers.create(**kwargs)` for this spec; nothing else is passed.

    The engine also gets MASKED_PATHS (see `create_container`: the SDK has no option for it).
    """
    from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

    security_opt = ["no-new-privileges:true"]
    if spec.seccomp is not None:
        # NOTE: through the API the profile travels as JSON text; a file path would be rejected
        # ("Decoding seccomp profile failed"), unlike with the docker CLI.
        profile = for_gvisor(spec.seccomp) if runtime == "runsc" else spec.seccomp
        security_opt.append(f"seccomp={profile}")
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command),
        "user": f"{spec.user[0]}:{spec.user[1]}",
        "working_dir": spec.workdir,
        "environment": [f"{key}={value}" for key, value in spec.env],
        "labels": dict(spec.labels),
        "network_mode": spec.network,
        "read_only": spec.read_only_root,
        "tmpfs": dict(spec.tmpfs),
        "mounts": [
            Mount(target=bind.target, source=bind.source, type="bind", read_only=bind.read_only)
            for bind in spec.binds
        ],
        "cap_drop": list(spec.cap_drop),
        "security_opt": security_opt,
        "privileged": False,
        "pids_limit": spec.pids_limit * RUNSC_PIDS_PER_TASK + RUNSC_PIDS if runtime == "runsc" else spec.pids_limit,
        "mem_limit": spec.memory_bytes,
        "memswap_limit": spec.memory_bytes,
        "nano_cpus": spec.nano_cpus,
        "ulimits": [
            Ulimit(name="core", soft=0, hard=0),
            Ulimit(name="nofile", soft=spec.nofile, hard=spec.nofile),
        ],
        "ipc_mode": spec.ipc_mode,
        "shm_size": spec.shm_bytes,
        "init": spec.init,
        "stdin_open": False,
        "tty": False,
        # The engine's copy of the output on disk: one file, rotated only past the stdout budget,
        # so a host reader that lags behind still counts every byte up to the budget.
        "log_config": LogConfig(type="json-file", config={"max-size": LOG_FILE_SIZE, "max-file": "1"}),
        "runtime": runtime,
    }
    if spec.fsize_bytes is not None:  # the results file cannot grow past its budget
        kwargs["ulimits"].append(Ulimit(name="fsize", soft=spec.fsize_bytes, hard=spec.fsize_bytes))
    if runtime == "runsc":
        # Under runc RLIMIT_NPROC would count the uid's processes host-wide; gVisor counts its own.
        kwargs["ulimits"].append(Ulimit(name="nproc", soft=spec.pids_limit, hard=spec.pids_limit))
    if spec.gpus:
        kwargs["device_requests"] = [DeviceRequest(device_ids=list(spec.gpus), capabilities=[["gpu"]])]
    return kwargs


def create_container(engine: Any, kwargs: dict[str, Any]) -> Any:
    """`engine.containers.create(**kwargs)`, plus the masked paths the SDK cannot express.

    Docker masks /proc/kcore and friends by default; given MaskedPaths it uses that list
    instead, so gpenguard's list (runner/spec.py) is Docker's plus /sys/kernel/vmcoreinfo.
    """
    # NOTE: docker-py builds HostConfig in this (private) helper and has no `masked_paths`
    # argument; the dict it returns is what the API receives, so the field is added there.
    from docker.models.containers import _create_container_args

    create = _create_container_args({**kwargs, "version": engine.api._version})
    create["host_config"]["MaskedPaths"] = list(MASKED_PATHS)
    made = engine.api.create_container(**create)
    return engine.containers.get(made["Id"])


RUNSC_REQUIRED_ARGS = ("--network=none", "--oci-seccomp")
"""runsc flags the engine must pass: no gVisor network stack, and the spec's seccomp profile
applied inside gVisor too (without it runsc ignores the profile)."""


def runsc_problem(runtimes: dict[str, Any]) -> str | None:
    """Why the engine's ``runsc`` runtime cannot be used (None: it can)."""
    entry = runtimes.get("runsc")
    if entry is None:
        return "the gVisor runtime (runsc) is not registered with the Docker engine"
    args = (entry or {}).get("runtimeArgs") or []
    missing = [flag for flag in RUNSC_REQUIRED_ARGS if flag not in args]
    if missing:
        return f"the engine's runsc runtime lacks {' and '.join(missing)} in its runtimeArgs"
    return None


def resolve_runtime(engine: Any, wanted: str, *, gpus: bool = False) -> str:
    """``runc``, ``runsc``, or ``auto`` -> the runtime to use on this engine.

    ``auto`` is runsc when the engine has it registered with the flags it needs, and no GPU is
    asked for (this runsc cannot pass GPUs through); runc otherwise. An explicit ``runsc`` that
    cannot be used is an error, never a silent runc run.
    """
    if wanted not in (*RUNTIMES, "auto"):
        raise SandboxError(f"unknown container runtime {wanted!r}; use runc, runsc or auto")
    if wanted == "runc":
        return wanted
    problem = runsc_problem(engine.info().get("Runtimes") or {})
    if wanted == "auto":
        return "runsc" if problem is None and not gpus else "runc"
    if gpus:
        raise SandboxError("the runsc runtime cannot pass GPUs through here", hint="use --runtime runc for GPU runs")
    if problem is not None:
        raise SandboxError(problem, hint="install and register runsc as sandbox/README.md shows, then reload dockerd")
    return wanted


def client(timeout: float = 60.0) -> Any:
    """A docker SDK client for the local engine, or a SandboxError saying why there is none."""
    try:
        import docker
    except ImportError as exc:  # the core install (a CI gate) has no docker SDK
        raise SandboxError(
            "the docker SDK is not installed (the core package has none)",
            hint="pip install 'gpenguard[restore]' for restore on this host",
        ) from exc
    try:
        engine = docker.from_env(timeout=int(timeout))
        engine.ping()
    except Exception as exc:  # the SDK raises DockerException, requests and OS errors alike
        raise SandboxError(
            f"cannot reach the Docker engine: {exc}",
            hint="start dockerd (or set DOCKER_HOST), or use --backend bwrap",
        ) from exc
    return engine


def resolve_image(engine: Any, reference: str = DEFAULT_IMAGE) -> str:
    """The immutable id (sha256:...) of a local image, so a re-tag cannot swap it mid-run."""
    import docker.errors

    try:
        image_id = engine.images.get(reference).id
    except docker.errors.ImageNotFound as exc:
        raise SandboxError(
            f"sandbox image {reference} is not on this host",
            hint="build it offline with sandbox/build.sh",
        ) from exc
    except docker.errors.APIError as exc:
        raise SandboxError(f"cannot inspect sandbox image {reference}: {exc.explanation}") from exc
    return str(image_id)


class DockerBackend:
    """Run a spec as one container on the local Docker engine."""

    name = "docker"

    def __init__(self, engine: Any | None = None, runtime: str = "runc") -> None:
        if runtime not in RUNTIMES:
            raise SandboxError(f"unknown container runtime {runtime!r}; use runc or runsc")
        self._engine = engine
        self.runtime = runtime

    @property
    def engine(self) -> Any:
        if self._engine is None:
            self._engine = client()
        return self._engine

    def output_owner(self, user: tuple[int, int]) -> tuple[int, int]:
        """The host uid/gid the container user writes as: itself, or shifted by userns-remap."""
        security = self.engine.info().get("SecurityOptions") or ()
        if not any("name=userns" in str(option) for option in security):
            return user
        return remapped_owner(user, _read("/etc/docker/daemon.json"), _read("/etc/subuid"), _read("/etc/subgid"))

    def run(self, spec: SandboxSpec, *, on_event: EventSink | None = None) -> RunResult:
        validate_spec(spec)
        if spec.image == HOST_IMAGE:
            raise SandboxError("the docker backend needs an image id (sha256:...), not the bwrap host root")
        check_binds_on_host(spec)
        with neutral_sources(spec) as staged:
            return self._run(staged, on_event)

    def _run(self, spec: SandboxSpec, on_event: EventSink | None) -> RunResult:
        import docker.errors
        import requests.exceptions

        try:
            container = create_container(self.engine, container_kwargs(spec, self.runtime))
        except docker.errors.ImageNotFound as exc:
            raise SandboxError(f"sandbox image {spec.image} is not on this host", hint="run sandbox/build.sh") from exc
        except docker.errors.APIError as exc:
            raise SandboxError(f"the Docker engine refused the sandbox container: {exc.explanation}") from exc
        started = time.monotonic()
        stdout = stdout_reader(on_event)
        try:
            container.start()
            reader = threading.Thread(target=_follow, args=(container, stdout), daemon=True)
            reader.start()
            try:
                status = container.wait(timeout=spec.timeout_s)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                _kill(container)
                raise SandboxTimeout(
                    f"the sandboxed job ran past its {spec.timeout_s:g} s limit and was killed"
                ) from exc
            duration = time.monotonic() - started
            reader.join(timeout=READ_GRACE_S)
            if reader.is_alive():
                _kill(container)
                raise SandboxError("the job's output could not be read to its end; the job was killed")
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            code = int(status.get("StatusCode", -1))
            stderr = container.logs(stdout=False, stderr=True, tail=200).decode("utf-8", "replace")
        except docker.errors.APIError as exc:
            raise SandboxError(f"the Docker engine failed while running the sandbox: {exc.explanation}") from exc
        finally:
            _remove(container)
        if stdout.overflow is not None:
            raise SandboxError(stdout.overflow, hint=stderr[-2000:] or None)
        return finish(
            self.name, spec, code=code, oom=oom, stderr=stderr, events=tuple(stdout.events),
            stdout=stdout.text(), duration_s=duration,
        )


def remapped_owner(user: tuple[int, int], daemon_json: str, subuid: str, subgid: str) -> tuple[int, int]:
    """Where uid/gid `user` of a container lands on the host under dockerd's ``userns-remap``.

    The remap user is named in daemon.json (``default`` means ``dockremap``); its first range in
    /etc/subuid and /etc/subgid is the shift. Anything unclear is an error, not a guess.
    """
    import json

    try:
        name = str(json.loads(daemon_json or "{}").get("userns-remap") or "")
    except ValueError as exc:
        raise SandboxError(f"cannot read the engine's userns-remap setting: {exc}", path="/etc/docker/daemon.json") from exc
    name = "dockremap" if name in {"", "default"} else name.split(":", 1)[0]

    def base(text: str, path: str) -> int:
        for line in text.splitlines():
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[0] == name and parts[1].isdigit():
                return int(parts[1])
        raise SandboxError(f"userns-remap user {name!r} has no range", path=path)

    return base(subuid, "/etc/subuid") + user[0], base(subgid, "/etc/subgid") + user[1]


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


def _follow(container: Any, stream: JobOutput) -> None:
    """Read the container's stdout as it comes, within the stream's budget; past it, kill."""
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=False):
            if not stream.feed(chunk):
                _kill(container)
                break
    except Exception:  # the container going away ends the stream; wait() says why
        pass
    stream.close()


def _kill(container: Any) -> None:
    # Already gone is fine; removal afterwards is forced anyway.
    with contextlib.suppress(Exception):
        container.kill()


def _remove(container: Any, *, wait_s: float = 15.0) -> None:
    """Remove the container and return once the engine no longer lists it.

    A container the kernel is still OOM-killing can make a removal answer 409 ("removal in
    progress") or leave it listed for a moment; retrying until it is gone keeps cleanup
    deterministic. Best effort after `wait_s`: a leftover carries the org.gpenguard.sandbox label.
    """
    import docker.errors

    deadline = time.monotonic() + wait_s
    while True:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            return
        except Exception:  # 409 while the engine is still tearing it down; retried below
            pass
        try:
            container.reload()
        except docker.errors.NotFound:
            return
        except Exception:
            return  # the engine went away: nothing more to do from here
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)
