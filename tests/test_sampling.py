"""Tri-plane sampling: the axis table, the backends against grid_sample, gradients."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rodin.triplane.sampling import PLANE_AXES, axis_coordinates, channels_last, sample_triplane

# Written out independently of PLANE_AXES: (width, height) world axes of XY, XZ, YZ (DESIGN.md).
EXPECTED_AXES = {0: ("x", "y"), 1: ("x", "z"), 2: ("y", "z")}
AXIS = {"x": 0, "y": 1, "z": 2}


@pytest.fixture(scope="module")
def kernel():
    from rodin.triplane.kernel import kernel_info, load_kernel

    ops = load_kernel()
    if ops is None:
        print(f"tri-plane kernel not available: {kernel_info()['error']}")
        pytest.skip(f"the compiled kernel cannot be built here: {kernel_info()['error']}")
    return ops


def backends(with_kernel: bool) -> list[str]:
    return ["grid_sample", "torch", "kernel"] if with_kernel else ["grid_sample", "torch"]


def test_axis_table():
    assert PLANE_AXES == tuple((AXIS[w], AXIS[h]) for w, h in EXPECTED_AXES.values())
    points = torch.tensor([[0.1, 0.2, 0.3]])
    coords = axis_coordinates(points)
    assert coords.shape == (1, 3, 2)
    assert torch.equal(coords[0], torch.tensor([[0.1, 0.2], [0.1, 0.3], [0.2, 0.3]]))


def _bilinear_support(u: torch.Tensor, v: torch.Tensor, row: int, col: int, height: int, width: int):
    """Weight of texel (row, col) when grid_sample (align_corners=False) reads (u, v)."""
    ix = ((u.double() + 1) * width - 1) / 2
    iy = ((v.double() + 1) * height - 1) / 2
    return (1 - (ix - col).abs()).clamp(min=0) * (1 - (iy - row).abs()).clamp(min=0)


@pytest.mark.parametrize("plane", [0, 1, 2])
def test_each_plane_is_read_at_its_axes(plane, request):
    """One texel set on one plane: exactly the points whose (width, height) coordinates of the table
    fall in its bilinear support see it, whatever their third coordinate. A swapped plane fails."""
    with_kernel = _kernel_or_none(request) is not None
    H, W, C = 6, 9, 2                                   # H != W so that a transposed read shows
    row, col = 2, 6
    planes = torch.zeros(3, C, H, W)
    planes[plane, :, row, col] = torch.tensor([1.0, -2.0])
    axis = torch.linspace(-1.05, 1.05, 29)
    points = torch.cartesian_prod(axis, axis, axis)     # (29^3, 3), columns x, y, z
    w_axis, h_axis = (AXIS[a] for a in EXPECTED_AXES[plane])
    expected = _bilinear_support(points[:, w_axis], points[:, h_axis], row, col, H, W)
    swapped = _bilinear_support(points[:, h_axis], points[:, w_axis], row, col, H, W)
    assert ((expected > 0) != (swapped > 0)).any()      # the test can tell a swap apart
    clear = ((expected > 1e-4) | (expected == 0))       # away from the support's edge
    for backend in backends(with_kernel):
        out = sample_triplane(planes, points, backend=backend)
        assert out.shape == (points.shape[0], C)
        changed = out.abs().sum(1) > 0
        assert torch.equal(changed[clear], (expected > 0)[clear]), backend
        torch.testing.assert_close(out[:, 0].double(), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(out[:, 1].double(), -2 * expected, atol=1e-5, rtol=0)
        # The third coordinate does not matter: same (w, h) -> same value.
        third = 3 - w_axis - h_axis
        moved = points.clone()
        moved[:, third] = torch.rand(points.shape[0]) * 2 - 1
        torch.testing.assert_close(sample_triplane(planes, moved, backend=backend), out, atol=1e-6, rtol=0)


def _kernel_or_none(request):
    try:
        return request.getfixturevalue("kernel")
    except pytest.skip.Exception:
        return None


def _border_points(H: int, W: int) -> torch.Tensor:
    """Points exactly on the box faces, on texel centres and edges, and just outside the support."""
    values = torch.tensor([-1.0, 1.0, 0.0, -1 - 1 / W, 1 + 1 / W, -1 + 1 / W, 1 - 1 / W, -1 - 1 / H,
                           1 + 1 / H, -1 + 1 / H, 1 - 1 / H, 0.5 / W, -2.0, 2.0])
    grid = torch.cartesian_prod(values, values, values)
    return grid[torch.randperm(grid.shape[0], generator=torch.Generator().manual_seed(1))[:1500]]


def _compare(planes: torch.Tensor, points: torch.Tensor, batch_index, names: list[str]):
    upstream = torch.randn(points.shape[0], planes.shape[-3], generator=torch.Generator().manual_seed(2))
    results = {}
    for name in names:
        p = planes.detach().clone().requires_grad_()
        out = sample_triplane(p, points, batch_index, backend=name)
        (out * upstream).sum().backward()
        results[name] = (out.detach(), p.grad)
    ref_out, ref_grad = results["grid_sample"]
    for name in names[1:]:
        out, grad = results[name]
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5, msg=f"{name} forward")
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5, msg=f"{name} plane gradient")


@pytest.mark.parametrize("C,H,W", [(13, 7, 11), (4, 5, 8), (8, 9, 6), (32, 16, 12)])
def test_backends_agree_batched(C, H, W, request):
    with_kernel = _kernel_or_none(request) is not None
    gen = torch.Generator().manual_seed(C)
    B = 3
    planes = torch.randn(B, 3, C, H, W, generator=gen)
    inside = torch.rand(1200, 3, generator=gen) * 2.6 - 1.3          # some outside the box
    points = torch.cat([inside, _border_points(H, W)])
    batch_index = torch.randint(0, B, (points.shape[0],), generator=gen)
    _compare(planes, points, batch_index, backends(with_kernel))


def test_backends_agree_unbatched_and_4d(request):
    with_kernel = _kernel_or_none(request) is not None
    gen = torch.Generator().manual_seed(5)
    planes = torch.randn(3, 5, 10, 10, generator=gen)
    points = torch.rand(700, 3, generator=gen) * 2 - 1
    _compare(planes.unsqueeze(0), points, None, backends(with_kernel))
    for name in backends(with_kernel):
        torch.testing.assert_close(sample_triplane(planes, points, backend=name),
                                   sample_triplane(planes.unsqueeze(0), points, backend="grid_sample"))


def test_kernel_large_planes_and_threads(kernel):
    """Planes too big for cache and many points: the kernel visits points in locality order and
    splits the backward over threads; results must not depend on either."""
    gen = torch.Generator().manual_seed(7)
    B, C, H, W = 2, 32, 96, 80
    planes = torch.randn(B, 3, C, H, W, generator=gen)
    points = torch.rand(20_000, 3, generator=gen) * 2.2 - 1.1
    batch_index = torch.randint(0, B, (points.shape[0],), generator=gen)
    assert kernel.order(points, batch_index, B, H, W, C).numel() == points.shape[0]  # sorted path taken
    _compare(planes, points, batch_index, ["grid_sample", "kernel"])
    threads = torch.get_num_threads()
    grads = []
    try:
        for count in (1, max(2, threads)):
            torch.set_num_threads(count)
            p = planes.clone().requires_grad_()
            sample_triplane(p, points, batch_index, backend="kernel").sum().backward()
            grads.append(p.grad)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)


def test_channels_last_planes(request):
    """Planes stored channels-last (read by the kernel without a copy) give the same values and
    gradients, for every backend."""
    with_kernel = _kernel_or_none(request) is not None
    gen = torch.Generator().manual_seed(11)
    planes = torch.randn(2, 3, 16, 9, 7, generator=gen, requires_grad=True)
    points = torch.rand(900, 3, generator=gen) * 2.2 - 1.1
    batch_index = torch.randint(0, 2, (900,), generator=gen)
    reference = sample_triplane(planes, points, batch_index, backend="grid_sample")
    (reference_grad,) = torch.autograd.grad(reference.sum(), planes)
    stored = channels_last(planes)
    assert stored.shape == planes.shape and not stored.is_contiguous()
    for name in backends(with_kernel)[1:]:
        out = sample_triplane(stored, points, batch_index, backend=name)
        (grad,) = torch.autograd.grad(out.sum(), planes)
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grad, reference_grad, atol=1e-5, rtol=1e-5)


def test_non_finite_points_read_nothing(request):
    with_kernel = _kernel_or_none(request) is not None
    planes = torch.randn(3, 4, 5, 6)
    nan, inf = float("nan"), float("inf")
    points = torch.tensor([[nan, nan, nan], [inf, -inf, inf], [1e30, -1e30, 1e30]])
    for name in ["torch", "kernel"] if with_kernel else ["torch"]:
        out = sample_triplane(planes, points, backend=name)
        assert torch.equal(out, torch.zeros(3, 4)), name


def test_auto_backend_and_dtypes(request):
    with_kernel = _kernel_or_none(request) is not None
    planes = torch.randn(2, 3, 4, 6, 6, dtype=torch.float64)
    points = torch.rand(50, 3) * 2 - 1                                   # float32 points, float64 planes
    batch_index = torch.randint(0, 2, (50,))
    out = sample_triplane(planes, points, batch_index)                   # auto -> torch path
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, sample_triplane(planes, points.double(), batch_index, backend="grid_sample"))
    if with_kernel:
        with pytest.raises(ValueError):
            sample_triplane(planes, points, batch_index, backend="kernel")


def test_points_get_no_gradient():
    planes = torch.randn(3, 4, 6, 6, requires_grad=True)
    points = (torch.rand(20, 3) * 2 - 1).requires_grad_()
    sample_triplane(planes, points).sum().backward()
    assert planes.grad is not None and points.grad is None


def test_gradcheck_torch_path_float64():
    gen = torch.Generator().manual_seed(3)
    planes = torch.randn(2, 3, 3, 4, 5, dtype=torch.float64, generator=gen).requires_grad_()
    points = (torch.rand(30, 3, generator=gen, dtype=torch.float64) * 2.4 - 1.2)
    batch_index = torch.randint(0, 2, (30,), generator=gen)
    assert torch.autograd.gradcheck(lambda p: sample_triplane(p, points, batch_index, backend="torch"), (planes,))
    assert torch.autograd.gradcheck(lambda p: sample_triplane(p, points, batch_index, backend="grid_sample"),
                                    (planes,))


def test_bad_inputs():
    planes = torch.randn(2, 3, 4, 5, 5)
    points = torch.zeros(4, 3)
    with pytest.raises(IndexError):
        sample_triplane(planes, points, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError):
        sample_triplane(planes, torch.zeros(4, 2))
    with pytest.raises(ValueError):
        sample_triplane(torch.randn(2, 2, 4, 5, 5), points)
    with pytest.raises(ValueError):
        sample_triplane(planes, points, backend="cuda-magic")
    assert sample_triplane(planes, torch.zeros(0, 3)).shape == (0, 4)


def test_kernel_can_be_disabled():
    code = "from rodin.triplane.kernel import load_kernel; assert load_kernel() is None; print('off')"
    env = dict(os.environ, RODIN_NO_KERNEL="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "off" in done.stdout
