"""``gpenguard dev-restore``: run the restorer in this process, for development only.

It loads converted ``.safetensors`` weights straight into this Python process: no gate, no
registry check, no container. That is what `gpenguard restore` exists for; this command is
for working on the pipeline itself, and says so every time it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpenguard.cli._common import guarded, note
from gpenguard.errors import InputError, UsageError

DEV_WARNING = (
    "development only: restoring in-process, without the gate or the sandbox; "
    "use `gpenguard restore` for weights you have not built yourself"
)
_DTYPES = ("float32", "float16", "bfloat16")


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the app."""
    app.command(
        "dev-restore",
        help="[DEV ONLY] Restore faces in this process, without the gate or the sandbox. "
        "Use `gpenguard restore` for weights you have not built yourself.",
    )(dev_restore)


@guarded
def dev_restore(
    inputs: Annotated[list[Path], typer.Argument(help="Images (JPEG, PNG, WebP) or directories.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory.")],
    gpen: Annotated[Path, typer.Option(help="GPEN-BFR weights (.safetensors).")],
    retinaface: Annotated[
        Path | None, typer.Option(help="RetinaFace-R50 weights (.safetensors); full mode.")
    ] = None,
    parsenet: Annotated[
        Path | None, typer.Option(help="ParseNet weights (.safetensors); full mode.")
    ] = None,
    realesrnet: Annotated[
        Path | None,
        typer.Option(help="Real-ESRNet x2 weights (.safetensors): upscale the background 2x."),
    ] = None,
    size: Annotated[int, typer.Option(help="GPEN model size.")] = 2048,
    mode: Annotated[
        str, typer.Option(help="'full' (detect faces) or 'aligned' (input is a face crop).")
    ] = "full",
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
    dtype: Annotated[
        str, typer.Option(help="GPEN precision: float32, float16 or bfloat16.")
    ] = "float32",
    alpha: Annotated[
        float, typer.Option(help="Weight of the restored face against the original.")
    ] = 1.0,
) -> None:
    import torch

    from gpenguard.restore import Restorer, RestorerWeights
    from gpenguard.restore.images import FORMATS, read_image, write_image

    note("warning:", "bold yellow", DEV_WARNING)
    if dtype not in _DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(_DTYPES)}")
    if mode not in ("full", "aligned"):
        raise UsageError("--mode must be 'full' or 'aligned'")
    suffixes = {s for group in FORMATS.values() for s in group}
    images: list[Path] = []
    for path in inputs:
        if path.is_dir():
            images += sorted(
                p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file()
            )
        else:
            images.append(path)
    if not images:
        raise UsageError("no input images")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the output directory: {exc.strerror or exc}", path=output
        ) from exc
    jobs: dict[Path, Path] = {}  # source by target: every check before the weights load
    for source in images:
        target = output / source.name
        if target.resolve() == source.resolve():
            raise UsageError(
                "the output would overwrite its input; choose another --output", path=source
            )
        if target in jobs:
            raise UsageError(f"{jobs[target]} and {source} would both be written to {target}")
        jobs[target] = source
    restorer = Restorer(
        RestorerWeights(gpen=gpen, retinaface=retinaface, parsenet=parsenet, realesrnet=realesrnet),
        device=device,
        dtype=getattr(torch, dtype),
        size=size,
        mode="full" if mode == "full" else "aligned",
        face_alpha=alpha,
    )
    for target, source in jobs.items():
        result = restorer.restore(read_image(source))
        write_image(result.image, target)
        faces = "aligned crop" if mode == "aligned" else f"{len(result.faces)} face(s)"
        typer.echo(f"{source} -> {target} ({faces}; dev-restore, unsandboxed)")
