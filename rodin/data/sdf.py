"""Signed distance fields of procedural avatars, built from primitives with materials.

A scene is a list of `Part`s (skin, eyes, hair, clothing, glasses, ...). Each part is a tree of
SDF nodes (ellipsoids, capsules, rounded boxes, tori, arcs, half-spaces; unions, smooth unions,
intersections, subtractions, displacements) and carries a material (albedo, specular strength,
optional procedural texture such as the iris of an eye or the shirt and tie of a suit). Parts are
combined with a hard union; the material of a surface point is that of the nearest part.

Every node evaluates points given as a float tensor (N, 3) and returns distances (N,), negative
inside. Nodes know a conservative bounding box; `AvatarSDF` uses the boxes of its parts to skip
points far from a part (`margin`), which makes the narrow-band grid and the shading cheap.

World: the avatar sits in [-1, 1]^3, y up, the face looking toward +z; it stays within radius 0.97
of the origin (the torso is cut by that sphere and by the plane y = -0.95, like a sculpted bust).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rodin.data.avatar import (
    CLOTH_COLOURS,
    EYE_COLOURS,
    FRAME_COLOURS,
    HAIR_COLOURS,
    AvatarAttributes,
    skin_rgb,
)

BUST_RADIUS = 0.97      # everything lies within this sphere
BUST_BOTTOM = -0.95     # the torso is cut flat here
INF = float("inf")

Vec = Sequence[float]


def _t(v: Vec) -> Tensor:
    return torch.as_tensor(v, dtype=torch.float32)


# --- rotations ----------------------------------------------------------------------------------

def rot_x(a: float) -> Tensor:
    c, s = math.cos(a), math.sin(a)
    return _t([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> Tensor:
    c, s = math.cos(a), math.sin(a)
    return _t([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> Tensor:
    c, s = math.cos(a), math.sin(a)
    return _t([[c, -s, 0], [s, c, 0], [0, 0, 1]])


# --- nodes --------------------------------------------------------------------------------------

class Node(abc.ABC):
    """An SDF: `node(p)` gives distances (N,) at points p (N, 3); `lo`, `hi` bound the solid."""

    lo: Tensor
    hi: Tensor

    @abc.abstractmethod
    def __call__(self, p: Tensor) -> Tensor:
        """Signed distances (N,) of points (N, 3)."""


def _box_of(center: Tensor, rot: Tensor | None, half: Tensor) -> tuple[Tensor, Tensor]:
    ext = half if rot is None else rot.abs() @ half
    return center - ext, center + ext


class _Local(Node):
    """A primitive with a centre and an optional rotation (world-from-local)."""

    def __init__(self, center: Vec, rot: Tensor | None = None) -> None:
        self.c = _t(center)
        self.rot = rot

    def local(self, p: Tensor) -> Tensor:
        q = p - self.c
        return q if self.rot is None else q @ self.rot


class Sphere(_Local):
    def __init__(self, center: Vec, r: float) -> None:
        super().__init__(center)
        self.r = float(r)
        self.lo, self.hi = self.c - r, self.c + r

    def __call__(self, p: Tensor) -> Tensor:
        return (p - self.c).norm(dim=-1) - self.r


class Ellipsoid(_Local):
    """Inigo Quilez's ellipsoid bound: exact on the surface, close elsewhere."""

    def __init__(self, center: Vec, radii: Vec, rot: Tensor | None = None) -> None:
        super().__init__(center, rot)
        self.r = _t(radii)
        self.lo, self.hi = _box_of(self.c, rot, self.r)

    def __call__(self, p: Tensor) -> Tensor:
        q = self.local(p)
        k0 = (q / self.r).norm(dim=-1)
        k1 = (q / (self.r * self.r)).norm(dim=-1).clamp_min(1e-9)
        return k0 * (k0 - 1.0) / k1


class Capsule(Node):
    """A segment a-b swept by a radius going linearly from r1 (at a) to r2 (at b)."""

    def __init__(self, a: Vec, b: Vec, r1: float, r2: float | None = None) -> None:
        self.a, self.b = _t(a), _t(b)
        self.r1 = float(r1)
        self.r2 = float(r1 if r2 is None else r2)
        self.ba = self.b - self.a
        self.inv_len2 = 1.0 / float(self.ba.dot(self.ba).clamp_min(1e-12))
        rmax = max(self.r1, self.r2)
        self.lo = torch.minimum(self.a, self.b) - rmax
        self.hi = torch.maximum(self.a, self.b) + rmax

    def __call__(self, p: Tensor) -> Tensor:
        pa = p - self.a
        h = ((pa @ self.ba) * self.inv_len2).clamp(0.0, 1.0)
        r = self.r1 + (self.r2 - self.r1) * h
        return (pa - h[:, None] * self.ba).norm(dim=-1) - r


class RoundBox(_Local):
    def __init__(self, center: Vec, half: Vec, radius: float = 0.0, rot: Tensor | None = None) -> None:
        super().__init__(center, rot)
        self.half = _t(half)
        self.radius = float(radius)
        self.lo, self.hi = _box_of(self.c, rot, self.half)

    def __call__(self, p: Tensor) -> Tensor:
        q = self.local(p).abs() - (self.half - self.radius)
        outside = q.clamp_min(0.0).norm(dim=-1)
        inside = q.amax(dim=-1).clamp_max(0.0)
        return outside + inside - self.radius


class Torus(_Local):
    """A ring of radius R around the local y axis, tube radius r; `squash` scales local (x, y, z)."""

    def __init__(self, center: Vec, R: float, r: float, rot: Tensor | None = None,
                 squash: Vec = (1.0, 1.0, 1.0)) -> None:
        super().__init__(center, rot)
        self.R, self.r = float(R), float(r)
        self.squash = _t(squash)
        self.min_squash = float(self.squash.min())
        half = _t([R + r, r, R + r]) * self.squash
        self.lo, self.hi = _box_of(self.c, rot, half)

    def __call__(self, p: Tensor) -> Tensor:
        q = self.local(p) / self.squash
        ring = torch.sqrt(q[:, 0] ** 2 + q[:, 2] ** 2) - self.R
        return torch.sqrt(ring ** 2 + q[:, 1] ** 2) * self.min_squash - self.r


