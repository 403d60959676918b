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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .config import Config, ConfigError, _apply_override, config_from_dict
from .data.frames import TrainingFrames, source_samples
from .data.layouts import read_image_rgb, read_label
from .model.flowclas import FlowCLAS, FlowHead
from .model.losses import cell_labels, flowclas_loss, negative_nll_hinge
from .model.negatives import FlowNegativeConfig, append_negatives, negative_feature_maps
from .runtime.processing import label_to_input, preprocess

log = logging.getLogger("flowclas_ros.train")

CHECKPOINT_FORMAT = "flowclas_ros.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, not ours, or unfinished."""

CHECKPOINT_NAME = "checkpoint.pt"


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


def flow_negative_config(cfg: Config) -> Optional[FlowNegativeConfig]:
    """The flow-negative sampler of `outlier_exposure.flow_negatives`, None when the source is off."""
    oe = cfg.outlier_exposure
    if "flow_negatives" not in oe.source_weights():
        return None
    fn = oe.flow_negatives
    return FlowNegativeConfig(probability=1.0, cells=tuple(fn.cells), tau=tuple(fn.tau),
                              anchor=fn.anchor, context=fn.context, max_norm_ratio=fn.max_norm_ratio)


def load_generator_head(cfg: Config, channels: int, device: torch.device) -> Optional[FlowHead]:
    """The frozen head of `outlier_exposure.flow_negatives.generator` (None when not set): a
    separately trained flow on the same backbone features that draws the negatives."""
    path = cfg.outlier_exposure.flow_negatives.generator
    if path is None or flow_negative_config(cfg) is None:
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
    (model/negatives.py); returns (feats, cells, copies appended). The originals stay in the
    batch, so the likelihood term keeps all their inlier cells."""
    idx = [i for i, f in enumerate(batch) if f.source == "flow_negatives"]
    if neg_cfg is None or not idx:
        return feats, cells, 0
    neg = negative_feature_maps(head, feats, cells, neg_cfg, generator, frames=idx)
    feats, cells = append_negatives(feats, cells, neg)
    return feats, cells, len(neg)


class FeatureSource:
    """Backbone features for a list of frames; unpasted frames come from an in-memory cache."""

    def __init__(self, model: FlowCLAS, device: torch.device, enabled: bool,
                 extract: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        self.model, self.device, self.enabled = model, device, enabled
        self.extract = extract or model.features  # Int8Features for int8-feature training
        self.cache: dict[tuple[int, bool], torch.Tensor] = {}

    def __call__(self, frames) -> torch.Tensor:
        out: list[Optional[torch.Tensor]] = [self.cache.get(f.key) if (self.enabled and not f.pasted)
                                             else None for f in frames]
        todo = [i for i, f in enumerate(out) if f is None]
        if todo:
            x = torch.from_numpy(np.stack([frames[i].image for i in todo])).to(self.device)
            feats = self.extract(x)
            for j, i in enumerate(todo):
                out[i] = feats[j]
                if self.enabled and not frames[i].pasted:
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
        frames = TrainingFrames(cfg)
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
                    raise FloatingPointError(f"non-finite loss at step {step} (ml={ml.item()}, "
                                             f"con={con.item()}); lower train.lr or model.flow.clamp")
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


def calibration_samples(cfg: Config):
    """Val frames when configured (held out: honest threshold), else evenly spaced train frames."""
    src = cfg.data.val if cfg.data.val is not None else cfg.data.train[0]
    samples = source_samples(src)
    n = cfg.calibration.max_frames
    if len(samples) > n:
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, n).round().astype(int)]
    return samples, src.root


def feature_extractor(model: FlowCLAS, cfg: Config) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the flow trains and calibrates on: the torch backbone's features, or, with
    `model.backbone.int8_features`, those of the same backbone quantised to int8 (ONNX Runtime)."""
    if not cfg.model.backbone.int8_features:
        return model.features
    from .quantize import int8_features_for

    return int8_features_for(cfg, model.backbone)


