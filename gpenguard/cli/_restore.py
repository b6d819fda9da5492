"""``gpenguard restore``: gate -> convert -> GPEN in the sandbox, with progress on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gpenguard.cli._common import err_console, guarded, note
from gpenguard.errors import ExitCode, UsageError
from gpenguard.report.interface import printable


def _gpus(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else ()


def restore_command(
    inputs: Annotated[list[Path], typer.Argument(help="Images or folders of images.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the restored PNGs.", show_default=False)],
    weights: Annotated[Path, typer.Option("--weights", "-w", help="GPEN checkpoint (e.g. GPEN-BFR-2048.pth).", show_default=False)],
    detector: Annotated[Path | None, typer.Option("--detector", help="RetinaFace-R50.pth (full mode).")] = None,
    parser: Annotated[Path | None, typer.Option("--parser", help="ParseNet-latest.pth (full mode).")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="aligned (inputs are aligned face crops) or full (default with --detector and --parser).")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="GPU ids or UUIDs, comma-separated (docker backend only).")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="docker or bwrap (default: the policy's).")] = None,
    runtime: Annotated[str | None, typer.Option("--runtime", help="Docker runtime: runc, runsc (gVisor) or auto (default: the policy's).")] = None,
    policy: Annotated[str | None, typer.Option("--policy", "-p", help="Policy: default, strict, ci, or a YAML file.")] = None,
    registry: Annotated[Path | None, typer.Option("--registry", help="Registry file (default: the policy's).")] = None,
    trust_root: Annotated[Path | None, typer.Option("--trust-root", help="Pinned keys allowed to sign the registry.")] = None,
    tuf_repo: Annotated[str | None, typer.Option("--tuf-repo", help="TUF repository (folder or http(s) URL) to take the registry from; --trust-root is then its pinned root.json.")] = None,
    audit_log: Annotated[Path | None, typer.Option("--audit-log", help="Append each gate decision to this log.")] = None,
    size: Annotated[int, typer.Option("--size", help="GPEN model size the weights are for: 256, 512, 1024, 2048.")] = 2048,
    image: Annotated[str | None, typer.Option("--image", help="Sandbox image reference or sha256 id.")] = None,
    store: Annotated[Path | None, typer.Option("--store", help="Converted-weights store (default: the cache folder).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace files in OUTDIR that have a result's name (refused otherwise).")] = False,
) -> None:
    """Restore faces with GPEN, without trusting the checkpoint.

    Every weight file goes through the gate (scan, registry, signatures) and is converted to
    safetensors; only then does GPEN run, inside a sandbox with no network, a read-only root,
    no capabilities, a non-root user and hard limits. A blocked checkpoint never reaches the
    sandbox: the reasons are printed and the exit code is 1. Results are named after their
    inputs (photo.jpg -> photo.png); an image that cannot be restored is listed with its
    reason, the others are still written, and the exit code is 2.
    """
    _require_restore_extra()
    from gpenguard.pipeline import RestoreRequest, restore
    from gpenguard.runner.interface import Event

    request = RestoreRequest(
        inputs=tuple(inputs),
        output_dir=output,
        gpen=weights,
        detector=detector,
        parser=parser,
        mode=mode,
        size=size,
        gpus=_gpus(gpu),
        backend=backend,
        runtime=runtime,
        policy=policy,
        registry=registry,
        trust_root=trust_root,
        tuf_repo=tuf_repo,
        audit_log=audit_log,
        image=image,
        store=store,
        overwrite=overwrite,
    )

    bar = _ImageProgress() if err_console.is_terminal else None

    def on_stage(stage: str, detail: str) -> None:
        note(str(stage), "bold", str(detail))

    def on_event(event: Event) -> None:
        kind = event.get("event")
        if kind == "image":
            if bar is not None:
                bar.advance(int(event["total"]), str(event["input"]))
                return
            err_console.print(
                f"  [{int(event['index']) + 1}/{event['total']}] {event['input']} -> {event['output']} "
                f"({float(event['seconds']):.2f} s)",
                markup=False,
            )
        elif kind == "model-loaded":
            err_console.print(f"  model loaded in the sandbox ({float(event['seconds']):.2f} s)", markup=False)
        elif kind == "error":
            err_console.print(f"  sandbox: {event.get('message')}", markup=False)

    try:
        outcome = restore(request, on_stage=on_stage, on_event=on_event)
    finally:
        if bar is not None:
            bar.stop()
    for stored in outcome.weights:
        for warning in stored.warnings:
            note("warning:", "yellow", f"{stored.source.name}: {warning}")
    for path in outcome.outputs:
        typer.echo(str(path))
    for failure in outcome.failures:
        note("not restored:", "bold red", str(failure))
    if outcome.failures:
        raise typer.Exit(int(ExitCode.ERROR))


class _ImageProgress:
    """Per-image progress with an ETA on a terminal (each image takes seconds to a minute)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("restoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[last]}", markup=False),
            console=err_console,
        )
        self._task: Any = None

    def advance(self, total: int, name: str) -> None:
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("restore", total=total, last="")
        self._progress.update(self._task, advance=1, last=printable(name))

    def stop(self) -> None:
        if self._task is not None:
            self._progress.stop()


def register(app: typer.Typer) -> None:
    """Attach ``restore``."""
    app.command("restore")(guarded(restore_command))


def _require_restore_extra() -> None:
    """The core install (a CI gate) has no image decoders: say which extra restore needs, up
    front, rather than fail on an import halfway through. `verify` gives the gate's verdict."""
    import importlib.util

    if importlib.util.find_spec("PIL") is None:
        raise UsageError(
            "restore on this host needs the image decoders (Pillow), which the core install leaves out",
            hint="pip install 'gpenguard[restore]'; `gpenguard verify WEIGHTS` gives the gate's verdict without it",
        )
