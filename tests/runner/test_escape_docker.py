"""The escape battery against the real Docker engine and the real sandbox image.

Each attempt runs inside a container built from the same spec function as the worker's (only
the command differs) and must fail; the host then checks for itself that nothing got out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from gpenguard.errors import SandboxError, SandboxOOM, SandboxTimeout
from gpenguard.policy import Policy, SandboxPolicy
from gpenguard.runner.docker import DockerBackend
from gpenguard.runner.seccomp import load_profile
from gpenguard.runner.spec import Job, SandboxSpec, build_spec
from tests.runner import battery

pytestmark = pytest.mark.docker

USER = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
"""Who the container runs as: nobody when the tests run as root, else the caller (as restore does)."""
OUT_OWNER = USER if os.geteuid() == 0 else None
POLICY_SHM = 64 * 2**20
POLICY = Policy(name="battery", sandbox=SandboxPolicy(memory_bytes=512 * 2**20, pids_limit=64, cpus=1.0, timeout_s=60.0))


def _spec(image: str, source: str, args: dict[str, Any], weights: Path, out: Path, policy: Policy = POLICY) -> SandboxSpec:
    job = Job(
        image=image,
        command=("python", "-c", source, json.dumps(args)),
        weights=(str(weights),),
        output_dir=str(out),
        user=USER,
    )
    return build_spec(policy, job, seccomp_profile=load_profile())


def _leftover_containers(engine: Any) -> list[str]:
    return [c.id for c in engine.containers.list(all=True, filters={"label": "org.gpenguard.sandbox=1"})]


@pytest.fixture(scope="module")
def battery_run(tmp_path_factory: pytest.TempPathFactory, docker_engine: Any, probe_image: str, docker_runtime: str) -> dict[str, Any]:
    """One container runs every non-fatal probe; tests below assert one attempt each."""
    tmp_path = tmp_path_factory.mktemp("battery")
    weights, out, secret = battery.job_files(tmp_path, out_owner=OUT_OWNER)
    before = battery.tree(tmp_path)
    with battery.listeners(battery.host_addresses()) as listening, battery.secret_environment() as marker:
        args = {
            "listeners": [[lst.host, lst.port] for lst in listening if lst.port],
            "abstract": next(lst.host[1:] for lst in listening if lst.host.startswith("@")),
            "weights": "/weights/gpen.safetensors",
            "secret": str(secret),
            "output": "/out",
            "setuid_helper": "/usr/local/bin/suid-id",
            "hidden_reversed": battery.hidden(marker, str(weights.parent)),
            "shm_bytes": POLICY_SHM,
        }
        result = DockerBackend(docker_engine, docker_runtime).run(_spec(probe_image, battery.PROBES, args, weights, out))
        time.sleep(0.2)
        accepted = {lst.host: list(lst.accepted) for lst in listening}
    return {
        "results": battery.probe_results(result.stdout),
        "accepted": accepted,
        "before": before,
        "after": battery.tree(tmp_path),
        "root": tmp_path,
        "weights": weights,
    }


@pytest.mark.parametrize("attempt", battery.EXPECTED_PROBES)
def test_escape_attempt_fails(battery_run: dict[str, Any], attempt: str) -> None:
    result = battery_run["results"][attempt]
    assert result["escaped"] is False, f"{attempt} got through: {result['detail']}"
    if attempt == "setuid_binary":  # the attempt was really made: a setuid-root binary ran
        assert str(result["detail"]).startswith("euid after exec"), result["detail"]


def test_positive_control_output_written(battery_run: dict[str, Any]) -> None:
    assert battery_run["results"]["output_is_writable"]["escaped"] is True
    assert (battery_run["root"] / "out" / "probe-ok.txt").read_text() == "ok"


def test_no_connection_reached_any_host_listener(battery_run: dict[str, Any]) -> None:
    assert len(battery_run["accepted"]) >= 2, "expected loopback and the docker bridge to be tried"
    assert battery_run["accepted"] == {host: [] for host in battery_run["accepted"]}


def test_host_sees_nothing_written_outside_the_output(battery_run: dict[str, Any]) -> None:
    before, after = battery_run["before"], battery_run["after"]
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed == {"out/probe-ok.txt"}


def test_fork_bomb_is_stopped_by_the_pids_limit(tmp_path: Path, docker_engine: Any, sandbox_image: str, docker_runtime: str) -> None:
    weights, out, _ = battery.job_files(tmp_path, out_owner=OUT_OWNER)
    spec = _spec(sandbox_image, battery.fork_bomb_source(), {}, weights, out)
    result = DockerBackend(docker_engine, docker_runtime).run(spec)
    (event,) = [e for e in result.events if e["event"] == "forkbomb"]
    assert event["errno"] == 11  # EAGAIN from the pids cgroup
    assert 0 < event["forked"] < POLICY.sandbox.pids_limit


def test_memory_bomb_is_killed_and_reported_as_oom(tmp_path: Path, docker_engine: Any, sandbox_image: str, docker_runtime: str) -> None:
    weights, out, _ = battery.job_files(tmp_path, out_owner=OUT_OWNER)
    before = set(_leftover_containers(docker_engine))  # other runs on a shared engine may be live
    with pytest.raises(SandboxOOM, match="512 MiB memory limit"):
        DockerBackend(docker_engine, docker_runtime).run(_spec(sandbox_image, battery.MEMORY_BOMB, {}, weights, out))
    assert set(_leftover_containers(docker_engine)) - before == set()  # gone when run() returns


def test_timeout_kills_and_removes_the_container(tmp_path: Path, docker_engine: Any, sandbox_image: str, docker_runtime: str) -> None:
    weights, out, _ = battery.job_files(tmp_path, out_owner=OUT_OWNER)
    policy = dataclasses.replace(POLICY, sandbox=dataclasses.replace(POLICY.sandbox, timeout_s=3.0))
    before = set(_leftover_containers(docker_engine))  # other runs on a shared engine may be live
    started = time.monotonic()
    with pytest.raises(SandboxTimeout, match="3 s limit"):
        DockerBackend(docker_engine, docker_runtime).run(_spec(sandbox_image, battery.SLEEPER, {}, weights, out, policy))
    assert time.monotonic() - started < 20
    assert set(_leftover_containers(docker_engine)) - before == set()


def test_failing_job_reports_the_log_tail(tmp_path: Path, docker_engine: Any, sandbox_image: str, docker_runtime: str) -> None:
    weights, out, _ = battery.job_files(tmp_path, out_owner=OUT_OWNER)
    source = "import sys\nsys.stderr.write('worker could not go on\\n')\nsys.exit(3)\n"
    before = set(_leftover_containers(docker_engine))
    with pytest.raises(SandboxError, match="exited with status 3") as caught:
        DockerBackend(docker_engine, docker_runtime).run(_spec(sandbox_image, source, {}, weights, out))
    assert "worker could not go on" in (caught.value.hint or "")
    assert set(_leftover_containers(docker_engine)) - before == set()


def test_the_job_can_start_threads(tmp_path: Path, docker_engine: Any, sandbox_image: str, docker_runtime: str) -> None:
    """The seccomp profile must not break pthread_create: under gVisor, which ignores errnoRet,
    clone3's ENOSYS rule used to become EPERM, and torch fell back to one thread."""
    weights, out, _ = battery.job_files(tmp_path, out_owner=OUT_OWNER)
    source = (
        "import json, threading\n"
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "print(json.dumps({'event': 'threads', 'ok': True}))\n"
    )
    result = DockerBackend(docker_engine, docker_runtime).run(_spec(sandbox_image, source, {}, weights, out))
    assert [e["event"] for e in result.events] == ["threads"]
