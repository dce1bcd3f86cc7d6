"""Tri-plane feature sampling: the features of 3D points read from the planes XY, XZ and YZ.

A point (x, y, z) of the box [-1, 1]^3 reads plane XY at (x, y), plane XZ at (x, z) and plane YZ
at (y, z) (DESIGN.md, "Tri-plane axes"), each read exactly as

    F.grid_sample(plane, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

reads it, grid[..., 0] indexing the width and grid[..., 1] the height; the three planes' features
are summed. `PLANE_AXES` is the one place that table lives.

Backends, all with the same result:

- ``"grid_sample"``: the reference, one `F.grid_sample` per plane (the EG3D way).
- ``"torch"``: pure PyTorch, the 12 corners of a point (4 per plane) gathered in one
  `F.embedding_bag(mode="sum", per_sample_weights=...)` over a channels-last table.
  Works on any device and dtype.
- ``"kernel"``: a compiled C++ kernel (`rodin.triplane.kernel`), CPU, float32 only: channels-last
  reads, points visited in a cache-friendly order, race-free parallel backward.
- ``"auto"``: the kernel when it can be used (CPU float32 planes, kernel built), else ``"torch"``.

Gradients flow to the planes (what fitting needs). Points (and the batch index) are treated as
constants: they are detached, so no gradient reaches the points in any backend.

Non-finite coordinates: the ``"torch"`` and ``"kernel"`` paths read zeros from every plane a NaN or
infinite coordinate falls on (grid_sample returns NaN there).

Sampling the same planes many times (rendering in chunks)? Pass ``channels_last(planes)``: the
kernel then reads them in place instead of copying them to channels-last on every call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rodin.triplane.triplane import PLANE_NAMES  # noqa: F401 - ("xy", "xz", "yz"), the storage order

# (width axis, height axis) for each plane, in the storage order XY, XZ, YZ; axes 0, 1, 2 = x, y, z.
PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))
BACKENDS = ("auto", "kernel", "torch", "grid_sample")

_AXIS_INDEX = torch.tensor(PLANE_AXES, dtype=torch.long)     # (3, 2)


def axis_coordinates(points: Tensor) -> Tensor:
    """(N, 3) points -> (N, 3, 2): for each plane (XY, XZ, YZ) the (width, height) coordinates."""
    if points.shape[-1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {tuple(points.shape)}")
    return points[..., _AXIS_INDEX.to(points.device)]


def _check_inputs(planes: Tensor, points: Tensor, batch_index: Tensor | None) -> tuple[Tensor, Tensor]:
    if planes.dim() == 4:
        planes = planes.unsqueeze(0)
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be (B, 3, C, H, W) or (3, C, H, W), got {tuple(planes.shape)}")
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
    if batch_index is not None:
        if batch_index.shape != (points.shape[0],):
            raise ValueError(f"batch_index must be (N,) = ({points.shape[0]},), got {tuple(batch_index.shape)}")
        if batch_index.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"batch_index must be an integer tensor, got {batch_index.dtype}")
        if batch_index.numel():
            low, high = torch.aminmax(batch_index)
            if int(low) < 0 or int(high) >= planes.shape[0]:
                raise IndexError(
                    f"batch_index values must lie in [0, {planes.shape[0]}), got [{int(low)}, {int(high)}]"
                )
    return planes, points.detach()


def sample_triplane(planes: Tensor, points: Tensor, batch_index: Tensor | None = None, *,
                    backend: str = "auto") -> Tensor:
    """Summed tri-plane features of `points`.

    planes: (B, 3, C, H, W), or (3, C, H, W) for B = 1, planes in the order XY, XZ, YZ.
    points: (N, 3) world coordinates; the box [-1, 1]^3 covers the planes, points outside read zeros
        (partly, near the border: bilinear interpolation with zero padding).
    batch_index: (N,) integers, which tri-plane each point reads; None means tri-plane 0.
    Returns (N, C). Differentiable with respect to `planes` only (points are constants).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    planes, points = _check_inputs(planes, points, batch_index)
    if points.dtype != planes.dtype:
        points = points.to(planes.dtype)
    if backend == "auto":
        backend = "kernel" if _kernel_usable(planes) else "torch"
    if backend == "grid_sample":
        return _sample_grid_sample(planes, points, batch_index)
    if backend == "torch":
        return _sample_torch(planes, points, batch_index)
    if not _kernel_usable(planes):
        from rodin.triplane.kernel import load_kernel

        if load_kernel() is None:
            raise RuntimeError("the compiled tri-plane kernel is not available (see the warning above)")
        raise ValueError(f"the kernel backend needs float32 CPU planes, got {planes.dtype} on {planes.device}")
    return _KernelSample.apply(planes, points, batch_index)


