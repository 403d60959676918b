"""Render a development split of untextured, camouflaged obstacles (issue 21), for choices on val.

Courtyard val rules (docs/sim-worlds.md) with another seed stream, obstacles from the val/test
family ``random_urdfs/500-999`` (never the reserved named objects), each repainted one flat colour
with its texture removed: half take the median colour of a ring of frame pixels around them (the
wall or floor behind them), half a grey or white of the courtyard's stone. Each frame is rendered
twice: once to read the ring, once repainted. The reserved split is a test and is never used to
build or tune this split.

    python scripts/render_camouflage_dev.py --out data/sim/camo_dev -n 150 --seed 7
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from flowclas_ros.data.generic import write_sample
from flowclas_ros.runtime.labels import ANOMALY, INLIER
from flowclas_ros.sim.camera import _sample_light
from flowclas_ros.sim.scenes import _compose, _rng, _world

RING_PX = 15  # ring width around an obstacle whose median colour it takes


def render(index: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    world = _world()
    rng = _rng(seed, "val", index)
    camera, objects = _compose(world, "val", rng, "courtyard")
    light = _sample_light(rng)
    rgb, ids, _ = world.render_with_depth(camera, light)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RING_PX + 1, 2 * RING_PX + 1))
    for obj in objects:
        if obj["role"] != "anomaly":
            continue
        mask = (ids == obj["body"]).astype(np.uint8)
        ring = (cv2.dilate(mask, kernel) > 0) & (mask == 0)
        if rng.random() < 0.5 and ring.any():
            colour = np.median(rgb[ring], axis=0) / 255.0 * rng.uniform(0.95, 1.25)
            obj["paint"] = "ring"
        else:
            colour = np.full(3, rng.uniform(0.55, 0.95)) * rng.uniform(0.97, 1.03, 3)
            obj["paint"] = "stone"
        world.recolour(obj["body"], (*np.clip(colour, 0, 1).tolist(), 1.0))
    rgb, ids, _ = world.render_with_depth(camera, light)
    bodies = [o["body"] for o in objects if o["role"] == "anomaly"]
    label = np.where(np.isin(ids, bodies), np.uint8(ANOMALY), np.uint8(INLIER))
    meta = {"id": f"camo_{index:05d}", "seed": seed, "index": index, "camera": camera.metadata(),
            "objects": [{k: v for k, v in o.items() if k != "body"} for o in objects]}
    return rgb, label, meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("-n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "frames.jsonl", "w", encoding="utf-8") as f:
        for i in range(a.n):
            rgb, label, meta = render(i, a.seed)
            write_sample(out, meta["id"], rgb, label)
            f.write(json.dumps(meta, default=float) + "\n")
    (out / "summary.json").write_text(json.dumps({"split": "camo_dev", "seed": a.seed, "frames": a.n}) + "\n")


if __name__ == "__main__":
    main()
