"""Flow-sampled negatives in the training loop (the NFlowJS-style OE source `flow_negatives`).

The sampler itself is `flowclas_ros.model.outliers.flow_negative_sampler`; this module turns the config into it, loads
an optional frozen generator flow, and appends the negative copies to a batch.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

from flowclas_ros.config import Config, ConfigError
from flowclas_ros.model.flowclas import FlowHead
from flowclas_ros.model.outliers.flow_negative_sampler import (
    FlowNegativeConfig,
    append_negatives,
    negative_feature_maps,
)
from flowclas_ros.training.checkpoint import CheckpointError, checkpoint_config, load_checkpoint

log = logging.getLogger("flowclas_ros.train")


def flow_negative_config(cfg: Config) -> Optional[FlowNegativeConfig]:
    """The flow-negative sampler of `outlier_exposure.flow_negatives`, None when the source is off."""
    oe = cfg.outlier_exposure
    if "flow_negatives" not in oe.source_weights():
        return None
    log.warning("outlier_exposure.sources.flow_negatives: latent-space negatives lowered AUPRC in every "
                "variant measured (docs/results.md, outlier-source ablation); kept for ablations only. For "
                "negatives without an object set use flow_patches or procedural")
    fn = oe.flow_negatives
    return FlowNegativeConfig(probability=1.0, cells=tuple(fn.cells), tau=tuple(fn.tau),
                              anchor=fn.anchor, context=fn.context, max_norm_ratio=fn.max_norm_ratio)


def load_generator_head(cfg: Config, channels: int, device: torch.device) -> Optional[FlowHead]:
    """The frozen head of `outlier_exposure.flow_negatives.generator` (None when not set): a
    separately trained flow on the same backbone features that draws the negatives."""
    path = cfg.outlier_exposure.flow_negatives.generator
    if path is None or "flow_negatives" not in cfg.outlier_exposure.source_weights():
        return None
    key = "outlier_exposure.flow_negatives.generator"
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        raise ConfigError(f"{key}: {err}") from err
    gcfg = checkpoint_config(ckpt)
    if gcfg.model.backbone != cfg.model.backbone:
        raise ConfigError(f"{key}: {path} was trained on other features (backbone "
                          f"{gcfg.model.backbone}) than this model ({cfg.model.backbone})")
    head = FlowHead(channels, gcfg.model, seed=gcfg.seed)
    head.load_state_dict(ckpt["head"])
    head.to(device).eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return head


def with_flow_negatives(head: FlowHead, feats: torch.Tensor, cells: torch.Tensor, batch: list,
                        neg_cfg: Optional[FlowNegativeConfig],
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Append a flow-sampled negative copy of every frame whose OE source is flow_negatives
    (model/outliers/flow_negative_sampler.py); returns (feats, cells, copies appended). The originals stay in the
    batch, so the likelihood term keeps all their inlier cells."""
    idx = [i for i, f in enumerate(batch) if f.source == "flow_negatives"]
    if neg_cfg is None or not idx:
        return feats, cells, 0
    neg = negative_feature_maps(head, feats, cells, neg_cfg, generator, frames=idx)
    feats, cells = append_negatives(feats, cells, neg)
    return feats, cells, len(neg)
