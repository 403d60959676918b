"""FlowCLAS training loop: seeded, resumable, checkpointed atomically, multi-GPU through torchrun.

Only the flow head trains; the backbone is frozen, so features of frames without pasted outliers
are cached (`train.cache_features`). Distributed training uses torch's own DistributedDataParallel
under `torchrun` (NCCL on GPUs, gloo on CPU); every rank draws its own batch from
(seed, step, rank), rank 0 writes checkpoints.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from flowclas_ros.config import Config, ConfigError
from flowclas_ros.model.flowclas import FlowCLAS, FlowHead
from flowclas_ros.model.losses import cell_labels, flowclas_loss, negative_nll_hinge
from flowclas_ros.training.batches import TrainingFrames
from flowclas_ros.training.calibration import calibrate, feature_extractor
from flowclas_ros.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    TrainingError,
    load_checkpoint,
    save_checkpoint,
)
from flowclas_ros.training.devices import distributed
from flowclas_ros.training.outliers.flow_negative_batches import (
    flow_negative_config,
    load_generator_head,
    with_flow_negatives,
)

log = logging.getLogger("flowclas_ros.train")


class HeadLoss(nn.Module):
    """Features + cell labels -> (total, ml, con). One module so DDP sees the whole computation."""

    def __init__(self, head: FlowHead, cfg: Config) -> None:
        super().__init__()
        self.head = head
        self.loss_cfg = cfg.loss
        self.nll_margin = cfg.outlier_exposure.flow_negatives.nll_margin

    def forward(self, feats: torch.Tensor, cells: torch.Tensor, generator: torch.Generator,
                n_negative: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`n_negative`: how many flow-negative copies end the batch (for the NLL hinge)."""
        z, logdet = self.head(feats)
        c = self.loss_cfg
        nll = self.head.nll_per_dim(z, logdet)
        terms = flowclas_loss(nll, self.head.embed(z), cells,
                              c.contrastive_weight, c.temperature, c.samples_per_class, generator)
        total = terms.total
        if self.nll_margin > 0 and n_negative > 0:
            total = total + negative_nll_hinge(nll, cells, feats.shape[0] - n_negative,
                                               self.nll_margin)
        return total, terms.ml, terms.con


