"""`rodin bench render-meshes`: Blender's seconds per subject at 32 views of 128^2 (Cycles, default samples),
beside the procedural generator's at the same views and resolution, measured in the same run.

The meshes are the procedural avatars' own: the generator writes each subject's marching-cubes mesh with
vertex colours (mesh.ply), and those files are what Blender renders. Both paths thus make the same
subjects, and the ratio compares renderers, not assets. Blender's time includes starting it (one process
for all the meshes here, as `rodin data render-meshes` does for up to 16).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from rodin.bench import BenchResult

VIEWS = 32
RESOLUTION = 128
SUBJECTS = 4
QUICK = {"subjects": 1, "views": 4, "resolution": 32}
SEED = 1000         # not the seed of any training set


def run(*, quick: bool = False) -> BenchResult:
    from rodin.data.blender import INSTALL, MeshRenderOptions, find_blender, render_meshes
    from rodin.data.synth import subject_id, synth_dataset
    from rodin.errors import RodinError

    try:
        find_blender()
    except RodinError:
        raise RodinError(f"`rodin bench render-meshes` needs Blender: {INSTALL}") from None
    subjects, views, resolution = ((QUICK["subjects"], QUICK["views"], QUICK["resolution"]) if quick
                                   else (SUBJECTS, VIEWS, RESOLUTION))
    options = MeshRenderOptions(views=views, resolution=resolution, portrait_resolution=resolution)
    with tempfile.TemporaryDirectory(prefix="rodin-bench-meshes-") as tmp:
        root = Path(tmp)
        synth_dataset(root / "warm", subjects=1, views=2, resolution=16, portrait_resolution=16, progress=False)
        start = time.perf_counter()
        synth_dataset(root / "synth", subjects=subjects, views=views, resolution=resolution,
                      portrait_resolution=resolution, seed=SEED, progress=False, workers=1)
        procedural = (time.perf_counter() - start) / subjects
        (root / "meshes").mkdir()
        for k in range(subjects):
            sid = subject_id(k)
            shutil.copyfile(root / "synth" / sid / "mesh.ply", root / "meshes" / f"{sid}.ply")
        start = time.perf_counter()
        report = render_meshes(root / "meshes", root / "blender", options=options, workers=1, progress=False)
        blender = (time.perf_counter() - start) / subjects
        if report.failed:
            source, why = report.failed[0]
            raise RodinError(f"Blender failed on {source}: {why}")
        attributes = json.loads((root / "blender" / subject_id(0) / "attributes.json").read_text())
    faces = attributes["asset"].get("faces")
    figures = {
        "subjects": subjects,
        "views": views,
        "resolution": resolution,
        "portrait_resolution": resolution,
        "engine": options.engine,
        "samples": options.samples,
        "workers": 1,
        "meshes": "procedural avatars' mesh.ply (marching cubes, vertex colours)",
        "faces_first_mesh": faces,
        "blender": attributes["renderer"].get("blender"),
        "seconds_per_subject": round(blender, 3),
        "procedural_seconds_per_subject": round(procedural, 4),
        "blender_over_procedural": round(blender / procedural, 1),
    }
    rows = [
        ("subjects (procedural meshes)", str(subjects)),
        ("views x resolution", f"{views} x {resolution}^2 (+ {resolution}^2 portrait)"),
        ("engine, samples", f"{options.engine}, {options.samples}"),
        ("Blender seconds / subject", f"{blender:.2f}"),
        ("procedural seconds / subject", f"{procedural:.3f}"),
        ("Blender / procedural", f"{blender / procedural:.1f}x"),
    ]
    return BenchResult(title="render-meshes: Blender vs the procedural generator", rows=rows, figures=figures)
