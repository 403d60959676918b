"""`flowclas-ros card`: a model card from a model, its checkpoint and evaluator reports."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("card", help="write a model card from a model, its checkpoint and reports")
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--report", action="append", required=True, metavar="SPLIT=DIR",
                   help="an evaluator report directory per split, e.g. test=reports/test")
    p.add_argument("--command", required=True, help="the command that trained the model")
    p.add_argument("--wall-time")
    p.add_argument("--notes-file")
    p.add_argument("--out", required=True)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.deploy.model_card import render_card

    reports = dict(item.split("=", 1) for item in a.report)
    notes = Path(a.notes_file).read_text() if a.notes_file else ""
    text = render_card(Path(a.model), Path(a.checkpoint), {k: Path(v) for k, v in reports.items()},
                       a.command, a.wall_time, notes)
    Path(a.out).write_text(text)
    print(f"model card: {a.out}")
    return 0
