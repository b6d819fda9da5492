"""The weights-only reader against real torch.save output, and against forged pickles."""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpenguard.errors import ConversionError, GpenguardError, LimitExceeded
from gpenguard.formats.container import Container, Limits, PickleStream, read_container
from gpenguard.formats.source import Source
from gpenguard.formats.weights import StateDict, interpret_pickle, read_tensors
from tests.convert.conftest import StorageStub, TensorStub, forge_pickle, write_zip

torch = pytest.importorskip("torch")

FORMATS = [pytest.param(False, id="zip"), pytest.param(True, id="legacy")]


def open_container(path: Path) -> Container:
    return read_container(Source.from_bytes(path.read_bytes(), name=str(path)))


def read(path: Path, **kw: Any) -> StateDict:
    return read_tensors(open_container(path), **kw)


def torch_bytes(t: Any) -> bytes:
    """A tensor's contiguous bytes as torch itself lays them out (the reference)."""
    t = torch.empty(t.shape, dtype=t.dtype).copy_(t.detach())  # dense, standard strides
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_matches_torch(path: Path, state: StateDict, *, select: str | None = None) -> None:
    ref = torch.load(path, weights_only=False)  # benign file this test wrote; torch lacks FRAME
    if select:
        ref = ref[select]
    assert state.names == tuple(ref)
    for rec in state:
        t = ref[rec.name]
        assert rec.shape == tuple(t.shape)
        assert bytes(state.tensor_bytes(rec)) == torch_bytes(t), rec.name


DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def sample(dtype: Any, shape: tuple[int, ...]) -> Any:
    g = torch.Generator().manual_seed(7)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -1000), min(info.max, 1000), shape, generator=g, dtype=torch.int64).to(dtype)


@pytest.mark.parametrize("legacy", FORMATS)
def test_every_dtype_round_trips_bit_exact(save: Callable[..., Path], legacy: bool) -> None:
    sd = {name: sample(dt, (3, 5)) for name, dt in DTYPES.items()}
    path = save(sd, legacy=legacy)
    state = read(path)
    assert {r.name: r.dtype for r in state} == {n: n for n in DTYPES}
    assert all(r.contiguous for r in state)
    assert_matches_torch(path, state)


@pytest.mark.parametrize("legacy", FORMATS)
def test_views_offsets_strides_and_shared_storage(save: Callable[..., Path], legacy: bool) -> None:
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    sd = collections.OrderedDict(
        transposed=base.t(),
        window=base[1:4, 2:7],
        stepped=base[::2, 1::3],
        row=base[5],
        expanded=torch.tensor([1.5, -2.0], dtype=torch.bfloat16).expand(4, 2),
        scalar=torch.tensor(3.25, dtype=torch.float64),
        empty=torch.zeros(0, 4),
        bools=torch.tensor([[True, False, True], [False, False, True]]).t(),
    )
    path = save(sd, legacy=legacy)
    state = read(path)
    assert_matches_torch(path, state)

    assert not state["transposed"].contiguous and state["transposed"].stride == (1, 8)
    assert state["window"].storage_offset == 10
    assert state["row"].contiguous and state["row"].storage_offset == 40
    assert state["expanded"].stride == (0, 1)
    assert state["scalar"].shape == () and state["empty"].nbytes == 0
    # four views of `base` share one storage; safetensors cannot express that, so it is reported
    assert state.shared_groups() == (("transposed", "window", "stepped", "row"),)
    # contiguous tensors come straight from the source bytes, without a copy
    row = state.tensor_bytes(state["row"])
    assert row.obj is state.storage_bytes(state["row"].storage_key).obj


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_protocols(save: Callable[..., Path], protocol: int) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = save(model.state_dict(), protocol=protocol)  # OrderedDict with BUILD(_metadata)
    state = read(path)
    assert "1.num_batches_tracked" in state.names
    assert_matches_torch(path, state)


