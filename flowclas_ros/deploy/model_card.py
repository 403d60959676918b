"""Model cards: a Markdown file next to a shipped model, written from the model file's metadata,
the training checkpoint and the evaluator's metrics.json files, so every number on the card was
measured by `flowclas-ros evaluate` and every setting comes from the run itself."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Optional

from flowclas_ros.model.score import describe_score
from flowclas_ros.runtime.depth_regions import DEPTH_REGIONS_KEY
from flowclas_ros.runtime.model_info import ModelFileError, read_model_info

METRIC_ROWS = (("auprc", "AUPRC"), ("fpr95", "FPR95"), ("auroc", "AUROC"), ("mean_f1", "mean F1"),
               ("siou", "sIoU"), ("ppv", "PPV"))


def _fmt(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def describe_oe(oe: Any) -> str:
    """The OE sources a run used, with their shares and options (one line of the card)."""
    weights = oe.source_weights()
    if not weights:
        return "none (NF-only)"
    total = sum(weights.values())
    parts = []
    for name, w in weights.items():
        share = f"{100 * w / total:.0f}% of OE frames"
        if name == "cutouts":
            camo = (f", {100 * oe.camouflage:.0f}% camouflaged (recoloured from the frame, shading kept)"
                    if oe.camouflage > 0 else "")
            parts.append(f"pasted cut-outs from `{oe.bank}` ({share}; count {oe.count}, scale {oe.scale}{camo})")
        elif name == "procedural":
            pr, f = oe.procedural, oe.procedural.fills
            parts.append(f"procedural noise-blob anomalies ({share}; count {pr.count}, scale {pr.scale}, "
                         f"coverage {pr.coverage}, fills texture/colour/geometry "
                         f"{f.texture:g}/{f.colour:g}/{f.geometry:g})")
        elif name == "flow_patches":
            fp = oe.flow_patches
            parts.append(f"flow-generated image patches ({share}; count {fp.count}, scale {fp.scale}; "
                         f"a {fp.levels}-level patch flow of the training frames, T {fp.temperature}, kept "
                         f"within {fp.border_width:g} bits/dim beyond the inlier patches' "
                         f"q{fp.border_quantile:g}; sides {fp.sizes})")
        else:
            fn = oe.flow_negatives
            parts.append(f"flow-sampled latent negatives ({share}; blobs of {fn.cells} cells, shell "
                         f"tau {fn.tau}, anchor {fn.anchor:g}, context {fn.context}"
                         + (f", NLL hinge margin {fn.nll_margin:g}" if fn.nll_margin > 0 else "")
                         + (f", drawn by the frozen flow of `{fn.generator}`" if fn.generator else "") + ")")
    sizes = "" if oe.size_sampling == "uniform" else f"; sizes drawn {oe.size_sampling.replace('_', '-')}"
    return f"p={oe.probability:g} per frame, one source per frame: " + "; ".join(parts) + sizes


def describe_augmentation(aug: Any) -> str:
    """The camera augmentation a run used (one line of the card)."""
    if aug.probability <= 0:
        return "none (clean frames)"
    ranges = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in dataclasses.asdict(aug.camera).items())
    return f"camera model on {100 * aug.probability:g}% of the training frames: {ranges}"


def render_card(model: Path, checkpoint: Path, reports: dict[str, Path], command: str,
                wall_time: Optional[str] = None, notes: str = "") -> str:
    from flowclas_ros.deploy.export import load_model_for_export
    from flowclas_ros.training.checkpoint import checkpoint_config, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    cfg = checkpoint_config(ckpt)
    _, info = load_model_for_export(checkpoint)
    if model.suffix == ".onnx":  # the file's own metadata: threshold, version, precision
        info = read_model_info(model)
        if info.config_sha256 != ckpt["config_sha256"]:
            raise ModelFileError(f"{model} was not exported from {checkpoint} (config "
                                 f"{info.config_sha256[:8]} vs {ckpt['config_sha256'][:8]})")
    metrics = {split: json.loads((Path(d) / "metrics.json").read_text()) for split, d in reports.items()}
    m, oe, loss, t = cfg.model, cfg.outlier_exposure, cfg.loss, cfg.train
    lines = [
        f"# Model card: {model.name}", "",
        f"- version: `{info.model_version}`, created {info.created}; card written "
        f"{_dt.date.today().isoformat()}",
        f"- config sha256: `{info.config_sha256}`",
        f"- backbone: {m.backbone.name} (frozen, ImageNet), taps at strides {m.backbone.taps}, "
        f"fused at stride {m.backbone.feature_stride}; input {m.input_size[1]}x{m.input_size[0]} "
        f"({m.resize_policy})" + (f"; the flow trained on the features of the backbone quantised "
                                  f"to int8 ({m.backbone.int8_calibration_frames} calibration "
                                  "frames of the val source)" if m.backbone.int8_features else ""),
        f"- flow: {m.flow.steps} steps, hidden {m.flow.hidden_channels}, kernels "
        f"{m.flow.kernel_sizes}, clamp {m.flow.clamp}, positional channels {m.flow.positional_channels}",
        f"- loss: L_ml + {loss.contrastive_weight:g} x L_con (SupCon, temperature {loss.temperature:g}, "
        f"{loss.samples_per_class} samples per class)",
        f"- outlier exposure: {describe_oe(oe)}",
        f"- augmentation: {describe_augmentation(cfg.augmentation)}",
        f"- score post-processing: {describe_score(m)}",
        "- training data: " + ", ".join(f"`{s.root}` ({s.layout})" for s in cfg.data.train) +
        (f"; validation `{cfg.data.val.root}`" if cfg.data.val else ""),
        f"- training: {ckpt['step']} steps, batch {t.batch_size}, AdamW lr {t.lr:g} ({t.schedule}), "
        f"seed {cfg.seed}" + (f"; wall time {wall_time}" if wall_time else ""),
        f"- precision: {info.extra.get('precision', 'fp32')}",
        f"- threshold: {info.threshold:.4g} ({info.threshold_rule}); score normalisation offset "
        f"{info.score_offset:.4g}, scale {info.score_scale:.4g}",
        *([f"- depth region stage (on frames with aligned depth; runtime/depth_regions.py): "
           f"`{info.extra[DEPTH_REGIONS_KEY]}`"] if info.extra.get(DEPTH_REGIONS_KEY) else []),
        f"- command: `{command}`", "",
        "## Metrics (measured by `flowclas-ros evaluate`, pixels pooled over each split, percent)", "",
        "| split | frames | " + " | ".join(name for _, name in METRIC_ROWS) +
        " | TPR @ threshold | FPR @ threshold | ms/frame |",
        "|---|---|" + "---|" * (len(METRIC_ROWS) + 3),
    ]
    for split, r in metrics.items():
        at = r.get("at_model_threshold", {})
        lines.append(f"| {split} | {r['frames']} | " + " | ".join(_fmt(r.get(k)) for k, _ in METRIC_ROWS) +
                     f" | {_fmt(at.get('tpr'))} | {_fmt(at.get('fpr'))} | {_fmt(r.get('ms_per_frame'))} |")
    lines += size_table(metrics)
    if notes:
        lines += ["", notes.strip()]
    return relative_paths("\n".join(lines) + "\n")


def size_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines of recall at the model threshold by obstacle size and by obstacle contrast,
    per split (none when no report has them): small and far obstacles, and those that look like
    their surroundings, are where detectors fail first."""
    return (_bucket_table(metrics, "recall_by_size", " px", "Recall at the model threshold by "
                          "obstacle size (pixels of a ground-truth component at the source resolution)")
            + _bucket_table(metrics, "recall_by_contrast", "", "Recall at the model threshold by "
                            "obstacle contrast (CIELAB Delta E between an obstacle and a ring of "
                            "inlier pixels around it)"))


def _bucket_table(metrics: dict[str, dict[str, Any]], key: str, unit: str, title: str) -> list[str]:
    binned = {split: r[key] for split, r in metrics.items() if r.get(key)}
    if not binned:
        return []
    bins = list(next(iter(binned.values())))
    lines = ["", f"{title}: pixel recall, in brackets the share of obstacles hit at all.", "",
             "| split | " + " | ".join(f"{b}{unit}" for b in bins) + " |", "|---|" + "---|" * len(bins)]
    for split, by_bin in binned.items():
        cells = [f"{_fmt(by_bin[b].get('pixel_recall'))} ({_fmt(by_bin[b].get('hit_rate'))}; "
                 f"{by_bin[b].get('objects', 0)} obstacles)" if b in by_bin else "" for b in bins]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return lines


def relative_paths(text: str, base: Optional[Path] = None) -> str:
    """Paths under `base` (default: the working directory, the repo when run from it) written
    relative to it: a card checked into the repo names `data/sim/val`, not one machine's
    absolute path (configs resolve their paths to absolute ones on load)."""
    prefix = str((base or Path.cwd()).resolve()).rstrip("/") + "/"
    return text.replace(prefix, "")
