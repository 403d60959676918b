"""The node's edge guard with rclpy's real logger: an exception is caught, counted and logged
(traceback the first time per site, throttled after), and logging itself never trips rclpy's
one-severity-per-call-site rule, which is what ended the node when its alarm changed level."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_exceptions_are_caught_counted_and_logged_once_with_a_traceback_then_throttled():
    script = textwrap.dedent("""
        import rclpy
        import rclpy.logging
        from flowclas_ros.ros.edge_guard import EdgeGuard
        from flowclas_ros.ros.stats import NodeStats, Throttle

        rclpy.init()
        logger = rclpy.logging.get_logger("guard_test")
        stats = NodeStats()
        guard = EdgeGuard(logger, stats, Throttle(period_s=3600.0))

        def boom(x):
            raise RuntimeError(f"boom {x}")

        cb = guard.wrap("timer", boom)
        for i in range(5):
            assert cb(i) is None
        assert guard.run("parameters", boom, 1, fallback="refused") == "refused"
        assert guard.run("parameters", lambda: 42) == 42
        # the rclpy trap itself: one call site, two severities, raises ValueError inside; caught
        def flip(level):
            log = logger.error if level else logger.warning
            log("level " + str(level))
        guard.run("flip", flip, 0)
        guard.run("flip", flip, 1)
        s = stats.snapshot()
        print("COUNTS", s["internal_error"], sorted(s["internal_errors"].items()))
        rclpy.shutdown()
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "COUNTS 7 [('flip', 1), ('parameters', 1), ('timer', 5)]" in out, out
    assert out.count("internal error in timer") == 1, out  # throttled after the first
    assert out.count("RuntimeError: boom 0") == 1 and "Traceback" in out, out
    assert "Logger severity cannot be changed between calls" in out, out  # named, not fatal


def test_every_log_call_site_in_ros_has_one_fixed_severity():
    """rclpy ties a severity to each call site; a logger method taken as a value (`log = error if
    x else warning`) can reach one site with two severities. In ros/, logger methods are only
    ever called directly."""
    import ast
    from pathlib import Path

    methods = {"debug", "info", "warning", "warn", "error", "fatal"}
    offenders = []
    for path in sorted((Path(__file__).resolve().parents[1] / "flowclas_ros" / "ros").glob("*.py")):
        tree = ast.parse(path.read_text())
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        offenders += [f"{path.name}:{n.lineno}" for n in ast.walk(tree)
                      if isinstance(n, ast.Attribute) and n.attr in methods and id(n) not in called
                      and "log" in ast.unparse(n.value).lower()]
    assert offenders == []
