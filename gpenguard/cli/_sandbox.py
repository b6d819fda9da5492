"""``gpenguard sandbox check|build``: is this host ready to run the sandbox, and the image build."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gpenguard.cli._common import guarded, note
from gpenguard.errors import ExitCode, SandboxError, UsageError

if TYPE_CHECKING:
    from gpenguard.runner.check import SandboxReport


def _render_report(report: SandboxReport) -> None:
    rows = [
        ("backend", report.backend),
        ("engine", report.engine_version),
        ("api", report.api_version),
        ("runtimes", ", ".join(report.runtimes) or None),
        ("default runtime", report.default_runtime),
        ("rootless", report.rootless),
        ("userns-remap", report.userns_remap),
        ("security options", ", ".join(report.security_options) or None),
        ("cgroup version", report.cgroup_version),
        ("image", report.image),
        ("image id", report.image_id),
        ("runsc", (report.runsc_version or "not installed") if report.backend == "docker" else None),
        ("runsc registered", report.runsc_registered),
        ("runtime", report.runtime),
        ("bwrap", report.bwrap_version),
        ("bwrap limits", report.bwrap_limits),
        ("nvidia toolkit", report.nvidia_toolkit or "not installed"),
        ("gpu runs", "allowed" if report.gpu_allowed else f"refused: {'; '.join(report.gpu_refusals) or 'backend has no GPU support'}"),
    ]
    for key, value in rows:
        if value is not None:
            typer.echo(f"{key:>17}: {value}")
    for warning in report.warnings:
        note("warning:", "yellow", str(warning))
    for problem in report.problems:
        note("problem:", "bold red", str(problem))


def check_command(
    backend: Annotated[str | None, typer.Option("--backend", help="docker or bwrap (default: the policy's).")] = None,
    policy: Annotated[str | None, typer.Option("--policy", "-p", help="Policy: default, strict, ci, or a YAML file.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="Sandbox image reference or id.")] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="Exit 1 unless GPU runs would be allowed.")] = False,
) -> None:
    """Report the engine, runtimes, rootless/userns-remap, the NVIDIA toolkit and the image.

    Exit codes: 0 ready, 1 the policy or host refuses what was asked (e.g. --gpu), 2 not usable.
    """
    from gpenguard.policy import load_policy
    from gpenguard.runner import BackendName
    from gpenguard.runner.check import check_bwrap, check_docker, toolkit_version
    from gpenguard.runner.docker import DEFAULT_IMAGE

    pol = load_policy(policy)
    name = BackendName.parse(backend or pol.sandbox.backend)
    if name is BackendName.DOCKER:
        report = check_docker(pol, image or DEFAULT_IMAGE, toolkit=toolkit_version())
    else:
        report = check_bwrap(pol)
    _render_report(report)
    if report.problems:
        raise typer.Exit(int(ExitCode.ERROR))
    if gpu and not report.gpu_allowed:
        raise typer.Exit(int(ExitCode.BLOCKED))


def build_command(
    base: Annotated[str | None, typer.Option("--base", help="Base image (default: a debootstrap'd Debian bookworm).")] = None,
) -> None:
    """Build the sandbox image offline by running sandbox/build.sh from the source checkout."""
    import os

    script = Path(__file__).resolve().parents[2] / "sandbox" / "build.sh"
    if not script.is_file():
        raise UsageError("sandbox/build.sh is not here; build the image from a gpenguard source checkout")
    env = dict(os.environ)
    if base:
        env["BASE"] = base
    done = subprocess.run(["bash", str(script)], env=env, check=False)
    if done.returncode != 0:
        raise SandboxError(f"sandbox/build.sh failed with status {done.returncode}")


def register(app: typer.Typer) -> None:
    """Attach the ``sandbox`` group (a fresh sub-app per `app`: build_app may run more than once)."""
    sandbox_app = typer.Typer(help="Check the sandbox host, build the sandbox image.", no_args_is_help=True)
    sandbox_app.command("check")(guarded(check_command))
    sandbox_app.command("build")(guarded(build_command))
    app.add_typer(sandbox_app, name="sandbox")
