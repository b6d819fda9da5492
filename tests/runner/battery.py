"""Host side of the escape battery: listeners, a secret file, and the checks after the run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROBES = Path(__file__).with_name("probes.py").read_text(encoding="utf-8")

EXPECTED_PROBES = (
    "tcp_egress",
    "abstract_unix_socket",
    "dns",
    "write_rootfs",
    "write_weights",
    "read_unmounted_host_file",
    "mount",
    "unshare_userns",
    "ptrace_sibling",
    "setuid_binary",
    "write_proc_sys",
    "docker_socket",
    "exec_from_tmp",
    "capabilities",
    "host_environment",
    "mountinfo_host_paths",
    "masked_proc_files",
    "masked_dirs",
    "vmcoreinfo",
    "write_dev",
    "shm_over_its_size",
)

ENV_MARKER = "GPENGUARD_BATTERY_SECRET"
"""Set in the host process's environment while a battery runs; no process in the sandbox may see it."""


def hidden(*texts: str) -> list[str]:
    """Host-only strings for the probes, reversed so the job's own argv does not contain them."""
    return [text[::-1] for text in texts]


@contextmanager
def secret_environment() -> Iterator[str]:
    """A marker variable in this process's environment, as a caller's secret would be."""
    value = f"host-env-secret-{uuid.uuid4().hex}"
    os.environ[ENV_MARKER] = value
    try:
        yield value
    finally:
        os.environ.pop(ENV_MARKER, None)


@dataclass
class Listener:
    """A TCP listener on the host that records every connection it accepts."""

    host: str
    sock: socket.socket
    accepted: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        address = self.sock.getsockname()
        return int(address[1]) if isinstance(address, tuple) else 0

    def serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.accepted.append(f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else f"unix:{peer!r}")
            conn.close()




