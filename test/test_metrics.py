"""Pixel metrics vs scikit-learn (random and adversarial score maps), streaming and memory bounds,
component metrics on hand-built masks and against a direct implementation of the definition."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from flowclas_ros.eval.component_metrics import SIOU_THRESHOLDS, ComponentMetrics, frame_components
from flowclas_ros.eval.pixel_metrics import (
    PixelMetrics,
    average_precision,
    counts_at_threshold,
    float32_to_key,
    key_to_float32,
)

TOL = 1e-3
H, W = 48, 64


# ---------------------------------------------------------------- references


def sk_reference(frames):
    """Pooled scikit-learn metrics over the non-void pixels of (scores, labels) frames."""
    s = np.concatenate([f[0].astype(np.float32).ravel() for f in frames]).astype(np.float64)
    lab = np.concatenate([f[1].ravel() for f in frames])
    keep = lab != 255
    s, y = s[keep], lab[keep].astype(int)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    p, r, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * p * r / (p + r))
    return {"auprc": average_precision_score(y, s), "auroc": roc_auc_score(y, s),
            "fpr95": fpr[np.searchsorted(tpr, 0.95)], "best_f1": f1.max()}


def accumulate(frames, **kw) -> PixelMetrics:
    m = PixelMetrics(**kw)
    for s, lab in frames:
        m.update(s, lab)
    return m


def pooled(frames):
    return (np.concatenate([f[0].astype(np.float32).ravel() for f in frames]),
            np.concatenate([f[1].ravel() for f in frames]))


# ---------------------------------------------------------------- score-map generators


def _labels(rng, n_frames=5, anomaly_frames=None, void=True):
    labels = []
    for i in range(n_frames):
        lab = np.zeros((H, W), np.uint8)
        if anomaly_frames is None or i in anomaly_frames:
            for _ in range(rng.integers(1, 4)):
                y, x = rng.integers(0, H - 12), rng.integers(0, W - 12)
                lab[y:y + rng.integers(4, 12), x:x + rng.integers(4, 12)] = 1
        if void:
            lab[rng.random((H, W)) < 0.05] = 255
            lab[: rng.integers(0, 6)] = 255  # a void band (ego vehicle, say)
        labels.append(lab)
    return labels


def case_normal(rng):
    labs = _labels(rng)
    return [((rng.normal(size=(H, W)) + 1.5 * (l == 1)).astype(np.float32), l) for l in labs]


def case_uniform_overlap(rng):
    labs = _labels(rng)
    return [(rng.random((H, W), dtype=np.float32) + 0.2 * (l == 1), l) for l in labs]


def case_heavy_ties(rng):
    labs = _labels(rng)
    return [(np.clip(rng.integers(0, 3, (H, W)) + 2 * (l == 1) - rng.integers(0, 2, (H, W)),
                     0, 4).astype(np.float32), l) for l in labs]


def case_inlier_frames_mixed(rng):
    labs = _labels(rng, n_frames=8, anomaly_frames={1, 5})
    out = []
    for i, l in enumerate(labs):
        s = rng.gamma(2.0, size=(H, W)).astype(np.float32)
        if i in (0, 3):  # inlier frames with a bright inlier region: the classic false alarm
            s[10:20, 10:30] += 4.0
        out.append((s + 3.0 * (l == 1), l))
    return out


def case_void_extremes(rng):
    out = []
    for l in _labels(rng):
        s = (rng.normal(size=(H, W)) + 1.0 * (l == 1)).astype(np.float32)
        s[l == 255] = np.float32(1e30) * rng.choice([-1, 1], size=int((l == 255).sum()))
        out.append((s, l))
    return out


def case_constant(rng):
    return [(np.full((H, W), 0.7, np.float32), l) for l in _labels(rng)]


def case_huge_range_negatives(rng):
    out = []
    for l in _labels(rng):
        mag = 10.0 ** rng.uniform(-30, 30, (H, W))
        sign = np.where(rng.random((H, W)) < 0.5, -1.0, 1.0)
        s = sign * mag
        s = np.where(l == 1, s * 1e3 + 1e20 * (rng.random((H, W)) < 0.5), s)
        s = s.astype(np.float32)
        s[rng.random((H, W)) < 0.02] = 0.0
        s[rng.random((H, W)) < 0.02] = -0.0  # -0.0 and +0.0 are one score
        out.append((s, l))
    return out


def case_perfect(rng):
    return [(np.where(l == 1, 5.0 + rng.random((H, W)), rng.random((H, W))).astype(np.float32), l)
            for l in _labels(rng)]


def case_inverted(rng):
    return [(np.where(l == 1, -5.0 - rng.random((H, W)), rng.random((H, W))).astype(np.float32), l)
            for l in _labels(rng)]


def case_binary_scores(rng):
    return [(((l == 1) ^ (rng.random((H, W)) < 0.1)).astype(np.float32), l) for l in _labels(rng)]


def case_big_continuous(rng):
    """Many pixels in a narrow range: many scores share a histogram bin."""
    labs = _labels(rng, n_frames=20)
    return [((0.5 + 0.05 * rng.random((H, W)) + 0.01 * (l == 1)).astype(np.float32), l)
            for l in labs]


CASES = {f.__name__[5:]: f for f in (
    case_normal, case_uniform_overlap, case_heavy_ties, case_inlier_frames_mixed,
    case_void_extremes, case_constant, case_huge_range_negatives, case_perfect, case_inverted,
    case_binary_scores, case_big_continuous)}


# ---------------------------------------------------------------- pixel metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(CASES))
def test_pixel_metrics_match_sklearn(name, seed):
    frames = CASES[name](np.random.default_rng(seed))
    res = accumulate(frames).result()
    ref = sk_reference(frames)
    assert res["status"] == "ok"
    for key, value in ref.items():
        assert abs(res[key] - value) <= TOL, (key, res[key], value)


def test_known_values_of_degenerate_cases():
    rng = np.random.default_rng(0)
    const = accumulate(case_constant(rng)).result()
    rate = const["counts"]["positives"] / (const["counts"]["positives"] + const["counts"]["negatives"])
    assert const["auprc"] == pytest.approx(rate) and const["auroc"] == 0.5
    assert const["fpr95"] == 1.0 and const["counts"]["bins_used"] == 1
    frames = case_perfect(rng)
    perfect = accumulate(frames).result()
    assert (perfect["auprc"], perfect["auroc"], perfect["fpr95"], perfect["best_f1"]) == (1, 1, 0, 1)
    s, lab = pooled(frames)
    assert perfect["best_f1_threshold"] == s[lab == 1].min()  # exact table: the lowest anomaly score
    inverted = accumulate(case_inverted(rng)).result()
    assert inverted["auroc"] == 0.0 and inverted["fpr95"] == 1.0
    assert inverted["auprc"] < 0.2


@pytest.mark.parametrize("name", ["normal", "heavy_ties", "huge_range_negatives", "inlier_frames_mixed"])
def test_best_f1_threshold_reproduces_best_f1_on_raw_scores(name):
    """Thresholds are bin lower edges: `score >= t` on the raw scores gives the curve's counts."""
    frames = CASES[name](np.random.default_rng(3))
    m = accumulate(frames)
    res = m.result()
    s, lab = pooled(frames)
    c = counts_at_threshold(s, lab, res["best_f1_threshold"])
    assert 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"]) == pytest.approx(res["best_f1"], abs=1e-12)
    curve_point = m.at_threshold(res["best_f1_threshold"])
    assert curve_point["exact"] and (curve_point["tp"], curve_point["fp"]) == (c["tp"], c["fp"])


def test_fixed_thresholds_are_counted_exactly():
    frames = case_normal(np.random.default_rng(4))
    thresholds = (0.3, 1.2345678, -2.0)
    m = accumulate(frames, thresholds=thresholds)
    s, lab = pooled(frames)
    for t, got in zip(thresholds, m.result()["at_thresholds"]):
        want = counts_at_threshold(s, lab, t)
        assert got["exact"] and {k: got[k] for k in want} == want
        assert got["tpr"] == pytest.approx(want["tp"] / (want["tp"] + want["fn"]))
        assert got["fpr"] == pytest.approx(want["fp"] / (want["fp"] + want["tn"]))
    assert m.at_threshold(0.5000001)["exact"]  # exact table (shift 0): any threshold is exact
    coarse = accumulate(frames, max_bins=256)
    t = float(np.median(s))  # a real score, inside a populated coarse bin
    got, want = coarse.at_threshold(t), counts_at_threshold(s, lab, t)
    assert coarse.shift > 0 and got["exact"] is False
    assert got["tp"] >= want["tp"] and got["fp"] >= want["fp"]  # the bin is counted whole


def test_streaming_equals_one_shot():
    frames = case_inlier_frames_mixed(np.random.default_rng(5))
    streamed = accumulate(frames).result()
    s, lab = pooled(frames)
    one = PixelMetrics()
    one.update(s, lab)
    one = one.result()
    for key in ("auprc", "auroc", "fpr95", "best_f1", "best_f1_threshold", "tpr95_threshold"):
        assert streamed[key] == one[key]
    assert streamed["counts"]["frames"] == len(frames) and one["counts"]["frames"] == 1
    assert streamed["counts"]["frames_with_positives"] == 2


