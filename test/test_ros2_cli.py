"""The package as a ROS 2 user runs it: colcon build, `ros2 launch`, `ros2 param`, `ros2 run`, Ctrl-C.

Uses the real `ros2` command line of ../shared/ros2-cli (launch, launch_ros and ros2cli from their
upstream sources, installed into the venv by `.ci/run`); skipped with the reason where it is not
installed, so a clone without the kit still passes. The kit's traps are handled as its README
says: `ros2 launch` starts in its own session (a background shell ignores SIGINT) and a
terminal-style Ctrl-C is a SIGINT to the whole process group, which reaches the node twice (from
the "terminal" and again from launch).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ros_harness import Peer, image_msg, wait_for
from sensor_msgs.msg import Image
from test_node_alarm import BLOCK, CAMERA, CYCLE, NS, RATE_HZ, AlarmRig, measure_scenes

ROOT = Path(__file__).resolve().parents[1]
ENV_SH = Path(sys.executable).resolve().parent.parent / "ros2-env.sh"
if not ENV_SH.is_file():  # the venv's python may be a symlink into the base interpreter
    ENV_SH = Path(sys.prefix) / "ros2-env.sh"

pytestmark = pytest.mark.skipif(
    not ENV_SH.is_file() or shutil.which("colcon", path=str(Path(sys.prefix) / "bin")) is None,
    reason="the real ros2 CLI kit is not installed (bash ../shared/ros2-cli/install.sh .venv)")


def _bash(script: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"source '{ENV_SH}' && {script}"], capture_output=True,
                          text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The package colcon-built in a fresh workspace, as `colcon build` in a ROS 2 workspace."""
    ws = tmp_path_factory.mktemp("ws")
    src = ws / "src" / "flowclas_ros"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if files.returncode == 0 and files.stdout:
        for name in files.stdout.decode().split("\0"):
            if name and (ROOT / name).is_file():
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, src / name)
    else:  # not a git checkout
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "data",
                                                                   "__pycache__", "*.egg-info"))
    res = _bash(f"cd '{ws}' && colcon build --event-handlers console_direct-", timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _bash("ros2 daemon start", timeout=60)  # the CLI discovers through it, in this test's domain
    yield ws
    _bash("ros2 daemon stop", timeout=60)


@pytest.fixture(scope="module")
def peer():
    p = Peer("flowclas_cli_peer")
    yield p
    p.close()


class Launch:
    """`ros2 launch flowclas_ros detector.launch.py ...` in its own session and process group."""

    def __init__(self, workspace: Path, *args: str) -> None:
        cmd = (f"source '{workspace}/install/setup.bash' && exec ros2 launch flowclas_ros "
               f"detector.launch.py {' '.join(args)}")
        self.proc = subprocess.Popen(["bash", "-c", f"source '{ENV_SH}' && {cmd}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        import threading

        threading.Thread(target=lambda: self.lines.extend(line.rstrip() for line in self.proc.stdout),
                         daemon=True).start()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def ctrl_c(self, timeout: float = 30) -> int:
        """What a terminal's Ctrl-C does: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


    def interrupt(self) -> int:
        return self.ctrl_c()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _param(workspace: Path, *args: str, tries: int = 20) -> str:
    """`ros2 param ...`, retried while the CLI has not discovered the node yet."""
    for _ in range(tries):
        res = _bash(f"source '{workspace}/install/setup.bash' && ros2 param {' '.join(args)}", timeout=60)
        out = res.stdout + res.stderr
        if "Node not found" not in out:
            return out
        time.sleep(1.0)
    return out


def test_launch_params_frames_and_a_clean_ctrl_c(workspace, peer):
    ns, cam = "cli", "/cli_cam/image"
    launch = Launch(workspace, f"image_topic:={cam}", f"namespace:={ns}", "log_level:=info",
                    "model:=accurate")  # a role name picks the shipped model of that role
    base = f"/{ns}/flowclas_detector"
    try:
        wait_for(lambda: "listening on" in launch.log, 90, "the launched node:\n" + launch.log)
        assert f"listening on {cam}" in launch.log
        assert "models/flowclas_accurate.onnx (version" in launch.log, launch.log
        pub = peer.node.create_publisher(Image, cam, 10)  # a default-QoS (reliable) camera
        peer.subscribe(Image, f"{base}/obstacle_mask")
        wait_for(lambda: pub.get_subscription_count() > 0, 30, "the node's subscription")
        rgb = np.full((48, 64, 3), 90, np.uint8)

        def answered():
            pub.publish(image_msg(rgb, "rgb8", 123_000_000_007, frame_id="cli_cam"))
            time.sleep(0.2)
            return peer.messages(f"{base}/obstacle_mask")
        (mask, *_) = wait_for(answered, 60, "a mask for a published frame")
        assert (mask.height, mask.width, mask.header.frame_id) == (48, 64, "cli_cam")
        assert mask.header.stamp.sec == 123 and mask.header.stamp.nanosec == 7

        out = _param(workspace, "set", base, "threshold", "2")  # an integer, as typed
        assert "Set parameter successful" in out, out
        out = _param(workspace, "set", base, "overlay_alpha", "5")
        assert "overlay_alpha must be in [0, 1], got 5" in out, out
        out = _param(workspace, "set", base, "model_path", "other.onnx")
        assert "successful" not in out.replace("unsuccessful", ""), out  # read-only at run time
        assert "Integer value is: 2" in _param(workspace, "get", base, "threshold")
    finally:
        rc = launch.ctrl_c()
    assert rc == 0, launch.log
    assert "process has finished cleanly" in launch.log, launch.log
    assert "Traceback" not in launch.log and "exit code" not in launch.log, launch.log


def test_launch_arguments_are_documented_and_a_bad_model_fails_in_one_line(workspace):
    res = _bash(f"source '{workspace}/install/setup.bash' && ros2 launch flowclas_ros "
                "detector.launch.py --show-args", timeout=60)
    assert res.returncode == 0, res.stderr
    for name in ("image_topic", "params_file", "model", "namespace", "compressed", "log_level",
                 "dds_profile"):
        assert f"'{name}'" in res.stdout
    launch = Launch(workspace, "model:=/nonexistent/model.onnx", "namespace:=cli_bad")
    rc = launch.proc.wait(timeout=90)
    assert rc != 0 or "process has died" in launch.log
    assert "cannot start: model file not found: /nonexistent/model.onnx" in launch.log, launch.log
    assert "Traceback" not in launch.log


def test_ros2_run_starts_the_node_and_stops_on_sigint(workspace):
    proc = subprocess.Popen(
        ["bash", "-c", f"source '{ENV_SH}' && source '{workspace}/install/setup.bash' && exec ros2 run "
         "flowclas_ros detector --ros-args -r __ns:=/cli_run"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    import threading

    threading.Thread(target=lambda: lines.extend(line.rstrip() for line in proc.stdout), daemon=True).start()
    try:
        wait_for(lambda: any("listening on /cli_run/image" in line for line in lines), 90,
                 "ros2 run:\n" + "\n".join(lines))
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=30)
    assert rc == 0, "\n".join(lines)
    assert not any("Traceback" in line for line in lines)


def test_an_rgbd_camera_without_a_dds_profile_gets_a_cloud_for_every_frame(workspace, trained):
    """What issue 20 measured going wrong: a stock RGB-D driver (ROS default QoS, no DDS profile,
    640x480 rgb8 + aligned depth + CameraInfo at 10 Hz) into `ros2 launch ... use_depth:=true`.
    Depth often lands after its colour frame was processed; the node pairs them anyway: >= 95 % of
    the frames get a heatmap and a non-empty cloud whose every point lies on the published depth at
    a pixel of that frame's obstacle mask (scripts/frame_delivery.py; 100 % on a quiet machine, and
    one frame in 60 may go missing next to a training; the old design lost 18-37 of 60). Counting
    starts once the node answered a warm-up frame with a heatmap, a mask and a cloud: until the
    node's output writers have found this test's readers its answers have nowhere to go, and that
    is start-up, not delivery; the camera streams a second past the counted frames, so their last
    lost fragment is resent as in a live stream. What is tested is delivery, not speed: the node
    runs the suite's tiny model with every pixel flagged (threshold 0), so inference costs a few
    ms, and with `input_queue` 30 (its maximum) instead of 3. A shared CI machine once ran the
    node's frames at 136 ms p50 (queue wait included; 15-30 ms here), above the 100 ms between
    frames, and the default queue then dropped 4 of 70 frames, counted: that is the node's latency
    policy doing its job, which test_node.py tests; here it would make a slow machine look like
    lost frames. The shipped model's figures are in docs/navigation.md."""
    pytest.importorskip("pybullet", reason="the RGB-D frame is a PyBullet benchmark render")
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}  # the camera's side
    env["ROS_DOMAIN_ID"] = str(100 + os.getpid() % 100)
    res = _bash(f"source '{workspace}/install/setup.bash' && exec '{sys.executable}' "
                f"'{ROOT / 'scripts' / 'frame_delivery.py'}' --depth 16UC1,32FC1 --settings 640x480@10 "
                f"--frames 60 --json --model '{trained['onnx']}' --node-param threshold=0.0 "
                "--node-param min_obstacle_area=0 --node-param input_queue=30", timeout=400, env=env)
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert res.returncode == 0 and len(rows) == 2, res.stdout[-3000:] + res.stderr[-3000:]
    for r in rows:
        row = json.dumps(r)  # whole, with the frames that went missing and the node's counters
        assert r["heatmaps"] >= 0.95 * r["sent"], row
        assert r["clouds_on_depth"] >= 0.95 * r["sent"], row
        assert r["processed_without_cloud"] == [], row  # every processed frame got its depth


def test_the_alarm_swings_under_ros2_launch_and_ctrl_c_ends_it_cleanly(workspace, trained):
    """The installed package under the real `ros2 launch`, levels set in a params file: the scenes
    swing /diagnostics OK -> WARN -> ERROR -> WARN -> OK -> ERROR, the node answers the frames,
    logs each level change once, survives, and a terminal's Ctrl-C ends it cleanly."""
    frames, shares = measure_scenes(trained)

    def launched(params: dict) -> Launch:
        path = workspace / "alarm_params.yaml"
        path.write_text("/**:\n  ros__parameters:\n" + "".join(f"    {k}: {v}\n" for k, v in params.items()))
        return Launch(workspace, f"namespace:={NS.strip('/')}", f"image_topic:={CAMERA}", f"params_file:={path}")

    rig = AlarmRig(trained, shares, start_node=launched)
    try:
        rig.start(frames["ok"][0])
        blocks = [[frames[kind][i % len(frames[kind])] for i in range(BLOCK)] for kind in CYCLE]
        sent = rig.play(blocks, RATE_HZ)
        assert rig.proc.proc.poll() is None, "ros2 launch ended:\n" + rig.proc.log
        assert rig.answered(sent) >= 0.95 * len(sent), (rig.answered(sent), len(sent), rig.proc.log[-3000:])
        changes, logged = rig.scene_changes()
        reached = iter(b for _, b in changes)  # the cycle's levels in order (OK -> ERROR passes WARN)
        assert all(level in reached for level in CYCLE[1:]), changes
        assert logged[: len(changes)] == changes and len(logged) <= len(changes) + 1, (logged, changes)
        rc = rig.proc.interrupt()
    finally:
        rig.close()
    assert rc == 0, rig.proc.log[-3000:]
    assert "process has finished cleanly" in rig.proc.log, rig.proc.log[-3000:]
    assert "Traceback" not in rig.proc.log and "internal error" not in rig.proc.log, rig.proc.log[-3000:]
