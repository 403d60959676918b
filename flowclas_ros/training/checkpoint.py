"""Training checkpoints: written atomically, read without unpickling code, tagged with a format.

A checkpoint holds the training config (as a dict), the flow head's weights, the optimiser and
scheduler state, the step and, once training finished, the calibration. It is the input of
export, recalibration and the torch reference backend.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from flowclas_ros.config import Config, config_from_dict

CHECKPOINT_FORMAT = "flowclas_ros.checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, not ours, or unfinished."""


class TrainingError(ValueError):
    """A training or calibration run that cannot give a usable model (a non-finite loss, weights
    or calibration): raised before the finished checkpoint is written, so no model that scores
    NaN ever reaches export or a robot."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load with weights_only=True (no arbitrary unpickling) and check the format tag."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a flowclas_ros checkpoint (format tag missing or unknown)")
    return ckpt


def checkpoint_config(ckpt: dict[str, Any]) -> Config:
    return config_from_dict(ckpt["config"])
