"""GPEN FullGenerator: checkpoint layout, the maths of its layers, wiring, dtypes.

The layer maths is checked against straightforward references written here from the
architecture description (no fusion, no in-place ops, per-sample loops); parity with the
official implementation itself is `bench/parity_gpen.py` (run by the last test when the
official code is available).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import save_file
from torch import Tensor

from gpenguard.errors import ModelError
from gpenguard.nets._ops import upfirdn2d
from gpenguard.nets.gpen import (
    ConvLayer,
    FullGenerator,
    ModulatedConv2d,
    NoiseInjection,
    StyledConv,
    ToRGB,
    gpen_bfr,
)
from gpenguard.nets.loading import load_safetensors

ROOT = Path(__file__).resolve().parents[2]
KEYS_2048 = Path(__file__).parent / "data" / "gpen2048_keys.txt"
SQRT2 = math.sqrt(2)


def small(size: int = 32, narrow: float = 0.125, seed: int = 0) -> FullGenerator:
    """A small generator whose biases and noise weights are random too, so all of them count."""
    torch.manual_seed(seed)
    model = FullGenerator(size, 64, 2, channel_multiplier=2, narrow=narrow).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name.endswith("noise.weight"):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model


def image(batch: int, size: int, seed: int = 7, dtype: torch.dtype = torch.float32) -> Tensor:
    return (
        torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        * 2
        - 1
    )


# --------------------------------------------------------------------------- checkpoint layout


def read_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in KEYS_2048.read_text().splitlines():
        if line.strip():
            name, shape = line.split()
            keys[name] = tuple(int(d) for d in shape.strip("[]").split(","))
    return keys


def test_state_dict_equals_gpen_bfr_2048_key_for_key() -> None:
    with torch.device("meta"):
        model = gpen_bfr(2048)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = read_keys()
    assert len(want) == 201
    assert set(got) == set(want), (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    assert got == want
    assert list(got) == list(want)  # same order as the original module too


@pytest.mark.parametrize(
    ("size", "keys", "buffers", "params", "elements"),
    [
        (256, 144, 18, 18_879_010, 18_879_298),
        (512, 163, 21, 71_005_223, 71_005_559),
        (1024, 182, 24, 71_210_540, 71_210_924),
        (2048, 201, 27, 71_294_769, 71_295_201),
    ],
)
def test_published_configs_have_the_published_counts(
    size: int, keys: int, buffers: int, params: int, elements: int
) -> None:
    with torch.device("meta"):
        model = gpen_bfr(size)
    state = model.state_dict()
    assert len(state) == keys
    assert sum(1 for k in state if k.endswith(".kernel")) == buffers
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(t.numel() for t in state.values()) == elements


@pytest.mark.parametrize("size", [256, 512, 1024, 2048])
def test_safetensors_of_each_config_loads_strictly(size: int, tmp_path: Path) -> None:
    source = gpen_bfr(size)
    path = tmp_path / f"gpen{size}.safetensors"
    save_file(source.state_dict(), str(path))
    del source
    with torch.device("meta"):
        target = gpen_bfr(size)
    load_safetensors(target, path)
    reread = gpen_bfr(size)
    load_safetensors(reread, path)
    assert target.generator.convs[0].conv.weight.device.type == "cpu"
    assert torch.equal(target.final_linear[0].weight, reread.final_linear[0].weight)


def test_a_checkpoint_of_another_size_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "gpen256.safetensors"
    save_file(gpen_bfr(256).state_dict(), str(path))
    with pytest.raises(ModelError, match=r"gpen256\.safetensors.*generator\.(convs|to_rgbs)\.\d+"):
        load_safetensors(gpen_bfr(512), path)


def test_unknown_size_and_variant_are_refused() -> None:
    with pytest.raises(ValueError, match="GPEN-BFR"):
        gpen_bfr(128)
    with pytest.raises(ValueError, match="power of two"):
        FullGenerator(300)
    with pytest.raises(ValueError, match="isconcat"):
        FullGenerator(64, isconcat=False)


def test_generator_needs_one_feature_map_per_styled_conv() -> None:
    model = small()
    with pytest.raises(ValueError, match="expected 7 noise maps, got 6"):
        model.generator(torch.zeros(1, 64), [torch.zeros(1, 8, 4, 4)] * 6)


# ------------------------------------------------------------------------- references (maths)


def ref_linear(layer: torch.nn.Module, x: Tensor, activate: bool) -> Tensor:
    out = F.linear(x, layer.weight * layer.scale) + layer.bias * layer.lr_mul
    return SQRT2 * F.leaky_relu(out, 0.2) if activate else out


def ref_modconv(conv: ModulatedConv2d, x: Tensor, style: Tensor) -> Tensor:
    """One sample at a time, each convolved with its own modulated, demodulated weight."""
    outs = []
    for i in range(x.shape[0]):
        s = ref_linear(conv.modulation, style[i : i + 1], activate=False)[0]
        w = conv.weight[0] * conv.scale * s.view(1, -1, 1, 1)
        if conv.demodulate:
            w = w / torch.sqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xi = x[i : i + 1]
        if conv.upsample:
            y = F.conv_transpose2d(xi, w.transpose(0, 1), stride=2)
            k = conv.blur.kernel.flip(0, 1).expand(y.shape[1], 1, 4, 4)
            y = F.conv2d(y, k, padding=1, groups=y.shape[1])
        else:
            y = F.conv2d(xi, w, padding=conv.kernel_size // 2)
        outs.append(y)
    return torch.cat(outs)


def ref_styled(layer: StyledConv, x: Tensor, style: Tensor, feat: Tensor) -> Tensor:
    out = torch.cat([ref_modconv(layer.conv, x, style), layer.noise.weight * feat], dim=1)
    return SQRT2 * F.leaky_relu(out + layer.activate.bias.view(1, -1, 1, 1), 0.2)


def ref_to_rgb(layer: ToRGB, x: Tensor, style: Tensor, skip: Tensor | None) -> Tensor:
    out = ref_modconv(layer.conv, x, style) + layer.bias
    if skip is not None:
        out = out + upfirdn2d(skip, layer.upsample.kernel, up=2, pad=layer.upsample.pad)
    return out


def ref_encoder(block: ConvLayer, x: Tensor) -> Tensor:
    *pre, conv, act = list(block)
    if pre:
        k = pre[0].kernel.flip(0, 1).expand(x.shape[1], 1, 4, 4)
        x = F.conv2d(F.pad(x, (2, 2, 2, 2)), k, groups=x.shape[1])
    x = F.conv2d(x, conv.weight * conv.scale, stride=conv.stride, padding=conv.padding)
    return SQRT2 * F.leaky_relu(x + act.bias.view(1, -1, 1, 1), 0.2)


def ref_forward(model: FullGenerator, x: Tensor) -> Tensor:
    feats = []
    for ecd in model.encoders():
        x = ref_encoder(ecd[0], x)
        feats.append(x)
    z = ref_linear(model.final_linear[0], x.flatten(1), activate=True)
    noise = [f for f in feats for _ in range(2)][::-1][1:]
    g = model.generator
    w = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
    for layer in list(g.style)[1:]:
        w = ref_linear(layer, w, activate=True)
    out = g.input.input.repeat(x.shape[0], 1, 1, 1)
    out = ref_styled(g.conv1, out, w, noise[0])
    skip = ref_to_rgb(g.to_rgb1, out, w, None)
    for k, to_rgb in enumerate(g.to_rgbs):
        out = ref_styled(g.convs[2 * k], out, w, noise[2 * k + 1])
        out = ref_styled(g.convs[2 * k + 1], out, w, noise[2 * k + 2])
        skip = ref_to_rgb(to_rgb, out, w, skip)
    return skip


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_modulated_conv_equals_per_sample_loop(upsample: bool, demodulate: bool) -> None:
    torch.manual_seed(3)
    conv = ModulatedConv2d(6, 5, 3, 16, demodulate=demodulate, upsample=upsample).double()
    with torch.no_grad():
        conv.modulation.bias.add_(torch.randn(6, dtype=torch.float64))
        x = torch.randn(3, 6, 8, 8, dtype=torch.float64)
        style = torch.randn(3, 16, dtype=torch.float64)
        got = conv(x, style)
        want = ref_modconv(conv, x, style)
    assert got.shape == (3, 5, 16 if upsample else 8, 16 if upsample else 8)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_demodulated_filters_have_unit_norm() -> None:
    torch.manual_seed(4)
    conv = ModulatedConv2d(8, 4, 3, 16)
    w = conv.modulated_weight(torch.randn(2, 16)).view(2, 4, 8, 3, 3)
    norms = w.pow(2).sum(dim=(2, 3, 4)).sqrt()
    torch.testing.assert_close(norms, torch.ones(2, 4), rtol=1e-5, atol=1e-5)


def test_noise_injection_concatenates_weighted_features() -> None:
    inj = NoiseInjection()
    with torch.no_grad():
        inj.weight.fill_(0.5)
    a, n = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    out = inj(a, n)
    assert torch.equal(out[:, :3], a)
    torch.testing.assert_close(out[:, 3:], 0.5 * n)
    with pytest.raises(ValueError, match="does not fit"):
        inj(a, torch.randn(2, 3, 8, 8))


@pytest.mark.parametrize("mode", ["inference", "no_grad", "grad"])
def test_forward_equals_unfused_reference(mode: str) -> None:
    model = small().double()
    x = image(2, 32, dtype=torch.float64)
    with torch.no_grad():
        want = ref_forward(model, x)
    if mode == "inference":
        with torch.inference_mode():
            got = model(x)
    elif mode == "no_grad":
        with torch.no_grad():
            got = model(x)
    else:
        got = model(x)
        assert got.requires_grad
        got.sum().backward()  # the out-of-place path must stay differentiable
        assert model.ecd0[0][0].weight.grad is not None
        got = got.detach()
    assert got.shape == (2, 3, 32, 32)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------- wiring


def test_each_generator_layer_gets_the_encoder_map_of_its_resolution() -> None:
    model = small(size=64)
    enc_out: dict[str, Tensor] = {}
    fed: dict[str, Tensor] = {}
    hooks = []
    for i, ecd in enumerate(model.encoders()):
        hooks.append(
            ecd.register_forward_hook(lambda _m, _a, out, i=i: enc_out.__setitem__(f"ecd{i}", out))
        )
    layers = {"conv1": model.generator.conv1} | {
        f"convs.{j}": c for j, c in enumerate(model.generator.convs)
    }
    for name, layer in layers.items():
        hooks.append(
            layer.noise.register_forward_pre_hook(
                lambda _m, args, name=name: fed.__setitem__(name, args[1])
            )
        )
    with torch.inference_mode():
        model(image(1, 64))
    for h in hooks:
        h.remove()
    last = model.log_size - 2  # ecd{L-2} is the 4x4 map
    assert fed["conv1"] is enc_out[f"ecd{last}"]
    for k in range(model.log_size - 2):  # resolutions 8 .. size
        source = enc_out[f"ecd{last - 1 - k}"]
        assert fed[f"convs.{2 * k}"] is source
        assert fed[f"convs.{2 * k + 1}"] is source
        assert source.shape[-1] == 2 ** (k + 3)
    assert enc_out["ecd0"].shape[-1] == 64


def test_encoder_features_change_the_output() -> None:
    """Noise weights are live: zeroing one layer's changes the image (no random noise)."""
    model = small()
    x = image(1, 32)
    with torch.inference_mode():
        before = model(x)
        model.generator.convs[-1].noise.weight.zero_()
        after = model(x)
    assert not torch.allclose(before, after)


