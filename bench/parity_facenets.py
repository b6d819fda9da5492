"""Parity of gpenguard's ParseNet and RRDBNet with the official GPEN code, fp32 on CPU.

The official code is not part of this repository: fetch yangxy/GPEN and pass its root (the
folder holding ``face_parse/`` and ``sr_model/``). Both implementations get the same
state_dict (our random init with biases and BatchNorm statistics perturbed, so nothing
hides behind zeros and ones), loaded into the official module with ``strict=True``, and the
same input; the largest absolute output difference is reported. Exit status 1 if any is
above the tolerance.

RetinaFace's official code takes its ResNet-50 from torchvision, which has no CPU build here.
A stand-in ``torchvision`` (written to a temporary folder) hands it our ResNet-50 body under
torchvision's module names, so that comparison checks the official FPN, SSH, heads and output
order against ours, not the backbone (whose layout tests/nets/test_retinaface.py pins).

    python bench/parity_facenets.py --official /path/to/GPEN
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpenguard.nets.parsenet import ParseNet
from gpenguard.nets.retinaface import RetinaFace
from gpenguard.nets.rrdbnet import RRDBNet
from gpenguard.restore import align
from gpenguard.restore.detect import postprocess, prior_boxes


def perturbed(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, value in net.state_dict().items():
        if key.endswith("running_var"):
            value = torch.rand(value.shape, generator=g) + 0.5
        elif value.is_floating_point() and (key.endswith("bias") or key.endswith("running_mean")):
            value = torch.randn(value.shape, generator=g) * 0.1
        sd[key] = value.clone()
    return sd


def compare(name: str, ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor) -> float:
    sd = perturbed(ours)
    ours.load_state_dict(sd, strict=True)
    theirs.load_state_dict(sd, strict=True)
    with torch.no_grad():
        a, b = ours.eval()(x), theirs.eval()(x)
    a_t = a if isinstance(a, tuple) else (a,)
    b_t = b if isinstance(b, tuple) else (b,)
    diff = max(float((p - q).abs().max()) for p, q in zip(a_t, b_t, strict=True))
    scale = max(float(q.abs().max()) for q in b_t)
    print(f"{name:9s} keys {len(sd):4d}  max|diff| {diff:.3g}  (output range {scale:.3g})")
    return diff


_FAKE_TORCHVISION = {
    "torchvision/__init__.py": "from . import models\n",
    "torchvision/models/__init__.py": (
        "from collections import OrderedDict\n"
        "from torch import nn\n"
        "from . import _utils, detection\n"
        "def resnet50(pretrained=False):\n"
        "    from gpenguard.nets.retinaface import ResNet50Body\n"
        "    body = ResNet50Body()\n"
        "    names = ['conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2', 'layer3', 'layer4']\n"
        "    mods = [body.conv1, body.bn1, nn.ReLU(), body.maxpool, body.layer1, body.layer2,\n"
        "            body.layer3, body.layer4]\n"
        "    return nn.Sequential(OrderedDict(zip(names, mods)))\n"
    ),
    "torchvision/models/_utils.py": (
        "from collections import OrderedDict\n"
        "from torch import nn\n"
        "class IntermediateLayerGetter(nn.ModuleDict):\n"
        "    def __init__(self, model, return_layers):\n"
        "        layers = OrderedDict()\n"
        "        wanted = dict(return_layers)\n"
        "        for name, module in model.named_children():\n"
        "            layers[name] = module\n"
        "            wanted.pop(name, None)\n"
        "            if not wanted:\n"
        "                break\n"
        "        super().__init__(layers)\n"
        "        self.return_layers = dict(return_layers)\n"
        "    def forward(self, x):\n"
        "        out = OrderedDict()\n"
        "        for name, module in self.items():\n"
        "            x = module(x)\n"
        "            if name in self.return_layers:\n"
        "                out[self.return_layers[name]] = x\n"
        "        return out\n"
    ),
    "torchvision/models/detection/__init__.py": "",
    "torchvision/models/detection/backbone_utils.py": "",
}


def official_retinaface(root: Path, scratch: Path) -> torch.nn.Module:
    for rel, text in _FAKE_TORCHVISION.items():
        (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
        (scratch / rel).write_text(text)
    sys.path[:0] = [str(scratch), str(root / "face_detect")]
    # data/__init__ pulls in OpenCV for its training loader; only the config is needed.
    spec = importlib.util.spec_from_file_location("gpen_cfg", root / "face_detect/data/config.py")
    assert spec is not None and spec.loader is not None
    cfg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cfg)
    from facemodels.retinaface import RetinaFace as OfficialRetinaFace  # type: ignore[import-not-found]

    return OfficialRetinaFace(cfg=cfg.cfg_re50, phase="test")  # type: ignore[no-any-return]


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare_decoding(root: Path) -> float:
    """Priors, box/landmark decoding, thresholding and NMS against the official functions,
    on synthetic head outputs with many overlapping confident boxes."""
    prior_mod = _load("gpen_prior", root / "face_detect/layers/functions/prior_box.py")
    box_mod = _load("gpen_box", root / "face_detect/utils/box_utils.py")
    nms_mod = _load("gpen_nms", root / "face_detect/utils/nms/py_cpu_nms.py")
    cfg = _load("gpen_cfg2", root / "face_detect/data/config.py").cfg_re50
    h, w = 200, 264
    priors = prior_mod.PriorBox(cfg, image_size=(h, w)).forward()
    ours_priors = prior_boxes(h, w)
    worst = float((priors - ours_priors).abs().max())
    g = torch.Generator().manual_seed(1)
    n = priors.shape[0]
    loc = torch.randn(n, 4, generator=g) * 0.5
    landms = torch.randn(n, 10, generator=g)
    conf = torch.softmax(torch.randn(n, 2, generator=g) * 3, dim=1)
    # Official steps (retinaface_detection.detect), scale 1.
    boxes = box_mod.decode(loc, priors, cfg["variance"]) * torch.tensor([w, h, w, h])
    lms = box_mod.decode_landm(landms, priors, cfg["variance"]) * torch.tensor([w, h] * 5)
    scores = conf[:, 1].numpy()
    keep = np.where(scores > 0.9)[0]
    order = scores[keep].argsort()[::-1]
    idx = keep[order]
    dets = np.hstack((boxes.numpy()[idx], scores[idx, None])).astype(np.float32)
    kept = nms_mod.py_cpu_nms(dets, 0.4)
    official = dets[kept]
    official_lms = lms.numpy()[idx][kept]
    faces = postprocess(loc, conf, landms, h, w, score_threshold=0.9)
    if len(faces) != len(official):
        print(f"decoding  {len(faces)} faces, official {len(official)}: MISMATCH")
        return float("inf")
    # Equal scores (softmax saturates at 0.99999976 in float32) are ordered differently: numpy's
    # unstable argsort, reversed, against our stable one. Compare the kept sets, in one order.
    ours = np.array([[*f.box, f.score, *f.landmark_array.ravel()] for f in faces])
    theirs = np.hstack([official, official_lms])
    ours, theirs = ours[np.lexsort(ours.T[::-1])], theirs[np.lexsort(theirs.T[::-1])]
    ours, official, ours_lms, official_lms = ours[:, :5], theirs[:, :5], ours[:, 5:], theirs[:, 5:]
    box_diff = float(np.abs(ours - official).max())
    lms_diff = float(np.abs(ours_lms - official_lms).max())
    print(
        f"decoding  {n} priors (max|diff| {worst:.3g}), {len(faces)} of {len(idx)} confident "
        f"boxes kept; boxes+scores max|diff| {box_diff:.3g}, landmarks {lms_diff:.3g}"
    )
    return max(worst, box_diff, lms_diff)


def compare_alignment(root: Path) -> float:
    """The 5-point template and the similarity fit against ``align_faces.py`` (its OpenCV
    and scikit-image imports are stubbed: the functions compared use only numpy)."""
    import types

    for name in ("cv2", "skimage", "skimage.transform"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["skimage"].transform = sys.modules["skimage.transform"]  # type: ignore[attr-defined]
    official = _load("gpen_align", root / "align_faces.py")
    worst = 0.0
    rng = np.random.default_rng(0)
    for size in (256, 512, 1024, 2048):
        ref = official.get_reference_facial_points((size, size), 0.25, (0, 0), True)
        worst = max(worst, float(np.abs(ref - align.reference_points(size)).max()))
        for _ in range(20):
            src = ref * rng.uniform(0.05, 3) + rng.uniform(-500, 2000, 2) + rng.normal(0, 3, (5, 2))
            theirs, _scale = official._umeyama(src, ref, True)
            worst = max(worst, float(np.abs(theirs[:2] - align.fit_similarity(src, ref)).max()))
    print(f"alignment template and fit at 256-2048, 80 random faces  max|diff| {worst:.3g}")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--official", type=Path, required=True)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    torch.manual_seed(0)
    sys.path[:0] = [str(args.official / "face_parse"), str(args.official / "sr_model")]
    from parse_model import ParseNet as OfficialParseNet  # type: ignore[import-not-found]
    from rrdbnet_arch import RRDBNet as OfficialRRDBNet  # type: ignore[import-not-found]

    worst = 0.0
    theirs_p = OfficialParseNet(
        512, 512, 32, 64, 19, norm_type="bn", relu_type="LeakyReLU", ch_range=[32, 256]
    )
    worst = max(
        worst, compare("ParseNet", ParseNet(), theirs_p, torch.rand(1, 3, 512, 512) * 2 - 1)
    )
    theirs_r = OfficialRRDBNet(
        num_in_ch=3, num_out_ch=3, num_feat=32, num_block=23, num_grow_ch=32, scale=2
    )
    worst = max(worst, compare("RRDBNet", RRDBNet(scale=2), theirs_r, torch.rand(1, 3, 64, 48)))
    with tempfile.TemporaryDirectory() as scratch:
        theirs_d = official_retinaface(args.official, Path(scratch))
        x = torch.randn(1, 3, 200, 264) * 50
        worst = max(worst, compare("RetinaFace", RetinaFace(), theirs_d, x))
    worst = max(worst, compare_decoding(args.official))
    worst = max(worst, compare_alignment(args.official))
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
