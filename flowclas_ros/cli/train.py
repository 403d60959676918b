"""`flowclas-ros train`: train a FlowCLAS model from a YAML config."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a FlowCLAS model from a YAML config")
    p.add_argument("--config", required=True)
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set loss.contrastive_weight=0")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.config import load_config
    from flowclas_ros.training.loop import train

    overrides = list(a.set or [])
    if a.max_steps is not None:
        overrides.append(f"train.max_steps={a.max_steps}")
    cfg = load_config(a.config, overrides)
    out = Path(a.out or Path("runs") / Path(a.config).stem)
    ckpt = train(cfg, out, resume=a.resume, progress=not a.quiet)
    print(f"checkpoint: {ckpt}")
    return 0
