"""`flowclas-ros train`: train a FlowCLAS model from a YAML config, or from the robot's logs alone."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("flowclas_ros.train")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a FlowCLAS model from a YAML config, or from rosbag2 "
                       "logs of normal operation with the built-in recipe (--bag)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="a training config (YAML)")
    src.add_argument("--bag", action="append", metavar="LOG",
                     help="a rosbag2 log of normal operation (repeatable): train on its image topic "
                     "with the built-in recipe (flowclas_ros/training/recipes.py), no config needed")
    p.add_argument("--topic", help="with --bag: the image topic (default: the log's only one)")
    p.add_argument("--stride", type=int, default=1, help="with --bag: keep every n-th frame")
    p.add_argument("--val", help="with --bag: calibration frames, a labelled dataset directory or a "
                   "log of normal operation (default: the first training log, with a warning)")
    p.add_argument("--val-layout", help="with --bag: the layout of --val (default: rosbag2 for a "
                   "log, else generic)")
    p.add_argument("--bank", help="with --bag: an OE cut-out bank to paste besides the procedural "
                   "anomalies (default: procedural only)")
    p.add_argument("--recipe", default="default", metavar="NAME",
                   help="with --bag: default (the shipped model's recipe), new-world (cut-outs "
                   "with --bank and procedural blobs, paste sizes and contrast derived from the log "
                   "and printed) or "
                   "new-world-accurate (the same at the camera's full resolution, trained on crops)")
    p.add_argument("--oe", metavar="SOURCES", help="outlier-exposure sources, comma-separated, each "
                   "with an optional weight (default 1); the others are switched off: e.g. "
                   "'flow_patches,procedural' or 'cutouts=1,procedural=1,flow_patches=1' (sources: "
                   "cutouts (needs --bank or the config's bank), procedural, flow_patches, "
                   "flow_negatives); with --bag or --config")
    p.add_argument("--out", help="run directory (default runs/<config name>, runs/<first log name>)")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set loss.contrastive_weight=0")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--workers", type=int, default=0, help="processes extracting the frames of "
                   "rosbag2 sources before training, one log each (default 0: one per log, at "
                   "most one per core; 1: one after the other)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.config import ConfigError, load_config
    from flowclas_ros.training.loop import train
    from flowclas_ros.training.recipes import logs_config, oe_overrides, recipe_overrides

    overrides = (oe_overrides(a.oe) if a.oe is not None else []) + list(a.set or [])
    if a.max_steps is not None:
        overrides.append(f"train.max_steps={a.max_steps}")
    if a.config:
        used = [f"--{k.replace('_', '-')}" for k in ("topic", "val", "val_layout", "bank")
                if getattr(a, k) is not None] + (["--stride"] if a.stride != 1 else []) + (
                    ["--recipe"] if a.recipe != "default" else [])
        if used:
            raise ConfigError(f"{', '.join(used)} only apply with --bag (a config names its own data)")
        cfg = load_config(a.config, overrides)
        out = Path(a.out or Path("runs") / Path(a.config).stem)
    else:
        if a.stride < 1:
            raise ConfigError(f"--stride must be >= 1, got {a.stride}")
        derived, notes = recipe_overrides(a.recipe, a.bag, a.topic, a.stride, a.bank)
        for note in notes:
            print(note, flush=True)
        overrides = derived + overrides  # the user's --oe / --set win
        cfg, warnings = logs_config(a.bag, a.topic, a.stride, a.val, a.val_layout, a.bank, overrides)
        for w in warnings:
            log.warning(w)
        out = Path(a.out or Path("runs") / Path(a.bag[0]).stem)
    _extract_logs(cfg, a.workers)
    ckpt = train(cfg, out, resume=a.resume, progress=not a.quiet)
    print(f"checkpoint: {ckpt}")
    return 0


def _extract_logs(cfg, workers: int) -> None:
    """The frames of every rosbag2 source, extracted at once on the work pool (the trainer then
    finds them in the cache). Under torchrun only the first local rank does it: the others read
    the same cache (an extraction is renamed into place whole)."""
    import os

    from flowclas_ros.data.rosbag_layout import extract_bags

    sources = [s for s in [*cfg.data.train, cfg.data.val] if s is not None and s.layout == "rosbag2"]
    if len(sources) < 2 or os.environ.get("LOCAL_RANK", "0") != "0":
        return
    n = workers or min(len(sources), os.cpu_count() or 1)
    extract_bags([(s.root, s.topic, s.stride) for s in sources], workers=n)
