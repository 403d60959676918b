"""Fleet validation (`replay` / `evaluate` over many inputs): pooled metrics equal to one process
on the same frames, exactly; 2 local workers and a 2-worker Dask cluster give the same answer as
1; a rerun resumes; a failing bag among good ones is listed and the rest go on; training
extracts many logs at once on the same pool. Real rosbag2 files, the really trained tiny model,
real ONNX Runtime, real worker processes."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from nested_compare import assert_same
from test_bags import image_msg, write_bag

from flowclas_ros import cli
from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.generic import generic_layout
from flowclas_ros.data.labels import read_sample_label
from flowclas_ros.data.rosbag import IMAGE
from flowclas_ros.data.rosbag_layout import extract_bags, rosbag2_layout
from flowclas_ros.eval.evaluate import evaluate
from flowclas_ros.eval.fleet import run_fleet
from flowclas_ros.eval.fleet.inputs import expand_inputs
from flowclas_ros.eval.pooled_stats import PooledStats
from flowclas_ros.eval.report import to_json

IMAGE_TOPIC, GT_TOPIC = "/cam/image_raw", "/cam/anomaly_gt"
T0, PERIOD = 1_700_000_000_000_000_000, 100_000_000
# keys that measure time, or name the data and model as each caller does
NOT_COMPARED = {"ms_per_frame", "ms_per_frame_p95", "data", "layout", "model", "model_version",
                "providers"}


def compared(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in NOT_COMPARED}


def samples(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [(s.id, read_image_rgb(s.image_path), read_sample_label(s)) for s in generic_layout(root)]


def labelled_bag(path: Path, frames: list[tuple[str, np.ndarray, np.ndarray]], t0: int = T0) -> Path:
    """Image + mono8 ground truth, same header stamps (labels written after their frame)."""
    records = []
    for i, (_, rgb, label) in enumerate(frames):
        t = t0 + i * PERIOD
        records.append((IMAGE_TOPIC, IMAGE, t, image_msg(t, rgb)))
        records.append((GT_TOPIC, IMAGE, t + 1, image_msg(t, label, "mono8")))
    return write_bag(path, records)


@pytest.fixture(scope="module")
def bags(toy_world, tmp_path_factory) -> tuple[Path, list[list[tuple]]]:
    """Three labelled bags of toy frames (test + val splits) in one directory."""
    root = tmp_path_factory.mktemp("fleet_bags")
    frames = samples(toy_world / "test") + samples(toy_world / "val")
    parts = [frames[0:5], frames[5:9], frames[9:14]]
    for i, part in enumerate(parts):
        labelled_bag(root / f"log_{i}", part, T0 + i * 10**12)
    return root, parts


def test_pooled_stats_merge_exactly_even_when_the_table_coarsens():
    """Shards pooled in any split equal one pass, also once the pixel table has had to halve its
    resolution (max_bins small), and through the arrays a worker sends back / a manifest stores."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(9):
        heat = rng.gamma(2.0, 1.0, (24, 32)).astype(np.float32)
        label = (rng.random((24, 32)) < 0.1).astype(np.uint8)
        label[:2] = 255
        heat[label == 1] += 1.5
        frames.append((heat, label))
    whole = PooledStats(2.0, min_pred_area=3, min_gt_area=1, max_bins=256, components=True)
    for i, (h, lab) in enumerate(frames):
        whole.add(str(i), h, lab, 1.0)
    assert whole.pixel.shift > 0  # the single pass had to coarsen
    for cuts in ([3, 6], [1, 8], [5]):
        shards, bounds = [], [0, *cuts, len(frames)]
        for lo, hi in zip(bounds, bounds[1:]):
            s = PooledStats(2.0, min_pred_area=3, min_gt_area=1, max_bins=256, components=True)
            for i in range(lo, hi):
                s.add(str(i), *frames[i], 1.0)
            shards.append(PooledStats.from_state(*s.state()))
        pooled = shards[0]
        for s in shards[1:]:
            pooled.merge(s)
        meta = {"model": "m", "model_version": None, "providers": [], "threshold": 2.0}
        assert_same(pooled.result(meta, "d", "generic"), whole.result(meta, "d", "generic"))
        np.testing.assert_array_equal(pooled.pixel._keys[:pooled.pixel._n],
                                      whole.pixel._keys[:whole.pixel._n])


