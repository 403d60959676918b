"""The depth synchroniser: processed frames and depth frames paired by stamp whichever comes first,
late and missing depth counted, both buffers bounded in count and bytes."""
from __future__ import annotations

import numpy as np

from flowclas_ros.runtime.stamp_sync import StampSync


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(**kw) -> tuple[StampSync, Clock]:
    clock = Clock()
    return StampSync(clock=clock, **kw), clock


def test_depth_first_or_frame_first_both_pair_at_once():
    sync, _ = make()
    assert sync.add_depth(100, "d100") == []
    assert sync.add_frame(100, "f100") == [(100, "f100", "d100")]
    assert sync.add_frame(200, "f200") == []
    assert sync.add_depth(200, "d200") == [(200, "f200", "d200")]
    assert (sync.counts.matched, sync.counts.unmatched, sync.pending_frames, sync.cached_depth) == (2, 0, 0, 0)


def test_exact_matching_ignores_a_neighbour_and_approximate_takes_the_nearest():
    exact, _ = make()
    exact.add_depth(1_000, "d")
    assert exact.add_frame(1_001, "f") == []
    approx, _ = make(tolerance_ns=10)
    approx.add_depth(1_020, "far")
    approx.add_depth(1_004, "near")
    assert approx.add_frame(1_000, "f") == [(1_000, "f", "near")]
    assert approx.add_frame(2_000, "g") == []  # nothing within 10 ns
    assert approx.add_depth(2_009, "d") == [(2_000, "g", "d")]


def test_a_frame_whose_depth_never_comes_is_given_up_and_its_late_depth_counted():
    sync, clock = make(wait_s=0.5)
    sync.add_frame(100, "f")
    clock.t = 0.4
    assert sync.expire() == [] and sync.next_deadline() == 0.5
    clock.t = 0.6
    assert sync.expire() == [(100, "f")]
    assert sync.add_depth(100, "late depth") == []
    assert (sync.counts.unmatched, sync.counts.late, sync.cached_depth) == (1, 1, 0)
    assert sync.next_deadline() is None


def test_buffers_are_bounded_by_count_and_by_bytes():
    sync, _ = make(max_frames=3, max_depth=2)
    for stamp in range(5):
        sync.add_frame(stamp, f"f{stamp}")
    assert sync.pending_frames == 3 and sync.counts.unmatched == 2  # the two oldest given up
    for stamp in range(10, 15):
        sync.add_depth(stamp, f"d{stamp}")
    assert sync.cached_depth == 2 and sync.counts.unused == 3
    big = StampSync(max_frame_bytes=3_000_000, max_depth_bytes=2_500_000, size_of=lambda a: a.nbytes)
    for stamp in range(4):
        big.add_frame(stamp, np.zeros(1_000_000, np.uint8))
        big.add_depth(100 + stamp, np.zeros(1_000_000, np.uint8))
    assert big.pending_frames == 3 and big.cached_depth == 2
    assert big.add_frame(101, np.zeros(1, np.uint8)) == []  # d101 was pushed out for d102, d103
    assert [s for s, *_ in big.add_frame(103, np.zeros(1, np.uint8))] == [103]


def test_the_same_depth_twice_is_kept_once_and_a_reprocessed_frame_replaces_its_result():
    sync, _ = make()
    sync.add_depth(5, "a")
    sync.add_depth(5, "b")  # the same frame through the second subscription
    assert sync.cached_depth == 1
    assert sync.add_frame(5, "f") == [(5, "f", "a")]
    assert sync.add_depth(5, "c") == [] and sync.cached_depth == 0  # its copy after the pairing
    sync.add_frame(7, "old")
    sync.add_frame(7, "new")
    assert sync.pending_frames == 1 and sync.add_depth(7, "d") == [(7, "new", "d")]
