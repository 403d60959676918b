"""Training batches: inlier frames + outlier exposure, through the runtime's own preprocessing.

A batch is a pure function of (seed, step, rank): the frames, the flips and the pasted cut-outs are
drawn from an RNG seeded by those three numbers, so `--resume` continues exactly and DDP ranks see
different data without a sampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config import Config, DataSource
from ..runtime.processing import label_to_input, preprocess
from .layouts import Sample, load_layout, read_image_rgb, read_label
from .outliers import CutoutBank, PasteConfig, paste_outliers


@dataclass
class Frame:
    """One preprocessed training frame: normalised [3,H,W] image and model-grid labels [H,W]."""

    image: np.ndarray
    label: np.ndarray
    key: tuple[int, bool]  # (frame index, flipped): the feature-cache key of unpasted frames
    pasted: bool


def source_samples(src: DataSource) -> list[Sample]:
    """The samples of one source; layout options (topic, stride) are passed only when set, so
    layouts without options keep working."""
    opts: dict[str, object] = {}
    if src.topic is not None:
        opts["topic"] = src.topic
    if src.stride != 1:
        opts["stride"] = src.stride
    return load_layout(src.layout, src.root, **opts)


def load_samples(sources: list[DataSource]) -> list[Sample]:
    samples: list[Sample] = []
    for src in sources:
        samples.extend(source_samples(src))
    return samples


class TrainingFrames:
    """Draws preprocessed frames for a step. Inlier sources may carry labels: anomalous (1) pixels
    of a source frame are kept as anomalies, void (255) stays void."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.samples = load_samples(cfg.data.train)
        oe = cfg.outlier_exposure
        self.bank: Optional[CutoutBank] = CutoutBank.from_dir(oe.bank) if oe.enabled else None
        self.paste_cfg = PasteConfig(probability=oe.probability, count=tuple(oe.count),
                                     scale=tuple(oe.scale)) if oe.enabled else None
        m = cfg.model
        self.input_hw = tuple(m.input_size)
        from ..model.backbone import BACKBONES

        backbone_cls = BACKBONES[m.backbone.name]
        self.mean, self.std = backbone_cls.mean, backbone_cls.std

    def __len__(self) -> int:
        return len(self.samples)

    def rng(self, step: int, rank: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, step, rank])

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.samples[index]
        rgb = read_image_rgb(s.image_path)
        label = (read_label(s.label_path, rgb.shape[:2]) if s.label_path is not None
                 else np.zeros(rgb.shape[:2], np.uint8))
        return rgb, label

    def frame(self, index: int, flip: bool, rng: np.random.Generator) -> Frame:
        rgb, label = self.read(index)
        pasted = False
        if self.bank is not None:
            rgb, label, pasted = paste_outliers(rgb, label, self.bank, self.paste_cfg, rng)
        if flip:
            rgb, label = rgb[:, ::-1].copy(), label[:, ::-1].copy()
        x, geom = preprocess(rgb, self.input_hw, self.mean, self.std, self.cfg.model.resize_policy)
        return Frame(x, label_to_input(label, geom), (index, flip), pasted)

    def batch(self, step: int, rank: int = 0) -> list[Frame]:
        rng = self.rng(step, rank)
        n = self.cfg.train.batch_size
        idx = rng.integers(0, len(self.samples), size=n)
        flips = rng.random(n) < 0.5 if self.cfg.data.hflip else np.zeros(n, bool)
        return [self.frame(int(i), bool(f), rng) for i, f in zip(idx, flips)]
