"""The `flow_patches` OE source's bank: train a flow on the training frames' own RGB patches, then
sample patches just beyond its inlier set (NFlowJS's negatives, drawn in image space).

What is drawn, and why it lies off the inlier set:

1. **Generator** (`model/outliers/patch_generator_flow.py`): a multi-scale Glow-style flow trained by maximum
   likelihood (bits per dimension) on random ``crop`` x ``crop`` crops of the training frames,
   cut at every ``frame_scales`` downsampling of each frame (1 = source pixels; 8 = a crop spans an
   eighth of the frame), so it learns fine texture and coarse layout alike. One frame in ten
   (at least 4) is held out.
2. **Temperature**: every latent is drawn from its Gaussian with the std multiplied by T, one T
   per patch, uniform in ``temperature`` (default [1.0, 1.2]). A flow's samples at T = 1 lie in
   its typical set (what maximum likelihood fits; a briefly trained flow's T = 1 samples are
   already less likely than most real patches); T > 1 moves the latent radially outwards, so the
   decoded patches keep the frames' colours and structures but in combinations and contrasts the
   frames do not show. Beyond T = 1.2 most draws blow up in the inverse flow (docs/results.md), which the
   band rejects anyway.
3. **Border band (rejection)**: a sample is kept only if its own likelihood under the patch flow,
   in bits/dim, lies in ``[q, q + border_width]``, where ``q`` is the ``border_quantile``
   (default 0.9) bits/dim of HELD-OUT inlier crops of the same size: each kept patch is less likely
   than 90 % of real inlier patches (off the inlier set), but by at most ``border_width`` bits/dim
   (near its border, not noise, which a contrastive loss separates without learning anything).
   Patches for the bank are drawn at each side in ``sizes`` (the flow is fully convolutional); if
   too few samples fall in the band after 8x the requested draws, the bank is filled with the
   draws nearest to it and a warning says so.

Cost and cache: the generator is trained once per data source and generator settings, the bank
once per generator and sampling settings, under ``$XDG_CACHE_HOME/flowclas_ros/patch_flows``
(``outlier_exposure.flow_patches.cache_dir``). Keys: the frames' paths, sizes and mtimes (a bag's
frames are its extraction cache, keyed on the bag's files), the settings and the seed; a changed
source trains a new generator. Entries are written to a temporary name and renamed into place.
The measured cost is in docs/results.md (flow-generated patches).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from flowclas_ros.config import Config
from flowclas_ros.data.files import DatasetError, read_image_rgb
from flowclas_ros.data.labels import Sample, read_label_or_inlier
from flowclas_ros.data.layouts import evenly_spaced, source_samples
from flowclas_ros.data.outliers.flow_patch_pasting import PatchBank
from flowclas_ros.model.outliers.patch_generator_flow import PatchFlow
from flowclas_ros.runtime.labels import ANOMALY

log = logging.getLogger("flowclas_ros.patch_negatives")

CACHE_VERSION = 1  # bump when training or sampling changes what a cached entry holds
MIN_FRAMES = 16
POOL_CROPS = 16384  # training crops cut once from the frames (uint8; 50 MB at 32x32)
EVAL_CROPS = 256  # held-out inlier crops per bank side, for the border band
GENERATOR_KEYS = ("levels", "steps", "hidden_channels", "clamp", "crop", "frame_scales", "iterations",
                  "batch_size", "lr", "max_frames")
# Torch threads while the generator trains and samples: its convolutions are small, and on the
# 2-core CPU this was measured on, one thread ran an iteration 3.4x faster than two (0.058 vs
# 0.196 s) while other jobs shared the cores; two threads spin-wait for each other.
THREADS = 1
BANK_KEYS = ("temperature", "border_quantile", "border_width", "sizes", "bank_size")


def patch_cache_root(cfg: Config) -> Path:
    custom = cfg.outlier_exposure.flow_patches.cache_dir
    if custom:
        return Path(custom)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flowclas_ros" / "patch_flows"


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


def cache_keys(cfg: Config, samples: list[Sample]) -> tuple[str, str]:
    """(generator key, bank key): see the module docstring."""
    fp = dataclasses.asdict(cfg.outlier_exposure.flow_patches)
    files = []
    for s in samples:
        st = Path(s.image_path).stat()
        files.append((str(Path(s.image_path).resolve()), st.st_size, st.st_mtime_ns))
    generator = _digest({"v": CACHE_VERSION, "files": files, "seed": cfg.seed,
                         **{k: fp[k] for k in GENERATOR_KEYS}})
    bank = _digest({"generator": generator, "seed": cfg.seed, **{k: fp[k] for k in BANK_KEYS}})
    return generator, bank


def training_samples(cfg: Config) -> list[Sample]:
    """The training sources' frames, at most ``max_frames`` evenly spaced; a DatasetError naming
    the key when there are fewer than MIN_FRAMES."""
    samples = [s for src in cfg.data.train for s in source_samples(src)]
    if len(samples) < MIN_FRAMES:
        raise DatasetError(f"outlier_exposure.sources.flow_patches: the patch generator needs at least "
                           f"{MIN_FRAMES} training frames, data.train has {len(samples)}; record more "
                           "frames or use the procedural source")
    return evenly_spaced(samples, cfg.outlier_exposure.flow_patches.max_frames)


def _pyramid(rgb: np.ndarray, scales: list[int], label: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, anomaly mask) at each downsampling factor."""
    out = []
    for s in scales:
        if s == 1:
            out.append((rgb, label == ANOMALY))
            continue
        size = (max(1, rgb.shape[1] // s), max(1, rgb.shape[0] // s))
        bad = cv2.resize((label == ANOMALY).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        out.append((cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), bad))
    return out


def _crops(levels: list[tuple[np.ndarray, np.ndarray]], side: int, n: int,
           rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` random ``side`` crops free of anomaly pixels, spread over the pyramid levels that fit."""
    fit = [lv for lv in levels if min(lv[0].shape[:2]) >= side]
    out: list[np.ndarray] = []
    if not fit:
        return out
    for k in range(n):
        rgb, bad = fit[k % len(fit)]
        for _try in range(4):
            top = int(rng.integers(rgb.shape[0] - side + 1))
            left = int(rng.integers(rgb.shape[1] - side + 1))
            if not bad[top:top + side, left:left + side].any():
                out.append(rgb[top:top + side, left:left + side].copy())
                break
    return out


def crop_pools(samples: list[Sample], cfg: Config, rng: np.random.Generator,
               progress: bool) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(training crops [n, crop, crop, 3], {bank side: held-out crops}); each frame is read once."""
    from tqdm import tqdm

    fp = cfg.outlier_exposure.flow_patches
    order = rng.permutation(len(samples))
    n_held = max(4, len(samples) // 10)
    held = set(order[:n_held].tolist())
    n_train = len(samples) - n_held
    per_frame = max(1, math.ceil(POOL_CROPS / n_train))
    per_held = {s: max(1, math.ceil(EVAL_CROPS / n_held)) for s in fp.sizes}
    train: list[np.ndarray] = []
    evals: dict[int, list[np.ndarray]] = {s: [] for s in fp.sizes}
    for i, sample in enumerate(tqdm(samples, desc="patch flow: reading frames", unit="frame",
                                    disable=not progress, dynamic_ncols=True, mininterval=1.0)):
        rgb = read_image_rgb(sample.image_path)
        levels = _pyramid(rgb, list(fp.frame_scales), read_label_or_inlier(sample, rgb.shape[:2]))
        if i in held:
            for side in fp.sizes:
                evals[side].extend(_crops(levels, side, per_held[side], rng))
        else:
            train.extend(_crops(levels, fp.crop, per_frame, rng))
    if len(train) < fp.batch_size:
        raise DatasetError(f"outlier_exposure.flow_patches: only {len(train)} anomaly-free "
                           f"{fp.crop}x{fp.crop} crops in the training frames (need {fp.batch_size})")
    missing = [s for s, c in evals.items() if not c]
    if missing:
        raise DatasetError(f"outlier_exposure.flow_patches.sizes: {missing} px patches do not fit in "
                           f"the training frames at any of frame_scales {list(fp.frame_scales)}")
    return np.stack(train), {s: np.stack(c) for s, c in evals.items()}


def _to_tensor(patches: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(patches.transpose(0, 3, 1, 2))).float()


def train_patch_flow(pool: np.ndarray, cfg: Config, progress: bool = False,
                     device: torch.device = torch.device("cpu")) -> tuple[PatchFlow, list[float]]:
    """Maximum likelihood on the crop pool (random flips); returns (flow in eval mode, the
    training bits/dim every 10 iterations)."""
    from tqdm import tqdm

    fp = cfg.outlier_exposure.flow_patches
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 15])
    flow = PatchFlow(fp.levels, fp.steps, fp.hidden_channels, clamp=fp.clamp, seed=cfg.seed).to(device)
    flow.train()
    with torch.no_grad():  # ActNorm's data-dependent init on a larger first batch
        init = pool[rng.choice(len(pool), min(len(pool), 256), replace=False)]
        flow.log_prob(PatchFlow.dequantize(_to_tensor(init), gen).to(device))
    opt = torch.optim.Adam(flow.parameters(), lr=fp.lr)
    warmup = min(100, fp.iterations // 10 + 1)

    def lr_at(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, fp.iterations - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    history: list[float] = []
    bar = tqdm(range(fp.iterations), desc="patch flow: training", unit="it", disable=not progress,
               dynamic_ncols=True, mininterval=1.0)
    running = None
    for i in bar:
        batch = pool[rng.integers(0, len(pool), fp.batch_size)]
        flips = rng.random(fp.batch_size) < 0.5
        batch[flips] = batch[flips, :, ::-1]
        loss = flow.bits_per_dim(_to_tensor(batch).to(device), gen).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"patch flow: non-finite bits/dim at iteration {i}; lower "
                                     "outlier_exposure.flow_patches.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 50.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if i % 10 == 0 or i == fp.iterations - 1:
            history.append(loss.item())
            bar.set_postfix(bpd=f"{running:.3f}")
    bar.close()
    return flow.eval(), history


@torch.no_grad()
def bits_per_dim(flow: PatchFlow, patches: np.ndarray, generator: torch.Generator,
                 chunk: int = 64) -> np.ndarray:
    """Bits/dim of uint8 patches [n, h, w, 3] under the flow."""
    device = flow.top_mean.device
    out = [flow.bits_per_dim(_to_tensor(patches[i:i + chunk]).to(device), generator).cpu()
           for i in range(0, len(patches), chunk)]
    return torch.cat(out).numpy().astype(np.float64)


@torch.no_grad()
def sample_border(flow: PatchFlow, side: int, n: int, band: tuple[float, float],
                  temperature: float | tuple[float, float], generator: torch.Generator) -> tuple[np.ndarray, dict]:
    """``n`` patches of ``side`` px, drawn at ``temperature`` and kept when their bits/dim lies in
    ``band`` (module docstring); returns (uint8 [n, side, side, 3], statistics)."""
    chunk = max(4, min(128, 131072 // (side * side)))
    kept: list[np.ndarray] = []
    spare: list[tuple[float, np.ndarray]] = []  # rejected finite draws and their distance to the band
    drawn, bpds = 0, []
    while sum(len(k) for k in kept) < n and drawn < 8 * n:
        x = flow.sample(chunk, (side, side), temperature, generator)
        patches = x.permute(0, 2, 3, 1).cpu().numpy()
        bpd = np.nan_to_num(bits_per_dim(flow, patches, generator), nan=np.inf)  # overflowed: far out
        drawn += chunk
        bpds.append(bpd)
        inside = (bpd >= band[0]) & (bpd <= band[1])
        kept.append(patches[inside])
        distance = np.maximum(band[0] - bpd, bpd - band[1])
        out = ~inside & np.isfinite(bpd)
        spare.extend((float(d), p) for d, p in zip(distance[out], patches[out]))
    accepted = np.concatenate(kept)[:n]
    short = n - len(accepted)
    if short > 0 and spare:
        spare.sort(key=lambda t: t[0])
        accepted = np.concatenate([accepted, np.stack([p for _, p in spare[:short]])])
    if len(accepted) == 0:
        raise FloatingPointError(f"patch flow: no finite sample at {side} px in {drawn} draws; lower "
                                 "outlier_exposure.flow_patches.temperature")
    all_bpd = np.concatenate(bpds)
    stats = {"side": side, "drawn": drawn, "in_band": int(sum(len(k) for k in kept)),
             "acceptance": float(np.mean((all_bpd >= band[0]) & (all_bpd <= band[1]))),
             "filled_nearest": len(accepted) - min(n, sum(len(k) for k in kept)),
             "drawn_bpd_median": float(np.median(all_bpd)), "overflowed": int(np.sum(~np.isfinite(all_bpd)))}
    return np.ascontiguousarray(accepted), stats


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def flow_patch_bank(cfg: Config, progress: bool = False,
                    device: Optional[torch.device] = None) -> PatchBank:
    """The cached bank of `outlier_exposure.flow_patches`, training the generator and sampling
    the bank first when the cache has none (module docstring)."""
    with _threads(THREADS):
        return _flow_patch_bank(cfg, progress, device)


def _flow_patch_bank(cfg: Config, progress: bool, device: Optional[torch.device]) -> PatchBank:
    fp = cfg.outlier_exposure.flow_patches
    device = device or torch.device("cpu")
    samples = training_samples(cfg)
    gen_key, bank_key = cache_keys(cfg, samples)
    folder = patch_cache_root(cfg) / gen_key
    bank_path = folder / f"bank-{bank_key}.npz"
    if bank_path.is_file():
        log.info("flow patches: cached bank %s", bank_path)
        return PatchBank.load(bank_path)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([cfg.seed, 15, 1])
    gen_path = folder / "generator.pt"
    log.info("flow patches: reading %d frames for the patch generator", len(samples))
    pool, held_out = crop_pools(samples, cfg, rng, progress)
    if gen_path.is_file():
        saved = torch.load(gen_path, map_location=device, weights_only=True)
        flow = PatchFlow(fp.levels, fp.steps, fp.hidden_channels, clamp=fp.clamp, seed=cfg.seed).to(device)
        flow.load_state_dict(saved["state_dict"])
        flow.eval()
        meta = json.loads((folder / "generator.json").read_text())
    else:
        log.info("flow patches: training the patch generator (%d iterations on %d crops; cached in %s)",
                 fp.iterations, len(pool), folder)
        start, cpu = time.perf_counter(), time.process_time()
        flow, history = train_patch_flow(pool, cfg, progress, device)
        meta = {"train_seconds": round(time.perf_counter() - start, 1),
                "train_cpu_seconds": round(time.process_time() - cpu, 1), "frames": len(samples),
                "crops": len(pool), "bpd_history": history,
                "settings": {k: getattr(fp, k) for k in GENERATOR_KEYS}}
        _write_atomic(gen_path, lambda p: torch.save({"state_dict": flow.state_dict()}, p))
        (folder / "generator.json").write_text(json.dumps(meta, indent=1) + "\n")
        log.info("flow patches: generator trained in %.0f s, final bits/dim %.3f", meta["train_seconds"],
                 history[-1])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    counts = [fp.bank_size // len(fp.sizes) + (i < fp.bank_size % len(fp.sizes)) for i in range(len(fp.sizes))]
    patches: dict[int, np.ndarray] = {}
    report = []
    start, cpu = time.perf_counter(), time.process_time()
    for side, n in zip(fp.sizes, counts):
        inlier = bits_per_dim(flow, held_out[side], gen)
        lo = float(np.quantile(inlier, fp.border_quantile))
        band = (lo, lo + fp.border_width)
        patches[side], stats = sample_border(flow, side, n, band, tuple(fp.temperature), gen)
        stats.update(inlier_bpd_mean=float(inlier.mean()), band=list(band),
                     bank_bpd_mean=float(bits_per_dim(flow, patches[side], gen).mean()))
        report.append(stats)
        log.info("flow patches %d px: inlier bits/dim %.3f (q%.2f %.3f), band [%.3f, %.3f], %.0f %% of "
                 "%d draws at T in %s in band, bank mean %.3f", side, stats["inlier_bpd_mean"],
                 fp.border_quantile, lo, band[0], band[1], 100 * stats["acceptance"], stats["drawn"],
                 list(fp.temperature), stats["bank_bpd_mean"])
        if stats["filled_nearest"]:
            log.warning("flow patches %d px: only %d of %d draws in the border band; %d filled with the "
                        "nearest draws (tune outlier_exposure.flow_patches.temperature / border_width)",
                        side, stats["in_band"], stats["drawn"], stats["filled_nearest"])
    bank = PatchBank(patches)

    def save(path: Path) -> None:
        with path.open("wb") as f:
            bank.save(f)

    _write_atomic(bank_path, save)
    info = {"sample_seconds": round(time.perf_counter() - start, 1),
            "sample_cpu_seconds": round(time.process_time() - cpu, 1), "sizes": report,
            "settings": {k: getattr(fp, k) for k in BANK_KEYS}, "generator": meta.get("train_seconds")}
    (folder / f"bank-{bank_key}.json").write_text(json.dumps(info, indent=1) + "\n")
    return bank
