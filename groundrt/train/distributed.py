"""Distributed data-parallel training: `torchrun --nproc-per-node N -m groundrt.train ...`.

torchrun starts N processes with RANK, LOCAL_RANK and WORLD_SIZE set; each joins one process
group (gloo on CPUs, nccl on GPUs: `--device cuda` becomes cuda:LOCAL_RANK) and trains a
DistributedDataParallel copy of the model. Every step takes the global batch one process
would (`--batch-size` examples, the same order), each rank every N-th of them; DDP averages
the gradients. Rank 0 alone writes the run folder (tokenizer, checkpoints, history) and
validates; the others wait for it. Not bit-identical to one process: BatchNorm normalizes each
rank's share of the batch, and the losses are means over each rank's phrases.

Without torchrun (WORLD_SIZE unset or 1) nothing here changes the single-process path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """This process writes the run folder and validates."""
        return self.rank == 0

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's share of a global batch's example indices."""
        return indices[self.rank::self.world] if self.world > 1 else indices

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def wrap(self, model: nn.Module, device: str) -> nn.Module:
        """The module a step runs forward: DDP over `model` with several processes."""
        if self.world == 1:
            return model
        ids = [torch.device(device).index] if torch.device(device).type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def setup(device: str, batch_size: int) -> tuple[Ranks, str]:
    """The process group when torchrun started this process (else one rank) and the device
    this rank trains on."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), device
    if batch_size % world:
        raise ValueError(f"--batch-size {batch_size} (the global batch) must be a multiple of "
                         f"the {world} processes")
    if torch.device(device).type == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            "nccl" if torch.device(device).type == "cuda" else "gloo")
    return Ranks(torch.distributed.get_rank(), world), device


def teardown(ranks: Ranks) -> None:
    if ranks.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
