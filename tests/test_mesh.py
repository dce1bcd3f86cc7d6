"""Meshes from tri-planes: an analytic sphere field meshes to a sphere where and as coloured as it should,
floaters go, empty fields are refused, files round-trip, and `rodin export` speaks to people."""

import math

import numpy as np
import pytest
import torch
import trimesh

from rodin.config import DecoderConfig
from rodin.errors import DataError, FitError
from rodin.fit.run import DECODER_KIND
from rodin.fit.store import TriplaneStore
from rodin.modeling import save_component
from rodin.render.mesh import DEFAULT_THRESHOLD, _density, density_grid, extract_mesh, keep_large_components, write_mesh
from rodin.triplane.decoder import TriplaneDecoder
from rodin.triplane.sampling import sample_triplane

CENTRE = (0.2, -0.15, 0.1)     # off the origin and different per axis: an axis mix-up moves the sphere
RADIUS = 0.45
STEEPNESS = 20.0               # log-density falls by STEEPNESS per unit of squared radius


def sphere_field(*, centre=CENTRE, radius=RADIUS, level=DEFAULT_THRESHOLD, resolution=64):
    """Planes whose summed feature is the squared distance to `centre`, and a real TriplaneDecoder with
    hand-set weights: log density = STEEPNESS (radius² - d²) + ln(level) near the surface, so the
    `level` isosurface is the sphere; colour channel j rises with -direction_j (the outward normal)."""
    texel = (torch.arange(resolution) + 0.5) / resolution * 2 - 1          # grid_sample texel centres
    cx, cy, cz = centre
    planes = torch.zeros(3, 1, resolution, resolution)
    planes[0, 0] = ((texel - cx) ** 2)[None, :]          # XY: width x
    planes[1, 0] = ((texel - cz) ** 2)[:, None]          # XZ: height z
    planes[2, 0] = ((texel - cy) ** 2)[None, :]          # YZ: width y
    decoder = TriplaneDecoder(DecoderConfig(features=1, hidden=8, layers=1, fourier_octaves=0, view_dependent=True))
    offset = 40.0                                        # keeps softplus linear near the surface
    with torch.no_grad():
        for p in decoder.parameters():
            p.zero_()
        trunk = decoder.trunk[0]
        trunk.weight[0, 0] = -STEEPNESS
        trunk.bias[0] = offset + STEEPNESS * radius ** 2
        decoder.density_head.weight[0, 0] = 1.0
        decoder.density_head.bias[0] = math.log(level) - offset
        first, last = decoder.colour_head[0], decoder.colour_head[2]
        for j in range(3):
            first.weight[j, 8 + j] = -4.0                    # unit j = softplus(4 * normal_j)
            last.weight[j, j] = 3.0
            last.bias[j] = -3.0 * math.log(2.0)
    return planes, decoder.eval()


def test_sphere_field_meshes_to_that_sphere():
    planes, decoder = sphere_field()
    mesh = extract_mesh(planes, decoder, resolution=64)
    offsets = mesh.vertices - np.array(CENTRE)
    radii = np.linalg.norm(offsets, axis=1)
    assert abs(radii.mean() - RADIUS) < 0.005 and np.abs(radii - RADIUS).max() < 0.015
    assert mesh.is_watertight and mesh.body_count == 1
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * RADIUS ** 3, rel=0.03)
    # Normals point outward (the colours below depend on it).
    assert (np.einsum("ij,ij->i", mesh.vertex_normals, offsets / radii[:, None]) > 0.9).all()


def test_threshold_moves_the_surface_as_the_field_says():
    planes, decoder = sphere_field()
    # log density = STEEPNESS (r0² - r²) + ln level: a level e^-1 lower lies where r² = r0² + 1 / STEEPNESS.
    mesh = extract_mesh(planes, decoder, resolution=64, threshold=DEFAULT_THRESHOLD * math.exp(-1.0))
    radii = np.linalg.norm(mesh.vertices - np.array(CENTRE), axis=1)
    assert radii.mean() == pytest.approx(math.sqrt(RADIUS ** 2 + 1 / STEEPNESS), abs=0.005)


def test_colours_are_seen_from_outside_along_the_normal():
    planes, decoder = sphere_field()
    mesh = extract_mesh(planes, decoder, resolution=48)
    colours = mesh.visual.vertex_colors[:, :3] / 255.0
    normals = mesh.vertex_normals
    for axis in range(3):
        facing, away = normals[:, axis] > 0.9, normals[:, axis] < -0.9
        assert colours[facing, axis].min() > 0.85 and colours[away, axis].max() < 0.25
        assert np.corrcoef(colours[:, axis], normals[:, axis])[0, 1] > 0.9


