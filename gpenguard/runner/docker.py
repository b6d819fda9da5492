"""The Docker backend: the spec becomes `containers.create` kwargs, then create, start, stream,
wait, and always remove.

`container_kwargs` is pure so the exact hardening handed to the engine is tested as a value.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from gpenguard.errors import SandboxError, SandboxTimeout
from gpenguard.runner.interface import EventSink, RunResult, finish, parse_event
from gpenguard.runner.spec import HOST_IMAGE, SandboxSpec, check_binds_on_host, validate_spec

DEFAULT_IMAGE = "gpenguard-sandbox:latest"
STDOUT_LIMIT = 4 * 2**20
"""Bytes of worker stdout kept on the host; the rest is dropped (a chatty job cannot fill RAM)."""


def container_kwargs(spec: SandboxSpec) -> dict[str, Any]:
    """The docker SDK's `containers.create(**kwargs)` for this spec; nothing else is passed."""
    from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

    security_opt = ["no-new-privileges:true"]
    if spec.seccomp is not None:
        # NOTE: through the API the profile travels as JSON text; a file path would be rejected
        # ("Decoding seccomp profile failed"), unlike with the docker CLI.
        security_opt.append(f"seccomp={spec.seccomp}")
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
        "pids_limit": spec.pids_limit,
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
        "log_config": LogConfig(type="json-file", config={"max-size": "16m", "max-file": "1"}),
    }
    if spec.gpus:
        kwargs["device_requests"] = [DeviceRequest(device_ids=list(spec.gpus), capabilities=[["gpu"]])]
    return kwargs


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

    def __init__(self, engine: Any | None = None) -> None:
        self._engine = engine

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
        import docker.errors
        import requests.exceptions

        validate_spec(spec)
        if spec.image == HOST_IMAGE:
            raise SandboxError("the docker backend needs an image id (sha256:...), not the bwrap host root")
        check_binds_on_host(spec)
        try:
            container = self.engine.containers.create(**container_kwargs(spec))
        except docker.errors.ImageNotFound as exc:
            raise SandboxError(f"sandbox image {spec.image} is not on this host", hint="run sandbox/build.sh") from exc
        except docker.errors.APIError as exc:
            raise SandboxError(f"the Docker engine refused the sandbox container: {exc.explanation}") from exc
        started = time.monotonic()
        stdout = _Collector(on_event)
        try:
            container.start()
            reader = threading.Thread(target=stdout.follow, args=(container,), daemon=True)
            reader.start()
            try:
                status = container.wait(timeout=spec.timeout_s)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                _kill(container)
                raise SandboxTimeout(
                    f"the sandboxed job ran past its {spec.timeout_s:g} s limit and was killed"
                ) from exc
            duration = time.monotonic() - started
            reader.join(timeout=10)
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            code = int(status.get("StatusCode", -1))
            stderr = container.logs(stdout=False, stderr=True, tail=200).decode("utf-8", "replace")
        except docker.errors.APIError as exc:
            raise SandboxError(f"the Docker engine failed while running the sandbox: {exc.explanation}") from exc
        finally:
            _remove(container)
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


class _Collector:
    """Reads the container's stdout as it comes, splitting out the worker's JSON events."""

    def __init__(self, on_event: EventSink | None) -> None:
        self.on_event = on_event
        self.events: list[dict[str, Any]] = []
        self._chunks: list[bytes] = []
        self._size = 0
        self._partial = b""

    def follow(self, container: Any) -> None:
        try:
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=False):
                self.feed(chunk)
        except Exception:  # the container going away ends the stream; wait() says why
            pass
        if self._partial:
            self._line(self._partial)

    def feed(self, chunk: bytes) -> None:
        if self._size < STDOUT_LIMIT:
            self._chunks.append(chunk)
            self._size += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        event = parse_event(line.decode("utf-8", "replace"))
        if event is not None:
            self.events.append(dict(event))
            if self.on_event is not None:
                self.on_event(event)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")


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
