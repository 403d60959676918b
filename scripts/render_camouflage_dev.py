"""Render development splits of untextured, camouflaged obstacles (issue 21), for choices on val.

Courtyard val rules (docs/sim-worlds.md: camera, 1-3 obstacles of 0.2-0.8 m largest side, 1.5-7 m
ahead, known inlier objects) with their own seeds, never the reserved named objects:

* ``--kind camouflaged``: obstacles from the val/test family ``random_urdfs/500-999``;
* ``--kind solids``: plain primitives written here (boxes of side ratios 1:1.3 to 1:3, cylinders;
  no cube, no sphere), the untextured solids the reserved split shows the detector misses.

Each obstacle is repainted one flat colour with its texture removed: half take the median colour
of a ring of frame pixels around them (the wall or floor behind them), half a grey or white of the
courtyard's stone. Each frame is rendered twice: once to read the ring, once repainted. The
reserved split is a test and is never used to build or tune these splits.

    python scripts/render_camouflage_dev.py --out data/sim/camo_dev -n 150 --seed 7
    python scripts/render_camouflage_dev.py --kind solids --out data/sim/solids_dev -n 150 --seed 8
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from flowclas_ros.data.generic import write_sample
from flowclas_ros.runtime.labels import ANOMALY, INLIER
from flowclas_ros.sim.camera import Camera, _sample_camera, _sample_light
from flowclas_ros.sim.generate import measured_depth_mm, write_measured_depth
from flowclas_ros.sim.placement import try_place
from flowclas_ros.sim.scenes import (
    _ANOMALY_COUNT,
    _ANOMALY_DISTANCE,
    _ANOMALY_SIZE,
    _compose,
    _place_known,
    _rng,
    _world,
)
from flowclas_ros.sim.world import _Asset

RING_PX = 15  # ring width around an obstacle whose median colour it takes
# (kind, x, y, z) of the primitives at scale 1: boxes 1:1.3 to 1:3, cylinders (radius, -, length)
SOLIDS = (("box", 1.0, 1.3, 1.0), ("box", 1.0, 1.0, 2.0), ("box", 2.0, 1.0, 1.0), ("box", 3.0, 1.0, 1.5),
          ("box", 1.0, 1.5, 2.5), ("box", 2.0, 2.0, 1.0), ("cylinder", 0.5, 0.0, 1.2),
          ("cylinder", 0.5, 0.0, 2.5), ("cylinder", 1.0, 0.0, 0.6))
_URDF = """<?xml version="1.0"?>
<robot name="{name}"><link name="base">
<visual><geometry>{geom}</geometry><material name="m"><color rgba="0.7 0.7 0.7 1"/></material></visual>
<collision><geometry>{geom}</geometry></collision>
<inertial><mass value="1"/><inertia ixx="1" ixy="0" ixz="0" iyy="1" iyz="0" izz="1"/></inertial>
</link></robot>
"""


def _solid_assets() -> list[_Asset]:
    folder = Path(tempfile.gettempdir()) / "flowclas_solids_dev"
    folder.mkdir(exist_ok=True)
    assets = []
    for i, (kind, a, b, c) in enumerate(SOLIDS):
        geom = (f'<box size="{a} {b} {c}"/>' if kind == "box" else f'<cylinder radius="{a}" length="{c}"/>')
        path = folder / f"solid_{i}.urdf"
        path.write_text(_URDF.format(name=f"solid_{i}", geom=geom))
        assets.append(_Asset(f"solid_{i}_{kind}", str(path)))
    return assets


def _compose_solids(world, rng):
    """Val rules with primitives as the obstacles (scenes._compose with another asset list)."""
    assets = _solid_assets()
    for _ in range(50):
        world.clear()
        camera = _sample_camera(rng)
        placed = []
        for _ in range(int(rng.integers(_ANOMALY_COUNT[0], _ANOMALY_COUNT[1] + 1))):
            asset = assets[int(rng.integers(len(assets)))]
            lo, hi = world.bounds(asset.path)
            scale = float(rng.uniform(*_ANOMALY_SIZE) / (hi - lo).max())
            obj = try_place(world, camera, rng, asset, scale, _ANOMALY_DISTANCE, whole_in_view=True)
            if obj is None:
                placed = None
                break
            placed.append({**obj, "role": "anomaly"})
        if placed is not None:
            return camera, placed + _place_known(world, camera, rng)
    raise RuntimeError("could not place the solids")


def render(index: int, seed: int, kind: str = "camouflaged"
           ) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    world = _world()
    rng = _rng(seed, "val", index)
    if kind == "solids":
        camera, objects = _compose_solids(world, rng)
    else:
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
    rgb, ids, depth = world.render_with_depth(camera, light)
    bodies = [o["body"] for o in objects if o["role"] == "anomaly"]
    label = np.where(np.isin(ids, bodies), np.uint8(ANOMALY), np.uint8(INLIER))
    meta = {"id": f"{kind}_{index:05d}", "seed": seed, "index": index, "camera": camera.metadata(),
            "objects": [{k: v for k, v in o.items() if k != "body"} for o in objects]}
    return rgb, label, meta, depth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("-n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--kind", choices=("camouflaged", "solids"), default="camouflaged")
    ap.add_argument("--depth", action="store_true", help="also write the measured depth (as `sim --depth`)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "frames.jsonl", "w", encoding="utf-8") as f:
        for i in range(a.n):
            rgb, label, meta, depth = render(i, a.seed, a.kind)
            write_sample(out, meta["id"], rgb, label)
            if a.depth:
                camera = Camera.from_metadata(meta["camera"])
                write_measured_depth(out, meta["id"], measured_depth_mm(depth, camera, a.seed, meta["id"]), camera)
            f.write(json.dumps(meta, default=float) + "\n")
    (out / "summary.json").write_text(json.dumps({"split": f"{a.kind}_dev", "seed": a.seed, "frames": a.n}) + "\n")


if __name__ == "__main__":
    main()