def test_density_shortcut_and_empty_space_skipping_change_nothing():
    torch.manual_seed(0)
    decoder = TriplaneDecoder(DecoderConfig(features=8, hidden=32)).eval()
    planes = torch.randn(3, 8, 16, 16)
    points = torch.rand(500, 3) * 2 - 1
    with torch.no_grad():
        expected = decoder(sample_triplane(planes, points), torch.randn(500, 3)).density[:, 0]
    assert torch.allclose(_density(planes[None], decoder, points), expected, rtol=1e-5, atol=1e-6)

    planes, decoder = sphere_field()
    full = density_grid(planes, decoder, resolution=64)
    skipped = density_grid(planes, decoder, resolution=64, empty_below=DEFAULT_THRESHOLD / 8)
    assert (skipped == 0).mean() > 0.3                       # it did skip
    near = full >= DEFAULT_THRESHOLD / 8
    assert np.array_equal(skipped[near], full[near])


def test_small_floaters_are_removed():
    big = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    small = trimesh.creation.icosphere(subdivisions=1, radius=0.05)
    small.apply_translation([0.8, 0.0, 0.0])
    both = trimesh.util.concatenate([big, small])
    verts, faces = keep_large_components(both.vertices, both.faces, fraction=0.1)
    assert len(faces) == len(big.faces) and len(verts) == len(big.vertices)
    assert np.linalg.norm(verts, axis=1).max() < 0.51
    verts, faces = keep_large_components(both.vertices, both.faces, fraction=0.0)
    assert len(faces) == len(both.faces)


def test_empty_and_opaque_fields_are_refused():
    decoder = TriplaneDecoder(DecoderConfig(features=8, hidden=32, density_bias=-20.0)).eval()
    with pytest.raises(FitError, match="empty"):
        extract_mesh(torch.zeros(3, 8, 16, 16), decoder, resolution=24)
    planes, decoder = sphere_field()
    with pytest.raises(FitError, match="opaque everywhere"):
        extract_mesh(torch.zeros_like(planes), decoder, resolution=24)   # distance 0 everywhere: all inside


@pytest.fixture(scope="module")
def sphere_mesh():
    planes, decoder = sphere_field()
    return extract_mesh(planes, decoder, resolution=40)


@pytest.mark.parametrize("suffix", [".glb", ".ply", ".obj"])
def test_mesh_files_round_trip_with_vertex_colours(tmp_path, sphere_mesh, suffix):
    path = write_mesh(sphere_mesh, tmp_path / f"ball{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]          # no temporary left behind
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == len(sphere_mesh.vertices) and len(loaded.faces) == len(sphere_mesh.faces)
    assert np.allclose(loaded.vertices, sphere_mesh.vertices, atol=1e-5)
    assert loaded.visual.kind == "vertex"
    assert np.abs(loaded.visual.vertex_colors[:, :3].astype(int)
                  - sphere_mesh.visual.vertex_colors[:, :3].astype(int)).max() <= 1


def test_unknown_mesh_suffix_is_one_line(tmp_path, sphere_mesh):
    with pytest.raises(DataError, match=r"unknown mesh format '\.stl'") as info:
        write_mesh(sphere_mesh, tmp_path / "ball.stl")
    assert "\n" not in str(info.value) and not list(tmp_path.iterdir())


# --- the CLI ------------------------------------------------------------------------------------


def write_sphere_run(root, *, subject="ball", fitted=True):
    """A fit run folder as `rodin fit` leaves it, holding the sphere field (and an unfitted row)."""
    planes, decoder = sphere_field()
    save_component(decoder, root / "decoder", kind=DECODER_KIND)
    store = TriplaneStore.create(root / "triplanes", [subject, "pending"], ["train", "train"], tuple(planes.shape))
    if fitted:
        store.put([0], planes[None])
    return root


def run_cli(*args, capsys):
    from rodin.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_export_writes_the_default_path(tmp_path, capsys):
    run = write_sphere_run(tmp_path / "run")
    code, out, err = run_cli("export", run, "--format", "ply", "--resolution", "40", capsys=capsys)
    assert code in (0, None), err
    path = run / "export" / "ball.ply"
    mesh = trimesh.load(path, force="mesh", process=False)
    assert abs(np.linalg.norm(mesh.vertices - np.array(CENTRE), axis=1).mean() - RADIUS) < 0.01
    assert str(path) in out


def test_export_refuses_bad_requests_in_one_line(tmp_path, capsys):
    run = write_sphere_run(tmp_path / "run")
    for args, expected in [(("--format", "stl"), "unknown mesh format 'stl'"),
                           (("--out", tmp_path / "x.fbx"), "unknown mesh format '.fbx'"),
                           (("--format", "glb", "--out", tmp_path / "x.obj"), "does not end in .glb"),
                           (("--subject", "pending"), "not fitted yet"),
                           (("--subject", "nobody"), "no subject 'nobody'")]:
        code, _, err = run_cli("export", run, *args, capsys=capsys)
        assert code == 2, args
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not (run / "export").exists()