def kernel_available() -> bool:
    """Whether the compiled kernel is built (building it on first call)."""
    from rodin.triplane.kernel import load_kernel

    return load_kernel() is not None


def _kernel_usable(planes: Tensor) -> bool:
    if planes.device.type != "cpu" or planes.dtype != torch.float32:
        return False
    return kernel_available()


# --- reference ---------------------------------------------------------------------------------


def _sample_grid_sample(planes: Tensor, points: Tensor, batch_index: Tensor | None) -> Tensor:
    """One `F.grid_sample` call per tri-plane (its three planes as the batch), summed over the planes."""
    B, _, C = planes.shape[:3]
    coords = axis_coordinates(points)                                   # (N, 3, 2)
    if batch_index is None:
        groups = [(0, None)]
    else:
        groups = [(b, torch.nonzero(batch_index == b).squeeze(1)) for b in range(B)]
    out = planes.new_zeros(points.shape[0], C)
    for b, rows in groups:
        grid = coords if rows is None else coords[rows]
        if grid.shape[0] == 0:
            continue
        grid = grid.permute(1, 0, 2).unsqueeze(1)                        # (3, 1, n, 2)
        read = F.grid_sample(planes[b], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        feats = read.sum(0).squeeze(1).t()                               # (n, C)
        if rows is None:
            out = feats
        else:
            out = out.index_put((rows,), feats)
    return out


# --- pure PyTorch ------------------------------------------------------------------------------


def corner_table(points: Tensor, batch_index: Tensor | None, height: int, width: int) -> tuple[Tensor, Tensor]:
    """The 12 corners that bilinear reads of the three planes touch, as rows of the channels-last table
    (B * 3 * H * W, C), and their weights: two (N, 12) tensors (int64 rows, weights in points' dtype).

    Corners outside a plane get weight 0 (zero padding) and a valid row, so the table can be indexed
    without masks. Non-finite coordinates read zeros.
    """
    coords = axis_coordinates(points)                                    # (N, 3, 2)
    size = coords.new_tensor([width, height])
    pix = ((coords + 1) * size - 1) / 2                                  # grid_sample, align_corners=False
    # Clamping changes nothing (a corner beyond -1 or the size has weight 0) but keeps the casts safe.
    pix = torch.nan_to_num(pix, nan=-2.0, posinf=-2.0, neginf=-2.0)
    pix = torch.maximum(torch.minimum(pix, size + 1), pix.new_tensor(-2.0))
    low = pix.floor()
    frac = pix - low
    low = low.long()                                                     # (N, 3, 2) ints
    high = low + 1
    limit = torch.tensor([width, height], device=points.device)
    w_low = torch.where((low >= 0) & (low < limit), 1 - frac, torch.zeros_like(frac))
    w_high = torch.where((high >= 0) & (high < limit), frac, torch.zeros_like(frac))
    lo = torch.maximum(low, torch.zeros_like(low))
    hi = torch.minimum(high, limit - 1)
    lo = torch.minimum(lo, limit - 1)
    hi = torch.maximum(hi, torch.zeros_like(hi))
    x0, y0, x1, y1 = lo[..., 0], lo[..., 1], hi[..., 0], hi[..., 1]      # (N, 3)
    wx0, wy0, wx1, wy1 = w_low[..., 0], w_low[..., 1], w_high[..., 0], w_high[..., 1]
    plane = torch.arange(3, device=points.device)
    if batch_index is not None:
        plane = batch_index.long()[:, None] * 3 + plane                 # (N, 3)
    base = plane * height
    r0 = (base + y0) * width
    r1 = (base + y1) * width
    rows = torch.stack([r0 + x0, r0 + x1, r1 + x0, r1 + x1], dim=-1)    # (N, 3, 4)
    weights = torch.stack([wx0 * wy0, wx1 * wy0, wx0 * wy1, wx1 * wy1], dim=-1)
    return rows.reshape(-1, 12), weights.reshape(-1, 12)


def _sample_torch(planes: Tensor, points: Tensor, batch_index: Tensor | None) -> Tensor:
    rows, weights = corner_table(points, batch_index, planes.shape[3], planes.shape[4])
    return _TorchSample.apply(planes, rows, weights)


class _TorchSample(torch.autograd.Function):
    """Forward: one `embedding_bag` over the channels-last table. Backward: `index_add_` of the
    weighted output gradients in chunks, about twice as fast on a CPU as embedding_bag's own
    backward (which also spends time on gradients of the weights, constants here)."""

    CHUNK = 16_384

    @staticmethod
    def forward(ctx, planes: Tensor, rows: Tensor, weights: Tensor) -> Tensor:
        B, _, C, H, W = planes.shape
        table = planes.detach().permute(0, 1, 3, 4, 2).reshape(B * 3 * H * W, C)   # channels-last copy
        ctx.shape = (B, C, H, W)
        ctx.save_for_backward(rows, weights)
        return F.embedding_bag(rows, table, mode="sum", per_sample_weights=weights)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor):
        rows, weights = ctx.saved_tensors
        B, C, H, W = ctx.shape
        grad = grad_output.new_zeros(B * 3 * H * W, C)
        step = _TorchSample.CHUNK
        for start in range(0, rows.shape[0], step):
            r, w = rows[start:start + step], weights[start:start + step]
            contribution = grad_output[start:start + step, None, :] * w[..., None]       # (n, 12, C)
            grad.index_add_(0, r.reshape(-1), contribution.reshape(-1, C))
        return grad.view(B, 3, H, W, C).permute(0, 1, 4, 2, 3).contiguous(), None, None


