"""Stage 3: the upsampler diffusion model (DESIGN.md, "hierarchical synthesis").

It denoises full-resolution tri-planes while reading the base-resolution tri-plane, enlarged to full
resolution and concatenated to its input channels, and z. It predicts the clean planes (x0), as the
paper's conditional upsampler does, so a few DDIM steps suffice. The same 3D-aware UNet as stage 2
does the work: built for twice the plane channels in, with its last layer mapping back to the plane
channels. In every preset the UNet's output is added to the condition (`UpsamplerConfig.residual`): its last
layer starts at zero, so an untrained upsampler is exactly the enlargement and training only learns the
detail that enlargement misses. Training corrupts the condition (noise, blur, a down-and-up resize)
so that fitted planes look like what the base model makes; the noise level is appended to z, so the
model knows how far to trust its condition and sampling can ask for a little of it too.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rodin.config import UpsamplerConfig
from rodin.diffusion.aware_conv import TriplaneConv
from rodin.diffusion.base import (
    diffusion_target,
    register_plane_stats,
    sampling_scheduler,
    set_plane_stats,
    training_scheduler,
)
from rodin.diffusion.unet import TriplaneUNet, check_unet_config
from rodin.errors import ConfigError
from rodin.triplane.triplane import resize_planes, roll_in, roll_out

KIND = "upsampler-diffusion"
CONDITION_MODES = ("bicubic", "bilinear")


def check_upsampler_config(config: UpsamplerConfig) -> None:
    check_unet_config(config.unet)
    if config.condition_mode not in CONDITION_MODES:
        raise ConfigError(f"UpsamplerConfig.condition_mode must be one of {', '.join(CONDITION_MODES)}, "
                          f"got {config.condition_mode!r}")
    if not 0 < config.base_resolution < config.unet.resolution:
        raise ConfigError(f"UpsamplerConfig.base_resolution {config.base_resolution} must be below the plane "
                          f"side {config.unet.resolution}")
    if config.residual and config.diffusion.prediction != "sample":
        raise ConfigError("UpsamplerConfig.residual adds the output to the condition, so it needs x0 prediction "
                          f"(diffusion.prediction='sample'), got {config.diffusion.prediction!r}")


def gaussian_blur(planes: Tensor, sigma: Tensor) -> Tensor:
    """Blur each example's planes (B, 3, C, H, W) with its own sigma (B,) in texels (0 = unchanged)."""
    b, _, c, h, w = planes.shape
    radius = max(1, int(torch.ceil(3 * sigma.max()).item()))
    x = torch.arange(-radius, radius + 1, device=planes.device, dtype=planes.dtype)
    s = sigma.to(planes)[:, None].clamp_min(1e-3)
    kernel = torch.exp(-0.5 * (x[None] / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)                       # (B, K)
    flat = planes.reshape(1, b * 3 * c, h, w)
    per_channel = kernel.repeat_interleave(3 * c, dim=0)                    # (B*3*C, K)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, per_channel[:, None, None, :], groups=b * 3 * c)
    flat = F.conv2d(flat, per_channel[:, None, :, None], groups=b * 3 * c)
    return flat.reshape(b, 3, c, h, w)


class UpsamplerDiffusion(nn.Module):
    """Denoises normalised full-resolution roll-outs given an enlarged base tri-plane and z."""

    def __init__(self, config: UpsamplerConfig) -> None:
        super().__init__()
        check_upsampler_config(config)
        self.config = config
        u = config.unet
        self.unet = TriplaneUNet(replace(u, channels=2 * u.channels, latent_dim=u.latent_dim + 1))
        self.unet.conv_out = TriplaneConv(self.unet.conv_out.local.in_channels, u.channels,
                                          aware=u.conv == "aware").zero_()
        register_plane_stats(self, u.channels)
        self.noise = training_scheduler(config.diffusion)
        sampling_scheduler(config.diffusion)  # fail on a bad sampler name now, not after training

    @property
    def latent_dim(self) -> int:
        return self.config.unet.latent_dim

    set_stats = set_plane_stats

    def normalise(self, planes: Tensor) -> Tensor:
        """(B, 3, C, H, W) tri-planes at any side -> normalised planes of the same shape."""
        return (planes - self.plane_mean[:, None, None]) / self.plane_std[:, None, None]

    def denormalise(self, planes: Tensor) -> Tensor:
        return planes * self.plane_std[:, None, None] + self.plane_mean[:, None, None]

    def condition(self, low: Tensor, *, noise_level: Tensor, noise: Tensor | None = None,
                  blur: Tensor | None = None, shrink: Tensor | None = None) -> Tensor:
        """Normalised base planes (B, 3, C, r, r) -> the corrupted, enlarged condition roll-out (B, C, R, 3R).

        `noise_level` (B,) scales `noise` (B, 3, C, r, r); `blur` (B,) is a sigma in texels; `shrink` (B,)
        marks examples that are also halved and enlarged again.
        """
        cfg = self.config
        if low.shape[-1] != cfg.base_resolution:
            raise ValueError(f"the upsampler reads base planes of side {cfg.base_resolution}, got {low.shape[-1]}")
        if blur is not None and bool((blur > 0).any()):
            low = gaussian_blur(low, blur)
        if shrink is not None and bool(shrink.any()):
            small = resize_planes(resize_planes(low, max(1, cfg.base_resolution // 2)), cfg.base_resolution,
                                  mode=cfg.condition_mode)
            low = torch.where(shrink.bool()[:, None, None, None, None], small, low)
        if noise is not None:
            low = low + noise_level.to(low)[:, None, None, None, None] * noise.to(low)
        return roll_out(resize_planes(low, cfg.unet.resolution, mode=cfg.condition_mode))

    def forward(self, noisy: Tensor, timesteps: Tensor, condition: Tensor, latent: Tensor,
                noise_level: Tensor) -> Tensor:
        """Roll-outs (B, C, R, 3R) in and out; `latent` (B, D), `noise_level` (B,) of the condition."""
        z = torch.cat([latent, noise_level.to(latent)[:, None]], dim=1)
        out = self.unet(torch.cat([noisy, condition], dim=1), timesteps, z)
        return condition + out if self.config.residual else out

    def loss(self, clean: Tensor, condition: Tensor, latent: Tensor, noise_level: Tensor, *, noise: Tensor,
             timesteps: Tensor) -> Tensor:
        """MSE of the prediction for clean normalised roll-outs (x0 with the default config)."""
        noisy = self.noise.add_noise(clean, noise, timesteps)
        target = diffusion_target(self.noise, clean, noise, timesteps)
        return F.mse_loss(self(noisy, timesteps, condition, latent, noise_level).float(), target)

    @torch.no_grad()
    def sample(self, low: Tensor, latent: Tensor | None = None, *, steps: int | None = None,
               guidance_scale: float | None = None, sample_noise: float | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Full-resolution tri-planes (B, 3, C, R, R) from base tri-planes (B, 3, C, r, r) (not normalised).

        `latent` None conditions on the null z; `sample_noise` is the condition noise level (default:
        the config's); `generator` draws the starting noise and the condition noise.
        """
        cfg = self.config
        device = self.plane_mean.device
        b = low.shape[0]
        if latent is None:
            latent = torch.zeros(b, self.latent_dim, device=device)
        latent = latent.to(device)
        level = torch.full((b,), cfg.sample_noise if sample_noise is None else sample_noise, device=device)
        draw = dict(generator=generator, device=generator.device if generator is not None else "cpu")
        low_noise = torch.randn(low.shape, **draw)
        condition = self.condition(self.normalise(low.to(device).float()), noise_level=level, noise=low_noise)
        u = cfg.unet
        x = torch.randn(b, u.channels, u.resolution, 3 * u.resolution, **draw).to(device)
        scale = cfg.diffusion.guidance_scale if guidance_scale is None else guidance_scale
        guided = scale != 1.0 and bool(latent.abs().sum() > 0)
        scheduler = sampling_scheduler(cfg.diffusion)
        scheduler.set_timesteps(steps or cfg.diffusion.sample_steps, device=device)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(x, t)
            if guided:
                out = self(torch.cat([model_in, model_in]), t, torch.cat([condition, condition]),
                           torch.cat([latent, torch.zeros_like(latent)]), torch.cat([level, level]))
                cond, uncond = out.chunk(2)
                out = uncond + scale * (cond - uncond)
            else:
                out = self(model_in, t, condition, latent, level)
            x = scheduler.step(out, t, x).prev_sample
        if cfg.diffusion.prediction == "sample":
            x = out     # the last x0 itself, without the trace of noise a step to alpha_0 < 1 leaves
        return self.denormalise(roll_in(x))
