"""Runs inside Blender: import meshes, normalise them into the world box, render the views we are given.

Started by `rodin.data.blender` as `blender -b --factory-startup -P blender_script.py -- job.json`.
Blender's own Python runs this file, so it uses only Blender's modules, numpy (Blender's importers
need it too) and the standard library; nothing from `rodin`. Everything about the world and the
cameras (matrices, fields of view, the light rig) comes in the job file, computed by the Python side,
so that the conventions live in one place; this file owns only the normalisation maths (pure numpy,
importable without Blender so that tests and the Python side share it) and the Blender calls.

Protocol: one line per event on stdout, `@rodin {json}`: `{"event": "start", "index": i}` before a
mesh, `{"event": "done", "index": i, "ok": true, ...}` or `{"ok": false, "error": "..."}` after it.
A mesh that crashes Blender leaves a start without a done; the caller reports it and goes on.

Coordinates. "Asset coordinates" are the numbers in the file: Blender's glTF and OBJ importers turn
y-up files into its z-up world, and that turn is undone here; PLY is read as it stands; FBX is taken
after its importer applies the file's own axis settings (so it arrives y-up). `world_from_asset`
(4x4) takes asset coordinates into the project's world: p_world = s * (R @ p_asset - c), where R
turns the asset's forward axis to +z and its up axis to +y, c is the rotated bounding box's centre
and s puts the farthest vertex at `extent` from it.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from pathlib import Path

import numpy as np

PREFIX = "@rodin "
AXES = {"+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0), "+z": (0, 0, 1), "-z": (0, 0, -1)}
# Blender world (z-up) -> asset coordinates (y-up) for importers that turn y-up files into z-up:
# they map (x, y, z) -> (x, -z, y); this is the inverse.
ASSET_FROM_BLENDER_Y_UP = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
GEOMETRY_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT"}


# --- maths (no Blender) ------------------------------------------------------------------------

def axis_vector(text: str) -> np.ndarray:
    """"+z", "z", "-y" ... as a unit vector."""
    key = text.strip().lower()
    key = key if key[:1] in "+-" else "+" + key
    if key not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)} (got {text!r})")
    return np.array(AXES[key], dtype=np.float64)


def orientation(forward: str, up: str) -> np.ndarray:
    """The rotation (3x3) that takes the asset's forward axis to +z and its up axis to +y."""
    f, u = axis_vector(forward), axis_vector(up)
    if abs(float(f @ u)) > 0.5:
        raise ValueError(f"forward axis {forward!r} and up axis {up!r} must be perpendicular")
    return np.stack([np.cross(u, f), u, f])       # rows: the asset's right, up, forward


def normalisation(points: np.ndarray, *, forward: str = "+z", up: str = "+y", extent: float = 1.0) -> np.ndarray:
    """world_from_asset (4x4) for vertices `points` (N, 3) in asset coordinates: turned to y-up,
    facing +z, the bounding box centred on the origin, the farthest vertex at `extent` from it (inside
    [-1, 1]^3 for extent <= 1, and inside every default view's frame)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        raise ValueError("the mesh has no vertices")
    rotation = orientation(forward, up)
    turned = pts @ rotation.T
    centre = 0.5 * (turned.min(axis=0) + turned.max(axis=0))
    radius = float(np.sqrt(((turned - centre) ** 2).sum(axis=1)).max())
    if not radius > 1e-12:
        raise ValueError("the mesh has no extent (all vertices at one point)")
    scale = extent / radius
    m = np.eye(4)
    m[:3, :3] = scale * rotation
    m[:3, 3] = -scale * centre
    return m


# --- Blender ----------------------------------------------------------------------------------

def emit(event: dict) -> None:
    print(PREFIX + json.dumps(event), flush=True)


def error_line(text: str) -> str:
    """One line from an importer's error: the exception line of a Python traceback when there is one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", line)]
    return (found[-1] if found else " ".join(" ".join(lines).split()))[:300]


def import_mesh(bpy, path: Path) -> np.ndarray:
    """Import one file into the empty scene; returns asset_from_blender (4x4) for its importer."""
    suffix = path.suffix.lower()
    wm_ops = dir(bpy.ops.wm)
    if suffix == ".obj":
        if "obj_import" in wm_ops:
            bpy.ops.wm.obj_import(filepath=str(path))
        else:
            bpy.ops.import_scene.obj(filepath=str(path))
        return ASSET_FROM_BLENDER_Y_UP
    if suffix in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=str(path))
        return ASSET_FROM_BLENDER_Y_UP
    if suffix == ".fbx":
        bpy.ops.import_scene.fbx(filepath=str(path))
        return ASSET_FROM_BLENDER_Y_UP
    if suffix == ".ply":
        if "ply_import" in wm_ops:       # Blender 3.6+: its defaults keep the file's numbers
            bpy.ops.wm.ply_import(filepath=str(path))
        else:
            bpy.ops.import_mesh.ply(filepath=str(path))
        return np.eye(4)
    raise ValueError(f"unsupported mesh format {suffix!r}")


