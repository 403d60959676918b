"""0/255 binary masks in a 0/1/255 layout: refused with the likely cause, readable with the
`coding=mask_0_255` layout option."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from flowclas_ros import cli
from flowclas_ros.data.files import DatasetError
from flowclas_ros.data.generic import generic_layout
from flowclas_ros.data.labels import read_sample_label
from flowclas_ros.eval.evaluate import evaluate


@pytest.fixture
def masks_0_255(toy_world, tmp_path):
    """The toy test split with its labels rewritten as 0/255 masks (anomaly -> 255, void -> 0)."""
    root = tmp_path / "masks"
    shutil.copytree(toy_world / "test", root)
    anomalies = 0
    for s in generic_layout(root):
        label = read_sample_label(s)
        mask = np.where(label == 1, 255, 0).astype(np.uint8)
        anomalies += int(np.count_nonzero(mask))
        cv2.imwrite(str(s.label_path), mask)
    assert anomalies > 0
    return root


def test_masks_read_as_0_1_255_are_refused_with_the_cause(masks_0_255, trained, capsys):
    with pytest.raises(DatasetError, match=r"no anomaly pixel \(1\) in 6 frames, but \d+ void "
                       r"\(255\) pixels .*labels coded 0/255 .*coding=mask_0_255"):
        evaluate(masks_0_255, trained["onnx"], progress=False)
    assert cli.main(["evaluate", "--data", str(masks_0_255), "--model", str(trained["onnx"]),
                     "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "mask_0_255" in err


def test_the_coding_option_reads_masks(masks_0_255, toy_world, trained):
    r = evaluate(masks_0_255, trained["onnx"], progress=False, layout_options={"coding": "mask_0_255"})
    ref = evaluate(toy_world / "test", trained["onnx"], progress=False)
    assert r["pixels"]["anomaly"] == ref["pixels"]["anomaly"] > 0 and r["pixels"]["void"] == 0
    assert r["auprc"] > 0
    with pytest.raises(DatasetError, match="unknown label coding 'nope'"):
        generic_layout(masks_0_255, coding="nope")
