"""What torch.save writes, in every protocol and both formats, passes without findings."""

from __future__ import annotations

import argparse
import collections
import io

import numpy as np
import pytest
import torch

from gpenguard.formats import Source
from gpenguard.scan import Verdict, scan_source


def _objects() -> dict[str, object]:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    misc = {
        "ns": argparse.Namespace(x=1),
        "np": np.zeros(3),
        "c": collections.Counter("ab"),
        "b": b"xyz",
        "s": {1, 2},
    }
    return {"state_dict": net.state_dict(), "module": net, "misc": misc}


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("proto", [2, 3, 4, 5])
def test_torch_save_output_is_clean(proto: int, legacy: bool) -> None:
    for name, obj in _objects().items():
        buf = io.BytesIO()
        torch.save(obj, buf, pickle_protocol=proto, _use_new_zipfile_serialization=not legacy)
        report = scan_source(Source.from_bytes(buf.getvalue(), f"{name}.pt"))
        assert report.verdict is Verdict.PASS, (name, report.findings)
        # legacy files carry only the informational format note
        assert {f.rule_id for f in report.findings} <= {"GG303"}, (name, report.findings)


def test_less_common_but_ordinary_contents_pass() -> None:
    objects = {
        "float8": torch.zeros(2, dtype=torch.float8_e4m3fn),
        "uint16": torch.zeros(2, dtype=torch.uint16),
        "meta": torch.empty(2, device="meta"),
        "channels_last": torch.zeros(1, 3, 4, 4).to(memory_format=torch.channels_last),
        "transformer_layer": torch.nn.TransformerEncoderLayer(8, 2),
        "gru": torch.nn.GRU(2, 3),
        "numpy_generator": {"rng": np.random.default_rng(0)},
        "sparse_bsr_csc": {
            "bsr": torch.eye(4).to_sparse_bsr((2, 2)),
            "csc": torch.eye(3).to_sparse_csc(),
        },
    }
    for name, obj in objects.items():
        buf = io.BytesIO()
        torch.save(obj, buf)
        report = scan_source(Source.from_bytes(buf.getvalue(), f"{name}.pt"))
        assert report.verdict is Verdict.PASS and not report.findings, (name, report.findings)