def test_parameters_and_uint16_via_rebuild_v3(save: Callable[..., Path]) -> None:
    sd = {
        "w": torch.nn.Parameter(torch.randn(2, 2)),
        "frozen": torch.nn.Parameter(torch.randn(2), requires_grad=False),
        "u16": torch.tensor([1, 2, 65535], dtype=torch.uint16),
    }
    path = save(sd)
    state = read(path)
    assert state["w"].parameter and state["w"].requires_grad
    assert state["frozen"].parameter and not state["frozen"].requires_grad
    assert state["u16"].dtype == "U16" and state["u16"].storage_dtype == "U8"
    assert_matches_torch(path, state)


@pytest.mark.parametrize("legacy", FORMATS)
def test_nested_selection_and_prefix(save: Callable[..., Path], legacy: bool) -> None:
    ema = {"module.conv.weight": torch.randn(2, 3), "module.conv.bias": torch.randn(2)}
    path = save({"params_ema": ema, "params": {"x": torch.ones(1)}, "iter": 500}, legacy=legacy)

    state = read(path, select="params_ema", strip_prefix="module.")
    assert state.names == ("conv.weight", "conv.bias")
    assert state.select == "params_ema"
    ref = torch.load(path, weights_only=True)["params_ema"]
    assert bytes(state.tensor_bytes(state["conv.bias"])) == torch_bytes(ref["module.conv.bias"])

    with pytest.raises(ConversionError, match=r"entry 'params_ema' is a dict.*params_ema, params"):
        read(path)
    with pytest.raises(ConversionError, match="no entry 'model'"):
        read(path, select="model")
    with pytest.raises(ConversionError, match="'iter' is an int, not a state_dict"):
        read(path, select="iter")


def test_select_walks_a_path(save: Callable[..., Path]) -> None:
    path = save({"model": {"state_dict": {"a": torch.ones(2)}}})
    assert read(path, select="model/state_dict").names == ("a",)


def test_strip_prefix_collision_is_refused(save: Callable[..., Path]) -> None:
    path = save({"module.a": torch.ones(1), "a": torch.zeros(1)})
    with pytest.raises(ConversionError, match="two entries are named 'a'"):
        read(path, strip_prefix="module.")


def test_records_need_no_tensor_data(save: Callable[..., Path]) -> None:
    path = save({"w": torch.randn(4, 4)})
    box = open_container(path)
    blank = {k: memoryview(bytes(len(v))) for k, v in box.storages.items()}
    state = read_tensors(dataclasses.replace(box, storages=blank))
    assert state["w"].shape == (4, 4) and state["w"].nbytes == 64  # layout without the data


# ---- forged pickles: the reader's own allowlist -----------------------------------------------


def forged_zip(tmp_path: Path, obj: Any, storages: dict[str, bytes] | None = None, protocol: int = 2) -> Path:
    return write_zip(tmp_path / "forged.pth", forge_pickle(obj, protocol), storages or {})


class Reduce:
    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


@pytest.mark.parametrize("protocol", [2, 4])
def test_unlisted_global_is_refused_with_its_location(tmp_path: Path, protocol: int) -> None:
    import os

    path = forged_zip(tmp_path, {"w": Reduce(os.getpid, ())}, protocol=protocol)
    with pytest.raises(ConversionError) as err:
        read(path)
    msg = str(err.value)
    assert "global posix.getpid is not on the weights-only allowlist" in msg
    assert "member archive/data.pkl" in msg and "offset " in msg
    assert err.value.path == str(path)


def test_reduce_of_an_allowed_name_with_a_hostile_shape_is_refused(tmp_path: Path) -> None:
    # torch.FloatStorage is allowed as a storage *type*, never as something to call
    path = forged_zip(tmp_path, {"w": Reduce(torch.FloatStorage, (4,))})
    with pytest.raises(ConversionError, match=r"REDUCE calls torch.FloatStorage"):
        read(path)


