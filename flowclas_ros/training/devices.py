"""Where training runs: the device, and torch's process group when launched under torchrun."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist

from flowclas_ros.config import ConfigError


def pick_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: '{spec}' requested but CUDA is not available")
    return torch.device(spec)


@contextmanager
def distributed(device_spec: str) -> Iterator[tuple[int, int, torch.device]]:
    """(rank, world_size, device); initialises the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_spec, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        try:
            yield rank, world, device
        finally:
            dist.destroy_process_group()
    else:
        yield rank, world, device
