"""Fleet replay throughput: the same bags with 1 worker, then 2 (or --workers), in one run.

    flock /tmp/flowclas-train.lock python scripts/fleet_throughput.py runs/bags \
        --gt-topic /camera/anomaly_gt [--workers 1,2] [--model fast] [--out runs/fleet_bench]

Each setting runs `flowclas-ros replay` over every bag in BAGS (a directory of bags, a glob or a
list file) into a fresh report directory (nothing reused from a manifest), scoring the ground
truth and writing no output bags, and prints: wall seconds (pool start-up included), frames,
frames/s, the ratio to the first setting, the median time of one frame through the node's
pipeline in a worker (decode + detector, the bags' medians' median), and whether the pooled
metrics are identical. The load
average (1 min) before and after each setting is printed too: the machine may be shared. Last, the
cost of a fleet (100 bags x 10 min at 10 Hz = 600,000 frames) on N such machines at the best
measured rate, on paper (one machine's rate times N, no network or start-up cost counted).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

FLEET_FRAMES = 100 * 10 * 60 * 10  # 100 bags x 10 min x 10 Hz


def main() -> int:
    from flowclas_ros.eval.fleet import run_fleet

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bags")
    p.add_argument("--gt-topic")
    p.add_argument("--model")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--out", default="runs/fleet_bench")
    a = p.parse_args()
    settings = {"gt_topic": a.gt_topic} if a.gt_topic else {}
    rows, first, pooled0 = [], None, None
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores")
    print("workers  wall_s  frames  frames/s  ratio  ms/frame/worker  load_before  load_after  "
          "pooled_identical")
    for n in [int(w) for w in a.workers.split(",")]:
        report = Path(a.out) / f"workers{n}"
        shutil.rmtree(report, ignore_errors=True)
        load0 = os.getloadavg()[0]
        r = run_fleet("replay", [a.bags], report, a.model, settings, workers=n, progress=False)
        load1 = os.getloadavg()[0]
        fps = r["frames_per_s"]
        first = first or fps
        for k in ("ms_per_frame", "ms_per_frame_p95"):  # timings differ run to run
            if r["pooled"]:
                r["pooled"].pop(k)
        pooled = json.dumps(r["pooled"], sort_keys=True, default=str) if r["pooled"] else None
        pooled0 = pooled0 or pooled
        rows.append((n, fps))
        ms = statistics.median(b["ms_per_frame"] for b in r["bags"] if b["status"] == "ok")
        print(f"{n:7d}  {r['wall_s']:6.1f}  {r['frames']:6d}  {fps:8.2f}  {fps / first:5.2f}  "
              f"{ms:15.1f}  {load0:11.2f}  {load1:10.2f}  {pooled == pooled0}"
              + (f"  failed: {r['failed']}" if r["failed"] else ""))
    best = max(fps for _, fps in rows)
    print(f"fleet of {FLEET_FRAMES} frames (100 bags x 10 min x 10 Hz) at {best:.2f} frames/s "
          "per machine like this one:")
    for machines in (1, 4, 16, 64):
        hours = FLEET_FRAMES / (best * machines) / 3600
        print(f"  {machines:3d} machines: {hours:7.1f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