def hand_pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"(cos\nsystem\nU\x04trueo", r"global os.system is not on the weights-only allowlist"),
        (b"(U\x01xios\nsystem\n", r"opcode INST \(0x69\) is not allowed"),
        (b"ccollections\nOrderedDict\n)\x81", r"opcode NEWOBJ \(0x81\) is not allowed"),
        (b"]K\x01K\x02s", r"SETITEM on a list; only dicts take items"),
        (b"}K\x01a", r"APPEND on a dict; only lists take items"),
        (b"}}b", r"BUILD on a dict with a dict is not allowed"),
        (b"(U\x07storageK\x01tQ", r"persistent id .* is not a 5-field"),
        (b"h\x05", r"memo entry 5 read before it was written"),
        (b"X\xff\x00\x00\x00ab", r"truncated inside BINUNICODE"),
        (b"K\x01K\x02", r"STOP with 2 values on the stack"),
        (b"\x8c\x08builtins\x8c\x04eval\x93", r"global builtins.eval is not on the weights-only"),
        (b"U\x01aU\x01b\x93", r"global a.b is not on"),
        (b"S'a'\n", r"opcode STRING \(0x53\) is not allowed"),
    ],
    ids=["global", "inst", "newobj", "setitem-list", "append-dict", "build-dict", "persid", "memo", "truncated", "stop", "stack-global", "stack-global-unknown", "text-string"],
)
def test_hand_built_pickles_are_refused(tmp_path: Path, body: bytes, message: str) -> None:
    path = write_zip(tmp_path / "evil.pth", hand_pickle(body), {})
    with pytest.raises(ConversionError, match=message):
        read(path)


def test_opcode_limit(save: Callable[..., Path]) -> None:
    path = save({f"t{i}": torch.zeros(1) for i in range(50)})
    with pytest.raises(LimitExceeded, match="more than 100 opcodes"):
        read(path, limits=Limits(max_opcodes=100))


# ---- forged layouts: storages that do not hold what the pickle says ---------------------------


def one_tensor(offset: int, size: tuple[int, ...], stride: tuple[int, ...], numel: int = 4) -> dict[str, Any]:
    return {"w": TensorStub(StorageStub(torch.FloatStorage, "0", numel), offset, size, stride)}


@pytest.mark.parametrize(
    ("obj", "raw", "message"),
    [
        (one_tensor(0, (4,), (1,)), bytes(12), r"storage '0' holds 12 bytes but the pickle declares 4 x F32 = 16"),
        (one_tensor(2, (4,), (1,)), bytes(16), r"reaches byte 24 of storage '0', which holds 16"),
        (one_tensor(0, (2, 2), (3, 1)), bytes(16), r"reaches byte 20 of storage '0'"),
        (one_tensor(0, (4,), (-1,)), bytes(16), r"tensor stride must be an integer >= 0"),
        (one_tensor(0, (4,), (1, 1)), bytes(16), r"differ in length"),
    ],
    ids=["short-storage", "offset-out-of-range", "stride-out-of-range", "negative-stride", "rank-mismatch"],
)
def test_bad_layouts_are_refused(tmp_path: Path, obj: Any, raw: bytes, message: str) -> None:
    path = forged_zip(tmp_path, obj, {"0": raw})
    with pytest.raises(ConversionError, match=message) as err:
        read(path)
    assert err.value.path == str(path)


def test_missing_storage_is_refused(tmp_path: Path) -> None:
    path = forged_zip(tmp_path, one_tensor(0, (4,), (1,)), {})
    with pytest.raises(ConversionError, match="storage '0' is referenced by the pickle but missing"):
        read(path)


def test_storage_declared_with_two_types_is_refused(tmp_path: Path) -> None:
    obj = one_tensor(0, (4,), (1,))
    obj["v"] = TensorStub(StorageStub(torch.HalfStorage, "0", 8), 0, (8,), (1,))
    path = forged_zip(tmp_path, obj, {"0": bytes(16)})
    with pytest.raises(ConversionError, match="storage '0' declared twice"):
        read(path)