def test_pooled_over_shards_equals_one_evaluation_exactly(trained, toy_world, tmp_path, capsys):
    """Two datasets cut into shards of 3 frames, pooled: every metric equals `evaluate` on all
    their frames in one process (components at the model threshold, as a pooled run takes them)."""
    r = run_fleet("evaluate", [str(toy_world / "test"), str(toy_world / "val")], tmp_path / "r",
                  trained["onnx"], {"layout": "generic", "layout_options": {}, "min_pred_area": 50,
                                    "min_gt_area": 10, "image_score": "max", "image_top_k": 0.01},
                  shard_frames=3, workers=1, progress=False)
    assert (r["inputs"], r["shards"], r["failed"]) == (2, 5, 0)
    single = evaluate(samples(toy_world / "test") + samples(toy_world / "val"), trained["onnx"],
                      progress=False, component_threshold="model")
    assert r["pooled"]["frames"] == single["frames"] == 14
    assert_same(compared(r["pooled"]), compared(single))
    on_disk = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert on_disk["auprc"] == pytest.approx(single["auprc"], abs=0, rel=0)
    # the command line, shards of another size, 2 worker processes: the same numbers
    assert cli.main(["evaluate", "--data", str(toy_world / "test"), "--data", str(toy_world / "val"),
                     "--out", str(tmp_path / "cli"), "--model", str(trained["onnx"]),
                     "--shard-frames", "4", "--workers", "2", "--threads", "1", "--quiet",
                     "--json"]) == 0
    by_cli = json.loads(capsys.readouterr().out)
    assert by_cli["shards"] == 4
    for key in ("auprc", "fpr95", "pixels", "at_model_threshold", "recall_by_size", "components"):
        assert by_cli["pooled"][key] == json.loads(to_json(r["pooled"][key])), key
    # each dataset's own row: its shards pooled, equal to evaluate on that dataset alone
    row = next(b for b in r["bags"] if b["name"] == "val")
    alone = evaluate(toy_world / "val", trained["onnx"], progress=False, component_threshold="model")
    assert_same(compared(row["metrics"]), compared(alone))


def test_replay_fleet_two_workers_equal_one_and_equal_evaluate(bags, trained, tmp_path):
    root, parts = bags
    settings = {"gt_topic": GT_TOPIC}
    one = run_fleet("replay", [str(root)], tmp_path / "one", trained["onnx"], settings,
                    workers=1, threads=1, progress=False)
    two = run_fleet("replay", [str(root)], tmp_path / "two", trained["onnx"], settings,
                    workers=2, threads=1, progress=False)
    assert one["failed"] == two["failed"] == 0 and one["frames"] == 14 == two["scored_frames"]
    assert_same(compared(one["pooled"]), compared(two["pooled"]))
    assert [b["name"] for b in one["bags"]] == [b["name"] for b in two["bags"]]
    for a, b in zip(one["bags"], two["bags"]):
        assert_same(compared(a["metrics"]), compared(b["metrics"]))
    # the node's pipeline on the bag frames == the evaluator's path on the same frames
    single = evaluate([f for p in parts for f in p], trained["onnx"], progress=False,
                      component_threshold="model")
    assert_same(compared(one["pooled"]), compared(single))
    # the table: worst F1 at the model threshold first, one CSV row per bag, frames per bag
    f1 = [b["metrics"]["at_model_threshold"]["f1"] for b in one["bags"]]
    assert f1 == sorted(f1)
    lines = (tmp_path / "one" / "bags.csv").read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("rank,name,status")
    assert sorted(p.name for p in (tmp_path / "one" / "frames").iterdir()) == [
        "log_0.csv", "log_1.csv", "log_2.csv"]