class Arc(_Local):
    """Inigo Quilez's capped torus: an arc of radius R in the local xy plane, centred on the local
    +y axis and spanning +-angle around it, tube radius r."""

    def __init__(self, center: Vec, R: float, r: float, angle: float, rot: Tensor | None = None) -> None:
        super().__init__(center, rot)
        self.R, self.r = float(R), float(r)
        self.sc = (math.sin(angle), math.cos(angle))
        half = _t([R + r, R + r, r])
        self.lo, self.hi = _box_of(self.c, rot, half)

    def __call__(self, p: Tensor) -> Tensor:
        q = self.local(p)
        x, y = q[:, 0].abs(), q[:, 1]
        s, c = self.sc
        on_arc = c * x > s * y
        k = torch.where(on_arc, x * s + y * c, torch.sqrt(x * x + y * y))
        d2 = (q * q).sum(dim=-1) + self.R * self.R - 2.0 * self.R * k
        return torch.sqrt(d2.clamp_min(0.0)) - self.r


class Cylinder(_Local):
    """A capped cylinder along the local y axis (half height h), edges rounded by `round`."""

    def __init__(self, center: Vec, radius: float, h: float, rot: Tensor | None = None,
                 round: float = 0.0) -> None:
        super().__init__(center, rot)
        self.radius, self.h, self.round = float(radius), float(h), float(round)
        self.lo, self.hi = _box_of(self.c, rot, _t([radius, h, radius]))

    def __call__(self, p: Tensor) -> Tensor:
        q = self.local(p)
        dx = torch.sqrt(q[:, 0] ** 2 + q[:, 2] ** 2) - (self.radius - self.round)
        dy = q[:, 1].abs() - (self.h - self.round)
        outside = torch.sqrt(dx.clamp_min(0.0) ** 2 + dy.clamp_min(0.0) ** 2)
        return outside + torch.maximum(dx, dy).clamp_max(0.0) - self.round


class RectFrame(_Local):
    """A rounded rectangular ring in the local xy plane (glasses rims): outer half sizes (w, h),
    corner radius, rim width `t`, half depth along z."""

    def __init__(self, center: Vec, w: float, h: float, corner: float, t: float, depth: float,
                 rot: Tensor | None = None) -> None:
        super().__init__(center, rot)
        self.w, self.h, self.corner, self.t, self.depth = w, h, corner, t, depth
        self.lo, self.hi = _box_of(self.c, rot, _t([w, h, depth]))

    def __call__(self, p: Tensor) -> Tensor:
        q = self.local(p)
        half_t = 0.5 * self.t
        qx = q[:, 0].abs() - (self.w - half_t - self.corner)
        qy = q[:, 1].abs() - (self.h - half_t - self.corner)
        rect = (torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2) + torch.maximum(qx, qy).clamp_max(0)
                - self.corner)
        ring = rect.abs() - half_t
        dz = q[:, 2].abs() - self.depth
        outside = torch.sqrt(ring.clamp_min(0) ** 2 + dz.clamp_min(0) ** 2)
        return outside + torch.maximum(ring, dz).clamp_max(0)


class HalfSpace(Node):
    """The solid side of a plane: points with dot(p - point, normal) < 0 (normal points out)."""

    def __init__(self, point: Vec, normal: Vec) -> None:
        n = _t(normal)
        self.n = n / n.norm()
        self.offset = float(_t(point) @ self.n)
        self.lo = torch.full((3,), -INF)
        self.hi = torch.full((3,), INF)

    def __call__(self, p: Tensor) -> Tensor:
        return p @ self.n - self.offset


def _hull(children: Sequence[Node], pad: float = 0.0) -> tuple[Tensor, Tensor]:
    lo = torch.stack([c.lo for c in children]).amin(dim=0) - pad
    hi = torch.stack([c.hi for c in children]).amax(dim=0) + pad
    return lo, hi


class Union(Node):
    def __init__(self, *children: Node) -> None:
        self.children = list(children)
        self.lo, self.hi = _hull(self.children)

    def __call__(self, p: Tensor) -> Tensor:
        d = self.children[0](p)
        for child in self.children[1:]:
            d = torch.minimum(d, child(p))
        return d


def smin(a: Tensor, b: Tensor, k: float) -> Tensor:
    """Polynomial smooth minimum (blend width k)."""
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


class SmoothUnion(Node):
    def __init__(self, k: float, *children: Node) -> None:
        self.k = float(k)
        self.children = list(children)
        self.lo, self.hi = _hull(self.children, pad=self.k)

    def __call__(self, p: Tensor) -> Tensor:
        d = self.children[0](p)
        for child in self.children[1:]:
            d = smin(d, child(p), self.k)
        return d


class Intersect(Node):
    def __init__(self, *children: Node) -> None:
        self.children = list(children)
        self.lo = torch.stack([c.lo for c in self.children]).amax(dim=0)
        self.hi = torch.stack([c.hi for c in self.children]).amin(dim=0)

    def __call__(self, p: Tensor) -> Tensor:
        d = self.children[0](p)
        for child in self.children[1:]:
            d = torch.maximum(d, child(p))
        return d


class Subtract(Node):
    """a minus b (optionally smooth with blend width k)."""

    def __init__(self, a: Node, b: Node, k: float = 0.0) -> None:
        self.a, self.b, self.k = a, b, float(k)
        self.lo, self.hi = a.lo, a.hi

    def __call__(self, p: Tensor) -> Tensor:
        da, db = self.a(p), self.b(p)
        if self.k <= 0:
            return torch.maximum(da, -db)
        return -smin(-da, db, self.k)


class Displace(Node):
    """Bumps: d + amp * sin(f x) sin(f y) sin(f z), scaled back to stay (nearly) 1-Lipschitz."""

    def __init__(self, child: Node, amp: float, freq: float, phase: Vec = (0.0, 0.0, 0.0)) -> None:
        self.child, self.amp, self.freq = child, float(amp), float(freq)
        self.phase = _t(phase)
        self.scale = 1.0 / (1.0 + self.amp * self.freq * 0.8)
        self.lo, self.hi = child.lo - amp, child.hi + amp

    def __call__(self, p: Tensor) -> Tensor:
        s = torch.sin(p * self.freq + self.phase)
        return (self.child(p) + self.amp * s[:, 0] * s[:, 1] * s[:, 2]) * self.scale


# --- materials and parts ------------------------------------------------------------------------

Texture = Callable[[Tensor, Tensor], Tensor]   # (points (N, 3), base rgb (3,)) -> rgb (N, 3)


@dataclass(frozen=True)
class Material:
    rgb: tuple[float, float, float]   # sRGB albedo in [0, 1]
    specular: float = 0.1             # Blinn-Phong strength
    shininess: float = 20.0