@contextmanager
def listeners(hosts: list[str]) -> Iterator[list[Listener]]:
    """TCP listeners on `hosts`, plus one abstract AF_UNIX name (host ``@<name>``, port 0)."""
    made: list[Listener] = []
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(f"\0gpenguard-battery-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    unix.listen(8)
    abstract = Listener("@" + unix.getsockname()[1:].decode(), unix)
    threading.Thread(target=abstract.serve, daemon=True).start()
    for host in hosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(8)
        listener = Listener(host, sock)
        threading.Thread(target=listener.serve, daemon=True).start()
        made.append(listener)
    try:
        # Positive control: the listeners do accept connections from the host.
        for listener in made:
            with socket.create_connection((listener.host, listener.port), timeout=2):
                pass
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(unix.getsockname())
        made.append(abstract)
        for listener in made:
            for _ in range(50):
                if listener.accepted:
                    break
                threading.Event().wait(0.02)
            assert listener.accepted, f"listener {listener.host} never accepted the host's own connection"
            listener.accepted.clear()
        yield made
    finally:
        for sock in {unix, *(listener.sock for listener in made)}:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread, freeing the name
            sock.close()


def host_addresses() -> list[str]:
    """Loopback plus every IPv4 address this host has (the docker bridge among them)."""
    found = ["127.0.0.1"]
    try:
        import fcntl
        import struct

        for _, name in socket.if_nameindex():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
                except OSError:
                    continue
            address = socket.inet_ntoa(packed[20:24])
            if address not in found:
                found.append(address)
    except OSError:
        pass
    return found



def job_files(tmp_path: Path, *, out_owner: tuple[int, int] | None = None) -> tuple[Path, Path, Path]:
    """The weights, output folder and unmounted host secret every backend's battery uses.

    `out_owner`: who should own the output folder (the sandbox user, when the tests run as root).
    """
    weights = tmp_path / "store" / "gpen.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"\x00" * 4096)
    weights.chmod(0o666)  # world-writable on the host: only the read-only mount protects it
    out = tmp_path / "out"
    out.mkdir()
    if out_owner is not None:
        os.chown(out, *out_owner)
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret, never mounted")
    return weights, out, secret

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Every file under root with its digest, to prove nothing outside the output changed."""
    return {
        str(p.relative_to(root)): (sha256(p) if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
        if not p.is_symlink()
    }


def probe_results(stdout: str) -> dict[str, dict[str, object]]:
    for line in stdout.splitlines():
        if line.startswith('{"event": "probes"'):
            results: dict[str, dict[str, object]] = json.loads(line)["results"]
            return results
    raise AssertionError(f"the probe printed no results:\n{stdout[-2000:]}")


def fork_bomb_source() -> str:
    return (
        "import os, time, json\n"
        "n = 0; err = None\n"
        "while n < 100000:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as exc:\n"
        "        err = exc.errno; break\n"
        "    if pid == 0:\n"
        "        time.sleep(20); os._exit(0)\n"
        "    n += 1\n"
        "print(json.dumps({'event': 'forkbomb', 'forked': n, 'errno': err}), flush=True)\n"
    )


MEMORY_BOMB = (
    "chunks = []\n"
    "while True:\n"
    "    chunks.append(b'\\x01' * (32 << 20))\n"
)

SLEEPER = "import time\nprint('{\"event\": \"sleeping\"}', flush=True)\ntime.sleep(600)\n"



def bwrap_battery(root: Path, bwrap: str) -> dict[str, Any]:
    """Run every probe under the bwrap backend with the battery policy; the host-side record.

    Shared by the in-process battery and the one run by an unprivileged caller (``__main__``).
    """
    import time

    from gpenguard.policy import Policy, SandboxPolicy
    from gpenguard.runner.bwrap import BwrapBackend
    from gpenguard.runner.seccomp import load_profile
    from gpenguard.runner.spec import HOST_IMAGE, Job, build_spec

    policy = Policy(name="battery", sandbox=SandboxPolicy(memory_bytes=512 * 2**20, pids_limit=64, cpus=1.0, timeout_s=60.0))
    weights, out, secret = job_files(root)
    helper = root / "inputs" / "suid-id"
    helper.parent.mkdir()
    shutil.copy("/usr/bin/id", helper)
    helper.chmod(0o4755)
    before = tree(root)
    with listeners(host_addresses()) as listening, secret_environment() as marker:
        args = {
            "listeners": [[lst.host, lst.port] for lst in listening if lst.port],
            "abstract": next(lst.host[1:] for lst in listening if lst.host.startswith("@")),
            "weights": "/weights/gpen.safetensors",
            "secret": str(secret),
            "output": "/out",
            "setuid_helper": "/in/0000-suid-id",
            "hidden_reversed": hidden(marker, str(weights.parent), str(helper.parent)),
            "shm_bytes": 64 * 2**20,
        }
        job = Job(
            image=HOST_IMAGE,
            command=("python", "-c", PROBES, json.dumps(args)),
            weights=(str(weights),),
            inputs=(str(helper),),
            output_dir=str(out),
        )
        result = BwrapBackend(bwrap=bwrap).run(build_spec(policy, job, seccomp_profile=load_profile()))
        time.sleep(0.2)
        accepted = {lst.host: list(lst.accepted) for lst in listening}
    return {"results": probe_results(result.stdout), "accepted": accepted, "before": before,
            "after": tree(root), "root": str(root)}  # fmt: skip


if __name__ == "__main__":
    # python -m tests.runner.battery BWRAP ROOT: the bwrap battery, as whoever runs this.
    import sys

    print(json.dumps(bwrap_battery(Path(sys.argv[2]), sys.argv[1])))


def stored_weights(tmp_path: Path) -> Any:
    """A tiny stored safetensors file with its provenance record, as `convert --store` leaves
    them: what `run_worker` re-checks before a start (the test jobs never read it)."""
    from gpenguard.pipeline import StoredInput

    weights = tmp_path / "store" / "gpen.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    record = weights.with_name(weights.name + ".intoto.json")
    record.write_text(json.dumps({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": weights.name, "digest": {"sha256": digest}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"resolvedDependencies": [{"digest": {"sha256": "f" * 64}}]}},
    }))  # fmt: skip
    return StoredInput(role="gpen", source=tmp_path / "g.pth", path=weights, provenance=record, sha256=digest)
