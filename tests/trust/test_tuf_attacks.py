"""TUF's attacks on the registry, each through `gpenguard verify --tuf-repo`: every one fails closed.

The list is the TUF specification's (section 1.5.2): arbitrary software, rollback, indefinite
freeze, endless data, extraneous dependencies, mix-and-match, malicious mirrors, key compromise
below the threshold, fast-forward; plus key rotation, which must keep working while they fail.
Exit 1 is "blocked", exit 2 "could not decide" (README's contract); neither lets a file through.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import DelegatedRole, Delegations, MetaFile

from tests._gatekit import MODEL_FILE, save_checkpoint, tiny_state_dict
from tests.trust.tufkit import TufWorld, add_key, build_tuf_world, later, run, sign_online


@pytest.fixture
def world(tmp_path: Path) -> TufWorld:
    return build_tuf_world(tmp_path)


def fresh_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str = "runner2") -> None:
    """A new CI runner: an empty state folder, so no TUF metadata trusted before."""
    folder = tmp_path / name
    folder.mkdir()
    monkeypatch.setenv("GPENGUARD_STATE_DIR", str(folder))


def change_license(world: TufWorld, text: str) -> None:
    world.gate.entry["license"] = text
    world.gate.write(sign=False)


def test_genuine_registry_passes(world: TufWorld) -> None:
    code, out = world.verify()
    assert code == 0, out
    assert "TUF update verified" in out and "matched by sha256" in out


# -- arbitrary software --------------------------------------------------------------------------


def test_arbitrary_software_a_different_file_under_the_approved_name(world: TufWorld, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    evil = save_checkpoint(other / MODEL_FILE, tiny_state_dict(channels=6))
    code, out = world.verify(model=evil)
    assert code == 1, out
    assert "the registry expects" in out or "does not match the pinned" in out


def test_arbitrary_software_a_file_no_target_lists(world: TufWorld, tmp_path: Path) -> None:
    evil = save_checkpoint(tmp_path / "unlisted.pth", tiny_state_dict(channels=6))
    code, out = world.verify(model=evil)
    assert code == 1, out
    assert "not a target of TUF repository" in out


def test_arbitrary_software_a_claimed_name_with_the_wrong_bytes(world: TufWorld, tmp_path: Path) -> None:
    evil = save_checkpoint(tmp_path / "x.pth", tiny_state_dict(channels=6))
    code, out = world.verify("--name", "tinynet", model=evil)
    assert code == 1, out


# -- rollback ------------------------------------------------------------------------------------


def test_rollback_a_mirror_replaying_the_whole_old_repository(world: TufWorld) -> None:
    old = world.snapshot_of_repo("stale-mirror")
    change_license(world, "v2")
    assert world.publish()[0] == 0
    assert world.verify()[0] == 0  # this machine now trusts timestamp 2
    code, out = world.verify(repo=old)
    assert code == 1, out
    assert "rollback" in out and "timestamp version 1 must be >= 2" in out


def test_rollback_of_snapshot_with_the_online_key(world: TufWorld) -> None:
    change_license(world, "v2")
    world.publish()
    assert world.verify()[0] == 0

    def back(ts: Any) -> None:
        ts.version += 5
        ts.snapshot_meta = MetaFile(version=1)

    world.resign("timestamp.json", "online", back)
    code, out = world.verify()
    assert code == 1, out
    assert "snapshot version must be >= 2" in out


def test_rollback_of_targets_with_the_online_key(world: TufWorld) -> None:
    change_license(world, "v2")
    world.publish()
    assert world.verify()[0] == 0
    sign_online(world, targets_version=1)  # fresh snapshot and timestamp that point at targets 1
    code, out = world.verify()
    assert code == 1, out
    assert "rollback" in out


# -- indefinite freeze ---------------------------------------------------------------------------


def test_freeze_an_expired_timestamp_is_refused(world: TufWorld) -> None:
    def expire(ts: Any) -> None:
        ts.version += 1
        ts.expires = later(hours=-1)

    world.resign("timestamp.json", "online", expire)
    code, out = world.verify()
    assert code == 1, out
    assert "expired" in out and "timestamp.json is expired" in out


def test_a_new_runner_with_an_empty_cache_refuses_an_older_registry(
    world: TufWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Yesterday's publication, kept by a mirror that stopped updating: its timestamp has expired.
    old = world.snapshot_of_repo("frozen-mirror")
    world.resign("timestamp.json", "online", lambda ts: setattr(ts, "expires", later(minutes=-5)), repo=old)
    change_license(world, "v2")
    world.publish()
    fresh_runner(monkeypatch, tmp_path)
    code, out = world.verify(repo=old)
    assert code == 1, out
    assert "expired" in out
    fresh_runner(monkeypatch, tmp_path, "runner3")
    assert world.verify()[0] == 0


def test_an_expired_targets_role_is_refused(world: TufWorld) -> None:
    def expire(t: Any) -> None:
        t.version = 2
        t.expires = later(hours=-1)

    world.resign("1.targets.json", "targets", expire, rename="2.targets.json")
    sign_online(world, targets_version=2)
    code, out = world.verify()
    assert code == 1, out
    assert "expired" in out


# -- endless data --------------------------------------------------------------------------------


def test_endless_data_an_oversized_timestamp_is_cut_at_its_bound(world: TufWorld) -> None:
    (world.repo / "timestamp.json").write_bytes(b" " * (40 * 2**20))
    started = time.monotonic()
    code, out = world.verify()
    assert code == 1, out
    assert "exceeds" in out
    assert time.monotonic() - started < 30


def test_endless_data_a_fifo_on_the_mirror_does_not_hang(world: TufWorld) -> None:
    (world.repo / "timestamp.json").unlink()
    os.mkfifo(world.repo / "timestamp.json")
    code, out = world.verify()
    assert code == 2, out
    assert "not a regular file" in out


def test_endless_data_a_huge_targets_file_is_bounded_by_the_snapshot(world: TufWorld) -> None:
    target = world.repo / "1.targets.json"
    target.write_bytes(target.read_bytes() + b" " * (8 * 2**20))
    code, out = world.verify()
    assert code == 1, out
    assert "exceeds" in out or "length" in out


# -- extraneous dependencies ---------------------------------------------------------------------


def test_extraneous_a_delegated_role_is_not_followed(world: TufWorld, tmp_path: Path) -> None:
    def delegate(t: Any) -> None:
        t.version = 2
        t.delegations = Delegations(keys={}, roles={"extra": DelegatedRole(
            name="extra", keyids=[], threshold=1, terminating=True, paths=["*"])})

    world.resign("1.targets.json", "targets", delegate, rename="2.targets.json")
    sign_online(world, targets_version=2)
    code, out = world.verify()
    assert code == 1, out
    assert "delegates to other roles" in out


def test_extraneous_metadata_on_a_mirror_does_not_approve_a_file(world: TufWorld, tmp_path: Path) -> None:
    evil = save_checkpoint(tmp_path / "payload.pth", tiny_state_dict(channels=5))
    # Metadata the attacker adds beside the real files: an "extra" role naming the payload.
    (world.repo / "extra.json").write_text(json.dumps({"signed": {"_type": "targets", "targets": {
        "payload.pth": {"length": evil.stat().st_size, "hashes": {"sha256": "00" * 32}}}}, "signatures": []}))
    code, out = world.verify(model=evil)
    assert code == 1, out
    assert "not a target" in out


# -- mix-and-match -------------------------------------------------------------------------------


def test_mix_and_match_an_old_targets_file_under_the_new_name(world: TufWorld, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    change_license(world, "v2")
    world.publish()
    shutil.copyfile(world.repo / "1.targets.json", world.repo / "2.targets.json")
    fresh_runner(monkeypatch, tmp_path)
    code, out = world.verify()
    assert code == 1, out
    assert "length" in out


def test_mix_and_match_an_old_snapshot_with_the_new_timestamp(world: TufWorld) -> None:
    change_license(world, "v2")
    world.publish()
    shutil.copyfile(world.repo / "1.snapshot.json", world.repo / "2.snapshot.json")
    code, out = world.verify()
    assert code == 1, out
    assert "length" in out


def test_mix_and_match_across_two_registries_signed_by_the_same_keys(tmp_path: Path) -> None:
    a = build_tuf_world(tmp_path / "a")
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    # Registry B: same targets and online keys, another root, its own approvals.
    b_repo = b_dir / "repo"
    code, out = run("registry", "init", b_repo, "--root-key", a.key("r1"), "--targets-key", a.pub("targets"),
                    "--online-key", a.pub("online"))
    assert code == 0, out
    other = save_checkpoint(b_dir / MODEL_FILE, tiny_state_dict(channels=7))
    doc = json.loads(json.dumps(a.gate.doc))
    spec = doc["artifacts"][0]["files"][0]
    spec["size"] = other.stat().st_size
    spec["sha256"] = __import__("hashlib").sha256(other.read_bytes()).hexdigest()
    b_yaml = b_dir / "b.yaml"
    b_yaml.write_text(json.dumps(doc))
    assert run("registry", "publish", b_yaml, "--repo", b_repo, "--targets-key", a.key("targets"),
               "--online-key", a.key("online"))[0] == 0
    # B's targets (same version, same signer) served in place of A's.
    shutil.copyfile(b_repo / "1.targets.json", a.repo / "1.targets.json")
    code, out = a.verify(model=other)
    assert code == 1, out
    assert "length" in out


# -- malicious mirrors ---------------------------------------------------------------------------


def test_malicious_mirror_edits_a_target_hash(world: TufWorld, tmp_path: Path) -> None:
    evil = save_checkpoint(tmp_path / MODEL_FILE, tiny_state_dict(channels=6))
    path = world.repo / "1.targets.json"
    doc = json.loads(path.read_text())
    for t in doc["signed"]["targets"].values():
        t["length"] = evil.stat().st_size
        t["hashes"]["sha256"] = __import__("hashlib").sha256(evil.read_bytes()).hexdigest()
    path.write_text(json.dumps(doc))
    code, out = world.verify(model=evil)
    assert code == 1, out
    assert "TUF update refused" in out


def test_malicious_mirror_extends_the_timestamp_without_the_key(world: TufWorld) -> None:
    path = world.repo / "timestamp.json"
    doc = json.loads(path.read_text())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    doc["signed"]["version"] += 1
    path.write_text(json.dumps(doc))
    code, out = world.verify()
    assert code == 1, out
    assert "threshold" in out


# -- key compromise below the threshold ----------------------------------------------------------


def test_one_of_two_root_keys_cannot_hand_the_registry_to_an_attacker(world: TufWorld, tmp_path: Path) -> None:
    add_key(world, "evil")

    def takeover(root: Any) -> None:
        root.version = 2
        for kid in list(root.roles["targets"].keyids):
            root.revoke_key(kid, "targets")
        from securesystemslib.signer import SSlibKey

        root.add_key(SSlibKey.from_crypto(world.keys["evil"].private.public_key()), "targets")  # type: ignore[arg-type]

    world.resign("1.root.json", "r1", takeover, rename="2.root.json")
    code, out = world.verify()
    assert code == 1, out
    assert "threshold" in out


def test_the_cli_refuses_to_write_a_root_below_the_threshold(world: TufWorld) -> None:
    add_key(world, "r3")
    code, out = run("registry", "rotate", "--repo", world.repo, "--role", "root", "--add", world.pub("r3"),
                    "--remove", world.pub("r2"), "--sign-key", world.key("r1"), "--sign-key", world.key("r3"))
    assert code == 2, out
    assert "needs 2 signature(s) of the previous root" in out
    assert not (world.repo / "2.root.json").exists()


def test_targets_signed_by_the_online_key_are_refused(world: TufWorld, tmp_path: Path) -> None:
    def approve(t: Any) -> None:
        t.version = 2

    world.resign("1.targets.json", "online", approve, rename="2.targets.json")
    sign_online(world, targets_version=2)
    code, out = world.verify()
    assert code == 1, out
    assert "threshold" in out


# -- fast-forward --------------------------------------------------------------------------------


def test_fast_forward_with_a_stolen_online_key_then_recovery_by_rotation(world: TufWorld, tmp_path: Path) -> None:
    evil = world.snapshot_of_repo("evil-mirror")
    huge = 10**9

    def forward_snapshot(s: Any) -> None:
        s.version = huge

    world.resign("1.snapshot.json", "online", forward_snapshot, repo=evil, rename=f"{huge}.snapshot.json")

    def forward_timestamp(ts: Any) -> None:
        ts.version = huge
        ts.snapshot_meta = MetaFile(version=huge)

    world.resign("timestamp.json", "online", forward_timestamp, repo=evil)
    assert world.verify(repo=evil)[0] == 0  # validly signed: the client now holds version 10**9
    change_license(world, "v2")
    world.publish()
    code, out = world.verify()
    assert code == 1, out  # pinned to the attacker's numbers...
    assert "rollback" in out
    # ...until the administrator rotates the online key, as TUF's recovery prescribes.
    add_key(world, "online2", "ecdsa-p256")
    code, out = run("registry", "rotate", "--repo", world.repo, "--role", "timestamp", "--add", world.pub("online2"),
                    "--remove", world.pub("online"), "--sign-key", world.key("r1"), "--sign-key", world.key("r2"))
    assert code == 0, out
    code, out = run("registry", "refresh", "--repo", world.repo, "--online-key", world.key("online2"))
    assert code == 0, out
    code, out = world.verify()
    assert code == 0, out


def test_an_attacker_rooted_repository_cannot_pin_the_client(world: TufWorld, tmp_path: Path) -> None:
    attacker = build_tuf_world(tmp_path / "attacker")
    for _ in range(3):
        attacker.publish()
    evil = attacker.snapshot_of_repo("evil")
    code, out = world.verify(repo=evil, model=attacker.model)
    assert code == 1, out
    assert "threshold" in out
    assert world.verify()[0] == 0  # nothing of the attacker's was kept


# -- key rotation --------------------------------------------------------------------------------


def test_root_rotation_is_followed_by_old_and_new_clients(world: TufWorld, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert world.verify()[0] == 0
    add_key(world, "r3", "ecdsa-p256")
    code, out = run("registry", "rotate", "--repo", world.repo, "--role", "root", "--add", world.pub("r3"),
                    "--remove", world.pub("r2"), "--sign-key", world.key("r1"), "--sign-key", world.key("r2"),
                    "--sign-key", world.key("r3"))
    assert code == 0, out
    assert "root version 2" in out
    assert world.verify()[0] == 0
    fresh_runner(monkeypatch, tmp_path)  # a new runner still pins root 1 and walks to 2
    assert world.verify()[0] == 0
    # The removed key alone no longer signs anything the client accepts.
    world.resign("2.root.json", ["r2", "r1"], lambda r: setattr(r, "version", 3), rename="3.root.json")
    code, out = world.verify()
    assert code == 1, out


def test_targets_key_rotation_retires_the_old_key(world: TufWorld) -> None:
    add_key(world, "targets2")
    assert run("registry", "rotate", "--repo", world.repo, "--role", "targets", "--add", world.pub("targets2"),
               "--remove", world.pub("targets"), "--sign-key", world.key("r1"), "--sign-key", world.key("r2"))[0] == 0
    change_license(world, "v2")
    code, out = world.publish()
    assert code == 2, out  # the old targets key is no longer the targets role's
    code, out = run("registry", "publish", world.registry, "--repo", world.repo, "--targets-key",
                    world.key("targets2"), "--online-key", world.key("online"))
    assert code == 0, out
    assert world.verify()[0] == 0


# -- the anchor ----------------------------------------------------------------------------------


def test_the_anchor_must_be_a_tuf_root(world: TufWorld, tmp_path: Path) -> None:
    code, out = run("verify", world.model, "--tuf-repo", world.repo)
    assert code == 2, out
    assert "pinned root.json" in out
    code, out = run("verify", world.model, "--tuf-repo", world.repo, "--trust-root", world.gate.trust_root)
    assert code == 2, out
    assert "not a TUF root.json" in out
    code, out = run("verify", world.model, "--tuf-repo", world.repo, "--trust-root", world.repo / "timestamp.json")
    assert code == 2, out
    code, out = run("verify", world.model, "--tuf-repo", tmp_path / "nowhere", "--trust-root", world.pinned)
    assert code == 2, out


@pytest.mark.parametrize("garbage", [b"", b"\xff\xfe not json", b'{"signed": 1, "signatures": []}', b"[" * 100000])
def test_malicious_mirror_garbage_timestamp(world: TufWorld, garbage: bytes) -> None:
    (world.repo / "timestamp.json").write_bytes(garbage)
    code, out = world.verify()
    assert code == 1, out
    assert "TUF update refused" in out