@torch.no_grad()
def calibrate(model: FlowCLAS, cfg: Config, device: torch.device,
              extract: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> dict[str, Any]:
    """Score normalisation and threshold from inlier pixels of calibration frames.

    offset = median inlier score, scale = (1 - inlier_fpr) quantile - median, so after
    normalisation 0 is a typical inlier pixel and 1.0 is the score exceeded by `inlier_fpr` of
    inlier pixels: the threshold is 1.0 by construction. `extract`: the training's features
    (default: `feature_extractor`)."""
    extract = extract or feature_extractor(model, cfg)
    model.eval()
    model.score_offset.fill_(0.0)
    model.score_scale.fill_(1.0)
    samples, root = calibration_samples(cfg)
    m = cfg.model
    mean, std = model.backbone.mean, model.backbone.std
    values = []
    for s in samples:
        rgb = read_image_rgb(s.image_path)
        label = read_label(s.label_path, rgb.shape[:2]) if s.label_path else np.zeros(rgb.shape[:2], np.uint8)
        x, geom = preprocess(rgb, m.input_size, mean, std, m.resize_policy)
        images = torch.from_numpy(x[None]).to(device)
        score = model.upsample(model.grid_score(extract(images)), images)[0, 0].cpu().numpy()
        inl = score[label_to_input(label, geom) == 0]
        values.append(inl[:: max(1, inl.size // 20000)])
    pooled = np.concatenate(values).astype(np.float64)
    fpr = cfg.calibration.inlier_fpr
    median, high = np.quantile(pooled, [0.5, 1.0 - fpr])
    scale = max(float(high - median), 1e-6)
    model.train()
    return {"score_offset": float(median), "score_scale": scale, "threshold": 1.0,
            "threshold_rule": f"inlier-pixel FPR {100 * fpr:g}% on {len(samples)} frames of {root}",
            "frames": len(samples), "inlier_pixels": int(pooled.size)}


# Keys that only change post-processing / calibration: editable on a trained checkpoint.
POSTPROCESS_KEYS = ("model.score_blur_sigma", "model.score_includes_logdet",
                    "model.score_guided_radius", "model.score_guided_eps",
                    "calibration.inlier_fpr", "calibration.max_frames")


def recalibrate(checkpoint: str | os.PathLike, out: str | os.PathLike,
                overrides: Optional[list[str]] = None, device: str = "auto") -> Path:
    """Change post-processing settings of a trained model (score smoothing, log-det in the score,
    guided upsampling, the calibration rule; also the input size when the flow has no positional
    conditioning) and recalibrate, without retraining. Writes a new checkpoint whose config
    records the change (new config hash, `recalibrated_from` = the old one)."""
    ckpt = load_checkpoint(checkpoint)
    data = ckpt["config"]
    for item in overrides or []:
        key = item.split("=", 1)[0].strip()
        if key == "model.input_size":
            # The backbone and the flow are fully convolutional: a new input size is a deployment
            # choice (speed vs small-obstacle recall), unless positions condition the flow.
            if data["model"]["flow"].get("positional_channels", 0) > 0:
                raise ConfigError("'model.input_size' cannot change without retraining: this model's "
                                  "flow is conditioned on positions (model.flow.positional_channels > 0)")
        elif key not in POSTPROCESS_KEYS:
            raise ConfigError(f"'{key}' cannot change without retraining (allowed: "
                              f"{', '.join(POSTPROCESS_KEYS)}, model.input_size)")
        _apply_override(data, item)
    cfg = config_from_dict(data)
    dev = pick_device(device)
    model = FlowCLAS(cfg.model, seed=cfg.seed).to(dev)
    model.head.load_state_dict(ckpt["head"])
    calibration = calibrate(model, cfg, dev)
    path = Path(out)
    save_checkpoint(path, dict(ckpt, config=cfg.to_dict(), config_sha256=cfg.sha256(),
                               calibration=calibration, recalibrated_from=ckpt["config_sha256"]))
    return path