def test_expansion_bomb_is_refused(tmp_path: Path) -> None:
    path = forged_zip(tmp_path, one_tensor(0, (2**16, 2**16), (0, 0), numel=1), {"0": bytes(4)})
    with pytest.raises(LimitExceeded, match="would expand 4 stored bytes"):
        read(path)


# ---- legacy stream framing -------------------------------------------------------------------


def legacy_parts(path: Path) -> tuple[list[bytes], bytes]:
    import pickletools

    data = path.read_bytes()
    f = io.BytesIO(data)
    parts = []
    for _ in range(5):
        start = f.tell()
        for _op in pickletools.genops(f):
            pass
        parts.append(data[start : f.tell()])
    return parts, data[f.tell() :]


def key_list(raw: bytes) -> list[str]:
    keys = interpret_pickle(PickleStream(member=None, offset=0, data=memoryview(raw)), path="keys")
    assert isinstance(keys, list)
    return keys


def rewrite_legacy(path: Path, parts: list[bytes], tail: bytes) -> Path:
    out = path.with_name("bad.pth")
    out.write_bytes(b"".join(parts) + tail)
    return out


def test_legacy_storage_listed_twice(save: Callable[..., Path]) -> None:
    path = save({"a": torch.ones(2)}, legacy=True)
    parts, tail = legacy_parts(path)
    keys = key_list(parts[4])
    parts[4] = pickle.dumps(keys * 2, protocol=2)
    with pytest.raises(ConversionError, match="listed twice"):
        read(rewrite_legacy(path, parts, tail + tail))


@pytest.mark.parametrize(
    ("cut", "message"),
    [(4, r"truncated: 8 bytes declared, 4 left"), (10, r"truncated \(no size header\)")],
)
def test_legacy_truncated_storage(save: Callable[..., Path], cut: int, message: str) -> None:
    path = save({"a": torch.ones(2), "b": torch.ones(2)}, legacy=True)
    parts, tail = legacy_parts(path)
    with pytest.raises(ConversionError, match=message):
        read(rewrite_legacy(path, parts, tail[:-cut]))


def test_legacy_trailing_bytes_and_numel_mismatch(save: Callable[..., Path]) -> None:
    path = save({"a": torch.ones(2)}, legacy=True)
    parts, tail = legacy_parts(path)
    with pytest.raises(ConversionError, match="4 unexplained bytes"):
        read(rewrite_legacy(path, parts, tail + bytes(4)))
    bad = (3).to_bytes(8, "little") + tail[8:]
    with pytest.raises(ConversionError, match="records 3 elements but the pickle declares 2"):
        read(rewrite_legacy(path, parts, bad))


def test_legacy_key_missing_from_list(save: Callable[..., Path]) -> None:
    path = save({"a": torch.ones(2), "b": torch.ones(3)}, legacy=True)
    parts, tail = legacy_parts(path)
    keys = key_list(parts[4])
    parts[4] = pickle.dumps(keys[:1], protocol=2)
    with pytest.raises(ConversionError, match=r"absent from the storage keys|unexplained bytes"):
        read(rewrite_legacy(path, parts, tail))


def test_every_failure_is_a_gpenguard_error(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "x.pth", hand_pickle(b"\xff"), {})
    with pytest.raises(GpenguardError, match=r"opcode 0xff is not allowed"):
        read(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # a dict key nested 3000 tuples deep (TUPLE1 repeated): refused, no RecursionError
        (b"}K\x01" + b"\x85" * 3000 + b"K\x02s", r"SETITEM with a tuple as a dict key"),
        # a 4096-byte integer as a storage numel: the message stays short and renders
        (b"(U\x07storagectorch\nFloatStorage\nU\x010U\x03cpu\x8b\x00\x10\x00\x00" + b"\x01" * 4096 + b"tQ",
         r"storage '0' holds 4 bytes but the pickle declares <\d+-bit integer> x F32"),
    ],
    ids=["deep-key", "huge-int"],
)
def test_hostile_values_give_short_messages(tmp_path: Path, body: bytes, message: str) -> None:
    path = write_zip(tmp_path / "evil.pth", hand_pickle(body), {"0": bytes(4)})
    with pytest.raises(ConversionError, match=message) as err:
        read(path)
    assert len(str(err.value)) < 400