# ------------------------------------------------------------------- behaviour a user relies on


def test_deterministic_and_batch_independent() -> None:
    model = small()
    x = image(3, 32)
    with torch.inference_mode():
        a, b = model(x), model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert torch.equal(a, b)
    torch.testing.assert_close(a, single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[0], a[1])


def test_output_shape_dtype_and_range() -> None:
    model = FullGenerator(64, 64, 2, narrow=0.125).eval()  # the published init
    with torch.inference_mode():
        out = model(image(2, 64))
    assert isinstance(out, Tensor)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.std() > 0 and out.abs().max() < 50


@pytest.mark.parametrize("channels_last", [False, True])
def test_input_is_left_untouched(channels_last: bool) -> None:
    """The in-place fast paths only ever overwrite tensors the network made itself."""
    model = small()
    x = image(2, 32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    before = x.clone()
    with torch.inference_mode():
        model(x)
    assert torch.equal(x, before)


def test_rejects_wrong_input_shape() -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        small()(torch.zeros(1, 3, 64, 64))


def test_channels_last_gives_the_same_image() -> None:
    model = small()
    x = image(2, 32)
    with torch.inference_mode():
        want = model(x)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_on_cpu_close_to_fp32(dtype: torch.dtype) -> None:
    model = small()
    x = image(1, 32)
    with torch.inference_mode():
        want = model(x)
        got = model.to(dtype)(x.to(dtype))
    assert got.dtype == dtype
    err = (got.float() - want).abs().max() / want.abs().max()
    assert err < (0.05 if dtype == torch.bfloat16 else 0.01)


@pytest.mark.slow
def test_gpen_bfr_2048_forward_on_cpu() -> None:
    torch.manual_seed(0)
    model = gpen_bfr(2048).eval()
    with torch.inference_mode():
        out = model(image(1, 2048))
    assert out.shape == (1, 3, 2048, 2048)
    assert torch.isfinite(out).all()


def test_parity_with_the_official_code() -> None:
    """Set GPEN_OFFICIAL_DIR to a yangxy/GPEN checkout (or its face_model/) to run."""
    official = os.environ.get("GPEN_OFFICIAL_DIR")
    if not official:
        pytest.skip("GPEN_OFFICIAL_DIR not set: the official GPEN code is not vendored")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "parity_gpen.py"),
            "--official",
            official,
            "--sizes",
            "32",
            "64",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout
