"""convert(): gate first, then a verified safetensors file, provenance, and the store."""

from __future__ import annotations

import collections
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpenguard import convert as convert_mod
from gpenguard.convert import convert, read_provenance, write_safetensors
from gpenguard.errors import (
    Blocked,
    ConversionError,
    InputError,
    UsageError,
    VerificationError,
)
from gpenguard.formats.container import read_container
from gpenguard.formats.source import Source
from gpenguard.formats.weights import read_tensors
from gpenguard.store import Store
from tests._gatekit import Evil, arch_of, build_world

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def as_bits(t: Any) -> Any:
    """Compare floats bit for bit (NaN-safe, -0.0 distinct): view as same-width integers."""
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    if t.dtype == torch.bool or t.numel() == 0:
        return t
    return t.contiguous().view(width)


def assert_same_tensors(out: Path, ref: dict[str, Any]) -> None:
    got = safetensors_torch.load_file(out)
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert torch.equal(as_bits(got[k]), as_bits(v.detach())), k


def everything() -> dict[str, Any]:
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    g = torch.Generator().manual_seed(3)
    sd: dict[str, Any] = collections.OrderedDict(
        transposed=base.t(),
        window=base[1:4, 2:7],
        row=base[5],
        expanded=torch.tensor([1.5, -2.0], dtype=torch.bfloat16).expand(4, 2),
        scalar=torch.tensor(float("nan"), dtype=torch.float64),
        empty=torch.zeros(0, 4),
        param=torch.nn.Parameter(torch.randn(3, 3, generator=g)),
    )
    for dt in (torch.float16, torch.bfloat16, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        sd[f"t_{str(dt)[6:]}"] = (torch.randn(2, 5, generator=g) * 50).to(dt)
    sd["t_bool"] = torch.randn(7, generator=g) > 0
    return sd


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_round_trip_bit_exact_with_torch_load(tmp_path: Path, legacy: bool) -> None:
    src = tmp_path / "model.pth"
    torch.save(everything(), src, _use_new_zipfile_serialization=not legacy)
    out = tmp_path / "model.safetensors"

    record = convert(src, out)

    ref = torch.load(src, weights_only=True)  # the test's own benign file, as the reference
    assert_same_tensors(out, ref)
    assert record.sha256 == sha256_of(out) and record.size == out.stat().st_size
    assert record.source_sha256 == sha256_of(src)
    assert record.tensors == len(ref)
    assert set(record.materialised) == {"transposed", "window", "expanded"}
    assert record.shared == (("transposed", "window", "row"),)
    prov = read_provenance(record.provenance)
    assert prov.byproduct("shared-storage-groups") == [["transposed", "window", "row"]]
    assert set(prov.byproduct("materialised-views")) == set(record.materialised)


def test_metadata_records_source_and_what_was_done(tmp_path: Path) -> None:
    src = tmp_path / "model.pth"
    torch.save(everything(), src)
    out = tmp_path / "model.safetensors"
    convert(src, out)
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt"
    assert meta["gpenguard.format"] == "gpenguard-safetensors/1"
    assert meta["gpenguard.source_sha256"] == sha256_of(src)
    assert meta["gpenguard.source_format"] == "torch-zip"
    assert meta["gpenguard.registry"] == "gpenguard-default"
    assert json.loads(meta["gpenguard.shared"]) == [["transposed", "window", "row"]]
    assert "expanded" in json.loads(meta["gpenguard.materialised"])


def test_output_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "model.pth"
    torch.save(everything(), src)
    a = convert(src, tmp_path / "a.safetensors")
    b = convert(src, tmp_path / "b.safetensors")
    assert a.sha256 == b.sha256
    # data is laid out widest dtype first, so every tensor is aligned to its element size
    header_len = int.from_bytes((tmp_path / "a.safetensors").read_bytes()[:8], "little")
    assert (8 + header_len) % 8 == 0


def test_provenance_statement_and_signature(tmp_path: Path) -> None:
    from tests.trust.factory import new_key

    src = tmp_path / "model.pth"
    torch.save({"w": torch.randn(4, 4)}, src)
    key = new_key("ed25519")
    other = new_key("ecdsa-p256")
    priv, _ = key.write(tmp_path, "signer")

    record = convert(src, tmp_path / "m.safetensors", sign_key=priv)

    assert record.provenance == tmp_path / "m.safetensors.intoto.json"
    prov = read_provenance(record.provenance)
    assert prov.subject_sha256 == sha256_of(tmp_path / "m.safetensors")
    assert prov.source_sha256 == sha256_of(src)
    st = prov.statement
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://slsa.dev/provenance/v1"
    build = st["predicate"]["buildDefinition"]
    assert build["buildType"] == "urn:gpenguard:buildtype:convert:v1"
    assert build["externalParameters"]["policy"] == "default"
    assert build["externalParameters"]["registry"]["name"] == "gpenguard-default"
    run = st["predicate"]["runDetails"]
    assert run["metadata"]["startedOn"] <= run["metadata"]["finishedOn"]
    gate = prov.byproduct("gate-decision")
    assert gate["verdict"] == "pass"
    assert {"check": "scan", "outcome": "pass"} in gate["checks"]
    assert record.signed_by == (key.key_id,)
    assert prov.verified_by([key.private.public_key(), other.private.public_key()]) == (key.key_id,)

    # a tampered payload no longer verifies
    env = json.loads(record.provenance.read_text())
    import base64

    payload = json.loads(base64.b64decode(env["payload"]))
    payload["subject"][0]["digest"]["sha256"] = "0" * 64
    env["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    record.provenance.write_text(json.dumps(env))
    assert read_provenance(record.provenance).verified_by([key.private.public_key()]) == ()


def test_unsigned_provenance_is_a_bare_statement(tmp_path: Path) -> None:
    src = tmp_path / "model.pth"
    torch.save({"w": torch.ones(2)}, src)
    record = convert(src, tmp_path / "m.safetensors")
    prov = read_provenance(record.provenance)
    assert prov.envelope is None and record.signed_by == ()
    assert prov.verified_by([]) == ()


# ---- the gate decides first -------------------------------------------------------------------


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_malicious_checkpoint_is_blocked_before_conversion(tmp_path: Path) -> None:
    src = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "x": Evil()}, src)
    before = listing(tmp_path)
    with pytest.raises(Blocked) as err:
        convert(src, tmp_path / "evil.safetensors")
    assert err.value.exit_code == 1
    assert any("getpid" in r for r in err.value.reasons)
    assert listing(tmp_path) == before


