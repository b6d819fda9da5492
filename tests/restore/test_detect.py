"""Prior boxes, decoding, NMS and the detector wrapper, against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torch import nn

from gpenguard.restore.detect import (
    FaceDetector,
    decode_boxes,
    decode_landmarks,
    nms,
    postprocess,
    prior_boxes,
)


def test_priors_for_a_16px_square() -> None:
    p = prior_boxes(16, 16)
    # stride 8: 2x2 cells x (16, 32) px; stride 16: 1 cell x (64, 128); stride 32: 1 x (256, 512)
    assert p.shape == (12, 4)
    expected_first = [
        [0.25, 0.25, 1.0, 1.0],
        [0.25, 0.25, 2.0, 2.0],
        [0.75, 0.25, 1.0, 1.0],  # next column before next row
        [0.75, 0.25, 2.0, 2.0],
        [0.25, 0.75, 1.0, 1.0],
    ]
    torch.testing.assert_close(p[:5], torch.tensor(expected_first))
    torch.testing.assert_close(p[8], torch.tensor([0.5, 0.5, 4.0, 4.0]))
    torch.testing.assert_close(p[11], torch.tensor([1.0, 1.0, 32.0, 32.0]))


def test_priors_normalise_each_axis_by_its_own_side() -> None:
    p = prior_boxes(20, 40)  # H=20, W=40
    assert p.shape[0] == 2 * (3 * 5 + 2 * 3 + 1 * 2)
    torch.testing.assert_close(p[0], torch.tensor([4 / 40, 4 / 20, 16 / 40, 16 / 20]))


def test_decode_boxes() -> None:
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    torch.testing.assert_close(
        decode_boxes(torch.zeros(1, 4), priors), torch.tensor([[0.4, 0.3, 0.6, 0.7]])
    )
    # dx=1 moves the centre by variance 0.1 x width; dw=log(2)/0.2 doubles the width.
    loc = torch.tensor([[1.0, 0.0, math.log(2) / 0.2, 0.0]])
    torch.testing.assert_close(decode_boxes(loc, priors), torch.tensor([[0.32, 0.3, 0.72, 0.7]]))


def test_decode_landmarks() -> None:
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    pre = torch.tensor([[1.0, 0.0, 0.0, 1.0, -1.0, -1.0, 0.0, 0.0, 2.0, 0.5]])
    expected = torch.tensor([[[0.52, 0.5], [0.5, 0.54], [0.48, 0.46], [0.5, 0.5], [0.54, 0.52]]])
    torch.testing.assert_close(decode_landmarks(pre, priors), expected)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = torch.tensor(
        [[1.0, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 4]], dtype=torch.float32
    )
    scores = torch.tensor([0.8, 0.9, 0.7, 0.95])
    # Box 0 overlaps box 1 with IoU 100/142 (inclusive pixels): suppressed. Box 3 overlaps
    # box 1 with IoU 55/121 = 0.45 > 0.4: box 1 goes. Box 0 vs box 3: 40/146, kept.
    assert nms(boxes, scores, 0.4).tolist() == [3, 0, 2]


def test_nms_of_nothing() -> None:
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.4).tolist() == []


def test_postprocess_thresholds_and_scales_back() -> None:
    h, w = 32, 32
    n = prior_boxes(h, w).shape[0]
    loc, landms = torch.zeros(n, 4), torch.zeros(n, 10)
    conf = torch.full((n, 2), 0.5)
    conf[32] = torch.tensor([0.01, 0.99])  # stride 16 starts at 32 (4x4x2 before): 64px at (8, 8)
    conf[3] = torch.tensor([0.2, 0.8])  # below 0.9: dropped
    faces = postprocess(loc, conf, landms, h, w, score_threshold=0.9, scale=0.5)
    assert len(faces) == 1
    face = faces[0]
    assert face.score == pytest.approx(0.99)
    assert face.box == pytest.approx((-48.0, -48.0, 80.0, 80.0))  # (8 +- 32) / 0.5
    assert face.landmark_array.ravel().tolist() == pytest.approx([16.0] * 10)


class _OneFaceNet(nn.Module):
    """Stands in for RetinaFace: one confident prior, whatever the input; records the input."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.seen.append(tuple(x.shape))
        n = prior_boxes(x.shape[2], x.shape[3]).shape[0]
        conf = torch.zeros(1, n, 2)
        conf[0, :, 0] = 1
        conf[0, 0] = torch.tensor([0.0, 1.0])  # first 16px prior, centre (4, 4)
        return torch.zeros(1, n, 4), conf, torch.zeros(1, n, 10)


def test_large_images_are_detected_on_a_1000px_copy() -> None:
    net = _OneFaceNet()
    detector = FaceDetector(net, device=torch.device("cpu"))  # type: ignore[arg-type]
    faces = detector.detect(Image.new("RGB", (2000, 1600)))
    assert net.seen == [(1, 3, 800, 1000)]
    assert len(faces) == 1
    # The 16px box at (4, 4) in the copy is 32px at (8, 8) in the original.
    assert faces[0].box == pytest.approx((-8.0, -8.0, 24.0, 24.0))


def test_small_images_are_detected_as_they_are() -> None:
    net = _OneFaceNet()
    FaceDetector(net, device=torch.device("cpu")).detect(Image.new("RGB", (300, 200)))  # type: ignore[arg-type]
    assert net.seen == [(1, 3, 200, 300)]


def test_detector_input_is_bgr_minus_mean() -> None:
    captured: list[torch.Tensor] = []

    class Probe(_OneFaceNet):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            captured.append(x)
            return super().forward(x)

    FaceDetector(Probe(), device=torch.device("cpu")).detect(Image.new("RGB", (8, 8), (10, 20, 30)))  # type: ignore[arg-type]
    torch.testing.assert_close(
        captured[0][0, :, 0, 0], torch.tensor([30 - 104.0, 20 - 117.0, 10 - 123.0])
    )