@dataclass
class Part:
    name: str
    node: Node
    material: Material
    texture: Texture | None = None

    def albedo(self, p: Tensor) -> Tensor:
        base = _t(self.material.rgb)
        if self.texture is None:
            return base.expand(p.shape[0], 3)
        return self.texture(p, base)


class AvatarSDF:
    """The whole avatar: a hard union of parts.

    With `margin`, a part is evaluated only at points within its bounding box grown by `margin`;
    elsewhere it counts as `margin` away (a lower bound), which keeps every value below `margin`
    exact and the rest a safe underestimate clipped at `margin`. Without it, every part is
    evaluated everywhere.
    """

    def __init__(self, parts: list[Part], attrs: AvatarAttributes | None = None) -> None:
        self.parts = parts
        self.attrs = attrs
        self.specular = _t([part.material.specular for part in parts])
        self.shininess = _t([part.material.shininess for part in parts])
        self.boxes = torch.stack([torch.stack([part.node.lo, part.node.hi]) for part in parts])  # (P, 2, 3)

    def _selected(self, p: Tensor, i: int, margin: float) -> Tensor | None:
        """Indices of points in part i's grown box, or None for all of them."""
        lo, hi = self.boxes[i, 0] - margin, self.boxes[i, 1] + margin
        inside = ((p >= lo) & (p <= hi)).all(dim=-1)
        idx = inside.nonzero().squeeze(1)
        return None if idx.numel() == p.shape[0] else idx

    def part_distances(self, p: Tensor, margin: float | None = None) -> Tensor:
        """(P, N) distances of every part (+inf where a part was skipped, with `margin`)."""
        out = torch.full((len(self.parts), p.shape[0]), INF)
        for i, part in enumerate(self.parts):
            idx = None if margin is None else self._selected(p, i, margin)
            if idx is None:
                out[i] = part.node(p)
            elif idx.numel():
                out[i, idx] = part.node(p[idx])
        return out

    def distance(self, p: Tensor, margin: float | None = None) -> Tensor:
        if margin is None:
            d = self.parts[0].node(p)
            for part in self.parts[1:]:
                d = torch.minimum(d, part.node(p))
            return d
        return self.part_distances(p, margin).amin(dim=0).clamp_max(margin)

    def distance_and_part(self, p: Tensor, margin: float | None = 0.1) -> tuple[Tensor, Tensor]:
        """Distances (N,) and the index of the nearest part (N,) int64 (exact below `margin`)."""
        d, idx = self.part_distances(p, margin).min(dim=0)
        if margin is not None:
            d = d.clamp_max(margin)
        return d, idx

    def albedo(self, p: Tensor, part: Tensor) -> Tensor:
        """sRGB albedo (N, 3) of points p on the parts `part` (N,)."""
        out = torch.zeros(p.shape[0], 3)
        for i, prt in enumerate(self.parts):
            sel = (part == i).nonzero().squeeze(1)
            if sel.numel():
                out[sel] = prt.albedo(p[sel])
        return out

    def normals(self, p: Tensor, part: Tensor, eps: float = 1e-3) -> Tensor:
        """Unit normals (N, 3) from each point's own part (tetrahedral differences)."""
        k = _t([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]])
        out = torch.zeros(p.shape[0], 3)
        for i, prt in enumerate(self.parts):
            sel = (part == i).nonzero().squeeze(1)
            if not sel.numel():
                continue
            q = (p[sel][None, :, :] + eps * k[:, None, :]).reshape(-1, 3)
            d = prt.node(q).reshape(4, -1)
            out[sel] = (d[:, :, None] * k[:, None, :]).sum(dim=0)
        return F.normalize(out, dim=-1)

    def material_arrays(self, part: Tensor) -> tuple[Tensor, Tensor]:
        return self.specular[part], self.shininess[part]


# --- helpers to place features on the head --------------------------------------------------------

def surface_zs(node: Node, xy: Sequence[tuple[float, float]], z_start: float = 0.95,
               z_end: float = -0.4) -> list[float]:
    """z of the front-most surface of `node` along the lines (x, y, .): a scan, then bisection."""
    q = _t(xy).reshape(-1, 2)
    k = q.shape[0]
    zs = torch.linspace(z_start, z_end, 131)
    p = torch.cat([q[:, None, :].expand(k, zs.numel(), 2), zs[None, :, None].expand(k, -1, 1)], dim=-1)
    d = node(p.reshape(-1, 3)).reshape(k, -1)
    inside = d < 0
    first = torch.where(inside.any(dim=1), inside.float().argmax(dim=1), d.argmin(dim=1))
    lo_z = zs[first]                                   # inside (or the closest approach)
    hi_z = zs[(first - 1).clamp_min(0)]                # outside
    for _ in range(14):
        mid = 0.5 * (lo_z + hi_z)
        dm = node(torch.cat([q, mid[:, None]], dim=-1))
        lo_z = torch.where(dm < 0, mid, lo_z)
        hi_z = torch.where(dm < 0, hi_z, mid)
    return [float(v) for v in 0.5 * (lo_z + hi_z)]


def surface_z(node: Node, x: float, y: float) -> float:
    return surface_zs(node, [(x, y)])[0]


def surface_curve(node: Node, xy: Sequence[tuple[float, float]], depth: float, radii: Sequence[float]) -> Node:
    """A tube through points on the surface of `node` (each pushed `depth` below it along -z)."""
    zs = surface_zs(node, xy)
    pts = [(x, y, z - depth) for (x, y), z in zip(xy, zs, strict=True)]
    return Union(*[Capsule(pts[i], pts[i + 1], radii[i], radii[i + 1]) for i in range(len(pts) - 1)])


def _mix(a: Vec, b: Vec, t: float) -> tuple[float, float, float]:
    return tuple(float(a[i]) * (1 - t) + float(b[i]) * t for i in range(3))  # type: ignore[return-value]


def _scale(a: Vec, s: float) -> tuple[float, float, float]:
    return tuple(min(max(float(v) * s, 0.0), 1.0) for v in a)  # type: ignore[return-value]


def _smoothstep(e0: float, e1: float, x: Tensor) -> Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


# --- the avatar ---------------------------------------------------------------------------------

