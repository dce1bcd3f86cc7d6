"""3D-aware convolution over tri-planes (DESIGN.md, "3D-aware convolution").

Each plane is convolved together with what the other two planes hold along the same 3D lines: the
other planes are mean-pooled along the axis a line runs through, broadcast back over this plane and
concatenated on channels. Every target plane receives exactly one context that varies along its
width (a row vector, broadcast down the rows) and one that varies along its height (a column):

| target (H, W) | row context (varies along W)   | column context (varies along H) |
| ------------- | ------------------------------ | ------------------------------- |
| XY (y, x)     | XZ mean over z -> over x       | YZ mean over z -> over y        |
| XZ (z, x)     | XY mean over y -> over x       | YZ mean over y -> over z        |
| YZ (z, y)     | XY mean over x -> over y       | XZ mean over x -> over z        |

A k x k convolution of a map that is constant down its rows equals a 1D convolution of the row
vector (its kernel summed over the rows), broadcast back. So the concatenated convolution is
computed as `conv2d(plane) + broadcast(conv1d(row)) + broadcast(conv1d(column))`: the same linear
map as concatenating then convolving (with the broadcast channels' kernels in their centre row /
column, tested against that literal form), at about the cost of the plain convolution instead of 3x.

Tensors inside the UNet are "folded": (B*3, C, H, W), planes XY, XZ, YZ consecutive per example.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fold(rolled: Tensor) -> Tensor:
    """(B, C, H, 3W) roll-out -> (B*3, C, H, W), so that per-plane layers see one plane at a time."""
    b, c, h, w3 = rolled.shape
    return rolled.reshape(b, c, h, 3, w3 // 3).permute(0, 3, 1, 2, 4).reshape(b * 3, c, h, w3 // 3)


def unfold(folded: Tensor) -> Tensor:
    """(B*3, C, H, W) -> (B, C, H, 3W); the inverse of `fold`."""
    b3, c, h, w = folded.shape
    return folded.reshape(b3 // 3, 3, c, h, w).permute(0, 2, 3, 1, 4).reshape(b3 // 3, c, h, 3 * w)


def axis_contexts(folded: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column contexts of every plane, per the table above: (B*3, C, W) and (B*3, C, H)."""
    b3, c, h, w = folded.shape
    if h != w:
        raise ValueError(f"3D-aware convolution needs square planes, got {h}x{w}")
    planes = folded.reshape(b3 // 3, 3, c, h, w)
    xy, xz, yz = planes[:, 0], planes[:, 1], planes[:, 2]
    rows = torch.stack([xz.mean(dim=-2), xy.mean(dim=-2), xy.mean(dim=-1)], dim=1)
    cols = torch.stack([yz.mean(dim=-2), yz.mean(dim=-1), xz.mean(dim=-1)], dim=1)
    return rows.reshape(b3, c, w), cols.reshape(b3, c, h)


class TriplaneConv(nn.Module):
    """A k x k convolution applied to each plane with shared weights; 3D-aware unless `aware=False`.

    Planes never bleed into each other at their borders (each is padded on its own), unlike a
    convolution run straight over the roll-out.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel: int = 3, aware: bool = True,
                 stride: int = 1) -> None:
        super().__init__()
        self.aware = aware
        self.stride = stride
        self.local = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2)
        if aware:
            self.rows = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
            self.cols = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)

    def zero_(self) -> TriplaneConv:
        """Start as the zero map (last layers of residual branches and of the UNet)."""
        for param in self.parameters():
            nn.init.zeros_(param)
        return self

    def forward(self, folded: Tensor) -> Tensor:
        out = self.local(folded)
        if not self.aware:
            return out
        rows, cols = axis_contexts(folded)
        return out + self.rows(rows)[:, :, None, :] + self.cols(cols)[:, :, :, None]

    def literal_weight(self) -> Tensor:
        """The (out, 3*in, k, k) kernel of the concatenate-then-convolve form [plane | row | column]."""
        out_c, in_c, k, _ = self.local.weight.shape
        row_k = torch.zeros(out_c, in_c, k, k, dtype=self.local.weight.dtype)
        col_k = torch.zeros_like(row_k)
        if self.aware:
            row_k[:, :, k // 2, :] = self.rows.weight
            col_k[:, :, :, k // 2] = self.cols.weight
        return torch.cat([self.local.weight, row_k, col_k], dim=1)


def literal_aware_conv(conv: TriplaneConv, folded: Tensor) -> Tensor:
    """Reference: broadcast the contexts, concatenate on channels, one 2D convolution (slow, for tests)."""
    b3, c, h, w = folded.shape
    rows, cols = axis_contexts(folded)
    stacked = torch.cat([folded, rows[:, :, None, :].expand(b3, c, h, w), cols[:, :, :, None].expand(b3, c, h, w)],
                        dim=1)
    k = conv.local.kernel_size[0]
    return F.conv2d(stacked, conv.literal_weight(), conv.local.bias, stride=conv.stride, padding=k // 2)
