"""The run stage: the sandbox hardening as data (`spec`) and the backends that enforce it.

    spec.build_spec(policy, job) -> SandboxSpec      one pure function decides the hardening
    docker.container_kwargs(spec) / bwrap.bwrap_argv  each backend's translation, also pure
    Backend.run(spec) -> RunResult                    docker (default) or bwrap
"""

from __future__ import annotations

from enum import StrEnum
from typing import assert_never

from gpenguard.runner.interface import Backend, RunResult


class BackendName(StrEnum):
    """The sandbox backends; the CLI's ``--backend`` takes these."""

    DOCKER = "docker"
    BWRAP = "bwrap"

    @classmethod
    def parse(cls, value: str) -> BackendName:
        """A backend name from the command line or a policy; anything else is a UsageError."""
        try:
            return cls(value)
        except ValueError:
            from gpenguard.errors import UsageError

            raise UsageError(f"unknown sandbox backend {value!r}; use one of: {', '.join(cls)}") from None

    def create(self) -> Backend:
        """A backend instance; each raises SandboxError when its mechanism is missing."""
        if self is BackendName.DOCKER:
            from gpenguard.runner.docker import DockerBackend

            return DockerBackend()
        if self is BackendName.BWRAP:
            from gpenguard.runner.bwrap import BwrapBackend

            return BwrapBackend()
        assert_never(self)


__all__ = ["Backend", "BackendName", "RunResult"]
