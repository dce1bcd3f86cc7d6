"""The tri-plane denoising UNet (stage 2, and the backbone of the upsampler).

Input and output are roll-outs (B, C, H, 3W). Inside, planes are folded into the batch so that
convolutions, norms and resampling act per plane with shared weights; planes talk to each other
through the 3D-aware convolutions of the residual blocks and through self-attention over the
tokens of all three planes at the lowest resolutions. Timestep, conditioning vector z and a
learned per-plane embedding are summed into one embedding that drives a scale-shift of every
residual block (adaptive group norm).

A scale-shift acts alike on every texel, and convolutions and attention without positions are blind
to where they are (only the zero padding of the borders tells them); at the noisiest steps the input
holds nothing of the subject, so a tri-plane of a given z must be written from position and z alone.
`SpatialCondition` gives the input both, when the config asks for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rodin.config import UNetConfig
from rodin.diffusion.aware_conv import TriplaneConv, fold, unfold
from rodin.errors import ConfigError

CONV_KINDS = ("aware", "plain")


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, embed: int, *, groups: int, aware: bool,
                 dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = TriplaneConv(in_channels, out_channels, aware=aware)
        self.scale_shift = nn.Linear(embed, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = TriplaneConv(out_channels, out_channels, aware=aware).zero_()
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.scale_shift(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class TriplaneAttention(nn.Module):
    """Self-attention over the tokens of all three planes of an example: global 3D context."""

    def __init__(self, channels: int, *, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b3, c, h, w = x.shape
        tokens = self.norm(x).reshape(b3 // 3, 3, c, h * w).permute(0, 1, 3, 2).reshape(b3 // 3, 3 * h * w, c)
        q, k, v = self.qkv(tokens).reshape(b3 // 3, 3 * h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b3 // 3, 3 * h * w, c)
        out = self.out(attended).reshape(b3 // 3, 3, h * w, c).permute(0, 1, 3, 2).reshape(b3, c, h, w)
        return x + out


class Level(nn.Module):
    """Residual blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, channels: list[tuple[int, int]], embed: int, *, attention: bool, config: UNetConfig) -> None:
        super().__init__()
        aware = config.conv == "aware"
        self.blocks = nn.ModuleList(
            ResBlock(cin, cout, embed, groups=config.groups, aware=aware, dropout=config.dropout)
            for cin, cout in channels
        )
        self.attention = nn.ModuleList(
            TriplaneAttention(cout, heads=config.heads, groups=config.groups) if attention else nn.Identity()
            for _, cout in channels
        )


def unit_rms(latent: Tensor) -> Tensor:
    """z scaled to unit RMS per component, so a semantic z and a whitened PCA z read alike; zeros stay zero."""
    return latent / latent.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-6)