# --- compiled kernel ---------------------------------------------------------------------------


def channels_last(planes: Tensor) -> Tensor:
    """The same planes (B, 3, C, H, W) (or (3, C, H, W)), stored channels-last: a permuted view of a
    contiguous (..., 3, H, W, C) copy. The kernel reads such planes without copying them, which pays
    when the same planes are sampled many times (rendering in chunks); otherwise every call makes
    that copy itself. Differentiable like any copy."""
    moved = planes.movedim(-3, -1).contiguous()
    return moved.movedim(-1, -3)


def _is_channels_last(planes: Tensor) -> bool:
    B, _, C, H, W = planes.shape
    stride = planes.stride()
    return (stride[2] == 1 and stride[4] == C and stride[3] == W * C and stride[1] == H * W * C
            and (B == 1 or stride[0] == 3 * H * W * C))



class _KernelSample(torch.autograd.Function):
    """The C++ kernel. Forward reads a channels-last copy of the planes, backward scatters into
    channels-last buffers and returns (B, 3, C, H, W). Points are visited in a cache-friendly order
    computed once here. No gradient for points or the batch index."""

    @staticmethod
    def forward(ctx, planes: Tensor, points: Tensor, batch_index: Tensor | None) -> Tensor:
        from rodin.triplane.kernel import load_kernel

        ops = load_kernel()
        B, _, C, H, W = planes.shape
        points = points.contiguous()
        if batch_index is not None:
            batch_index = batch_index.to(torch.int64).contiguous()
        order = ops.order(points, batch_index, B, H, W, C)
        ctx.shape = (B, H, W)
        ctx.save_for_backward(points, batch_index, order)
        planes = planes.detach()
        if not _is_channels_last(planes):
            planes = planes.contiguous()
        return ops.forward(planes, points, batch_index, order)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor):
        from rodin.triplane.kernel import load_kernel

        points, batch_index, order = ctx.saved_tensors
        grad_planes = None
        if ctx.needs_input_grad[0]:
            grad_planes = load_kernel().backward(grad_output.contiguous().float(), points, batch_index, order,
                                                 *ctx.shape)
        return grad_planes, None, None
