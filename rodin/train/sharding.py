"""Fully sharded data parallel training (torch FSDP2, `fully_shard`) for the large models (base, prior,
upsampler, refiner).

With `--fsdp` each process keeps only its 1/N slice of the weights, the EMA and the optimiser's moments;
the weights of a block are gathered just for its forward and backward and its gradients are reduce-
scattered back into the slices. This is what lets the paper preset's UNets train on GPUs too small to
hold them N times over. The same code runs on CPUs (gloo) and GPUs (NCCL), so CI tests the GPU path.

accelerate's own FSDP switch (`accelerate launch --use_fsdp`) does not exist for CPU processes, so the
stages shard the model here and let accelerate do the rest (processes, mixed precision, accumulation).

Nothing on disk is sharded. A checkpoint and the saved model hold whole tensors in the layout an
unsharded run writes: the slices are gathered into a whole copy of the model on the main process
(`WholeCopy`), which is also what the held-out figures and sample renders are computed on. So a run
may stop under FSDP and resume without it, or on another number of processes.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.distributed as dist
from diffusers.training_utils import EMAModel
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from rodin.errors import ConfigError


def check_fsdp() -> None:
    """Refuse `--fsdp` where there is nothing to shard across, before anything is read or written
    (the launchers, torchrun and `accelerate launch`, tell each process the count in WORLD_SIZE)."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise ConfigError("--fsdp shards the model across processes; launch with `accelerate launch "
                          "--num_processes N` (N of at least 2), or leave --fsdp out")


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The blocks sharded one by one (each gathered only while it runs): residual, attention and MLP blocks.

    The root module is sharded last and holds whatever lies outside them (stems, embeddings, heads).
    """
    from rodin.diffusion.prior import PriorBlock
    from rodin.diffusion.unet import ResBlock, TriplaneAttention
    from rodin.refine.network import Residual

    kinds = (ResBlock, TriplaneAttention, Residual, PriorBlock)
    return [m for m in model.modules() if isinstance(m, kinds) and m is not model]


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor as one whole CPU tensor (a collective for sharded ones: every process must call it)."""
    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu()


def shard_training_state(model: nn.Module, ema: EMAModel | None, optimizer: torch.optim.Optimizer, *,
                         device: torch.device) -> None:
    """Shard `model` in place, with its EMA and optimiser state (both already loaded whole, e.g. from a
    checkpoint) cut into the same slices. Every process must hold the same whole weights beforehand."""
    if not dist.is_available() or not dist.is_initialized():
        raise ConfigError("--fsdp shards the model across processes; launch with `accelerate launch "
                          "--num_processes N` (N of at least 2)")
    model.to(device)
    names = [name for name, _ in model.named_parameters()]
    before = dict(model.named_parameters())
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    after = dict(model.named_parameters())
    if list(after) != names:
        raise RuntimeError("sharding changed the model's parameter names; the checkpoint layout would not match")

    def sliced(value: torch.Tensor, like: nn.Parameter) -> torch.Tensor:
        if not isinstance(like, DTensor) or value.shape != like.shape:
            return value
        return distribute_tensor(value.to(device), like.device_mesh, like.placements)

    if ema is not None:
        ema.shadow_params = [sliced(s.detach(), after[n]) for n, s in zip(names, ema.shadow_params)]
    moved = {id(before[n]): after[n] for n in names}
    state = {}
    for group in optimizer.param_groups:
        fresh = []
        for old in group["params"]:
            new = moved[id(old)]
            if old in optimizer.state:
                state[new] = {k: sliced(v, new) for k, v in optimizer.state[old].items()}
            fresh.append(new)
        group["params"] = fresh
    optimizer.state.clear()
    optimizer.state.update(state)


class WholeCopy:
    """An unsharded model, EMA and optimiser on the main process, refreshed from the shards on demand.

    Made before sharding (a deep copy of the model as loaded); `refresh` is a collective: every process
    calls it, the main process receives the whole tensors. What it returns is what an unsharded run
    holds at the same step, so `save_checkpoint`, the held-out figures and the final save take it as is.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, decay: float,
                 main: bool) -> None:
        self.main = main
        self.model = copy.deepcopy(model).cpu() if main else None
        if main:
            self.ema = EMAModel(self.model.parameters(), decay=decay)
            # Its hyperparameters come with every refresh (load_state_dict restores the param groups).
            self.optimizer = type(optimizer)(self.model.parameters())

    def refresh(self, model: nn.Module, ema: EMAModel, optimizer: torch.optim.Optimizer | None = None
                ) -> tuple[nn.Module, EMAModel, torch.optim.Optimizer] | None:
        """Gather the weights and the EMA, and the optimiser's moments only when given (checkpoints need them;
        the held-out figures and the final save do not, and the moments are twice the weights)."""
        weights = {k: whole(v) for k, v in model.state_dict().items()}
        shadow = [whole(s) for s in ema.shadow_params]
        opt_state = None
        if optimizer is not None:
            inner = getattr(optimizer, "optimizer", optimizer)      # accelerate's wrapper keeps it as .optimizer
            opt_state = inner.state_dict()
            opt_state = {"state": {pid: {k: whole(v) for k, v in entry.items()}
                                   for pid, entry in opt_state["state"].items()},
                         "param_groups": opt_state["param_groups"]}
        if not self.main:
            return None
        self.model.load_state_dict(weights)
        with torch.no_grad():
            for target, value in zip(self.ema.shadow_params, shadow):
                target.copy_(value)
        self.ema.optimization_step = ema.optimization_step
        if opt_state is not None:
            self.optimizer.load_state_dict(opt_state)
        return self.model, self.ema, self.optimizer