class SpatialCondition(nn.Module):
    """Extra input channels per folded plane: learned position planes and planes of z.

    z is brought to unit RMS per component (a semantic z is a unit vector, whose components are
    1/sqrt(dim) small; a whitened PCA z is already about there) before a linear map to
    (3, latent_channels, side, side) at the UNet's lowest resolution, enlarged bilinearly. The null z
    (zeros) stays zero and maps to the bias: the unconditional planes of guidance.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.side = config.resolution // 2 ** (len(config.multipliers) - 1)
        self.resolution = config.resolution
        self.latent_channels = config.latent_channels
        self.position = (nn.Parameter(torch.randn(3, config.position_channels, config.resolution, config.resolution))
                         if config.position_channels else None)
        self.latent = (nn.Linear(config.latent_dim, 3 * config.latent_channels * self.side ** 2)
                       if config.latent_channels else None)

    @property
    def channels(self) -> int:
        return (0 if self.position is None else self.position.shape[1]) + self.latent_channels

    def forward(self, latent: Tensor) -> Tensor:
        """(B*3, channels, R, R) for z (B, D)."""
        b = latent.shape[0]
        parts = []
        if self.position is not None:
            parts.append(self.position.to(latent.dtype).repeat(b, 1, 1, 1))
        if self.latent is not None:
            coarse = self.latent(unit_rms(latent)).reshape(3 * b, self.latent_channels, self.side, self.side)
            parts.append(F.interpolate(coarse, size=(self.resolution, self.resolution), mode="bilinear",
                                       align_corners=False))
        return torch.cat(parts, dim=1)


class TriplaneUNet(nn.Module):
    """Denoiser over roll-outs: forward(x (B, C, H, 3W), timesteps (B,), latent (B, D)) -> (B, C, H, 3W).

    `gradient_checkpointing` (a training switch, not part of the saved config) recomputes each
    block's activations in the backward pass instead of keeping them: less memory for the paper
    preset's 64² roll-outs, about a third more compute.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        check_unet_config(config)
        self.config = config
        self.gradient_checkpointing = False
        widths = [config.width * m for m in config.multipliers]
        embed = 4 * config.width
        self.time_proj = Timesteps(config.width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(config.width, embed)
        self.latent_embed = nn.Sequential(nn.Linear(config.latent_dim, embed), nn.SiLU(), nn.Linear(embed, embed))
        self.plane_embed = nn.Parameter(torch.zeros(3, embed))
        self.spatial = SpatialCondition(config) if config.position_channels or config.latent_channels else None
        extra = self.spatial.channels if self.spatial is not None else 0
        self.conv_in = TriplaneConv(config.channels + extra, widths[0], aware=False)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [widths[0]]
        current, side = widths[0], config.resolution
        for i, width in enumerate(widths):
            pairs = []
            for _ in range(config.blocks):
                pairs.append((current, width))
                current = width
                skips.append(current)
            self.down.append(Level(pairs, embed, attention=side in config.attention_resolutions, config=config))
            if i < len(widths) - 1:
                self.downsample.append(TriplaneConv(current, current, stride=2, aware=False))
                skips.append(current)
                side //= 2
        self.middle = Level([(current, current), (current, current)], embed, attention=True, config=config)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            pairs = []
            for _ in range(config.blocks + 1):
                pairs.append((current + skips.pop(), width))
                current = width
            self.up.append(Level(pairs, embed, attention=side in config.attention_resolutions, config=config))
            if i > 0:
                self.upsample.append(TriplaneConv(current, current, aware=False))
                side *= 2
        self.norm_out = nn.GroupNorm(config.groups, current)
        self.conv_out = TriplaneConv(current, config.channels, aware=config.conv == "aware").zero_()

    def embedding(self, timesteps: Tensor, latent: Tensor) -> Tensor:
        """One embedding per folded plane: (B*3, E)."""
        t = self.time_embed(self.time_proj(timesteps).to(latent.dtype))
        emb = t + self.latent_embed(latent)
        return (emb[:, None, :] + self.plane_embed[None]).reshape(-1, emb.shape[-1])

    def forward(self, x: Tensor, timesteps: Tensor, latent: Tensor) -> Tensor:
        b, c, h, w3 = x.shape
        if c != self.config.channels or w3 != 3 * h or h != self.config.resolution:
            raise ValueError(f"UNet expects roll-outs ({self.config.channels}, {self.config.resolution}, "
                             f"{3 * self.config.resolution}), got {tuple(x.shape[1:])}")
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(b)
        emb = self.embedding(timesteps, latent)
        folded = fold(x)
        if self.spatial is not None:
            folded = torch.cat([folded, self.spatial(latent.to(folded.dtype))], dim=1)
        h_ = self.conv_in(folded)
        skips = [h_]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attention):
                h_ = self._block(block, attn, h_, emb)
                skips.append(h_)
            if i < len(self.downsample):
                h_ = self.downsample[i](h_)
                skips.append(h_)
        for block, attn in zip(self.middle.blocks, self.middle.attention):
            h_ = self._block(block, attn, h_, emb)
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attention):
                h_ = self._block(block, attn, torch.cat([h_, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                h_ = self.upsample[i](F.interpolate(h_, scale_factor=2.0, mode="nearest"))
        return unfold(self.conv_out(F.silu(self.norm_out(h_))))

    def _block(self, block: ResBlock, attn: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(lambda x, e: attn(block(x, e)), h, emb, use_reentrant=False)
        return attn(block(h, emb))


def check_unet_config(config: UNetConfig) -> None:
    if config.conv not in CONV_KINDS:
        raise ConfigError(f"UNetConfig.conv must be one of {', '.join(CONV_KINDS)}, got {config.conv!r}")
    if not config.multipliers:
        raise ConfigError("UNetConfig.multipliers must name at least one level")
    levels = len(config.multipliers)
    if config.position_channels < 0 or config.latent_channels < 0:
        raise ConfigError("UNetConfig.position_channels and latent_channels cannot be negative")
    if config.resolution % (2 ** (levels - 1)):
        raise ConfigError(f"UNetConfig.resolution {config.resolution} cannot be halved {levels - 1} times")
    for width in [config.width * m for m in config.multipliers]:
        if width % config.groups:
            raise ConfigError(f"UNetConfig: width {width} is not divisible by groups={config.groups}")
