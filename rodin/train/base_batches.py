"""The batches of base-diffusion training, read ahead by DataLoader workers.

Step k's randomness (rows of the global batch, noise, noise levels, z dropout) comes from a generator
seeded by (seed, k), and an item of `BaseSteps` is a pure function of k: worker processes may read
steps ahead in any order and the loader still hands them over in step order, so a run with workers
trains exactly as one without, on any number of processes. The loader is a plain torch DataLoader,
not one prepared by accelerate: accelerate would deal batches out to processes, whereas here every
process draws the same global batch and reads only its own rows of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from rodin.fit.store import TriplaneStore
from rodin.train.loop import step_generator
from rodin.train.render_loss import PatchDraw, draw_patches
from rodin.triplane.triplane import resize_planes


@dataclass
class StepBatch:
    """One step's draws for the whole global batch, and this process's planes (rows `share` of it)."""

    step: int
    rows: torch.Tensor         # (B,) indices into the training rows
    noise: torch.Tensor        # (B, C, R, 3R)
    timesteps: torch.Tensor    # (B,)
    keep: torch.Tensor         # (B,) 1 keeps z, 0 drops it
    planes: torch.Tensor       # (b, 3, C, R, R) float32, this process's rows at base resolution
    patches: PatchDraw | None = None   # where the render loss looks (global batch), when it is on

    def pin_memory(self) -> StepBatch:
        """Called by the DataLoader's pinning thread: page-locked copies for fast, async copies to a GPU."""
        return StepBatch(self.step, self.rows, self.noise.pin_memory(), self.timesteps, self.keep,
                         self.planes.pin_memory(), self.patches)


class BaseSteps(Dataset):
    """Item i is step `first + i` of a run: its draws and this process's planes read from the store."""

    def __init__(self, store: TriplaneStore, rows: list[int], *, resolution: int, channels: int, seed: int,
                 batch: int, train_timesteps: int, latent_dropout: float, share: slice, first: int,
                 steps: int, render_views: int = 0, render_patches: int = 0) -> None:
        self.render_views, self.render_patches = render_views, render_patches
        self.store, self.rows, self.resolution, self.channels = store, rows, resolution, channels
        self.seed, self.batch, self.train_timesteps, self.latent_dropout = seed, batch, train_timesteps, latent_dropout
        self.share, self.first, self.steps = share, first, steps

    def __len__(self) -> int:
        return max(0, self.steps - self.first)

    def __getitem__(self, i: int) -> StepBatch:
        step = self.first + i
        g = step_generator(self.seed, step)
        rows = torch.randint(len(self.rows), (self.batch,), generator=g)
        noise = torch.randn((self.batch, self.channels, self.resolution, 3 * self.resolution), generator=g)
        timesteps = torch.randint(self.train_timesteps, (self.batch,), generator=g)
        keep = (torch.rand(self.batch, generator=g) >= self.latent_dropout).float()
        # Drawn last and only when on, so that runs without the render loss draw what they always drew.
        patches = (draw_patches(g, batch=self.batch, views=self.render_views, patches=self.render_patches)
                   if self.render_patches else None)
        mine = [self.rows[int(r)] for r in rows[self.share]]
        planes = resize_planes(self.store.get(mine).float(), self.resolution)
        return StepBatch(step, rows, noise, timesteps, keep, planes, patches)


def step_loader(steps: BaseSteps, *, workers: int, pin_memory: bool) -> DataLoader:
    """Steps in order; with `workers` > 0 read ahead in that many processes (2 steps each)."""
    return DataLoader(steps, batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin_memory,
                      prefetch_factor=2 if workers else None, persistent_workers=False)
