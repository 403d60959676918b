"""The docs check (test/docs_check.py) on the README and docs/, and on pages broken on purpose: the
commands users copy parse with the real `flowclas-ros` parsers, `ros2 launch` arguments exist in
the launch file, relative links resolve, and the launch arguments are documented."""
from __future__ import annotations

from pathlib import Path

import pytest
from docs_check import ROOT, commands_checked, doc_pages, launch_arguments, problems


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_commands_and_links_work(page: Path):
    assert problems(page, page.read_text()) == []


def test_the_check_reads_the_pages_users_read():
    names = {str(p.relative_to(ROOT)) for p in doc_pages()}
    assert {"README.md", "docs/results.md", "docs/speed.md", "docs/architecture.md",
            "docs/navigation.md", "docs/sim-worlds.md"} <= names
    assert commands_checked((ROOT / "README.md").read_text()) >= 10
    assert sum(commands_checked(p.read_text()) for p in doc_pages()) >= 60


def test_every_launch_argument_is_documented():
    readme = (ROOT / "README.md").read_text()
    for name in launch_arguments():
        assert f"`{name}`" in readme, f"launch argument {name} is not documented in the README"


GOOD = """# A page

```bash
flowclas-ros train --bag logs/normal_0612 --val data/robot_val --out runs/robot
flowclas-ros replay LOG --out OUT_BAG --model MODEL.onnx \\
    --gt-topic /camera/anomaly_gt   # a comment is not an argument
flowclas-ros sim --world NAME --split SPLIT -n N --out DIR [--seed S] [--bag [--bag-jpeg Q]]
ros2 launch flowclas_ros detector.launch.py image_topic:=/camera/image_raw model:=accurate
```

Prose may name `flowclas-ros evaluate` or run `flowclas-ros export
runs/robot/checkpoint.pt --out models/robot.onnx` across a line break. [Up](#a-page), [the
README](README.md#two-commands).
"""

BROKEN = {
    "an unknown flag": "```bash\nflowclas-ros train --bag LOG --out DIR --no-such-flag\n```\n",
    "a missing required flag": "```bash\nflowclas-ros export runs/robot/checkpoint.pt\n```\n",
    "a missing positional": "```bash\nflowclas-ros replay --out replays/x\n```\n",
    "an unknown verb": "```bash\nflowclas-ros fly --out DIR\n```\n",
    "a value of the wrong type": "```bash\nflowclas-ros sim --split val -n ten --out data/x\n```\n",
    "a value outside the choices": "```bash\nflowclas-ros sim --world moon --split val -n 5 --out data/x\n```\n",
    "a flag lost in continued lines": "```bash\nflowclas-ros quantize m.onnx \\\n    --out q.onnx --frame 16\n```\n",
    "a broken inline command": "Run `flowclas-ros evaluate --model fast` to see.\n",
    "an unknown verb named in prose": "The `flowclas-ros evaluation` verb.\n",
    "an unknown launch argument": "```bash\nros2 launch flowclas_ros detector.launch.py image:=/cam\n```\n",
    "a link to no file": "See [the guide](docs/no-such-page.md).\n",
    "a link to no heading": "See [speed](docs/speed.md#no-such-heading).\n",
}


def test_a_good_page_passes(tmp_path):
    page = ROOT / "README.md"  # links resolve from the repository root
    assert problems(page, GOOD) == []
    assert commands_checked(GOOD) == 5


@pytest.mark.parametrize("what", list(BROKEN))
def test_a_broken_page_fails(what):
    found = problems(ROOT / "README.md", BROKEN[what])
    assert len(found) == 1, (what, found)
    assert found[0].startswith("README.md")