def test_reader_refuses_a_global_the_policy_let_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: even a gate that passes cannot make the reader run a global."""
    from gpenguard import gate

    src = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "x": Evil()}, src)
    real = gate.verify_source

    def lenient(source: Source, **kw: Any) -> Any:
        import dataclasses

        from gpenguard.findings import Verdict

        return dataclasses.replace(real(source, **kw), verdict=Verdict.PASS, reasons=())

    monkeypatch.setattr(gate, "verify_source", lenient)
    before = listing(tmp_path)
    with pytest.raises(ConversionError, match=r"global posix.getpid is not on the weights-only allowlist"):
        convert(src, tmp_path / "evil.safetensors")
    assert listing(tmp_path) == before


def test_registry_entry_selects_the_fingerprinted_state_dict(tmp_path: Path) -> None:
    world = build_world(tmp_path, pinned=False)
    nested = {"params_ema": {f"module.{k}": v for k, v in world.state_dict.items()}, "iter": 3}
    torch.save(nested, world.model)
    world.entry["architecture"] = arch_of({f"module.{k}": v for k, v in world.state_dict.items()})
    world.entry["architecture"]["state_dict_key"] = "params_ema"
    world.write()
    out = tmp_path / "tiny.safetensors"

    record = convert(world.model, out, registry=world.registry, trust_root=world.trust_root,
                     strip_prefix="module.")

    assert record.select == "params_ema" and record.artifact == "tinynet@1.0"
    assert record.registry_version == 1
    assert_same_tensors(out, world.state_dict)
    prov = read_provenance(record.provenance).statement
    assert prov["predicate"]["buildDefinition"]["externalParameters"]["source"]["artifact"] == "tinynet@1.0"

    with pytest.raises(UsageError, match="pins the state_dict at 'params_ema'"):
        convert(world.model, tmp_path / "other.safetensors", registry=world.registry,
                trust_root=world.trust_root, select="iter")
    assert not (tmp_path / "other.safetensors").exists()


def test_gate_that_cannot_decide_exits_2(tmp_path: Path) -> None:
    src = tmp_path / "model.pth"
    torch.save({"w": torch.ones(2)}, src)
    with pytest.raises(Blocked, match="could not decide") as err:
        convert(src, tmp_path / "m.safetensors", registry=tmp_path / "missing.yaml")
    assert err.value.exit_code == 2
    assert any("registry" in r for r in err.value.reasons)
    assert not (tmp_path / "m.safetensors").exists()


def test_registry_mismatch_blocks(tmp_path: Path) -> None:
    world = build_world(tmp_path)  # pins size and sha256
    torch.save({k: v + 1 for k, v in world.state_dict.items()}, world.model)  # same shapes, new bytes
    with pytest.raises(Blocked) as err:
        convert(world.model, tmp_path / "x.safetensors", registry=world.registry, trust_root=world.trust_root)
    assert any("sha256" in r or "size" in r for r in err.value.reasons)
    assert not (tmp_path / "x.safetensors").exists()


# ---- failures leave nothing behind ------------------------------------------------------------


def test_truncated_checkpoint_fails_cleanly(tmp_path: Path) -> None:
    src = tmp_path / "model.pth"
    torch.save({"w": torch.randn(64, 64)}, src, _use_new_zipfile_serialization=False)
    src.write_bytes(src.read_bytes()[:-100])
    before = listing(tmp_path)
    # the scanner follows the legacy storage records to the end and blocks the short one;
    # the reader, on its own, finds the same storage short
    with pytest.raises(Blocked) as blocked:
        convert(src, tmp_path / "m.safetensors")
    assert any("past the end of the file" in r for r in blocked.value.reasons), blocked.value.reasons
    assert listing(tmp_path) == before
    _assert_reader_refuses(src, "is truncated: 16384 bytes declared, 16284 left")


def test_missing_output_folder_is_an_input_error(tmp_path: Path) -> None:
    src = tmp_path / "model.pth"
    torch.save({"w": torch.ones(2)}, src)
    with pytest.raises(InputError, match="output folder does not exist"):
        convert(src, tmp_path / "nope" / "m.safetensors")


def test_file_rewritten_during_conversion_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpenguard import gate

    src = tmp_path / "model.pth"
    torch.save({"w": torch.ones(2)}, src)
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"the user's previous output")
    real = gate.verify_source

    def and_touch(source: Source, **kw: Any) -> Any:
        decision = real(source, **kw)
        os.utime(src, ns=(1, 1))  # what any rewrite of the file does to its identity
        return decision

    monkeypatch.setattr(gate, "verify_source", and_touch)
    before = listing(tmp_path)
    with pytest.raises(ConversionError, match="changed on disk during conversion"):
        convert(src, out)
    assert listing(tmp_path) == before
    assert out.read_bytes() == b"the user's previous output"  # refused before anything was renamed


def test_file_swapped_after_the_gate_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mapped file is the baseline: a path renamed over after the gate is not converted."""
    from gpenguard import gate

    src = tmp_path / "model.pth"
    torch.save({"w": torch.ones(2)}, src)
    other = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(2)}, other)
    real = gate.verify_source

    def and_swap(source: Source, **kw: Any) -> Any:
        decision = real(source, **kw)
        other.replace(src)
        return decision

    monkeypatch.setattr(gate, "verify_source", and_swap)
    with pytest.raises(ConversionError, match="changed on disk during conversion"):
        convert(src, tmp_path / "m.safetensors")
    assert listing(tmp_path) == {"model.pth"}