def test_rerun_resumes_and_reruns_what_changed(bags, trained, tmp_path):
    root, parts = bags
    work = tmp_path / "bags"
    shutil.copytree(root, work)
    settings = {"gt_topic": GT_TOPIC}
    first = run_fleet("replay", [str(work)], tmp_path / "r", trained["onnx"], settings, workers=1, progress=False)
    again = run_fleet("replay", [str(work)], tmp_path / "r", trained["onnx"], settings, workers=1, progress=False)
    assert (first["reused_shards"], again["reused_shards"]) == (0, 3)
    assert math.isnan(again["frames_per_s"])  # nothing scored again
    assert_same(compared(first["pooled"]), compared(again["pooled"]))
    # output bags asked for later: the bags run again to write them, then are done
    outs = [run_fleet("replay", [str(work)], tmp_path / "r", trained["onnx"], settings,
                      out=tmp_path / "outs", workers=1, progress=False)["reused_shards"] for _ in range(2)]
    assert outs == [0, 3] and len(list((tmp_path / "outs").iterdir())) == 3
    # a moved bag keeps its key (content hash); an edited one runs again
    (work / "log_0").rename(work / "log_0_moved")
    shutil.rmtree(work / "log_1")
    labelled_bag(work / "log_1", parts[1][:2], T0 + 10**12)
    edited = run_fleet("replay", [str(work)], tmp_path / "r", trained["onnx"], settings,
                       workers=1, progress=False)
    assert (edited["reused_shards"], edited["frames"]) == (2, 12)
    fresh = run_fleet("replay", [str(work)], tmp_path / "fresh", trained["onnx"], settings,
                      progress=False)
    assert_same(compared(edited["pooled"]), compared(fresh["pooled"]))
    # another setting (threshold) is another key: everything runs again
    other = run_fleet("replay", [str(work)], tmp_path / "r", trained["onnx"],
                      {**settings, "threshold": 0.5}, workers=1, progress=False)
    assert other["reused_shards"] == 0 and other["pooled"]["at_model_threshold"]["threshold"] == 0.5