def make_optimizer(head: FlowHead, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; weight decay on conv kernels only (none on norms, biases, base density)."""
    decay = [p for n, p in head.named_parameters() if p.ndim == 4 and "weight" in n]
    other = [p for n, p in head.named_parameters() if not (p.ndim == 4 and "weight" in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=cfg.train.lr)


def make_scheduler(opt: torch.optim.Optimizer, cfg: Config) -> torch.optim.lr_scheduler.LRScheduler:
    t = cfg.train
    if t.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=t.max_steps,
                                                   pct_start=min(0.3, 100 / t.max_steps + 0.05))
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.max_steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def step_generator(cfg: Config, step: int, rank: int, stream: int = 7) -> torch.Generator:
    seed = int(np.random.default_rng([cfg.seed, step, rank, stream]).integers(2**62))
    return torch.Generator().manual_seed(seed)


class FeatureSource:
    """Backbone features for a list of frames; unpasted frames come from an in-memory cache."""

    def __init__(self, model: FlowCLAS, device: torch.device, enabled: bool,
                 extract: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        self.model, self.device, self.enabled = model, device, enabled
        self.extract = extract or model.features  # Int8Features for int8-feature training
        self.cache: dict[tuple[int, bool], torch.Tensor] = {}

    def __call__(self, frames) -> torch.Tensor:
        out: list[Optional[torch.Tensor]] = [self.cache.get(f.key) if (self.enabled and not f.modified)
                                             else None for f in frames]
        todo = [i for i, f in enumerate(out) if f is None]
        if todo:
            x = torch.from_numpy(np.stack([frames[i].image for i in todo])).to(self.device)
            feats = self.extract(x)
            for j, i in enumerate(todo):
                out[i] = feats[j]
                if self.enabled and not frames[i].modified:
                    self.cache[frames[i].key] = feats[j].clone()  # not a view pinning the batch
        return torch.stack(out)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                mininterval=1.0, desc="train")


def train(cfg: Config, out_dir: str | os.PathLike, resume: bool = False,
          stop_at: Optional[int] = None, progress: bool = True) -> Path:
    """Train (or resume) into `out_dir`; returns the checkpoint path. `stop_at` ends the run early
    after that step with a checkpoint, exactly as an interruption would (used by tests)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    with distributed(cfg.train.device) as (rank, world, device):
        torch.manual_seed(cfg.seed)
        model = FlowCLAS(cfg.model, seed=cfg.seed).to(device)
        frames = TrainingFrames(cfg, progress and rank == 0, device)
        extract = feature_extractor(model, cfg)
        feats_of = FeatureSource(model, device, cfg.train.cache_features, extract)
        opt = make_optimizer(model.head, cfg)
        sched = make_scheduler(opt, cfg)
        start = 0
        if resume and ckpt_path.is_file():
            ckpt = load_checkpoint(ckpt_path)
            if ckpt["config_sha256"] != cfg.sha256():
                raise ConfigError(f"--resume: the config differs from the one {ckpt_path} was "
                                  "trained with; use the same config or a new --out directory")
            model.head.load_state_dict(ckpt["head"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            start = int(ckpt["step"])
            if rank == 0:
                log.info("resuming from %s at step %d", ckpt_path, start)
        elif resume and rank == 0:
            log.info("--resume: no checkpoint in %s, starting from scratch", out)
        if start == 0:
            _data_init(model, frames, feats_of, cfg, device)
        loss_mod: nn.Module = HeadLoss(model.head, cfg)
        if world > 1:
            loss_mod = nn.parallel.DistributedDataParallel(
                loss_mod, device_ids=[device.index] if device.type == "cuda" else None)
        stride = cfg.model.backbone.feature_stride
        neg_cfg = flow_negative_config(cfg)
        generator_head = load_generator_head(cfg, model.backbone.out_channels, device)
        neg_head = model.head if generator_head is None else generator_head

        def snapshot(step: int, calibration: Optional[dict] = None) -> None:
            if not all(torch.isfinite(p).all() for p in model.head.parameters()):
                raise TrainingError(f"training diverged: non-finite flow weights at step {step}; "
                                    f"no checkpoint written{_kept(ckpt_path)}; lower train.lr "
                                    f"(now {cfg.train.lr:g}) or model.flow.clamp")
            if rank == 0:
                save_checkpoint(ckpt_path, {
                    "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(),
                    "config_sha256": cfg.sha256(), "step": step, "world_size": world,
                    "head": model.head.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "calibration": calibration})

        end = cfg.train.max_steps if stop_at is None else min(stop_at, cfg.train.max_steps)
        bar = _progress(cfg.train.max_steps, start, progress and rank == 0)
        log_file = (out / "train_log.jsonl").open("a") if rank == 0 else None
        step = start
        try:
            model.head.train()
            for step in range(start, end):
                batch = frames.batch(step, rank)
                feats = feats_of(batch)
                labels = torch.from_numpy(np.stack([f.label for f in batch])).to(device)
                cells = cell_labels(labels, stride)
                feats, cells, n_neg = with_flow_negatives(neg_head, feats, cells, batch, neg_cfg,
                                                          step_generator(cfg, step, rank, stream=11))
                total, ml, con = loss_mod(feats, cells, step_generator(cfg, step, rank), n_neg)
                if not torch.isfinite(total):
                    raise TrainingError(f"training diverged: non-finite loss at step {step} "
                                        f"(ml={ml.item():.4g}, con={con.item():.4g}); no model "
                                        f"written{_kept(ckpt_path)}; lower train.lr (now "
                                        f"{cfg.train.lr:g}) or model.flow.clamp")
                opt.zero_grad(set_to_none=True)
                total.backward()
                if cfg.train.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.head.parameters(), cfg.train.grad_clip)
                opt.step()
                sched.step()
                done = step + 1
                bar.update(1)
                if done % cfg.train.log_every == 0 or done == end:
                    rec = {"step": done, "loss": total.item(), "ml": ml.item(), "con": con.item(),
                           "lr": sched.get_last_lr()[0], "time": time.time()}
                    if neg_cfg is not None:
                        rec["flow_negatives"] = n_neg
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", ml=f"{rec['ml']:.3f}",
                                    con=f"{rec['con']:.3f}")
                    if log_file:
                        log_file.write(json.dumps(rec) + "\n")
                        log_file.flush()
                if done % cfg.train.checkpoint_every == 0 and done < end:
                    snapshot(done)
            step = end
        except KeyboardInterrupt:
            if rank == 0:
                log.warning("interrupted at step %d; checkpoint written, continue with --resume", step)
            snapshot(step)
            raise
        finally:
            bar.close()
            if log_file:
                log_file.close()
        if world > 1:
            _check_replicas_in_sync(model.head, device)
        calibration = None
        if end == cfg.train.max_steps and rank == 0:
            calibration = calibrate(model, cfg, device, extract)
            log.info("calibrated: %s", calibration)
        snapshot(end, calibration)
        if world > 1:
            dist.barrier()
    return ckpt_path


def _kept(ckpt_path: Path) -> str:
    """What an aborted run leaves: an earlier unfinished checkpoint (no calibration, so export
    refuses it) stays for inspection."""
    return (f" ({ckpt_path} is an earlier unfinished checkpoint: not exportable)"
            if ckpt_path.is_file() else "")


@torch.no_grad()
def _check_replicas_in_sync(head: nn.Module, device: torch.device) -> None:
    """DDP must leave every rank with identical weights; verify it instead of assuming it."""
    digest = torch.stack([p.detach().double().sum() for p in head.parameters()]).to(device)
    gathered = [torch.zeros_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digest)
    if not all(torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError("DDP replicas diverged: ranks hold different flow weights")
    if dist.get_rank() == 0:
        log.info("DDP: %d ranks hold identical weights", len(gathered))


@torch.no_grad()
def _data_init(model: FlowCLAS, frames: TrainingFrames, feats_of: FeatureSource, cfg: Config,
               device: torch.device) -> None:
    """ActNorm data-dependent initialisation on inlier features of the first batch (before DDP
    wraps the head, so rank 0's initialisation is the one broadcast to all ranks)."""
    batch = frames.batch(0, 0)
    model.head.train()
    model.head(feats_of(batch))
