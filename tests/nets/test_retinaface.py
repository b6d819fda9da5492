"""RetinaFace-R50: the state_dict layout the official ``RetinaFace-R50.pth`` needs, and
strict loading from safetensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gpenguard.errors import FormatError, ModelError
from gpenguard.nets.retinaface import RetinaFace
from gpenguard.restore.weights import load_into

torch.set_num_threads(1)


def _bn(prefix: str, ch: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (ch,),
        f"{prefix}.bias": (ch,),
        f"{prefix}.running_mean": (ch,),
        f"{prefix}.running_var": (ch,),
        f"{prefix}.num_batches_tracked": (),
    }


def expected_layout() -> dict[str, tuple[int, ...]]:
    """Keys and shapes written out from the published architecture (biubug6 cfg_re50:
    torchvision ResNet-50 body cut at layer4, FPN in (512, 1024, 2048) -> 256, three SSH
    modules, 1x1 heads with 2 anchors), independently of the module under test."""
    keys: dict[str, tuple[int, ...]] = {"body.conv1.weight": (64, 3, 7, 7), **_bn("body.bn1", 64)}
    in_ch = 64
    for layer, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for b in range(blocks):
            p = f"body.layer{layer}.{b}"
            out = width * 4
            keys[f"{p}.conv1.weight"] = (width, in_ch, 1, 1)
            keys.update(_bn(f"{p}.bn1", width))
            keys[f"{p}.conv2.weight"] = (width, width, 3, 3)
            keys.update(_bn(f"{p}.bn2", width))
            keys[f"{p}.conv3.weight"] = (out, width, 1, 1)
            keys.update(_bn(f"{p}.bn3", out))
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (out, in_ch, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", out))
            in_ch = out
    for i, cin in enumerate((512, 1024, 2048), start=1):
        keys[f"fpn.output{i}.0.weight"] = (256, cin, 1, 1)
        keys.update(_bn(f"fpn.output{i}.1", 256))
    for i in (1, 2):
        keys[f"fpn.merge{i}.0.weight"] = (256, 256, 3, 3)
        keys.update(_bn(f"fpn.merge{i}.1", 256))
    for s in (1, 2, 3):
        for name, cin, cout in (
            ("conv3X3", 256, 128),
            ("conv5X5_1", 256, 64),
            ("conv5X5_2", 64, 64),
            ("conv7X7_2", 64, 64),
            ("conv7x7_3", 64, 64),
        ):
            keys[f"ssh{s}.{name}.0.weight"] = (cout, cin, 3, 3)
            keys.update(_bn(f"ssh{s}.{name}.1", cout))
    for head, values in (("ClassHead", 2), ("BboxHead", 4), ("LandmarkHead", 10)):
        for i in range(3):
            keys[f"{head}.{i}.conv1x1.weight"] = (2 * values, 256, 1, 1)
            keys[f"{head}.{i}.conv1x1.bias"] = (2 * values,)
    return keys


@pytest.fixture(scope="module")
def net() -> RetinaFace:
    return RetinaFace().eval()


def test_state_dict_matches_the_published_layout(net: RetinaFace) -> None:
    expected = expected_layout()
    actual = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert set(actual) == set(expected)
    assert actual == expected
    assert len(actual) == 456
    assert sum(1 for k in actual if not k.endswith("num_batches_tracked")) == 383
    assert sum(p.numel() for p in net.parameters()) == 27_293_600


def test_forward_gives_one_row_per_prior(net: RetinaFace) -> None:
    # 64 x 96: strides 8/16/32 give 8x12, 4x6 and 2x3 cells, 2 anchors each = 252 priors.
    with torch.inference_mode():
        loc, conf, landms = net(torch.randn(1, 3, 64, 96))
    assert loc.shape == (1, 252, 4)
    assert conf.shape == (1, 252, 2)
    assert landms.shape == (1, 252, 10)
    torch.testing.assert_close(conf.sum(-1), torch.ones(1, 252))


def test_odd_sizes_round_up_like_the_priors(net: RetinaFace) -> None:
    with torch.inference_mode():
        loc, _, _ = net(torch.randn(1, 3, 33, 50))
    # ceil(33/8)*ceil(50/8) + ceil(33/16)*ceil(50/16) + ceil(33/32)*ceil(50/32) = 35+12+4 cells.
    assert loc.shape[1] == 2 * (5 * 7 + 3 * 4 + 2 * 2)


def _save(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_strict_load_with_dataparallel_prefix(net: RetinaFace, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = RetinaFace()
    for p in source.parameters():
        p.data.normal_()
    sd = {f"module.{k}": v for k, v in source.state_dict().items()}
    fresh = load_into(RetinaFace(), _save(sd, tmp_path / "r50.safetensors"))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)


def test_file_without_batchnorm_counters_loads_onto_meta(tmp_path: Path) -> None:
    sd = {k: v for k, v in RetinaFace().state_dict().items() if "num_batches_tracked" not in k}
    with torch.device("meta"):
        net = RetinaFace()
    load_into(net, _save(sd, tmp_path / "r50.safetensors"))
    assert not any(t.is_meta for t in net.state_dict().values())
    assert int(net.state_dict()["body.bn1.num_batches_tracked"]) == 0


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (
            lambda sd: sd.pop("BboxHead.2.conv1x1.bias"),
            "1 key(s) of RetinaFace missing: BboxHead.2.conv1x1.bias",
        ),
        (
            lambda sd: sd.__setitem__("extra.weight", torch.zeros(1)),
            "1 unexpected key(s) for RetinaFace: extra.weight",
        ),
        (
            lambda sd: sd.__setitem__("ClassHead.0.conv1x1.bias", torch.zeros(6)),
            "ClassHead.0.conv1x1.bias: shape [6] in the file, RetinaFace expects [4]",
        ),
    ],
)
def test_mismatched_weights_are_refused(tmp_path: Path, edit: object, reason: str) -> None:
    sd = dict(RetinaFace().state_dict())
    edit(sd)  # type: ignore[operator]
    path = _save(sd, tmp_path / "bad.safetensors")
    with pytest.raises(ModelError) as info:
        load_into(RetinaFace(), path)
    assert reason in str(info.value)
    assert str(path) in str(info.value)


def test_only_safetensors_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "RetinaFace-R50.pth"
    path.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ModelError, match=r"\.safetensors"):
        load_into(RetinaFace(), path)


def test_corrupt_safetensors_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "r50.safetensors"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(FormatError, match="not a valid safetensors"):
        load_into(RetinaFace(), path)
