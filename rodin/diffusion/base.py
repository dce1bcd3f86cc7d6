"""Stage 2: the base diffusion model over normalised, rolled-out tri-planes.

The model owns its UNet, its noise schedule (diffusers schedulers, built from the config) and the
per-channel tri-plane statistics (buffers, so they travel inside model.safetensors). Training
draws DDPM noise levels; sampling runs DDIM or DPM-Solver with classifier-free guidance on z.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import Tensor, nn

from rodin.config import BaseModelConfig, DiffusionConfig
from rodin.diffusion.aware_conv import TriplaneConv
from rodin.diffusion.mean_planes import MeanPlanes
from rodin.diffusion.unet import TriplaneUNet
from rodin.errors import ConfigError
from rodin.triplane.triplane import roll_in, roll_out

KIND = "base-diffusion"
PREDICTIONS = ("epsilon", "v_prediction", "sample")
SAMPLERS = ("ddim", "dpm")


def training_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    if config.prediction not in PREDICTIONS:
        raise ConfigError(f"DiffusionConfig.prediction must be one of {', '.join(PREDICTIONS)}, "
                          f"got {config.prediction!r}")
    return DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction, clip_sample=False)


def sampling_scheduler(config: DiffusionConfig, sampler: str | None = None):
    sampler = sampler or config.sampler
    base = training_scheduler(config).config
    # "trailing" spacing starts sampling at the last training step, where the input is pure noise.
    if sampler == "ddim":
        return DDIMScheduler.from_config(base, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
    if sampler == "dpm":
        return DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++", solver_order=2,
                                                       timestep_spacing="trailing")
    raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


def diffusion_target(scheduler: DDPMScheduler, clean: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """What the model learns to predict at these noise levels: the noise, v, or the clean sample."""
    prediction = scheduler.config.prediction_type
    if prediction == "epsilon":
        return noise
    if prediction == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    return clean


def predicted_clean(scheduler: DDPMScheduler, noisy: Tensor, output: Tensor, timesteps: Tensor) -> Tensor:
    """The clean sample a model output implies at these noise levels (whatever it was trained to predict),
    for losses measured on the clean sample itself (renders of it)."""
    prediction = scheduler.config.prediction_type
    if prediction == "sample":
        return output
    alphas = scheduler.alphas_cumprod.to(device=noisy.device, dtype=noisy.dtype)[timesteps]
    a = alphas.sqrt().reshape(-1, *([1] * (noisy.dim() - 1)))
    s = (1.0 - alphas).sqrt().reshape(-1, *([1] * (noisy.dim() - 1)))
    if prediction == "epsilon":
        return (noisy - s * output) / a
    return a * noisy - s * output        # v-prediction: v = a * noise - s * clean


def register_plane_stats(module: nn.Module, channels: int) -> None:
    """Per-channel tri-plane mean and std as buffers: saved with the weights, so a model normalises alone."""
    module.register_buffer("plane_mean", torch.zeros(channels))
    module.register_buffer("plane_std", torch.ones(channels))


def set_plane_stats(module: nn.Module, mean: Tensor, std: Tensor) -> None:
    module.plane_mean.copy_(mean)
    module.plane_std.copy_(std.clamp_min(1e-6))


def denoising_loss(net: nn.Module, clean: Tensor, latent: Tensor, *, noise: Tensor, timesteps: Tensor,
                   channel_weights: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, output, noisy input) for clean normalised roll-outs. `net` is a BaseDiffusion or its
    distributed wrapper, called as a module so that DDP sees the forward. `channel_weights`
    (1, C, 1, 1) weighs the prediction's squared error per channel."""
    model = getattr(net, "module", net)     # DDP and FSDP keep the model as .module
    noisy = model.noise.add_noise(clean, noise, timesteps)
    target = diffusion_target(model.noise, clean, noise, timesteps)
    output, mean = net(noisy, timesteps, latent, with_mean=True)
    output = output.float()
    error = (output - target).pow(2)
    total = error.mean() if channel_weights is None else (error * channel_weights).mean()
    if mean is not None:
        total = total + model.config.mean_weight * F.mse_loss(mean.float(), clean)
    return total, output, noisy


