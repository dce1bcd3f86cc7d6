"""`rodin convert`: turn checkpoints made elsewhere into folders we load (safetensors, checked names)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Convert checkpoints made elsewhere into folders rodin loads.", no_args_is_help=True)


@app.command("lpips")
def lpips(
    backbone: Path = typer.Option(..., "--backbone", help="torchvision's AlexNet (or VGG16) state dict, "
                                  "e.g. alexnet-owt-7be5be79.pth."),
    linear: Path = typer.Option(..., "--linear", help="The LPIPS repository's v0.1 linear layers, "
                                "e.g. lpips/weights/v0.1/alex.pth."),
    out: Path = typer.Option(..., "--out", help="The folder to write (config.json, model.safetensors)."),
    net: str = typer.Option("alex", "--net", help="The trunk the checkpoints are for: alex or vgg16."),
) -> None:
    """Check both checkpoints (read with torch's tensors-only unpickler) and write one LPIPS folder for
    `rodin eval fit --lpips`."""
    from rodin.eval.lpips_convert import convert_lpips

    folder = convert_lpips(backbone=backbone, linear=linear, out=out, net=net)
    print(json.dumps({"out": str(folder), "net": net}), flush=True)
