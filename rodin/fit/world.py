"""The processes of a launched joint stage: this one's rank, how many, and the collectives it needs.

The joint decoder stage is data-parallel under `accelerate launch` / torchrun: each process fits the
planes of the joint subjects it owns and the decoder gradients are summed across processes. The
collectives are accelerate's (its process group, gloo on CPUs); one process needs none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rodin.fit.shards import Shard


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @classmethod
    def from_environment(cls) -> World:
        """This process's place in a launched run (one process when not launched)."""
        shard = Shard.from_environment()
        return cls() if shard is None else cls(shard.index, shard.count)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owner(self, position: int) -> int:
        """The process that fits the subject at this position of a fixed list (every size-th is ours)."""
        return position % self.size

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return tensor
        from accelerate.utils import reduce

        # The process group is gloo's (shards.py); the summed decoder gradients are small, so they travel
        # through the CPU whichever device fits (`rodin fit --device cuda` on several GPUs).
        return reduce(tensor.cpu(), reduction="sum").to(tensor.device)

    def gather(self, items: list[Any]) -> list[Any]:
        """Every process's list, concatenated in rank order, on every process."""
        if self.size == 1:
            return list(items)
        from accelerate.utils import gather_object

        return gather_object(list(items))

    def barrier(self) -> None:
        if self.size > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()
