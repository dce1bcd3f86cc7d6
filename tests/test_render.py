"""The renderer, checked on a scene whose answer is known: an opaque cube of side 1."""

import math

import torch
from torch import nn

from rodin.config import DecoderConfig
from rodin.render.cameras import DEFAULT_RADIUS, camera_rays, orbit_cameras
from rodin.render.volume import OccupancyGrid, occupancy_from_density, render_rays, render_views
from rodin.triplane.decoder import DecodedPoints


class CubeDecoder(nn.Module):
    """Density is high where all three planes say "inside" (summed feature 3), red colour."""

    def __init__(self):
        super().__init__()
        self.config = DecoderConfig(features=1, view_dependent=False)

    def forward(self, features, directions=None):
        density = torch.relu(features - 2.5) * 2000.0
        rgb = torch.tensor([[1.0, 0.0, 0.0]]).expand(features.shape[0], 3)
        return DecodedPoints(density=density, rgb=rgb, extra=None)


def cube_planes(resolution=64):
    axis = (torch.arange(resolution) + 0.5) / resolution * 2 - 1
    inside = (axis.abs() < 0.5).float()
    square = inside[:, None] * inside[None, :]
    return square.expand(3, 1, resolution, resolution).clone()


def test_front_view_of_cube_has_exact_depth_silhouette_and_white_background():
    planes, decoder = cube_planes(), CubeDecoder()
    c2w = orbit_cameras([0.0], [0.0])
    rgb, depth, opacity = render_views(planes, decoder, c2w, 0.69, 64, samples=128, importance=32)
    centre = 32
    assert opacity[0, centre, centre] > 0.99
    assert abs(float(depth[0, centre, centre]) - (DEFAULT_RADIUS - 0.5)) < 0.05
    assert torch.allclose(rgb[0, centre, centre], torch.tensor([1.0, 0.0, 0.0]), atol=1e-2)
    # A corner pixel misses the cube: pure white, nothing accumulated.
    assert opacity[0, 0, 0] < 1e-4 and torch.allclose(rgb[0, 0, 0], torch.ones(3), atol=1e-4)
    # The silhouette's width matches the projection of the cube's front face.
    focal = 0.5 * 64 / math.tan(0.5 * 0.69)
    expected = 2 * 0.5 / (DEFAULT_RADIUS - 0.5) * focal
    width = float((opacity[0, centre] > 0.5).sum())
    assert abs(width - expected) <= 2.0


def test_occupancy_skipping_changes_nothing_visible():
    planes, decoder = cube_planes(), CubeDecoder()
    c2w = orbit_cameras([30.0], [20.0])
    full, _, _ = render_views(planes, decoder, c2w, 0.69, 32, samples=96)
    grid = occupancy_from_density(planes, decoder, resolution=32, threshold=0.5)
    assert 0 < grid.cells.float().mean() < 0.4       # most of the box is skipped
    skipped, _, _ = render_views(planes, decoder, c2w, 0.69, 32, samples=96, occupancy=grid)
    diff = (full - skipped).abs().amax(dim=-1)
    # Samples sit at other depths, so a few grazing edge pixels may differ; nothing else may.
    assert diff.mean() < 0.01 and (diff > 0.1).float().mean() < 0.03


def test_rays_per_ray_batch_index_reads_the_right_triplane():
    decoder = CubeDecoder()
    planes = torch.stack([cube_planes(), torch.zeros(3, 1, 64, 64)])
    rays = camera_rays(orbit_cameras([0.0], [0.0])[0], 0.69, 8).reshape(-1)
    centre = rays[torch.tensor([4 * 8 + 4, 4 * 8 + 4])]
    out = render_rays(planes, decoder, centre, samples=64, batch_index=torch.tensor([0, 1]))
    assert out.opacity[0] > 0.99 and out.opacity[1] < 1e-4


def test_cell_centres_are_xyz_indexed_zyx():
    centres = OccupancyGrid.cell_centres(4)
    assert torch.allclose(centres[0, 0, 3], torch.tensor([0.75, -0.75, -0.75]))
    assert torch.allclose(centres[3, 0, 0], torch.tensor([-0.75, -0.75, 0.75]))