def build_avatar(attrs: AvatarAttributes) -> AvatarSDF:
    """Assemble the SDF parts of an avatar from its attributes (deterministic)."""
    s = attrs.shape
    w, hh, jaw, chin = s["head_width"], s["head_height"], s["jaw"], s["chin"]
    jitter = s["colour_jitter"]

    skin = skin_rgb(s["skin_tone"])
    hair_rgb = _scale(HAIR_COLOURS[attrs.hair_colour], 1.0 + 0.08 * jitter)
    cloth_rgb = _scale(CLOTH_COLOURS[attrs.clothing_colour], 1.0 - 0.06 * jitter)

    # Head: cranium, face, jaw and cheeks blended together.
    cran_c = (0.0, 0.47, -0.03)
    cran_r = (0.285 * w, 0.325 * hh, 0.335)
    cranium = Ellipsoid(cran_c, cran_r)
    face = Ellipsoid((0.0, 0.34, 0.05), (0.245 * w * (0.85 + 0.15 * jaw), 0.27, 0.265))
    jaw_node = Ellipsoid((0.0, 0.23 - 0.03 * (chin - 1), 0.075), (0.185 * jaw, 0.15 * chin, 0.2))
    cheek_r = 0.085 + 0.03 * s["cheeks"]
    cheeks = [Sphere((sx * 0.13 * w, 0.3, 0.17), cheek_r) for sx in (-1, 1)]
    head = SmoothUnion(0.07, cranium, face, jaw_node, *cheeks)

    # Eyes.
    eye_r = 0.062 * s["eye_size"]
    eye_y = 0.45 + s["eye_height"]
    eye_x = 0.105 * s["eye_spacing"] * (0.9 + 0.1 * w)
    eye_z = [surface_z(head, sx * eye_x, eye_y) - 0.5 * eye_r for sx in (-1, 1)]
    eye_centres = [(sx * eye_x, eye_y, ez) for sx, ez in zip((-1, 1), eye_z, strict=True)]

    # Neck.
    neck_r = 0.122 * s["neck"]
    neck = Capsule((0.0, -0.45, -0.035), (0.0, 0.2, -0.04), neck_r)

    # Ears.
    ear_scale = s["ear_size"] * {"small": 0.8, "normal": 1.0, "large": 1.25, "pointy": 1.0}[attrs.ears]
    ears: list[Node] = []
    for sx in (-1, 1):
        ex = sx * (0.285 * w - 0.01)
        ears.append(Ellipsoid((ex, eye_y - 0.03, -0.03), (0.035, 0.075 * ear_scale, 0.05 * ear_scale),
                              rot_y(sx * 0.25) @ rot_z(-sx * 0.1)))
        if attrs.ears == "pointy":
            ears.append(Capsule((ex, eye_y + 0.02, -0.04), (ex * 1.12, eye_y + 0.12, -0.08), 0.03, 0.006))

    # Nose.
    nose_size = s["nose_size"]
    tip_y = eye_y - 0.125 - 0.01 * nose_size
    base_z = surface_z(head, 0.0, tip_y)
    bridge = (0.0, eye_y - 0.02, surface_z(head, 0.0, eye_y - 0.02) - 0.01)
    nose_parts: list[Node]
    if attrs.nose == "small":
        tip = (0.0, tip_y + 0.01, base_z + 0.05 * nose_size)
        nose_parts = [Capsule(bridge, tip, 0.022, 0.03), Sphere(tip, 0.032 * nose_size)]
    elif attrs.nose == "button":
        tip = (0.0, tip_y + 0.005, base_z + 0.045 * nose_size)
        nose_parts = [Capsule(bridge, tip, 0.018, 0.025), Sphere(tip, 0.045 * nose_size)]
    elif attrs.nose == "long":
        tip = (0.0, tip_y - 0.025, base_z + 0.075 * nose_size)
        nose_parts = [Capsule(bridge, tip, 0.022, 0.03), Sphere(tip, 0.035 * nose_size)]
    elif attrs.nose == "wide":
        tip = (0.0, tip_y, base_z + 0.05 * nose_size)
        nose_parts = [Capsule(bridge, tip, 0.025, 0.035), Ellipsoid(tip, (0.06 * nose_size, 0.035, 0.035))]
        nose_parts += [Sphere((sx * 0.038 * nose_size, tip_y - 0.005, base_z + 0.015), 0.028) for sx in (-1, 1)]
    else:  # pointed
        tip = (0.0, tip_y - 0.005, base_z + 0.085 * nose_size)
        nose_parts = [Capsule(bridge, (0.0, tip_y + 0.005, base_z + 0.02), 0.022, 0.038),
                      Capsule((0.0, tip_y + 0.005, base_z + 0.02), tip, 0.038, 0.012)]
    nose = SmoothUnion(0.02, *nose_parts)

    # Mouth.
    mouth_y = tip_y - 0.085 - 0.015 * (chin - 1)
    mouth_w = 0.068 * s["mouth_width"]
    mouth_z = surface_z(head, 0.0, mouth_y)
    side_z = surface_z(head, mouth_w, mouth_y)
    parts_extra: list[Part] = []
    lip_rgb = _mix(skin, (0.72, 0.25, 0.28), 0.45)
    lips_mat = Material(lip_rgb, 0.3, 30)
    lip_r = 0.017
    if attrs.expression == "neutral":
        xs = [-mouth_w, -0.5 * mouth_w, 0.0, 0.5 * mouth_w, mouth_w]
        lips: Node = surface_curve(head, [(x, mouth_y + 0.004 * (x / mouth_w) ** 2) for x in xs], 0.006,
                                   [0.7 * lip_r, lip_r, 1.1 * lip_r, lip_r, 0.7 * lip_r])
    elif attrs.expression == "smile":
        xs = [-1.12, -0.8, -0.4, 0.0, 0.4, 0.8, 1.12]
        lips = surface_curve(head, [(x * mouth_w, mouth_y + 0.035 * x * x - 0.008) for x in xs], 0.006,
                             [0.75 * lip_r, lip_r, 1.15 * lip_r, 1.2 * lip_r, 1.15 * lip_r, lip_r, 0.75 * lip_r])
    else:  # open
        inner = Ellipsoid((0.0, mouth_y - 0.005, mouth_z - 0.012), (0.8 * mouth_w, 0.042, 0.03))
        parts_extra.append(Part("mouth", inner, Material((0.28, 0.05, 0.07), 0.1, 10)))
        teeth = RoundBox((0.0, mouth_y + 0.022, mouth_z - 0.006), (0.55 * mouth_w, 0.01, 0.02), 0.006)
        parts_extra.append(Part("teeth", teeth, Material((0.96, 0.95, 0.9), 0.4, 40)))
        lips = Torus((0.0, mouth_y - 0.005, mouth_z - 0.01), 0.8 * mouth_w + 0.006, 0.015, rot_x(math.pi / 2),
                     squash=(1.0, 1.0, 0.048 / (0.8 * mouth_w + 0.006)))
    parts_extra.append(Part("lips", lips, lips_mat))

    skin_node = SmoothUnion(0.05, head, neck, *ears)
    skin_node = SmoothUnion(0.025, skin_node, nose)

    # Brows.
    brow_rgb = _scale(hair_rgb, 0.65) if sum(hair_rgb) > 0.6 else hair_rgb
    if attrs.hair_style == "bald" and attrs.hair_colour in ("white", "platinum", "grey"):
        brow_rgb = _scale(hair_rgb, 0.8)
    bt = s["brow_thickness"]
    brow_y = eye_y + eye_r + 0.04 + s["brow_height"]
    brows: list[Node] = []
    r, lift = {"thin": (0.013, (0.0, 0.008, 0.01, 0.0)), "thick": (0.021, (0.0, 0.005, 0.005, 0.0)),
               "straight": (0.016, (0.0, 0.0, 0.0, 0.0)), "arched": (0.015, (-0.005, 0.017, 0.02, 0.0)),
               "angled": (0.017, (-0.02, -0.004, 0.008, 0.016))}[attrs.brows]
    r *= bt
    for sx in (-1, 1):
        xs = [eye_x - 0.055, eye_x - 0.018, eye_x + 0.022, eye_x + 0.06]
        pts = [(sx * x, brow_y + dy) for x, dy in zip(xs, lift, strict=True)]
        brows.append(surface_curve(head, pts, 0.3 * r, [r, r, 0.9 * r, 0.7 * r]))
    brow_node = Union(*brows)

    # Stubble and blush on the skin texture.
    beard_region: Node = Intersect(
        Ellipsoid((0.0, 0.22, 0.07), (0.215 * jaw + 0.02, 0.2 * chin, 0.24)),
        HalfSpace((0.0, mouth_y + 0.045, 0.0), (0.0, 1.0, -0.2)),
    )
    beard_region = Union(
        Intersect(beard_region, HalfSpace((0.0, 0.0, -0.05), (0.0, 0.0, -1.0))),
        Intersect(Ellipsoid((0.0, eye_y - 0.05, 0.0), (0.30 * w, 0.14, 0.2)),
                  HalfSpace((0.0, 0.0, 0.02), (0.0, 0.0, 1.0)),
                  HalfSpace((0.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
                  HalfSpace((0.0, eye_y + 0.03, 0.0), (0.0, 1.0, 0.0))),
    )
    stubble_rgb = _mix(skin, _scale(hair_rgb, 0.6), 0.5)
    cheek_pts = _t([[sx * 0.14 * w, 0.31, 0.22] for sx in (-1, 1)])
    blush_rgb = _t(_mix(skin, (skin[0], skin[1] * 0.75, skin[2] * 0.75), 1.0))
    stubble = attrs.beard == "stubble"

    def skin_texture(p: Tensor, base: Tensor) -> Tensor:
        rgb = base.expand(p.shape[0], 3).clone()
        dc = torch.cdist(p, cheek_pts).amin(dim=1)
        blush = (1.0 - dc / 0.09).clamp(0.0, 1.0) ** 2 * 0.5
        rgb = rgb + (blush_rgb - rgb) * blush[:, None]
        if stubble:
            m = _smoothstep(0.0, 0.025, -beard_region(p))
            grain = 0.75 + 0.25 * torch.sin(p[:, 0] * 157.0) * torch.sin(p[:, 1] * 131.0 + 1.0)
            rgb = rgb + (_t(stubble_rgb) - rgb) * (m * grain)[:, None]
        return rgb

    parts: list[Part] = [
        Part("skin", skin_node, Material(skin, 0.12, 18), skin_texture),
    ]

    # Eyes: white eyeball with iris and pupil painted where the gaze points.
    iris_rgb = _t(EYE_COLOURS[attrs.eye_colour])
    gaze = F.normalize(_t([s["gaze_x"], s["gaze_y"], 1.0]), dim=0)
    cos_iris, cos_pupil = math.cos(0.68), math.cos(0.3)
    eye_c = _t(eye_centres)

    def eye_texture(p: Tensor, base: Tensor) -> Tensor:
        side = (p[:, 0] > 0).long()
        v = F.normalize(p - eye_c[side], dim=-1)
        # Each eye turns a little toward the middle (cartoon look) on top of the shared gaze.
        g = F.normalize(gaze[None, :] + _t([0.06, 0.0, 0.0]) * (1 - 2 * side[:, None]).float(), dim=-1)
        cosang = (v * g).sum(dim=-1)
        rgb = base.expand(p.shape[0], 3).clone()
        ring = _smoothstep(cos_iris - 0.02, cos_iris + 0.02, cosang)
        rgb = rgb + (iris_rgb - rgb) * ring[:, None]
        dark = _smoothstep(cos_iris + 0.04, cos_iris + 0.12, cosang) * 0.25
        rgb = rgb * (1.0 - dark[:, None] * (1 - _smoothstep(cos_pupil - 0.02, cos_pupil + 0.02, cosang)[:, None]))
        pupil = _smoothstep(cos_pupil - 0.015, cos_pupil + 0.015, cosang)
        return rgb * (1.0 - 0.97 * pupil[:, None])

    eyes = Union(*[Sphere(c, eye_r) for c in eye_centres])
    parts.append(Part("eyes", eyes, Material((0.97, 0.97, 0.96), 0.6, 70), eye_texture))
    # Upper eyelids: skin caps over the top of each eye give a gentler, less staring look.
    lids = [Intersect(Sphere(c, eye_r + 0.008), HalfSpace((c[0], c[1] + 0.8 * eye_r, c[2]), (0.0, -1.0, -0.2)))
            for c in eye_centres]
    parts.append(Part("eyelids", Union(*lids), Material(_scale(skin, 0.95), 0.12, 18)))
    parts.append(Part("brows", brow_node, Material(brow_rgb, 0.1, 10)))
    parts.extend(parts_extra)

    # Torso and clothing.
    sw = s["shoulders"]
    torso = SmoothUnion(
        0.12,
        Capsule((-0.5 * sw, -0.37, -0.03), (0.5 * sw, -0.37, -0.03), 0.19),
        Ellipsoid((0.0, -0.57, -0.01), (0.5 * sw, 0.42, 0.27)),
        Ellipsoid((0.0, -0.21, -0.04), (0.3, 0.1, 0.19)),
    )
    cut = Intersect(Sphere((0.0, 0.0, 0.0), BUST_RADIUS), HalfSpace((0.0, BUST_BOTTOM, 0.0), (0.0, -1.0, 0.0)))
    torso_node: Node = Intersect(torso, cut)
    collar_y = -0.19
    cloth_mat = Material(cloth_rgb, 0.05, 10)
    front_z = surface_z(torso, 0.0, collar_y - 0.08)
    extras: list[Node] = []
    trim_rgb = _scale(cloth_rgb, 0.8) if sum(cloth_rgb) > 0.5 else _scale(cloth_rgb, 1.4)
    white = (0.95, 0.95, 0.94)
    cloth_texture: Texture | None = None
    if attrs.clothing == "t-shirt":
        extras.append(Torus((0.0, collar_y + 0.035, -0.02), neck_r + 0.012, 0.02, rot_x(-0.12)))
    elif attrs.clothing == "hoodie":
        hood = Torus((0.0, collar_y + 0.05, -0.1), neck_r + 0.085, 0.075, rot_x(-0.35))
        extras.append(hood)
        for sx in (-1, 1):
            z0 = surface_z(torso, sx * 0.07, collar_y - 0.05)
            z1 = surface_z(torso, sx * 0.08, collar_y - 0.3)
            parts.append(Part(f"string_{'lr'[sx > 0]}", Capsule(
                (sx * 0.07, collar_y - 0.03, z0 + 0.005), (sx * 0.08, collar_y - 0.3, z1 + 0.005), 0.014),
                Material(white, 0.1, 10)))
    elif attrs.clothing == "turtleneck":
        extras.append(Cylinder((0.0, -0.1, -0.035), neck_r + 0.03, 0.16, round=0.03))
        extras.append(Torus((0.0, 0.045, -0.035), neck_r + 0.03, 0.025))
    elif attrs.clothing == "polo":
        for sx in (-1, 1):
            extras.append(RoundBox((sx * 0.07, collar_y + 0.02, front_z - 0.04), (0.055, 0.012, 0.04), 0.008,
                                   rot_z(sx * 0.45) @ rot_x(-0.9) @ rot_y(sx * 0.5)))

    tie_rgb = _t((0.6, 0.08, 0.1) if attrs.clothing_colour not in ("red", "pink", "orange") else (0.1, 0.12, 0.3))
    cloth_t, white_t = _t(cloth_rgb), _t(white)

    if attrs.clothing == "suit":
        def suit_texture(p: Tensor, base: Tensor) -> Tensor:
            x, y, z = p[:, 0], p[:, 1], p[:, 2]
            front = (z > 0.0).float()
            v_half = 0.02 + (y + 0.78).clamp_min(0.0) * 0.28
            shirt = ((x.abs() < v_half) & (y > -0.78)).float() * front
            tie_w = 0.018 + (-0.3 - y).clamp(0.0, 0.3) * 0.09
            tie = ((x.abs() < tie_w) & (y < collar_y + 0.02) & (y > -0.7)).float() * shirt
            lapel = ((x.abs() - v_half).abs() < 0.012).float() * front * (y > -0.8).float()
            rgb = cloth_t.expand(p.shape[0], 3) * (1 - 0.35 * lapel[:, None])
            rgb = torch.where(shirt[:, None] > 0, white_t.expand_as(rgb), rgb)
            return torch.where(tie[:, None] > 0, tie_rgb.expand_as(rgb), rgb)
        cloth_texture = suit_texture
    elif attrs.clothing == "polo":
        def polo_texture(p: Tensor, base: Tensor) -> Tensor:
            x, y, z = p[:, 0], p[:, 1], p[:, 2]
            placket = ((x.abs() < 0.03) & (y > -0.5) & (y < collar_y) & (z > 0)).float()
            button = torch.zeros_like(x)
            for by in (-0.35, -0.44):
                button = torch.maximum(button, ((x ** 2 + (y - by) ** 2) < 0.012 ** 2).float())
            rgb = cloth_t.expand(p.shape[0], 3) * (1 - 0.15 * placket[:, None])
            return rgb * (1 - 0.6 * button[:, None]) + white_t * 0.6 * button[:, None]
        cloth_texture = polo_texture
    elif attrs.clothing == "hoodie":
        def hoodie_texture(p: Tensor, base: Tensor) -> Tensor:
            x, y, z = p[:, 0], p[:, 1], p[:, 2]
            pocket = ((x.abs() < 0.3 - (y + 0.95) * 0.3) & (y < -0.72) & (z > 0.1)).float()
            edge = ((x.abs() - (0.3 - (y + 0.95) * 0.3)).abs() < 0.012).float() * (y < -0.72).float()
            edge = torch.maximum(edge, ((y + 0.72).abs() < 0.01).float() * (x.abs() < 0.1).float()) * (z > 0.1)
            return cloth_t.expand(p.shape[0], 3) * (1 - 0.1 * pocket[:, None] - 0.25 * edge[:, None])
        cloth_texture = hoodie_texture
    if extras:
        parts.append(Part("collar", Union(*extras), Material(trim_rgb if attrs.clothing == "t-shirt"
                                                                       else cloth_rgb, 0.05, 10)))
    parts.append(Part("clothing", torso_node, cloth_mat, cloth_texture))

    # Hair.
    hair = _hair(attrs, cran_c, cran_r, eye_y, head)
    hat_parts, hat_clip = _hat(attrs, cran_c, cran_r) if attrs.hat != "none" else ([], None)
    if hair is not None and hat_clip is not None:
        hair = Subtract(hair, hat_clip)      # no hair poking through the hat
    if hair is not None:
        hair_tex = _hair_texture()
        parts.append(Part("hair", hair, Material(hair_rgb, 0.22, 24), hair_tex))

    # Beard.
    if attrs.beard == "full":
        beard = Intersect(
            Ellipsoid((0.0, 0.22 - 0.03 * (chin - 1), 0.085),
                      (0.2 * jaw + 0.035, 0.165 * chin + 0.035, 0.235)),
            Union(HalfSpace((0.0, mouth_y + 0.04, 0.0), (0.0, 1.0, 0.0)),
                  Intersect(HalfSpace((0.0, eye_y - 0.04, 0.0), (0.0, 1.0, 0.0)),
                            Union(HalfSpace((-0.15 * w, 0.0, 0.0), (1.0, 0.0, 0.0)),
                                  HalfSpace((0.15 * w, 0.0, 0.0), (-1.0, 0.0, 0.0))))),
        )
        beard = Subtract(beard, Ellipsoid((0.0, mouth_y, mouth_z), (mouth_w + 0.025, 0.04, 0.06)), 0.01)
        moustache = Capsule((-mouth_w - 0.01, mouth_y + 0.005, side_z + 0.005),
                            (mouth_w + 0.01, mouth_y + 0.005, side_z + 0.005), 0.022)
        moustache = Intersect(Union(moustache, Ellipsoid((0.0, mouth_y + 0.035, mouth_z + 0.012),
                                                         (mouth_w + 0.01, 0.022, 0.025))),
                              HalfSpace((0.0, mouth_y + 0.022, 0.0), (0.0, -1.0, 0.0)))
        beard = Displace(SmoothUnion(0.02, beard, moustache), 0.006, 60.0, (0.3, 1.1, 0.7))
        parts.append(Part("beard", beard, Material(_scale(hair_rgb, 0.92), 0.15, 15),
                          _hair_texture()))

    # Glasses.
    if attrs.glasses != "none":
        parts.extend(_glasses(attrs, eye_centres, eye_r, head, w))

    # Hats.
    parts.extend(hat_parts)

    return AvatarSDF(parts, attrs)


def _hair_texture() -> Texture:
    def texture(p: Tensor, base: Tensor) -> Tensor:
        # Irregular clumps and faint strands, fixed in space: the same in every view.
        clump = torch.sin(p[:, 0] * 23.0 + 1.0) * torch.sin(p[:, 1] * 19.0 + 2.0) * torch.sin(p[:, 2] * 29.0)
        strand = torch.sin(p[:, 0] * 130.0 + p[:, 2] * 70.0 + torch.sin(p[:, 1] * 25.0) * 2.0)
        shade = 0.95 + 0.06 * clump + 0.025 * strand
        return base[None, :] * shade[:, None]
    return texture


def _hair(attrs: AvatarAttributes, cran_c: Vec, cran_r: Vec, eye_y: float, head: Node) -> Node | None:
    style = attrs.hair_style
    if style == "bald":
        return None
    vol = attrs.shape["hair_volume"]
    cx, cy, cz = cran_c
    rx, ry, rz = cran_r

    def cap(offset: float, front_y: float, back_y: float, side_drop: float = 0.0) -> Node:
        shell = Ellipsoid((cx, cy + 0.25 * offset, cz - 0.2 * offset), (rx + offset, ry + offset, rz + offset))
        # Hairline: a plane through (front_y at the forehead) and (back_y at the back of the head).
        zf, zb = cz + rz, cz - rz
        normal = (0.0, -(zf - zb), front_y - back_y)
        line = HalfSpace((0.0, front_y, zf), normal)
        node: Node = Intersect(shell, line)
        if side_drop > 0:   # sideburns: hair that comes down in front of the ears
            burns: list[Node] = []
            r = 0.02 + 0.3 * offset
            for sx in (-1, 1):
                ends = []
                for y, z in ((eye_y + 0.1, cz + 0.14), (eye_y - side_drop, cz + 0.1)):
                    f = max(1.0 - ((y - cy) / ry) ** 2 - ((z - cz) / rz) ** 2, 0.05)
                    ends.append((sx * (rx * math.sqrt(f) - 0.4 * r), y, z))
                burns.append(Capsule(ends[0], ends[1], r, 0.7 * r))
            node = SmoothUnion(0.02, node, *burns)
        return node

    top = cy + ry
    if style == "buzz":
        return cap(0.014, eye_y + 0.16, eye_y - 0.12, 0.02)
    if style == "short":
        base = cap(0.04 * vol, eye_y + 0.15, eye_y - 0.17, 0.05)
        fringe = Ellipsoid((0.04, top - 0.07, cz + 0.2), (0.2, 0.09 * vol, 0.14), rot_z(-0.25))
        return SmoothUnion(0.04, base, Intersect(fringe, HalfSpace((0.0, eye_y + 0.16, 0.0), (0.0, -1.0, 0.0))))
    if style == "long":
        base = cap(0.035 * vol, eye_y + 0.16, eye_y - 0.2, 0.1)
        back = Ellipsoid((0.0, eye_y - 0.25, cz - 0.13), (rx + 0.05, 0.42, 0.22))
        sides = [Capsule((sx * (rx + 0.0), eye_y + 0.12, cz + 0.06), (sx * (rx + 0.05), eye_y - 0.42, cz + 0.02),
                         0.07 * vol, 0.05) for sx in (-1, 1)]
        body = SmoothUnion(0.06, base, back, *sides)
        # Keep the face clear.
        face_cut = Ellipsoid((0.0, eye_y - 0.15, 0.3), (rx - 0.06, 0.35, 0.3))
        return Subtract(body, face_cut, 0.02)
    if style == "bun":
        base = cap(0.03, eye_y + 0.16, eye_y - 0.15, 0.04)
        bun = Sphere((0.0, top - 0.02, cz - 0.2), 0.11 * vol)
        return SmoothUnion(0.03, base, bun)
    if style == "ponytail":
        base = cap(0.03, eye_y + 0.16, eye_y - 0.13, 0.04)
        tail = Capsule((0.0, eye_y + 0.12, cz - rz - 0.02), (0.0, eye_y - 0.35, cz - rz - 0.1), 0.075 * vol, 0.04)
        tie = Torus((0.0, eye_y + 0.07, cz - rz - 0.04), 0.06 * vol, 0.018, rot_x(0.2))
        return SmoothUnion(0.03, base, tail, tie)
    if style == "curly":
        base = cap(0.065 * vol, eye_y + 0.13, eye_y - 0.2, 0.06)
        return Displace(base, 0.022, 38.0, (0.4, 0.9, 1.3))
    if style == "afro":
        r = min(0.38 * vol, 0.42)
        ball = Ellipsoid((0.0, 0.92 - r, cz - 0.04), (r + 0.09, r, r + 0.04))
        ball = Intersect(ball, Sphere((0.0, 0.0, 0.0), 0.93))
        face_cut = Ellipsoid((0.0, eye_y - 0.17, 0.36), (rx - 0.03, 0.34, 0.34))
        body = Subtract(ball, face_cut, 0.03)
        body = Intersect(body, HalfSpace((0.0, eye_y - 0.18, 0.0), (0.0, -1.0, 0.0)))
        return Displace(body, 0.022, 30.0, (0.2, 0.5, 0.9))
    if style == "mohawk":
        # A narrow ridge along the middle of the head, lower at the front, spiky.
        crest = Ellipsoid((0.0, cy + 0.03, cz - 0.03), (0.045, ry + 0.1 * vol, rz + 0.06), rot_x(-0.25))
        crest = Intersect(crest, HalfSpace((0.0, eye_y + 0.14, 0.0), (0.0, -1.0, 0.0)))
        return Displace(SmoothUnion(0.03, crest, cap(0.006, eye_y + 0.18, eye_y - 0.05)), 0.01, 40.0, (0.0, 0.7, 0.2))
    raise ValueError(f"unknown hair style {style!r}")


def _glasses(attrs: AvatarAttributes, eye_centres: list[tuple[float, float, float]], eye_r: float,
             head: Node, w: float) -> list[Part]:
    frame_rgb = FRAME_COLOURS.get(attrs.glasses_colour, FRAME_COLOURS["black"])
    metal = attrs.glasses_colour in ("gold", "silver")
    ey = eye_centres[0][1]
    gz = max(c[2] for c in eye_centres) + eye_r + 0.035
    ex = abs(eye_centres[0][0])
    rims: list[Node] = []
    lenses: list[Node] = []
    rim_t = 0.016
    if attrs.glasses == "round":
        R = eye_r + 0.018
        for sx in (-1, 1):
            rims.append(Torus((sx * ex, ey, gz), R, rim_t * 0.75, rot_x(math.pi / 2)))
        half_w = R
    else:
        half_w, half_h = eye_r + 0.03, eye_r + 0.008
        if attrs.glasses == "sunglasses":
            half_h += 0.01
        for sx in (-1, 1):
            rims.append(RectFrame((sx * ex, ey - 0.005, gz), half_w, half_h, 0.025, rim_t * 1.2, 0.013))
            if attrs.glasses == "sunglasses":
                lenses.append(RoundBox((sx * ex, ey - 0.005, gz - 0.002),
                                       (half_w - 0.006, half_h - 0.006, 0.011), 0.008))
    inner = ex - half_w
    rims.append(Arc((0.0, ey - 0.02, gz), 0.04, 0.009, math.asin(min(inner / 0.04, 0.99)) + 0.05))
    for sx in (-1, 1):
        ear_x = sx * (0.285 * w + 0.005)
        rims.append(Capsule((sx * (ex + half_w - 0.005), ey + 0.01, gz - 0.005), (ear_x, ey + 0.015, -0.02), 0.009))
    parts = [Part("glasses", Union(*rims), Material(frame_rgb, 0.7 if metal else 0.45, 60 if metal else 40))]
    if lenses:
        parts.append(Part("lenses", Union(*lenses), Material((0.04, 0.045, 0.06), 0.9, 120)))
    return parts


def _hat(attrs: AvatarAttributes, cran_c: Vec, cran_r: Vec) -> tuple[list[Part], Node]:
    """The hat's parts, and the region above its rim where hair must not show."""
    rgb = _scale(CLOTH_COLOURS[attrs.hat_colour], 1.0)
    cx, cy, cz = cran_c
    rx, ry, rz = cran_r
    mat = Material(rgb, 0.06, 10)
    front_y, back_y = cy + 0.1, cy - 0.1          # where the crown ends, at the forehead and at the back
    zf, zb = cz + rz, cz - rz
    rim = HalfSpace((0.0, front_y, zf), (0.0, -(zf - zb), front_y - back_y))
    if attrs.hat == "cap":
        off = 0.05
        crown = Intersect(Ellipsoid((cx, cy + 0.01, cz), (rx + off, ry + off - 0.01, rz + off)), rim)
        button = Sphere((cx, cy + ry + off - 0.005, cz), 0.022)
        # The brim: a flat half-disc leaving the crown's front edge, tilted slightly down.
        brim = Intersect(
            Cylinder((0.0, front_y - 0.005, zf - 0.05), 0.29, 0.015, rot_x(0.15), round=0.012),
            HalfSpace((0.0, 0.0, cz + 0.1), (0.0, 0.0, -1.0)),
        )
        trim = _scale(rgb, 0.8) if sum(rgb) > 0.5 else _scale(rgb, 1.5)
        clip = Intersect(Ellipsoid((cx, cy, cz), (rx + 0.25, ry + 0.25, rz + 0.25)),
                         HalfSpace((0.0, front_y - 0.015, zf), (0.0, -(zf - zb), front_y - back_y)))
        return [Part("hat", Union(crown, button), mat), Part("brim", brim, Material(trim, 0.06, 10))], clip
    # beanie: sits lower than a cap, with a folded band at the rim
    off = 0.06
    lower = HalfSpace((0.0, front_y - 0.03, zf), (0.0, -(zf - zb), front_y - back_y))
    crown = Intersect(Ellipsoid((cx, cy + 0.02, cz - 0.01), (rx + off, ry + off - 0.015, rz + off)), lower)
    crown = Displace(crown, 0.005, 55.0, (0.0, 1.57, 0.0))
    band_top = HalfSpace((0.0, front_y + 0.06, zf), (0.0, zf - zb, -(front_y - back_y)))
    band = Intersect(Ellipsoid((cx, cy + 0.02, cz - 0.01), (rx + off + 0.02, ry + off, rz + off + 0.02)),
                     lower, band_top)

    def ribs(p: Tensor, base: Tensor) -> Tensor:
        ang = torch.atan2(p[:, 0], p[:, 2])
        return base[None, :] * (0.9 + 0.1 * torch.sin(ang * 24.0))[:, None]

    clip = Intersect(Ellipsoid((cx, cy, cz), (rx + 0.25, ry + 0.25, rz + 0.25)),
                     HalfSpace((0.0, front_y - 0.045, zf), (0.0, -(zf - zb), front_y - back_y)))
    return [Part("hat", crown, mat, ribs), Part("hat_band", band, mat, ribs)], clip


__all__ = [
    "Arc", "AvatarSDF", "Capsule", "Cylinder", "Displace", "Ellipsoid", "HalfSpace", "Intersect",
    "Material", "Node", "Part", "RectFrame", "RoundBox", "SmoothUnion", "Sphere", "Subtract", "Torus", "Union",
    "build_avatar", "rot_x", "rot_y", "rot_z", "smin", "surface_curve", "surface_z", "surface_zs",
]
