"""`rodin export`: a fitted tri-plane as a coloured mesh (.glb, .ply or .obj)."""

from __future__ import annotations

from pathlib import Path

import typer

FORMATS = ("glb", "ply", "obj")


def open_run(run: Path):
    """The tri-plane store and decoder of a fit run folder (RUN/triplanes, RUN/decoder)."""
    from rodin.config import DecoderConfig
    from rodin.errors import DataError
    from rodin.fit.run import DECODER_KIND
    from rodin.fit.store import TriplaneStore
    from rodin.modeling import load_component
    from rodin.triplane.decoder import TriplaneDecoder

    if not run.is_dir():
        raise DataError(f"{run}: no such run folder; give the --out folder of `rodin fit`")
    store = TriplaneStore.open(run / "triplanes")
    decoder = load_component(TriplaneDecoder, DecoderConfig, run / "decoder", kind=DECODER_KIND)
    decoder.eval()
    return store, decoder


def fitted_row(store, run: Path, subject: str | None) -> int:
    """The store row of `subject`, or of the first fitted subject; refuses unfitted ones."""
    from rodin.errors import DataError

    if subject is None:
        done = [i for i, d in enumerate(store.done) if d]
        if not done:
            raise DataError(f"{run}: no fitted subject yet")
        return done[0]
    row = store.row(subject)
    if not store.done[row]:
        raise DataError(f"{run}: subject {subject!r} is not fitted yet")
    return row


def export(
    run: Path = typer.Argument(..., help="An avatar file (rodin generate's avatar.safetensors) or a fit run "
                                         "folder (holds decoder/ and triplanes/)."),
    fmt: str | None = typer.Option(None, "--format", help="Mesh format: glb, ply or obj "
                                      "(default: from --out, else glb)."),
    subject: str | None = typer.Option(None, "--subject", help="Subject id (default: the first fitted)."),
    resolution: int = typer.Option(128, "--resolution", min=16, max=512,
                                   help="Marching-cubes grid nodes per axis over the box."),
    threshold: float | None = typer.Option(None, "--threshold", min=0.0,
                                           help="Density of the surface level (default: measured, 3)."),
    out: Path | None = typer.Option(None, "--out", help="Mesh file (default: beside the avatar file, or "
                                                        "RUN/export/<subject>.<format>)."),
) -> None:
    """Mesh a fitted tri-plane (marching cubes on its density) with vertex colours."""
    import time

    from rodin.errors import ConfigError
    from rodin.render.mesh import extract_mesh, write_mesh

    # Settle the format before any work: a wrong one costs nothing.
    suffix = out.suffix.lower().lstrip(".") if out is not None and out.suffix else None
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ConfigError(f"unknown mesh format {fmt!r}; use one of {', '.join(FORMATS)}")
        if suffix is not None and suffix != fmt:
            raise ConfigError(f"--out {out} does not end in .{fmt}, the --format asked for")
    elif suffix is not None and suffix not in FORMATS:
        raise ConfigError(f"{out}: unknown mesh format {out.suffix!r}; use .glb, .ply or .obj")
    chosen = fmt or suffix or "glb"
    if out is not None and not out.suffix:
        out = out.with_name(f"{out.name}.{chosen}")

    if run.is_file():
        from rodin.pipeline import Avatar

        avatar = Avatar.load(run)
        planes, decoder, sid = avatar.planes, avatar.decoder, run.stem
        target = out if out is not None else run.with_suffix(f".{chosen}")
    else:
        store, decoder = open_run(run)
        row = fitted_row(store, run, subject)
        sid = store.ids[row]
        planes = store.get(row)
        target = out if out is not None else run / "export" / f"{sid}.{chosen}"
    began = time.perf_counter()
    mesh = extract_mesh(planes, decoder, resolution=resolution, threshold=threshold)
    write_mesh(mesh, target)
    typer.echo(f"wrote {target} ({sid}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces, "
               f"{time.perf_counter() - began:.1f} s)")