def test_a_failing_bag_is_listed_and_the_rest_go_on(bags, trained, tmp_path, capsys):
    root, parts = bags
    work = tmp_path / "bags"
    shutil.copytree(root, work)
    bad = work / "log_bad"
    bad.mkdir()
    (bad / "log_bad_0.mcap").write_bytes(b"\x89MCAP0\r\n" + os.urandom(4000))
    (work / "list.txt").write_text(f"# the fleet\n{work / 'log_0'}\nlog_bad\n{work}/log_[12]\n")
    rc = cli.main(["replay", f"@{work / 'list.txt'}", "--gt-topic", GT_TOPIC, "--report",
                   str(tmp_path / "r"), "--out", str(tmp_path / "outs"), "--model",
                   str(trained["onnx"]), "--workers", "2", "--quiet", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert rc == 1 and (r["inputs"], r["done"], r["failed"]) == (4, 3, 1)
    assert r["bags"][0]["name"] == "log_bad" and r["bags"][0]["status"] == "failed"
    assert r["failures"][0]["input"].endswith("log_bad") and r["failures"][0]["error"]
    assert r["pooled"]["frames"] == 14  # every frame of the good bags, pooled
    assert sorted(p.name for p in (tmp_path / "outs").iterdir()) == ["log_0", "log_1", "log_2"]
    # fixed, the rerun runs only that bag
    shutil.rmtree(bad)
    labelled_bag(bad, parts[0][:2], T0 + 5 * 10**12)
    rc = cli.main(["replay", f"@{work / 'list.txt'}", "--gt-topic", GT_TOPIC, "--report",
                   str(tmp_path / "r"), "--model", str(trained["onnx"]), "--quiet", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert rc == 0 and (r["failed"], r["reused_shards"], r["frames"]) == (0, 3, 16)


def test_inputs_from_directories_globs_and_list_files(bags, tmp_path):
    """A directory of bags (or of sim outputs holding OUT/bag), a glob, a list file; each once."""
    root, _ = bags
    for i in range(2):
        shutil.copytree(root / f"log_{i}", tmp_path / "sim" / f"run{i}" / "bag")
    (tmp_path / "sim" / "run0" / "images").mkdir()  # sim writes frames beside the bag
    assert expand_inputs([str(tmp_path / "sim")], "bag") == [
        tmp_path / "sim" / "run0" / "bag", tmp_path / "sim" / "run1" / "bag"]
    (tmp_path / "l.txt").write_text(f"{root}/log_2\n# a comment\nsim/run*/bag\n")
    got = expand_inputs([f"@{tmp_path / 'l.txt'}", str(root / "log_2"), str(root)], "bag")
    assert [p.name for p in got] == ["log_2", "bag", "bag", "log_0", "log_1"]


def test_cli_errors_are_one_line(bags, trained, tmp_path, capsys):
    root, _ = bags
    assert cli.main(["replay", str(root), "--model", str(trained["onnx"]), "--quiet"]) == 2
    assert "needs --report" in capsys.readouterr().err
    assert cli.main(["replay", str(root / "log_0"), "--model", str(trained["onnx"])]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert cli.main(["replay", str(tmp_path / "nothing*"), "--report", str(tmp_path / "r"),
                     "--model", str(trained["onnx"])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "matches nothing" in err


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_dask_cluster_of_two_workers_gives_the_local_pooled_result(bags, trained, tmp_path):
    """A Dask scheduler and two worker processes started here, as on two machines: the same
    pooled result as the local run, every bag done by a cluster worker."""
    pytest.importorskip("distributed")
    root, _ = bags
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    sched = tmp_path / "scheduler.json"
    procs = [_start(["distributed.cli.dask_scheduler", "--scheduler-file", str(sched), "--port",
                     "0", "--no-dashboard", "--host", "127.0.0.1"], env, tmp_path / "s.log")]
    try:
        deadline = time.monotonic() + 60
        while not sched.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched.read_text())["address"]
        for i in range(2):
            procs.append(_start(["distributed.cli.dask_worker", address, "--nthreads", "1",
                                 "--nworkers", "1", "--no-dashboard", "--name", f"node{i}",
                                 "--host", "127.0.0.1"], env, tmp_path / f"w{i}.log"))
        settings = {"gt_topic": GT_TOPIC}
        on_cluster = run_fleet("replay", [str(root)], tmp_path / "dask", trained["onnx"],
                               settings, cluster=address, threads=1, progress=False)
        local = run_fleet("replay", [str(root)], tmp_path / "local", trained["onnx"], settings,
                          workers=1, threads=1, progress=False)
        assert on_cluster["failed"] == 0 and on_cluster["engine"] == f"dask {address}"
        assert_same(compared(on_cluster["pooled"]), compared(local["pooled"]))
        where = [b["where"] for b in on_cluster["bags"]]
        assert all(w and w.startswith("tcp://127.0.0.1:") for w in where)
        assert len(set(where)) == 2  # both workers took bags
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs[::-1]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_evaluate_warns_naming_non_images_and_a_0_255_label(trained, toy_world, tmp_path):
    """A notes.txt and a directory named x.png in images/, and one label written 0/255 among
    0/1 ones: the run goes on and the warnings name the files."""
    root = tmp_path / "set"
    shutil.copytree(toy_world / "test", root)
    (root / "images" / "notes.txt").write_text("camera 2, afternoon")
    (root / "images" / "x.png").mkdir()
    s = generic_layout(root)[2]
    label = read_sample_label(s)
    cv2.imwrite(str(s.label_path), np.where(label == 1, 255, 0).astype(np.uint8))
    r = evaluate(root, trained["onnx"], progress=False)
    text = "\n".join(r["warnings"])
    assert "notes.txt" in text and "x.png/" in text
    assert f"labels/{s.label_path.name}" in text and "0/255" in text
    assert r["frames"] == 6  # nothing else changed
    clean = evaluate(toy_world / "test", trained["onnx"], progress=False)
    assert not any("0/255" in w or "not image files" in w for w in clean["warnings"])


def test_training_extracts_many_logs_at_once_on_the_pool(bags, tmp_path, monkeypatch):
    """Two logs extracted by two worker processes: the layout then reads the same frames as an
    extraction one after the other."""
    root, parts = bags
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    logs = [root / "log_0", root / "log_2"]
    done = extract_bags([(p, IMAGE_TOPIC, 2) for p in logs], workers=2)
    assert sorted(done) == sorted(str(p) for p in logs)
    pooled = [[read_image_rgb(s.image_path) for s in rosbag2_layout(p, IMAGE_TOPIC, 2)] for p in logs]
    assert len(list((tmp_path / "xdg" / "flowclas_ros" / "bags").iterdir())) == 2  # no re-extraction
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg2"))
    alone = [[read_image_rgb(s.image_path) for s in rosbag2_layout(p, IMAGE_TOPIC, 2)] for p in logs]
    for a, b in zip(pooled, alone):
        assert len(a) == len(b) == 3
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