def test_output_may_not_be_the_source_or_a_folder(tmp_path: Path) -> None:
    src = tmp_path / "model.pth"
    torch.save({"w": torch.ones(2)}, src)
    original = src.read_bytes()
    with pytest.raises(UsageError, match="would replace the checkpoint"):
        convert(src, tmp_path / "." / "model.pth")
    with pytest.raises(UsageError, match="is a directory"):
        convert(src, tmp_path)
    assert src.read_bytes() == original


def test_provenance_may_not_land_on_the_source(tmp_path: Path) -> None:
    """``convert m.intoto.json -o m`` would write the provenance record over the checkpoint."""
    src = tmp_path / "m.intoto.json"
    torch.save({"w": torch.ones(2)}, src)
    original = src.read_bytes()
    before = listing(tmp_path)
    with pytest.raises(UsageError, match="would replace the checkpoint"):
        convert(src, tmp_path / "m")
    (tmp_path / "link").symlink_to(src)
    with pytest.raises(UsageError, match="would replace the checkpoint"):
        convert(tmp_path / "link", tmp_path / "m")
    assert src.read_bytes() == original
    assert listing(tmp_path) == before | {"link"}


def test_write_failure_mid_stream_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "model.pth"
    torch.save({"a": torch.ones(2), "b": torch.ones(3)}, src)
    calls = {"n": 0}
    real_write = os.write

    def flaky(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(convert_mod.os, "write", flaky)
    before = listing(tmp_path)
    with pytest.raises(InputError, match="No space left on device"):
        convert(src, tmp_path / "m.safetensors")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("to_store", [False, True], ids=["output", "store"])
def test_interrupt_after_the_output_is_in_place_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, to_store: bool
) -> None:
    """Ctrl-C between renaming the output into place and returning removes it again."""
    src = tmp_path / "model.pth"
    torch.save({"a": torch.ones(2)}, src)

    def interrupted(source: Source) -> None:
        source.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_mod, "_close", interrupted)
    before = listing(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        if to_store:
            convert(src, store=Store(tmp_path / "store"))
        else:
            convert(src, tmp_path / "m.safetensors")
    assert listing(tmp_path) - {"store"} == before
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p != src]