def test_memory_does_not_grow_with_frames():
    m = PixelMetrics(thresholds=(0.5,))
    assert m.nbytes == (4 + 8 + 8) * (1 << 20) + 16  # preallocated table + 1 fixed threshold
    small = PixelMetrics(max_bins=4096)
    size0 = small.nbytes
    rng = np.random.default_rng(6)
    for i in range(60):  # ~180k distinct scores over 14 decades: forces coarsening
        lab = (rng.random((H, W)) < 0.1).astype(np.uint8)
        small.update(rng.normal(size=(H, W)).astype(np.float32) * 10.0 ** (i % 15 - 7), lab)
    assert small.nbytes == size0 and small.bins_used <= 4096 and small.shift > 0
    r = small.result()
    assert r["counts"]["positives"] + r["counts"]["negatives"] == 60 * H * W


def test_undefined_cases_are_nan_with_a_status():
    m = PixelMetrics()
    r = m.result()  # no frame at all
    assert r["status"] == "empty" and all(math.isnan(r[k]) for k in ("auprc", "auroc", "fpr95", "best_f1"))
    m.update(np.ones((4, 4), np.float32), np.full((4, 4), 255, np.uint8))  # all void
    assert m.result()["status"] == "empty" and m.result()["counts"]["void"] == 16

    neg = PixelMetrics()
    neg.update(np.random.default_rng(0).random((8, 8)), np.zeros((8, 8), np.uint8))
    r = neg.result()
    assert r["status"] == "no_positives"
    assert all(math.isnan(r[k]) for k in ("auprc", "auroc", "fpr95", "best_f1", "best_f1_threshold"))
    assert neg.curves()["recall"].size == 0

    pos = PixelMetrics()
    pos.update(np.random.default_rng(0).random((8, 8)), np.ones((8, 8), np.uint8))
    r = pos.result()
    assert r["status"] == "no_negatives" and r["auprc"] == 1.0 and r["best_f1"] == 1.0
    assert math.isnan(r["auroc"]) and math.isnan(r["fpr95"])


def test_input_validation():
    m = PixelMetrics()
    with pytest.raises(ValueError, match="0 \\(inlier\\), 1 \\(anomaly\\) or 255"):
        m.update(np.zeros((2, 2), np.float32), np.array([[0, 1], [2, 255]], np.uint8))
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros((2, 3), np.float32), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        m.update(np.array([[np.nan, 0.0]]), np.array([[0, 1]], np.uint8))
    m.update(np.array([[np.nan, 0.0, 1.0]]), np.array([[255, 0, 1]], np.uint8))  # NaN on void: fine
    assert m.result()["auprc"] == 1.0 and m.frames == 1
    with pytest.raises(ValueError):
        PixelMetrics(max_bins=10)


def test_infinities_are_ordered():
    s = np.array([-np.inf, -1.0, 0.0, 2.0, np.inf, np.inf], np.float32)
    lab = np.array([0, 0, 0, 1, 1, 1], np.uint8)
    m = PixelMetrics()
    m.update(s, lab)
    r = m.result()
    assert r["auprc"] == 1.0 and r["auroc"] == 1.0 and r["fpr95"] == 0.0
    assert r["best_f1_threshold"] == 2.0
    assert average_precision(s, lab) == 1.0  # +inf ties are one score, not NaN gaps
    assert average_precision(np.array([np.inf, np.inf, 0.0]), np.array([1, 0, 1], np.uint8)) == pytest.approx(7 / 12)