def world_points(bpy) -> tuple[np.ndarray, int, int]:
    """All evaluated vertices in Blender's world (instances included), and the face count."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    chunks, faces = [], 0
    for inst in depsgraph.object_instances:
        obj = inst.object
        if obj.type not in GEOMETRY_TYPES:
            continue
        mesh = obj.to_mesh()
        try:
            n = len(mesh.vertices)
            if n:
                co = np.empty(n * 3, dtype=np.float64)
                mesh.vertices.foreach_get("co", co)
                m = np.array(inst.matrix_world, dtype=np.float64)
                chunks.append(co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3])
                faces += len(mesh.polygons)
        finally:
            obj.to_mesh_clear()
    points = np.concatenate(chunks) if chunks else np.zeros((0, 3))
    return points, len(points), faces


def colour_materials(bpy) -> bool:
    """Meshes with colour attributes and no material get one that shows those colours (PLY scans and
    marching-cubes meshes carry vertex colours only). Returns whether any did."""
    made = None
    for obj in bpy.context.scene.objects:
        if obj.type != "MESH" or any(slot.material for slot in obj.material_slots):
            continue
        attrs = getattr(obj.data, "color_attributes", None) or getattr(obj.data, "vertex_colors", None)
        if not attrs:
            continue
        name = attrs.active_color.name if getattr(attrs, "active_color", None) else attrs[0].name
        if made is None or made.get("rodin_attribute") != name:
            made = bpy.data.materials.new("rodin_vertex_colour")
            made["rodin_attribute"] = name
            made.use_nodes = True
            nodes = made.node_tree.nodes
            shader = nodes.get("Principled BSDF")
            source = nodes.new("ShaderNodeAttribute")
            source.attribute_name = name
            made.node_tree.links.new(source.outputs["Color"], shader.inputs["Base Color"])
            shader.inputs["Roughness"].default_value = 0.6
        obj.data.materials.clear()
        obj.data.materials.append(made)
    return made is not None


def asset_stats(bpy) -> dict:
    materials = sorted({m.name for m in bpy.data.materials if m.users and not m.name.startswith("rodin_")})
    textures = sorted({i.name for i in bpy.data.images if i.users and i.source in ("FILE", "PACKED")})
    objects = [o for o in bpy.context.scene.objects if o.type in GEOMETRY_TYPES]
    return {"objects": len(objects), "materials": materials, "textures": len(textures)}


def setup_scene(bpy, job: dict, vertex_colours: bool):
    """Engine, output format, colour management, the light rig and a camera; returns the camera."""
    from mathutils import Vector

    scene = bpy.context.scene
    render = scene.render
    engine = {"cycles": "CYCLES", "eevee": "BLENDER_EEVEE", "workbench": "BLENDER_WORKBENCH"}[job["engine"]]
    render.engine = engine
    render.film_transparent = True
    render.resolution_percentage = 100
    render.use_persistent_data = True
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGBA"
    render.image_settings.color_depth = "8"
    render.image_settings.compression = 15
    if job.get("threads"):
        render.threads_mode = "FIXED"
        render.threads = int(job["threads"])
    scene.view_settings.view_transform = "Standard"        # plain sRGB, as our own renders
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    samples = int(job["samples"])
    if engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False                   # Debian's build has no CPU denoiser
        scene.cycles.use_adaptive_sampling = True
    elif engine == "BLENDER_EEVEE":
        scene.eevee.taa_render_samples = samples
        scene.eevee.use_soft_shadows = True
    else:
        levels = ["5", "8", "11", "16", "32"]
        scene.display.render_aa = next((lv for lv in levels if int(lv) >= samples), "32")
        shading = scene.display.shading
        shading.light = "STUDIO"
        shading.color_type = "VERTEX" if vertex_colours else "TEXTURE"

    world = bpy.data.worlds.new("rodin_studio")
    world.use_nodes = True
    background = world.node_tree.nodes.get("Background")
    grey = float(job["ambient"])
    background.inputs["Color"].default_value = (grey, grey, grey, 1.0)
    background.inputs["Strength"].default_value = 1.0
    scene.world = world
    for k, light in enumerate(job["lights"]):
        data = bpy.data.lights.new(f"rodin_light_{k}", type="SUN")
        data.energy = float(light["energy"])
        data.angle = float(light["angle"])
        obj = bpy.data.objects.new(data.name, data)
        obj.rotation_mode = "QUATERNION"
        obj.rotation_quaternion = Vector(light["direction"]).normalized().to_track_quat("Z", "Y")
        scene.collection.objects.link(obj)

    cam_data = bpy.data.cameras.new("rodin_camera")
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.clip_start = 0.01
    cam_data.clip_end = 100.0
    camera = bpy.data.objects.new("rodin_camera", cam_data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    return camera


def shoot(bpy, camera, c2w: list, fov_x: float, resolution: int, path: str) -> None:
    """Render one view: the camera-to-world matrix is used as given (Blender's cameras, like
    NeRF-synthetic ones, look down their -z axis with +y up)."""
    from mathutils import Matrix

    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = int(resolution)
    camera.data.angle_x = float(fov_x)
    camera.matrix_world = Matrix(c2w)
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)


def render_one(bpy, job: dict, mesh: dict) -> dict:
    from mathutils import Matrix

    bpy.ops.wm.read_factory_settings(use_empty=True)
    source = Path(mesh["source"])
    try:
        asset_from_blender = import_mesh(bpy, source)
    except Exception as err:      # importers raise many types for broken files
        raise RuntimeError(f"Blender could not import it: {error_line(str(err))}") from None
    for obj in list(bpy.context.scene.objects):
        if obj.type in ("LIGHT", "CAMERA"):          # our own rig and cameras replace the asset's
            bpy.data.objects.remove(obj, do_unlink=True)
    points, vertices, faces = world_points(bpy)
    if vertices == 0:
        raise RuntimeError("no mesh geometry in the file")
    asset = points @ asset_from_blender[:3, :3].T + asset_from_blender[:3, 3]
    world_from_asset = normalisation(asset, forward=job["forward"], up=job["up"], extent=float(job["extent"]))
    move = Matrix((world_from_asset @ asset_from_blender).tolist())
    for obj in list(bpy.context.scene.objects):
        if obj.parent is None:
            obj.matrix_world = move @ obj.matrix_world
    bpy.context.view_layer.update()
    placed, _, _ = world_points(bpy)
    vertex_colours = colour_materials(bpy)
    camera = setup_scene(bpy, job, vertex_colours)
    images = Path(mesh["images"])
    images.mkdir(parents=True, exist_ok=True)
    for k, c2w in enumerate(mesh["cameras"]):
        shoot(bpy, camera, c2w, job["fov_x"], job["resolution"], str(images / f"r_{k:03d}.png"))
    shoot(bpy, camera, mesh["portrait_camera"], job["portrait_fov_x"], job["portrait_resolution"],
          mesh["portrait"])
    return {
        "world_from_asset": world_from_asset.tolist(),
        "bounds": [placed.min(axis=0).tolist(), placed.max(axis=0).tolist()],
        "vertices": vertices, "faces": faces, "vertex_colours": vertex_colours,
        "blender": bpy.app.version_string, **asset_stats(bpy),
    }


def numpy_compat() -> None:
    """Blender 3.4's glTF importer uses `np.bool`, which NumPy 1.24 to 1.26 removed (Debian 12 ships
    Blender 3.4 with NumPy 1.24): give the name back, as the builtin it always was."""
    if "bool" not in vars(np):
        np.bool = bool


def main(argv: list[str]) -> int:
    import bpy

    numpy_compat()
    args = argv[argv.index("--") + 1:] if "--" in argv else []
    if len(args) != 1:
        print("usage: blender -b -P blender_script.py -- job.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text())
    for mesh in job["meshes"]:
        emit({"event": "start", "index": mesh["index"]})
        try:
            result = render_one(bpy, job, mesh)
            emit({"event": "done", "index": mesh["index"], "ok": True, **result})
        except Exception as err:   # one broken asset must not stop the batch
            message = " ".join(str(err).split()) or type(err).__name__
            if not isinstance(err, (RuntimeError, ValueError)):
                traceback.print_exc()
                message = f"{type(err).__name__}: {message}"
            emit({"event": "done", "index": mesh["index"], "ok": False, "error": message[:400]})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