def test_read_back_mismatch_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verification really compares: a file that reads back one bit off is refused."""
    src = tmp_path / "model.pth"
    torch.save({"a": torch.ones(16)}, src)
    real_preadv = os.preadv

    def flipped(fd: int, buffers: list[bytearray], offset: int) -> int:
        n = real_preadv(fd, buffers, offset)
        if offset > 0:  # past the header: tensor bytes
            buffers[0][-1] ^= 0x01
        return n

    monkeypatch.setattr(convert_mod.os, "preadv", flipped)
    before = listing(tmp_path)
    with pytest.raises(ConversionError, match="tensor 'a' read back from the output differs"):
        convert(src, tmp_path / "m.safetensors")
    assert listing(tmp_path) == before


def test_write_safetensors_without_gate_for_a_read_state(tmp_path: Path, save: Callable[..., Path]) -> None:
    path = save({"w": torch.randn(3, 3).t()})
    with Source.open(path) as src:
        written = write_safetensors(read_tensors(read_container(src)), tmp_path / "w.safetensors")
    assert written.sha256 == sha256_of(tmp_path / "w.safetensors")
    assert_same_tensors(tmp_path / "w.safetensors", torch.load(path, weights_only=True))


# ---- the content-addressed store -------------------------------------------------------------


def test_store_keeps_weights_by_digest(tmp_path: Path) -> None:
    src = tmp_path / "model.pth"
    torch.save({"w": torch.randn(8)}, src)
    store = Store(tmp_path / "store")

    record = convert(src, store=store)  # no -o: the store is the only output

    assert record.stored is not None and record.output == record.stored.path
    assert record.output == tmp_path / "store" / "sha256" / f"{record.sha256}.safetensors"
    found = store.find(f"sha256:{record.sha256}", verify=True)
    assert found is not None and found.provenance is not None
    prov = read_provenance(found.provenance)
    assert prov.subject_sha256 == record.sha256
    assert prov.statement["subject"][0]["name"] == "model.safetensors"
    assert not list((tmp_path / "store").glob("staging/*"))
    assert store.find("0" * 64) is None
    assert [e.sha256 for e in store.entries()] == [record.sha256]

    found.path.chmod(0o644)
    found.path.write_bytes(found.path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(VerificationError, match=r"not the .* they are filed under"):
        store.find(record.sha256, verify=True)
    with pytest.raises(UsageError, match="not a sha256 digest"):
        store.find("abc")


@pytest.mark.parametrize("move", [False, True], ids=["copy", "move"])
@pytest.mark.parametrize("broken", ["weights", "provenance"])
def test_store_add_that_fails_leaves_no_half_entry(tmp_path: Path, move: bool, broken: str) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    prov = tmp_path / "w.safetensors.intoto.json"
    prov.write_text("{}")
    digest = hashlib.sha256(b"weights").hexdigest()
    if broken == "weights" and move:
        weights.unlink()
    elif broken == "weights":
        weights.write_bytes(b"other bytes")  # refused: not the digest it is filed under
    else:
        prov.unlink()
    store = Store(tmp_path / "store")
    with pytest.raises((InputError, VerificationError)):
        store.add(weights, digest, prov, move=move)
    assert list((tmp_path / "store" / "sha256").iterdir()) == []
    assert store.entries() == []


def test_store_defaults_to_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPENGUARD_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "model.pth"
    torch.save({"w": torch.randn(8)}, src)
    record = convert(src, tmp_path / "m.safetensors", store=Store())
    assert record.stored is not None
    assert record.stored.path.parent == tmp_path / "cache" / "sha256"
    assert (tmp_path / "m.safetensors").exists()


def test_unwritable_store_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpenguard import gate

    src = tmp_path / "model.pth"
    torch.save({"w": torch.ones(2)}, src)
    (tmp_path / "afile").write_text("")

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the gate ran although the store cannot be written")

    monkeypatch.setattr(gate, "verify_source", never)
    before = listing(tmp_path)
    with pytest.raises(InputError, match="cannot create the store"):
        convert(src, tmp_path / "m.safetensors", store=Store(tmp_path / "afile"))
    assert listing(tmp_path) == before


def test_needs_an_output_or_a_store(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        convert(tmp_path / "x.pth")


def test_non_checkpoints_are_blocked(tmp_path: Path) -> None:
    src = tmp_path / "notes.pth"
    src.write_bytes(b"just some text, not a checkpoint\n" * 10)
    with pytest.raises(Blocked, match="the gate could not decide on this file") as err:
        convert(src, tmp_path / "n.safetensors")
    assert err.value.exit_code == 2  # unknown input: 2, as `scan` and `verify` say
    assert any("not a checkpoint" in r for r in err.value.reasons)
    assert not (tmp_path / "n.safetensors").exists()


def _forged(tmp_path: Path, case: str) -> Path:
    from tests.convert.conftest import StorageStub, TensorStub, forge_pickle, write_zip

    def zip_with(offset: int, numel: int, raw: dict[str, bytes]) -> Path:
        obj = {"w": TensorStub(StorageStub(torch.FloatStorage, "0", numel), offset, (4,), (1,))}
        return write_zip(tmp_path / "forged.pth", forge_pickle(obj), raw, root="forged")

    if case == "offset-out-of-range":
        return zip_with(3, 4, {"0": bytes(16)})
    if case == "size-mismatch":
        return zip_with(0, 4, {"0": bytes(12)})
    if case == "storage-missing":
        return zip_with(0, 4, {})
    path = tmp_path / "legacy.pth"
    # equal sizes: which storage comes last in the file depends on memory addresses
    torch.save({"a": torch.ones(3), "b": torch.zeros(3)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    return_path = tmp_path / "forged.pth"
    return_path.write_bytes(raw[:-4] if case == "legacy-truncated" else raw + b"\0" * 8)
    return return_path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("offset-out-of-range", "reaches byte 28 of storage '0', which holds 16"),
        ("size-mismatch", "holds 12 bytes but the pickle declares 4 x F32 = 16"),
        ("storage-missing", "storage '0' is referenced by the pickle but missing"),
        ("legacy-truncated", "is truncated: 12 bytes declared, 8 left"),
        ("legacy-trailing", "8 unexplained bytes after the last legacy storage"),
    ],
)
def test_corrupt_checkpoints_fail_with_the_reason_and_leave_nothing(tmp_path: Path, case: str, message: str) -> None:
    src = _forged(tmp_path, case)
    before = listing(tmp_path)
    # the gate may block first (the scanner follows storage records too); either way nothing
    # is written, and the reader, on its own, names the damage
    with pytest.raises((ConversionError, Blocked)) as err:
        convert(src, tmp_path / "out.safetensors")
    assert err.value.path == str(src)
    assert listing(tmp_path) == before
    _assert_reader_refuses(src, message)


def _assert_reader_refuses(src: Path, message: str) -> None:
    with Source.open(src) as source:
        box = read_container(source)
        with pytest.raises(ConversionError) as err:
            sd = read_tensors(box)
            for rec in sd:
                sd.tensor_bytes(rec)
    assert err.value.exit_code == 2 and message in str(err.value), str(err.value)


def test_progress_follows_the_gate_hash(tmp_path: Path) -> None:
    src = tmp_path / "model.pth"
    torch.save({"w": torch.randn(64, 64)}, src)
    seen: list[tuple[int, int]] = []
    convert(src, tmp_path / "m.safetensors", progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (src.stat().st_size, src.stat().st_size)
