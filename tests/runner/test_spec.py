"""The hardening as data: exact specs and exact docker kwargs for a policy and a job."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from gpenguard.errors import PolicyError, SandboxError
from gpenguard.policy import Policy, SandboxPolicy
from gpenguard.runner.docker import RUNSC_PIDS, RUNSC_PIDS_PER_TASK, container_kwargs
from gpenguard.runner.seccomp import load_profile
from gpenguard.runner.spec import (
    Bind,
    Job,
    SandboxSpec,
    build_spec,
    check_binds_on_host,
    validate_spec,
)

IMAGE = "sha256:" + "ab" * 32
PROFILE = '{"defaultAction": "SCMP_ACT_ERRNO"}'
POLICY = Policy(
    name="test",
    sandbox=SandboxPolicy(memory_bytes=4 * 2**30, pids_limit=128, cpus=1.5, timeout_s=600.0),
)
JOB = Job(
    image=IMAGE,
    command=("python", "-m", "gpenguard.runner.worker"),
    weights=("/srv/store/gpen.safetensors", "/srv/store/gpen.safetensors.intoto.json"),
    inputs=("/data/photos/a.jpg", "/data/more/a.jpg"),
    output_dir="/data/out/.run",
    gpus=("1",),
)

GOLDEN_SPEC = SandboxSpec(
    image=IMAGE,
    command=("python", "-m", "gpenguard.runner.worker"),
    user=(65534, 65534),
    binds=(
        Bind("/srv/store/gpen.safetensors", "/weights/gpen.safetensors", True),
        Bind("/srv/store/gpen.safetensors.intoto.json", "/weights/gpen.safetensors.intoto.json", True),
        Bind("/data/photos/a.jpg", "/in/0000-a.jpg", True),
        Bind("/data/more/a.jpg", "/in/0001-a.jpg", True),
        Bind("/data/out/.run", "/out", False),
    ),
    tmpfs=(("/tmp", "rw,noexec,nosuid,nodev,size=536870912"),),
    env=(
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("XDG_CACHE_HOME", "/tmp/.cache"),
        ("TORCH_HOME", "/tmp/.cache/torch"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
        ("OMP_NUM_THREADS", "1"),
        ("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"),
    ),
    gpus=("1",),
    memory_bytes=4 * 2**30,
    pids_limit=128,
    nano_cpus=1_500_000_000,
    timeout_s=600.0,
    seccomp=PROFILE,
)


def test_build_spec_is_exactly_the_hardening() -> None:
    assert build_spec(POLICY, JOB, seccomp_profile=PROFILE) == GOLDEN_SPEC


def test_docker_kwargs_are_exactly_the_hardening() -> None:
    assert container_kwargs(GOLDEN_SPEC) == {
        "image": IMAGE,
        "command": ["python", "-m", "gpenguard.runner.worker"],
        "user": "65534:65534",
        "working_dir": "/tmp",
        "environment": [
            "HOME=/tmp",
            "TMPDIR=/tmp",
            "XDG_CACHE_HOME=/tmp/.cache",
            "TORCH_HOME=/tmp/.cache/torch",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
            "OMP_NUM_THREADS=1",
            "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
        ],
        "labels": {"org.gpenguard.sandbox": "1"},
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=536870912"},
        "mounts": [
            Mount("/weights/gpen.safetensors", "/srv/store/gpen.safetensors", type="bind", read_only=True),
            Mount(
                "/weights/gpen.safetensors.intoto.json",
                "/srv/store/gpen.safetensors.intoto.json",
                type="bind",
                read_only=True,
            ),
            Mount("/in/0000-a.jpg", "/data/photos/a.jpg", type="bind", read_only=True),
            Mount("/in/0001-a.jpg", "/data/more/a.jpg", type="bind", read_only=True),
            Mount("/out", "/data/out/.run", type="bind", read_only=False),
        ],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true", f"seccomp={PROFILE}"],
        "privileged": False,
        "pids_limit": 128,
        "mem_limit": 4 * 2**30,
        "memswap_limit": 4 * 2**30,
        "nano_cpus": 1_500_000_000,
        "ulimits": [Ulimit(name="core", soft=0, hard=0), Ulimit(name="nofile", soft=1024, hard=1024)],
        "ipc_mode": "private",
        "shm_size": 64 * 2**20,
        "init": True,
        "stdin_open": False,
        "tty": False,
        "log_config": LogConfig(type="json-file", config={"max-size": "80m", "max-file": "1"}),
        "runtime": "runc",
        "device_requests": [DeviceRequest(device_ids=["1"], capabilities=[["gpu"]])],
    }


def test_runsc_limits_the_job_inside_gvisor_and_gives_gvisor_room() -> None:
    """Under gVisor the pids cgroup also counts the sentry's, gofer's and ptrace stubs' threads;
    the job's own limit is RLIMIT_NPROC, which gVisor's kernel enforces."""
    kwargs = container_kwargs(GOLDEN_SPEC, runtime="runsc")
    assert kwargs["runtime"] == "runsc"
    assert kwargs["pids_limit"] == GOLDEN_SPEC.pids_limit * RUNSC_PIDS_PER_TASK + RUNSC_PIDS
    assert kwargs["ulimits"][-1] == Ulimit(name="nproc", soft=128, hard=128)
    # gVisor ignores errnoRet: clone3 is left to gVisor (ENOSYS), or no thread could start.
    real = load_profile()
    gvisor = container_kwargs(dataclasses.replace(GOLDEN_SPEC, seccomp=real), runtime="runsc")
    (seccomp,) = [opt.split("=", 1)[1] for opt in gvisor["security_opt"] if opt.startswith("seccomp=")]
    (clone3,) = [rule for rule in json.loads(seccomp)["syscalls"] if rule["names"] == ["clone3"]]
    assert clone3["action"] == "SCMP_ACT_ALLOW"
    others = [rule for rule in json.loads(seccomp)["syscalls"] if rule["names"] != ["clone3"]]
    assert others == [rule for rule in json.loads(real)["syscalls"] if rule["names"] != ["clone3"]]
    assert json.loads(seccomp)["defaultAction"] == "SCMP_ACT_ERRNO"
    changed = {"runtime", "pids_limit", "ulimits", "security_opt"}
    assert {k: v for k, v in kwargs.items() if k not in changed} == {
        k: v for k, v in container_kwargs(GOLDEN_SPEC).items() if k not in changed
    }


def test_cpu_job_with_docker_default_seccomp() -> None:
    policy = dataclasses.replace(POLICY, sandbox=dataclasses.replace(POLICY.sandbox, seccomp="default"))
    spec = build_spec(policy, dataclasses.replace(JOB, gpus=()), seccomp_profile=PROFILE)
    kwargs = container_kwargs(spec)
    assert "device_requests" not in kwargs
    assert kwargs["security_opt"] == ["no-new-privileges:true"]
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" not in kwargs["environment"]


def test_shipped_seccomp_profile_is_a_tight_allowlist() -> None:
    from gpenguard.runner.seccomp import load_profile

    profile = json.loads(load_profile())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule for name in rule["names"]}
    for dangerous in ("mount", "umount2", "ptrace", "unshare", "setns", "bpf", "perf_event_open", "keyctl",
                      "init_module", "kexec_load", "pivot_root", "chroot", "setuid", "process_vm_writev",
                      "io_uring_setup", "userfaultfd", "open_by_handle_at", "socket", "clone"):
        assert dangerous not in allowed, dangerous
    assert {"read", "mmap", "ioctl", "futex", "execve"} <= allowed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"policy": {"allow_gpu": False}}, "forbids GPU runs"),
        ({"job": {"image": "gpenguard-sandbox:latest"}}, "immutable id"),
        ({"job": {"user": (0, 0)}}, "root"),
        ({"job": {"inputs": ("/var/run/docker.sock",)}}, "docker.sock"),
        ({"job": {"inputs": ("/run/docker.sock",)}}, "docker.sock"),
        ({"job": {"inputs": ("/",)}}, "root file system"),
        ({"job": {"inputs": ("/proc/1",)}}, "/proc"),
        ({"job": {"inputs": ("/sys",)}}, "/sys"),
        ({"job": {"inputs": ("/dev/nvidia0",)}}, "/dev"),
        ({"job": {"inputs": ("/var",)}}, "contains"),
        ({"job": {"inputs": ("/etc/shadow",)}}, "/etc"),
        ({"job": {"inputs": ("relative.jpg",)}}, "absolute"),
        ({"job": {"inputs": ("/data/../etc/passwd",)}}, "absolute"),
        ({"job": {"gpus": ("all",)}}, "GPU id"),
        ({"job": {"env": (("LD_PRELOAD", "/tmp/x.so"),)}}, "LD_PRELOAD"),
        ({"job": {"weights": ("/a/w.safetensors", "/b/w.safetensors")}}, "two job files"),
        ({"job": {"weights": ("/srv/store/GPEN-BFR-2048.pth",)}}, "only .safetensors"),
        ({"job": {"weights": ("/srv/store/w.safetensors.pkl",)}}, "only .safetensors"),
        ({"policy": {"seccomp": "unconfined"}}, "unconfined is never allowed"),
    ],
)
def test_build_spec_refuses(change: dict[str, dict[str, object]], message: str) -> None:
    policy = dataclasses.replace(POLICY, sandbox=dataclasses.replace(POLICY.sandbox, **change.get("policy", {})))
    job = dataclasses.replace(JOB, **change.get("job", {}))
    with pytest.raises((SandboxError, PolicyError), match=message):
        build_spec(policy, job, seccomp_profile=PROFILE)


@pytest.mark.parametrize(
    "weaken",
    [
        {"network": "bridge"},
        {"read_only_root": False},
        {"no_new_privileges": False},
        {"cap_drop": ()},
        {"user": (0, 65534)},
        {"ipc_mode": "host"},
        {"tmpfs": (("/tmp", "rw,size=1g"),)},
        {"binds": (Bind("/var/run/docker.sock", "/in/docker.sock"),)},
        {"binds": (Bind("/data/in", "/in/x"), Bind("/data/out", "/out", False), Bind("/data/o2", "/out2", False))},
        {"binds": (Bind("/data/in", "/in/x", False),)},
        {"binds": (Bind("/data/in", "/usr/lib/x"),)},
        {"binds": (Bind("/data/w.pth", "/weights/w.pth"),)},
        {"seccomp": "unconfined"},
        {"seccomp": '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}'},
        {"seccomp": '{"defaultAction": "SCMP_ACT_LOG"}'},
    ],
)
def test_validate_refuses_a_weakened_spec(weaken: dict[str, object]) -> None:
    with pytest.raises(SandboxError):
        validate_spec(dataclasses.replace(GOLDEN_SPEC, **weaken))


def test_host_check_refuses_links_and_missing_files(tmp_path: Path) -> None:
    real = tmp_path / "w.safetensors"
    real.write_bytes(b"x")
    link = tmp_path / "link.safetensors"
    link.symlink_to(real)
    good = dataclasses.replace(GOLDEN_SPEC, binds=(Bind(str(real), "/weights/w.safetensors"),))
    check_binds_on_host(good)
    for source, message in ((link, "symbolic link"), (tmp_path / "gone", "No such file")):
        spec = dataclasses.replace(GOLDEN_SPEC, binds=(Bind(str(source), "/weights/w.safetensors"),))
        with pytest.raises(SandboxError, match=message):
            check_binds_on_host(spec)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SandboxError, match="not a file or directory"):
        check_binds_on_host(dataclasses.replace(GOLDEN_SPEC, binds=(Bind(str(fifo), "/in/fifo"),)))


def test_userns_remap_shifts_the_output_owner() -> None:
    from gpenguard.runner.docker import remapped_owner

    subuid = "alice:100000:65536\ndockremap:231072:65536\n"
    subgid = "dockremap:300000:65536\n"
    assert remapped_owner((65534, 65534), '{"userns-remap": "default"}', subuid, subgid) == (296606, 365534)
    assert remapped_owner((65534, 65534), '{"userns-remap": "alice:alice"}', subuid, "alice:5:9\n") == (165534, 65539)
    with pytest.raises(SandboxError, match="has no range"):
        remapped_owner((65534, 65534), '{"userns-remap": "bob"}', subuid, subgid)


def test_a_results_file_is_the_only_writable_place_and_has_a_size_limit(tmp_path: Path) -> None:
    from gpenguard.runner.spec import JOB_FILE, RESULTS_FILE

    job = dataclasses.replace(
        JOB, output_dir=None, gpus=(), results="/data/out/.run/results.tar", job_file="/data/out/.run/job.json", output_bytes=123456
    )
    spec = build_spec(POLICY, job, seccomp_profile=PROFILE)
    assert spec.fsize_bytes == 123456
    assert spec.binds[-2:] == (Bind("/data/out/.run/job.json", JOB_FILE, True), Bind("/data/out/.run/results.tar", RESULTS_FILE, False))
    assert Ulimit(name="fsize", soft=123456, hard=123456) in container_kwargs(spec)["ulimits"]
    with pytest.raises(SandboxError, match="needs a size limit"):
        validate_spec(dataclasses.replace(spec, fsize_bytes=None))
    with pytest.raises(SandboxError, match="must be positive"):
        validate_spec(dataclasses.replace(spec, fsize_bytes=0))
    with pytest.raises(SandboxError, match="may be writable"):
        validate_spec(dataclasses.replace(spec, binds=(Bind("/data/out/x", "/out/other.tar", False),)))
    folder = tmp_path / "results.tar"
    folder.mkdir()
    with pytest.raises(SandboxError, match="must be a plain file"):
        check_binds_on_host(dataclasses.replace(spec, binds=(Bind(str(folder), RESULTS_FILE, False),)))