def test_exact_until_coarsened_then_bounded_resolution():
    """Scores 1e-4 apart: separated while the table holds every distinct score (default), tied
    once a tiny table had to coarsen far (the documented limit of any bounded accumulator)."""
    pairs = np.array([1.0, 1.0001] * 50, np.float32)
    pair_labels = np.array([0, 1] * 50, np.uint8)
    filler = -(10.0 ** np.linspace(-30, 30, 5000)).astype(np.float32)  # negatives, far below
    s, lab = np.r_[pairs, filler], np.r_[pair_labels, np.zeros(filler.size, np.uint8)]
    exact, coarse = PixelMetrics(), PixelMetrics(max_bins=256)
    exact.update(s, lab)
    coarse.update(s, lab)
    assert exact.shift == 0 and exact.result()["auprc"] == 1.0
    assert exact.result()["auprc"] == average_precision_score(lab, s)
    assert coarse.shift > 0 and coarse.relative_resolution > 1e-4
    assert coarse.result()["auprc"] == 0.5  # 1.0 and 1.0001 now share the top bin


@pytest.mark.parametrize("name", ["normal", "uniform_overlap", "inlier_frames_mixed", "big_continuous"])
def test_coarsened_table_still_matches_sklearn(name):
    frames = CASES[name](np.random.default_rng(11))
    m = accumulate(frames, max_bins=2048)
    assert m.shift > 0  # really coarsened
    res, ref = m.result(), sk_reference(frames)
    for key, value in ref.items():
        assert abs(res[key] - value) <= TOL, (key, res[key], value, m.shift)


def test_key_mapping_is_monotone_and_invertible():
    rng = np.random.default_rng(7)
    special = np.array([-np.inf, -3.4e38, -1.0, -1e-45, 0.0, 1e-45, 1e-38, 1.0, 3.4e38, np.inf],
                       np.float32)
    vals = np.sort(np.r_[special, (rng.normal(size=1000) * 10.0 ** rng.integers(-30, 30, 1000))
                         .astype(np.float32)])
    keys = float32_to_key(vals)
    assert np.all(np.diff(keys.astype(np.int64)) >= 0)
    assert np.array_equal(key_to_float32(keys), vals)


def test_curves_for_plotting():
    frames = case_normal(np.random.default_rng(8))
    m = accumulate(frames)
    c = m.curves(max_points=300)
    assert 10 < c["recall"].size <= 310
    assert np.all(np.diff(c["recall"]) >= 0) and c["recall"][-1] == 1.0
    assert np.all(np.diff(c["pr_thresholds"]) < 0)
    assert (c["fpr"][0], c["tpr"][0]) == (0.0, 0.0) and (c["fpr"][-1], c["tpr"][-1]) == (1.0, 1.0)
    assert np.all((0 <= c["precision"]) & (c["precision"] <= 1))
    # the downsampled ROC still integrates to the AUROC within plotting accuracy
    assert np.trapezoid(c["tpr"], c["fpr"]) == pytest.approx(m.result()["auroc"], abs=0.01)


@pytest.mark.parametrize("name", ["normal", "heavy_ties", "huge_range_negatives"])
def test_per_frame_average_precision_is_exact(name):
    for s, lab in CASES[name](np.random.default_rng(9)):
        keep = lab != 255
        y = (lab[keep] == 1).astype(int)
        if y.any():
            assert average_precision(s, lab) == pytest.approx(
                average_precision_score(y, s[keep].astype(np.float64)), abs=1e-12)
    assert math.isnan(average_precision(np.ones((2, 2)), np.zeros((2, 2), np.uint8)))


# ---------------------------------------------------------------- component metrics


def _mean_f1(tp, fn, fp):
    return float(np.mean([2 * a / (2 * a + b + c) for a, b, c in zip(tp, fn, fp)]))


def frame_a():
    """One 10x10 GT; a 90 px prediction, 60 px of it on the GT: sIoU 60/130, PPV 2/3."""
    lab = np.zeros((40, 40), np.uint8)
    lab[10:20, 10:20] = 1
    s = np.zeros((40, 40), np.float32)
    s[10:20, 14:23] = 1.0  # cols 14..19 on GT (60 px), 20..22 outside (30 px)
    return s, lab


def frame_b():
    """Two GT squares 2 px apart, one prediction over both and the gap."""
    lab = np.zeros((20, 30), np.uint8)
    lab[0:10, 0:10] = 1
    lab[0:10, 12:22] = 1
    s = np.zeros((20, 30), np.float32)
    s[0:10, 0:22] = 1.0
    return s, lab


