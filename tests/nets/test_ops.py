"""FIR resampling and the fused activation, against the definitions written as plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from gpenguard.nets._ops import fused_leaky_relu, make_kernel, upfirdn2d


def naive_upfirdn2d(
    x: np.ndarray, k: np.ndarray, up: int, down: int, pad: tuple[int, int]
) -> np.ndarray:
    """upfirdn2d exactly as specified: zero insertion, pad/crop, true convolution, decimate."""
    b, c, h, w = x.shape
    p0, p1 = pad
    ups = np.zeros((b, c, h * up, w * up))
    ups[:, :, ::up, ::up] = x
    size_h, size_w = h * up + p0 + p1, w * up + p0 + p1
    padded = np.zeros((b, c, size_h, size_w))
    for i in range(size_h):
        for j in range(size_w):
            si, sj = i - p0, j - p0
            if 0 <= si < h * up and 0 <= sj < w * up:
                padded[:, :, i, j] = ups[:, :, si, sj]
    kh, kw = k.shape
    full = np.zeros((b, c, size_h - kh + 1, size_w - kw + 1))
    for i in range(full.shape[2]):
        for j in range(full.shape[3]):
            acc = np.zeros((b, c))
            for u in range(kh):
                for v in range(kw):
                    # true convolution: the kernel is flipped against the window
                    acc += padded[:, :, i + u, j + v] * k[kh - 1 - u, kw - 1 - v]
            full[:, :, i, j] = acc
    return full[:, :, ::down, ::down]


def test_make_kernel_is_normalised_outer_product() -> None:
    k = make_kernel((1, 3, 3, 1))
    assert k.shape == (4, 4)
    assert torch.allclose(k.sum(), torch.tensor(1.0))
    assert sorted({round(v * 64) for v in k.flatten().tolist()}) == [1, 3, 9]


@pytest.mark.parametrize(
    ("up", "down", "pad"),
    [
        (1, 1, (1, 1)),  # ModulatedConv2d's blur after the transposed conv
        (1, 2, (2, 2)),  # encoder downsampling blur + stride
        (2, 1, (2, 1)),  # ToRGB skip upsampling
        (1, 1, (2, 0)),  # asymmetric pad
        (2, 1, (0, 0)),
        (3, 2, (1, 3)),
        (1, 1, (-1, 2)),  # negative pad crops
        (2, 1, (-1, -1)),
    ],
)
def test_upfirdn2d_matches_definition(up: int, down: int, pad: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(up * 100 + down * 10 + pad[0])
    x = torch.randn(2, 3, 7, 7, generator=gen, dtype=torch.float64)
    k = torch.randn(4, 3, generator=gen, dtype=torch.float64)  # asymmetric: catches a missing flip
    got = upfirdn2d(x, k, up=up, down=down, pad=pad)
    want = naive_upfirdn2d(x.numpy(), k.numpy(), up, down, pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)


def test_upfirdn2d_output_size_formula() -> None:
    x = torch.zeros(1, 1, 9, 9)
    k = make_kernel((1, 3, 3, 1))
    for up, down, (p0, p1) in [(2, 1, (2, 1)), (1, 2, (2, 2)), (1, 1, (1, 1))]:
        out = upfirdn2d(x, k, up=up, down=down, pad=(p0, p1))
        assert out.shape[-1] == (9 * up + p0 + p1 - 4) // down + 1


def test_upfirdn2d_rejects_bad_factors() -> None:
    with pytest.raises(ValueError, match="up and down"):
        upfirdn2d(torch.zeros(1, 1, 4, 4), make_kernel((1, 1)), up=0)


@pytest.mark.parametrize("inplace", [False, True])
def test_fused_leaky_relu(inplace: bool) -> None:
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    bias = torch.randn(5, dtype=torch.float64)
    want = math.sqrt(2) * F.leaky_relu(x + bias.view(1, 5, 1, 1), 0.2)
    arg = x.clone()
    got = fused_leaky_relu(arg, bias, inplace=inplace)
    torch.testing.assert_close(got, want)
    assert (got.data_ptr() == arg.data_ptr()) is inplace