class BaseDiffusion(nn.Module):
    """Denoises roll-outs of normalised base-resolution tri-planes, conditioned on z."""

    def __init__(self, config: BaseModelConfig) -> None:
        super().__init__()
        self.config = config
        u = config.unet
        if config.text_head and not config.mean_planes:
            raise ConfigError("BaseModelConfig.text_head needs mean_planes: the UNet reads the text head's planes "
                              "where it reads the mean-planes head's")
        self.text_planes = MeanPlanes(u, "linear") if config.text_head else None
        if config.mean_planes:
            self.mean_planes = MeanPlanes(u, config.mean_head)
            self.unet = TriplaneUNet(replace(u, channels=2 * u.channels))
            self.unet.conv_out = TriplaneConv(self.unet.conv_out.local.in_channels, u.channels,
                                              aware=u.conv == "aware").zero_()
        else:
            self.mean_planes = None
            self.unet = TriplaneUNet(u)
        register_plane_stats(self, u.channels)
        self.noise = training_scheduler(config.diffusion)
        sampling_scheduler(config.diffusion)  # fail on a bad sampler name now, not after training

    @property
    def latent_dim(self) -> int:
        return self.config.unet.latent_dim

    set_stats = set_plane_stats

    def normalise(self, planes: Tensor) -> Tensor:
        """(B, 3, C, H, W) tri-planes -> (B, C, H, 3W) normalised roll-outs."""
        return roll_out((planes - self.plane_mean[:, None, None]) / self.plane_std[:, None, None])

    def normalise_change(self, change: Tensor) -> Tensor:
        """(B, 3, C, H, W) differences of tri-planes (an edit's) -> (B, C, H, 3W) in normalised units."""
        return roll_out(change.to(self.plane_std) / self.plane_std[:, None, None])

    def denormalise(self, rolled: Tensor) -> Tensor:
        """(B, C, H, 3W) normalised roll-outs -> (B, 3, C, H, W) tri-planes for the decoder."""
        return roll_in(rolled) * self.plane_std[:, None, None] + self.plane_mean[:, None, None]

    def prompt_mean(self, text: Tensor) -> Tensor | None:
        """The text head's normalised roll-out (B, C, H, 3W) for text embeddings (B, D); None without one."""
        if self.text_planes is None:
            return None
        return self.text_planes(text.to(self.plane_mean.device, self.plane_mean.dtype))

    def forward(self, noisy: Tensor, timesteps: Tensor, latent: Tensor, *, with_mean: bool = False,
                mean: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor | None]:
        """The prediction for noisy roll-outs; with `with_mean`, also the mean-planes head's roll-out
        (None without the head), so that training gets both from one call (one DDP forward). A given
        `mean` (a prompt's, `prompt_mean`) stands in for the head's."""
        if self.mean_planes is None:
            out, mean = self.unet(noisy, timesteps, latent), None
        else:
            mean = (self.mean_planes(latent) if mean is None else mean).to(noisy.dtype)
            # The head learns from its own loss only; the UNet takes its roll-out as given.
            given = mean.detach()
            out = self.unet(torch.cat([noisy, given], dim=1), timesteps, latent)
            if self.config.diffusion.prediction == "sample":
                out = given + out
        return (out, mean) if with_mean else out

    def loss(self, clean: Tensor, latent: Tensor, *, noise: Tensor, timesteps: Tensor, keep_latent: Tensor) -> Tensor:
        """MSE of the prediction (noise, v or x0) for clean normalised roll-outs; z zeroed where not kept.
        With the mean-planes head, plus mean_weight times the head's MSE against the clean roll-outs."""
        latent = latent * keep_latent[:, None].to(latent.dtype)
        return denoising_loss(self, clean, latent, noise=noise, timesteps=timesteps)[0]

    @torch.no_grad()
    def sample(self, latent: Tensor | None, *, count: int | None = None, steps: int | None = None,
               guidance_scale: float | None = None, sampler: str | None = None,
               generator: torch.Generator | None = None, noise: Tensor | None = None,
               mean: Tensor | None = None) -> Tensor:
        """Tri-planes (B, 3, C, H, W). `latent` None samples unconditionally (the null z). The starting
        noise is drawn from `generator`, or given as `noise` (B, C, H, 3W). `mean` (B, C, H, 3W), a prompt's
        `prompt_mean`, replaces the mean-planes head's roll-out for the conditional prediction."""
        cfg = self.config.diffusion
        steps = steps or cfg.sample_steps
        scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
        device = self.plane_mean.device
        if latent is None:
            if count is None:
                raise ValueError("give a latent or a count")
            latent = torch.zeros(count, self.latent_dim, device=device)
            scale = 1.0
        latent = latent.to(device)
        b = latent.shape[0]
        u = self.config.unet
        if noise is None:
            noise = torch.randn(b, u.channels, u.resolution, 3 * u.resolution, generator=generator,
                                device=generator.device if generator is not None else "cpu")
        if noise.shape != (b, u.channels, u.resolution, 3 * u.resolution):
            raise ValueError(f"noise of shape {tuple(noise.shape)} does not fit {b} roll-outs")
        x = noise.to(device)
        scheduler = sampling_scheduler(cfg, sampler)
        scheduler.set_timesteps(steps, device=device)
        x = x * scheduler.init_noise_sigma
        guided = scale != 1.0 and bool(latent.abs().sum() > 0)
        if mean is not None:
            if self.mean_planes is None:
                raise ConfigError("this base model has no mean-planes head, so it reads no given mean")
            mean = mean.to(device=device, dtype=x.dtype)
            if mean.shape != x.shape:
                raise ValueError(f"mean of shape {tuple(mean.shape)} does not fit {b} roll-outs")
            if guided:      # the unconditional half keeps the null z's mean
                mean = torch.cat([mean, self.mean_planes(torch.zeros_like(latent)).to(x.dtype)])
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(x, t)
            if guided:
                out = self(torch.cat([model_in, model_in]), t, torch.cat([latent, torch.zeros_like(latent)]),
                           mean=mean)
                cond, uncond = out.chunk(2)
                out = uncond + scale * (cond - uncond)
            else:
                out = self(model_in, t, latent, mean=mean)
            x = scheduler.step(out, t, x).prev_sample
        return self.denormalise(x)