def test_components_single_object_by_hand():
    s, lab = frame_a()
    fc = frame_components(s, lab, 0.5)
    assert fc.siou.tolist() == pytest.approx([60 / 130]) and fc.ppv.tolist() == pytest.approx([2 / 3])
    m = ComponentMetrics()
    m.update(s, lab, 0.5)
    r = m.result()
    # TP for t < 0.4615 (5 thresholds), FP for t > 0.667 (0.70, 0.75)
    assert r["tp"] == [1] * 5 + [0] * 6 and r["fn"] == [0] * 5 + [1] * 6
    assert r["fp"] == [0] * 9 + [1] * 2
    assert r["mean_f1"] == pytest.approx(5 / 11)
    assert r["siou"] == pytest.approx(60 / 130) and r["ppv"] == pytest.approx(2 / 3)


def test_adjusted_union_does_not_punish_other_gt_components():
    s, lab = frame_b()
    fc = frame_components(s, lab, 0.5)
    # |P| = 220, each GT 100: adjusted union = 220 + 100 - 100 - 100 (on the other GT) = 120
    assert fc.siou.tolist() == pytest.approx([100 / 120, 100 / 120])  # plain IoU would be 100/220
    assert fc.ppv.tolist() == pytest.approx([200 / 220])
    m = ComponentMetrics()
    m.update(s, lab, 0.5)
    r = m.result()
    assert r["tp"] == [2] * 11 and r["fp"] == [0] * 11 and r["mean_f1"] == 1.0


def test_void_pixels_are_ignored_before_components():
    lab = np.zeros((50, 40), np.uint8)
    lab[7:23, 7:23] = 255
    lab[10:20, 10:20] = 1  # GT inside a 3 px void ring
    s = np.zeros((50, 40), np.float32)
    s[7:23, 7:23] = 1.0  # prediction spills onto the void ring only
    lab[26:36, 26:36] = 255
    s[26:36, 26:36] = 1.0  # a prediction entirely on void: not a component
    fc = frame_components(s, lab, 0.5, min_pred_area=0, min_gt_area=0)
    assert fc.siou.tolist() == [1.0] and fc.ppv.tolist() == [1.0]
    # a predicted bar cut by void becomes two components (void removed before labelling)
    lab[40:45, 18:22] = 255
    s[40:45, 0:40] = 1.0
    fc = frame_components(s, lab, 0.5, min_pred_area=0, min_gt_area=0)
    assert sorted(fc.ppv.tolist()) == [0.0, 0.0, 1.0] and fc.pred_sizes.tolist() == [100, 90, 90]


def test_size_filters():
    lab = np.zeros((60, 60), np.uint8)
    lab[2:5, 2:5] = 1  # 9 px GT: below min_gt_area=10 -> void
    lab[20:30, 20:30] = 1  # 100 px GT, missed
    s = np.zeros((60, 60), np.float32)
    s[0:8, 0:8] = 1.0  # 64 px prediction (kept: size counted before the small GT is voided)
    s[40:47, 40:47] = 1.0  # 49 px: dropped
    s[40:45, 0:10] = 1.0  # 50 px: kept
    fc = frame_components(s, lab, 0.5, min_pred_area=50, min_gt_area=10)
    assert fc.siou.tolist() == [0.0] and fc.gt_voided == 1
    assert fc.ppv.tolist() == [0.0, 0.0] and fc.pred_dropped == 1
    assert sorted(fc.pred_sizes.tolist()) == [50, 64 - 9]  # the voided GT pixels leave the ROI
    m = ComponentMetrics(min_pred_area=50, min_gt_area=10)
    m.update(s, lab, 0.5)
    r = m.result()
    assert r["tp"] == [0] * 11 and r["fn"] == [1] * 11 and r["fp"] == [2] * 11
    assert r["mean_f1"] == 0.0 and r["siou"] == 0.0 and r["ppv"] == 0.0
    assert r["counts"]["gt_components_voided"] == 1 and r["counts"]["pred_components_dropped"] == 1
    # with a lower GT size limit the small object counts: sIoU = PPV = 9/64
    fc = frame_components(s, lab, 0.5, min_pred_area=50, min_gt_area=9)
    assert sorted(fc.siou.tolist()) == pytest.approx([0.0, 9 / 64])
    assert sorted(fc.ppv.tolist()) == pytest.approx([0.0, 9 / 64])


