"""Shared fixtures and marker handling.

Tests that need Docker skip with a reason when no engine answers, unless
GPENGUARD_REQUIRE_DOCKER=1 (CI), where a missing engine is a failure instead.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from gpenguard.errors import SandboxError


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep a developer's GPENGUARD_* settings (other than the CI switches) out of tests."""
    for key in list(os.environ):
        if key.startswith("GPENGUARD_") and key not in {"GPENGUARD_REQUIRE_DOCKER", "GPENGUARD_REQUIRE_BWRAP", "GPENGUARD_REQUIRE_RUNSC", "GPENGUARD_IMAGE"}:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GPENGUARD_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("GPENGUARD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield


# --- sandbox: a real Docker engine, the real sandbox image, bubblewrap --------------------------


@pytest.fixture(autouse=True)
def _engine_for_marked(request: pytest.FixtureRequest) -> None:
    """A test marked `docker` gets the engine check even if it never asks for the engine."""
    if request.node.get_closest_marker("docker") is not None:
        request.getfixturevalue("docker_engine")
    if request.node.get_closest_marker("bwrap") is not None:
        request.getfixturevalue("bwrap_available")


TEST_IMAGE_TAG = "gpenguard-sandbox-test:latest"


def _unavailable(what: str, hint: str, env: str = "GPENGUARD_REQUIRE_DOCKER") -> None:
    if os.environ.get(env) == "1":
        pytest.fail(f"{what} ({env}=1, so this is a failure, not a skip). {hint}")
    pytest.skip(f"{what}; {hint}")


@pytest.fixture(scope="session")
def docker_engine() -> Any:
    from gpenguard.runner.docker import client

    try:
        return client(timeout=120)
    except SandboxError as exc:
        _unavailable(f"no Docker engine answers: {exc.message}", "start dockerd to run sandbox tests")


@pytest.fixture(scope="session")
def sandbox_image(docker_engine: Any) -> str:
    """The production sandbox image's immutable id."""
    from gpenguard.runner.docker import DEFAULT_IMAGE, resolve_image

    reference = os.environ.get("GPENGUARD_IMAGE", DEFAULT_IMAGE)
    try:
        return resolve_image(docker_engine, reference)
    except SandboxError as exc:
        _unavailable(f"sandbox image missing: {exc.message}", "build it with sandbox/build.sh")
        raise


@pytest.fixture(scope="session")
def probe_image(docker_engine: Any, sandbox_image: str) -> str:
    """The sandbox image plus one setuid-root helper, so setuid escalation can be attempted.

    The production image is left as shipped; this layer only adds a setuid copy of `id`.
    """
    dockerfile = (
        f"FROM {sandbox_image}\n"
        "USER 0:0\n"
        "RUN cp /usr/bin/id /usr/local/bin/suid-id && chmod 4755 /usr/local/bin/suid-id\n"
        "USER 65534:65534\n"
    )
    image, _ = docker_engine.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=TEST_IMAGE_TAG, rm=True, forcerm=True, network_mode="none"
    )
    return str(image.id)


@pytest.fixture(scope="session", params=["runc", "runsc"])
def docker_runtime(request: pytest.FixtureRequest, docker_engine: Any) -> str:
    """Each Docker sandbox test once per OCI runtime: runc, and gVisor's runsc where registered.

    GPENGUARD_REQUIRE_RUNSC=1 (CI) makes a missing runsc a failure instead of a skip.
    """
    runtime = str(request.param)
    if runtime == "runsc" and "runsc" not in (docker_engine.info().get("Runtimes") or {}):
        _unavailable(
            "the gVisor runtime runsc is not registered with the Docker engine",
            "apt-get install runsc and register it (sandbox/README.md)",
            "GPENGUARD_REQUIRE_RUNSC",
        )
    return runtime


@pytest.fixture(scope="session")
def bwrap_available() -> str:
    path = shutil.which("bwrap")
    if path is None:
        _unavailable("bubblewrap is not installed", "apt-get install bubblewrap", "GPENGUARD_REQUIRE_BWRAP")
        raise AssertionError
    probe = subprocess.run(
        [path, "--unshare-all", "--ro-bind", "/", "/", "true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        _unavailable(
            f"bubblewrap cannot create namespaces here: {probe.stderr.strip()}",
            "enable unprivileged user namespaces",
            "GPENGUARD_REQUIRE_BWRAP",
        )
    return path