def test_gpu_saved_storages_read_as_cpu(tmp_path: Path) -> None:
    """Older torch pickled GPU tensors as torch.cuda.<T>Storage at 'cuda:0'; bytes are the same."""
    values = torch.arange(6, dtype=torch.float16)
    obj = {"w": TensorStub(StorageStub(torch.cuda.HalfStorage, "0", 6, "cuda:0"), 0, (2, 3), (3, 1))}
    path = forged_zip(tmp_path, obj, {"0": values.numpy().tobytes()})
    state = read(path)
    assert state["w"].dtype == "F16"
    assert bytes(state.tensor_bytes(state["w"])) == values.numpy().tobytes()


def test_safetensors_input_is_named_as_such(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(2)}, path)
    with pytest.raises(ConversionError, match="already safetensors"):
        read(path)


@pytest.mark.parametrize("legacy", FORMATS)
def test_iter_bytes_streams_views_in_bounded_pieces(save: Callable[..., Path], legacy: bool) -> None:
    base = torch.randn(64, 48)
    path = save({"t": base.t(), "c": base, "s": base[::3, 5:40]}, legacy=legacy)
    state = read(path)
    for rec in state:
        pieces = list(state.iter_bytes(rec, chunk=1024))
        assert b"".join(bytes(p) for p in pieces) == bytes(state.tensor_bytes(rec))
        row = rec.nbytes // rec.shape[0]
        assert max(len(p) for p in pieces) <= max(1024, row)
        assert len(pieces) > 1


@st.composite
def views(draw: st.DrawFn) -> Any:
    """A random tensor view: permuted, sliced with steps and offsets, maybe expanded."""
    dtype = draw(st.sampled_from(list(DTYPES.values())))
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    t = sample(dtype, tuple(shape))
    if t.dim() > 1:
        t = t.permute(*draw(st.permutations(range(t.dim()))))
    for d in range(t.dim()):
        size = t.shape[d]
        start = draw(st.integers(0, size))
        step = draw(st.integers(1, 3))
        t = t.narrow(d, start, size - start)[(slice(None),) * d + (slice(None, None, step),)]
    if t.dim() and draw(st.booleans()):
        t = t.unsqueeze(0).expand(draw(st.integers(1, 3)), *t.shape)
    return t


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_views_round_trip(data: st.DataObject) -> None:
    import tempfile

    views_ = data.draw(st.lists(views(), min_size=1, max_size=3))
    legacy = data.draw(st.booleans())
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "v.pth"
        torch.save({f"v{i}": v for i, v in enumerate(views_)}, path, _use_new_zipfile_serialization=not legacy)
        state = read(path)
        for i, v in enumerate(views_):
            rec = state[f"v{i}"]
            assert rec.shape == tuple(v.shape) and rec.stride == tuple(v.stride())
            assert bytes(state.tensor_bytes(rec)) == torch_bytes(v)
            assert b"".join(bytes(p) for p in state.iter_bytes(rec, chunk=16)) == torch_bytes(v)


def test_empty_view_may_sit_past_its_storage(tmp_path: Path) -> None:
    """torch keeps a slice's offset even when nothing is left to read (found by the fuzzer)."""
    path = forged_zip(tmp_path, one_tensor(9, (0, 3), (3, 1)), {"0": bytes(16)})
    rec = read(path)["w"]
    assert rec.nbytes == 0 and rec.storage_offset == 9