def test_tp_rule_on_exact_ties():
    lab = np.zeros((30, 30), np.uint8)
    lab[5:15, 5:15] = 1
    s = np.zeros((30, 30), np.float32)
    s[5:15, 5:10] = 1.0  # half the object: sIoU exactly 0.5
    assert SIOU_THRESHOLDS[5] == 0.5
    strict, inclusive = ComponentMetrics(), ComponentMetrics(tp_at_equal=True)
    strict.update(s, lab, 0.5)
    inclusive.update(s, lab, 0.5)
    assert strict.result()["tp"] == [1] * 5 + [0] * 6  # sIoU > t (reference definition)
    assert inclusive.result()["tp"] == [1] * 6 + [0] * 5  # sIoU >= t (SMIYC code)


def test_component_threshold_is_score_greater_or_equal():
    s, lab = frame_a()
    assert frame_components(s, lab, 1.0).ppv.size == 1
    assert frame_components(s, lab, np.nextafter(np.float32(1.0), np.float32(2.0))).ppv.size == 0


def test_component_metrics_stream_over_frames():
    m = ComponentMetrics()
    for s, lab in (frame_a(), frame_b(), (np.zeros((8, 8), np.float32), np.zeros((8, 8), np.uint8))):
        m.update(s, lab, 0.5)
    r = m.result()
    assert r["siou"] == pytest.approx((60 / 130 + 2 * 100 / 120) / 3)
    assert r["ppv"] == pytest.approx((2 / 3 + 200 / 220) / 2)
    tp = [3] * 5 + [2] * 6
    fn = [0] * 5 + [1] * 6
    fp = [0] * 9 + [1] * 2
    assert (r["tp"], r["fn"], r["fp"]) == (tp, fn, fp)
    assert r["mean_f1"] == pytest.approx(_mean_f1(tp, fn, fp))
    assert r["counts"]["frames"] == 3 and r["counts"]["gt_components"] == 3


def test_component_metrics_without_components_are_nan():
    m = ComponentMetrics()
    m.update(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.uint8), 0.5)
    r = m.result()
    assert math.isnan(r["siou"]) and math.isnan(r["ppv"]) and math.isnan(r["mean_f1"])


def reference_components(pred, labels, min_pred_area, min_gt_area):
    """The definition written out with masks and loops (scipy labelling), for cross-checks."""
    st = np.ones((3, 3), int)
    valid = labels != 255
    gt, n_gt = ndimage.label(labels == 1, st)
    roi = valid.copy()
    gt_ids = []
    for k in range(1, n_gt + 1):
        if np.count_nonzero(gt == k) < min_gt_area:
            roi[gt == k] = False
        else:
            gt_ids.append(k)
    pr, n_pr = ndimage.label(pred & valid, st)
    pred_ids = [j for j in range(1, n_pr + 1) if np.count_nonzero(pr == j) >= min_pred_area]
    siou = []
    for k in gt_ids:
        gk = gt == k
        touching = [j for j in pred_ids if np.any((pr == j) & gk)]
        union_pred = np.isin(pr, touching) & roi
        inter = np.count_nonzero(union_pred & gk)
        other = np.count_nonzero(union_pred & (gt > 0) & ~gk)
        siou.append(inter / (np.count_nonzero(union_pred) + np.count_nonzero(gk) - inter - other))
    ppv = []
    for j in pred_ids:
        pj = (pr == j) & roi
        if pj.any():
            ppv.append(np.count_nonzero(pj & (gt > 0)) / np.count_nonzero(pj))
    return np.sort(siou), np.sort(ppv)


def random_component_frame(rng, h=60, w=80):
    import cv2

    def blobs(level):
        noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3)
        return noise > np.quantile(noise, level)

    lab = np.where(blobs(0.85), 1, 0).astype(np.uint8)
    lab[blobs(0.93) & (rng.random((h, w)) < 0.7)] = 255
    s = (lab == 1) * 0.6 + rng.random((h, w)) * 0.4 + blobs(0.9) * 0.5
    return s.astype(np.float32), lab


@pytest.mark.parametrize("seed", range(12))
def test_components_match_the_definition_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    s, lab = random_component_frame(rng)
    min_pred, min_gt = int(rng.integers(0, 60)), int(rng.integers(0, 30))
    fc = frame_components(s, lab, 0.55, min_pred, min_gt)
    siou, ppv = reference_components(s >= 0.55, lab, min_pred, min_gt)
    np.testing.assert_allclose(np.sort(fc.siou), siou, atol=1e-12)
    np.testing.assert_allclose(np.sort(fc.ppv), ppv, atol=1e-12)
    assert siou.size + ppv.size > 0
