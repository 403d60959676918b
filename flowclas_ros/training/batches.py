"""Training batches: inlier frames + outlier exposure, through the runtime's own preprocessing.

A batch is a pure function of (seed, step, rank): the frames, the flips and the pasted cut-outs are
drawn from an RNG seeded by those three numbers, so `--resume` continues exactly and DDP ranks see
different data without a sampler.

Outlier exposure: a frame receives OE with `outlier_exposure.probability`, from ONE source drawn
with the `outlier_exposure.sources` weights: `cutouts`, `procedural` and `flow_patches` (patches
sampled by a flow of the frames' own pixels, training/outliers/flow_patch_bank.py; its bank is trained or
read from the cache when the frames are set up) paste into the image here (at source resolution,
before the flip and the resize); `flow_negatives` leaves the image alone and
only marks the frame (`TrainingFrame.source`), the training loop appends a flow-sampled negative copy of its
features. A config with cut-outs as the only source draws exactly the random numbers it drew
before the other sources existed, so older runs resume on the same batches.

Native-resolution crops (`train.crop_size`, off by default): a frame is first cut to a random
window that becomes `crop_size` at the model's input scale, on the grid of the backbone's coarsest
stride (so its feature cells are cells of the whole frame's grid); outliers are pasted into the
window. A model that infers on whole frames at full camera resolution then trains at the cost of
a smaller input. Cropped frames are never feature-cached (every crop is new).

Camera augmentation (`augmentation`, off by default): with its probability a frame, after any
paste, goes through the camera model (data/camera_model.py), so inliers and outliers are seen
through the same sensor; it draws random numbers only when enabled.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from flowclas_ros.config import Config
from flowclas_ros.data.camera_model import CameraModel
from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.labels import read_label_or_inlier
from flowclas_ros.data.layouts import source_samples
from flowclas_ros.data.outliers.cutouts import CutoutBank, PasteConfig, paste_outliers
from flowclas_ros.data.outliers.flow_patch_pasting import FlowPatchConfig, PatchBank, paste_flow_patches
from flowclas_ros.data.outliers.procedural_anomalies import ProceduralConfig, paste_procedural
from flowclas_ros.model.registry import BACKBONES
from flowclas_ros.runtime.processing import label_to_input, preprocess
from flowclas_ros.training.outliers.flow_patch_bank import flow_patch_bank

if TYPE_CHECKING:
    import torch


@dataclass
class TrainingFrame:
    """One preprocessed training frame: normalised [3,H,W] image and model-grid labels [H,W]."""

    image: np.ndarray
    label: np.ndarray
    key: tuple[int, bool]  # (frame index, flipped): the feature-cache key of unmodified frames
    modified: bool  # pasted OE or camera augmentation: not the stored frame, features not cached
    source: str = "none"  # OE source: none | cutouts | procedural | flow_patches | flow_negatives


PASTED = ("cutouts", "procedural", "flow_patches")  # sources that change the frame's pixels


class TrainingFrames:
    """Draws preprocessed frames for a step. Inlier sources may carry labels: anomalous (1) pixels
    of a source frame are kept as anomalies, void (255) stays void."""

    def __init__(self, cfg: Config, progress: bool = False, device: Optional["torch.device"] = None) -> None:
        """`progress` / `device`: the patch generator's progress bar and device (flow_patches only)."""
        self.cfg = cfg
        oe = cfg.outlier_exposure
        weights = oe.source_weights()
        self.sources = list(weights)
        self.source_p = np.array(list(weights.values()), np.float64) / max(sum(weights.values()), 1e-12)
        # The bank before the samples: listing a bag source extracts its frames (minutes).
        self.bank: Optional[CutoutBank] = CutoutBank.from_dir(oe.bank) if "cutouts" in weights else None
        self.samples = [s for src in cfg.data.train for s in source_samples(src)]
        self.paste_cfg = PasteConfig(probability=oe.probability, count=tuple(oe.count),
                                     scale=tuple(oe.scale), size_sampling=oe.size_sampling,
                                     camouflage=oe.camouflage
                                     ) if self.bank is not None else None
        pr = oe.procedural
        self.procedural_cfg = ProceduralConfig(
            probability=1.0, count=tuple(pr.count), scale=tuple(pr.scale), coverage=tuple(pr.coverage),
            opacity=tuple(pr.opacity), min_change=pr.min_change, octaves=pr.octaves,
            frequency=tuple(pr.frequency), fills=dataclasses.asdict(pr.fills), size_sampling=oe.size_sampling,
        ) if "procedural" in weights else None
        fp = oe.flow_patches
        self.patch_bank: Optional[PatchBank] = None
        self.patch_cfg: Optional[FlowPatchConfig] = None
        if "flow_patches" in weights:
            self.patch_bank = flow_patch_bank(cfg, progress, device)
            self.patch_cfg = FlowPatchConfig(probability=1.0, count=tuple(fp.count), scale=tuple(fp.scale),
                                             shapes=dataclasses.asdict(fp.shapes), min_change=fp.min_change)
        aug = cfg.augmentation
        self.camera = (CameraModel.from_mapping(dataclasses.asdict(aug.camera))
                       if aug.probability > 0 else None)
        m = cfg.model
        self.model_hw: tuple[int, ...] = tuple(m.input_size)
        self.crop_hw: Optional[tuple[int, ...]] = tuple(cfg.train.crop_size) if cfg.train.crop_size else None
        self.input_hw = self.crop_hw or self.model_hw  # what one training frame is resized to
        self.crop_grid = max(m.backbone.taps)
        backbone_cls = BACKBONES[m.backbone.name]
        self.mean, self.std = backbone_cls.mean, backbone_cls.std

    def __len__(self) -> int:
        return len(self.samples)

    def rng(self, step: int, rank: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, step, rank])

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.samples[index]
        rgb = read_image_rgb(s.image_path)
        return rgb, read_label_or_inlier(s, rgb.shape[:2])

    def outlier_exposure(self, rgb: np.ndarray, label: np.ndarray,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
        """(image, label, source) of one frame after OE; source "none" when it received none."""
        if not self.sources:
            return rgb, label, "none"
        if self.sources == ["cutouts"]:  # the original random stream, bit for bit
            rgb, label, pasted = paste_outliers(rgb, label, self.bank, self.paste_cfg, rng)
            return rgb, label, "cutouts" if pasted else "none"
        if rng.random() >= self.cfg.outlier_exposure.probability:
            return rgb, label, "none"
        source = self.sources[int(rng.choice(len(self.sources), p=self.source_p))]
        if source == "cutouts":
            always = dataclasses.replace(self.paste_cfg, probability=1.0)
            rgb, label, _ = paste_outliers(rgb, label, self.bank, always, rng)
        elif source == "procedural":
            rgb, label, _ = paste_procedural(rgb, label, self.procedural_cfg, rng)
        elif source == "flow_patches":
            rgb, label, _ = paste_flow_patches(rgb, label, self.patch_bank, self.patch_cfg, rng)
        return rgb, label, source  # flow_negatives: the image is untouched (train.py)

    def crop(self, rgb: np.ndarray, label: np.ndarray, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
        """A random window of the frame that maps onto `crop_size` at the model's input scale,
        its offset on the coarsest stride's grid (in source pixels)."""
        assert self.crop_hw is not None
        src_h, src_w = rgb.shape[:2]
        (in_h, in_w), (c_h, c_w) = self.model_hw, self.crop_hw
        win_h, win_w = round(c_h * src_h / in_h), round(c_w * src_w / in_w)
        cell_h, cell_w = self.crop_grid * src_h / in_h, self.crop_grid * src_w / in_w
        top = round(cell_h * int(rng.integers(0, int((src_h - win_h) / cell_h) + 1)))
        left = round(cell_w * int(rng.integers(0, int((src_w - win_w) / cell_w) + 1)))
        return rgb[top:top + win_h, left:left + win_w], label[top:top + win_h, left:left + win_w]

    def frame(self, index: int, flip: bool, rng: np.random.Generator) -> TrainingFrame:
        rgb, label = self.read(index)
        if self.crop_hw is not None:
            rgb, label = self.crop(rgb, label, rng)
        rgb, label, source = self.outlier_exposure(rgb, label, rng)
        modified = source in PASTED or self.crop_hw is not None
        if self.camera is not None and rng.random() < self.cfg.augmentation.probability:
            rgb = self.camera.apply(rgb, rng)  # after the paste: outliers seen by the same camera
            modified = True
        if flip:
            rgb, label = rgb[:, ::-1].copy(), label[:, ::-1].copy()
        x, geom = preprocess(rgb, self.input_hw, self.mean, self.std, self.cfg.model.resize_policy)
        return TrainingFrame(x, label_to_input(label, geom), (index, flip), modified, source)

    def batch(self, step: int, rank: int = 0) -> list[TrainingFrame]:
        rng = self.rng(step, rank)
        n = self.cfg.train.batch_size
        idx = rng.integers(0, len(self.samples), size=n)
        flips = rng.random(n) < 0.5 if self.cfg.data.hflip else np.zeros(n, bool)
        return [self.frame(int(i), bool(f), rng) for i, f in zip(idx, flips)]
