"""The latent prior: where z comes from when there is no portrait (DESIGN.md, stage 5).

A small diffusion model over z, as DALL-E 2's prior: conditioned on a sentence's embedding it
draws the z of an avatar that fits the sentence (text -> avatar); with the condition dropped
(the null vector, as for 20% of training examples) it draws the z of any avatar (unconditional
generation). A sentence leaves most of an avatar open ("a person with red hair" says nothing of
glasses), so drawing z, rather than regressing it, keeps that freedom.

The denoiser is a residual MLP that predicts z itself (x0, as DALL-E 2's prior); timestep and
text drive a scale-shift in every block. z lives on the sphere of radius sqrt(dim)
(`rodin.semantic.space.latent_from_embedding`), and samples are put back on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn

from rodin.config import PriorConfig
from rodin.diffusion.base import sampling_scheduler, training_scheduler
from rodin.semantic.space import latent_from_embedding

KIND = "latent-prior"


class PriorBlock(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.modulation = nn.Linear(hidden, 2 * hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        scale, shift = self.modulation(condition).chunk(2, dim=-1)
        return x + self.mlp(self.norm(x) * (1 + scale) + shift)


class LatentPrior(nn.Module):
    """predict(z_t, t, text) -> z_0; `sample(text)` draws z (B, dim)."""

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        self.time_proj = Timesteps(h, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(h, h)
        self.text_embed = nn.Sequential(nn.Linear(config.dim, h), nn.SiLU(), nn.Linear(h, h))
        self.inp = nn.Linear(config.dim, h)
        self.blocks = nn.ModuleList(PriorBlock(h) for _ in range(config.layers))
        self.out = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, config.dim))
        self.noise = training_scheduler(config.diffusion)
        sampling_scheduler(config.diffusion)

    @property
    def dim(self) -> int:
        return self.config.dim

    def forward(self, noisy: Tensor, timesteps: Tensor, text: Tensor) -> Tensor:
        """`text` (B, dim) is a unit text embedding, or zeros for none."""
        t = timesteps.expand(noisy.shape[0]) if timesteps.dim() == 0 else timesteps
        condition = F.silu(self.time_embed(self.time_proj(t).to(noisy.dtype)) + self.text_embed(text))
        x = self.inp(noisy)
        for block in self.blocks:
            x = block(x, condition)
        return self.out(x)

    def loss(self, latents: Tensor, text: Tensor, *, noise: Tensor, timesteps: Tensor) -> Tensor:
        noisy = self.noise.add_noise(latents, noise, timesteps)
        return F.mse_loss(self(noisy, timesteps, text), latents)

    @torch.no_grad()
    def sample(self, text: Tensor | None, *, count: int = 1, steps: int | None = None,
               guidance_scale: float | None = None, generator: torch.Generator | None = None) -> Tensor:
        """z (B, dim) on the sphere of radius sqrt(dim). `text` (B, dim) unit embeddings, or None for
        unconditional draws (then `count` of them)."""
        cfg = self.config.diffusion
        scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
        device = self.inp.weight.device
        if text is None:
            text, scale = torch.zeros(count, self.dim, device=device), 1.0
        text = text.to(device).float()
        x = torch.randn(text.shape[0], self.dim, generator=generator,
                        device=generator.device if generator is not None else "cpu").to(device)
        scheduler = sampling_scheduler(cfg)
        scheduler.set_timesteps(steps or cfg.sample_steps, device=device)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            if scale != 1.0:
                cond, uncond = self(torch.cat([x, x]), t, torch.cat([text, torch.zeros_like(text)])).chunk(2)
                out = uncond + scale * (cond - uncond)
            else:
                out = self(x, t, text)
            x = scheduler.step(out, t, x).prev_sample
        return latent_from_embedding(x)
