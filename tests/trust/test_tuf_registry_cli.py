"""The administrator's TUF workflow through the CLI, HTTP mirrors, and convert on a TUF registry."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from safetensors import safe_open

from gpenguard.trust.tuf_repo import parse_duration
from tests.trust.tufkit import TufWorld, build_tuf_world, run

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(tmp_path: Path) -> TufWorld:
    return build_tuf_world(tmp_path)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Endless(_Quiet):
    """Serves an endless timestamp.json (bounded here at 256 MiB so the test cannot run away)."""

    def do_GET(self) -> None:
        if not self.path.endswith("timestamp.json"):
            super().do_GET()
            return
        self.send_response(200)
        self.end_headers()
        chunk = b" " * 65536
        with contextlib.suppress(OSError):
            for _ in range(4096):
                self.wfile.write(chunk)


@contextlib.contextmanager
def serve(folder: Path, handler: type[SimpleHTTPRequestHandler] = _Quiet) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- init / publish / show -----------------------------------------------------------------------


def test_init_writes_a_root_with_the_offline_online_split(world: TufWorld) -> None:
    root = json.loads((world.repo / "1.root.json").read_text())["signed"]
    assert root["version"] == 1 and root["consistent_snapshot"] is True
    assert root["roles"]["root"]["threshold"] == 2 and len(root["roles"]["root"]["keyids"]) == 2
    assert root["roles"]["snapshot"]["keyids"] == root["roles"]["timestamp"]["keyids"]
    assert set(root["roles"]["targets"]["keyids"]).isdisjoint(root["roles"]["timestamp"]["keyids"])
    assert len(json.loads((world.repo / "1.root.json").read_text())["signatures"]) == 2


def test_init_refuses_an_online_key_that_is_also_offline(tmp_path: Path, world: TufWorld) -> None:
    code, out = run("registry", "init", tmp_path / "r2", "--root-key", world.key("r1"),
                    "--targets-key", world.pub("targets"), "--online-key", world.pub("targets"))
    assert code == 2, out
    assert "online key must not also be" in out


def test_init_refuses_a_threshold_it_cannot_sign(tmp_path: Path, world: TufWorld) -> None:
    code, out = run("registry", "init", tmp_path / "r2", "--root-key", world.key("r1"), "--root-key", world.pub("r2"),
                    "--root-threshold", "2", "--targets-key", world.pub("targets"), "--online-key", world.pub("online"))
    assert code == 2, out
    assert not (tmp_path / "r2" / "root.json").exists()


def test_publish_carries_gpenguards_fields_as_custom_target_info(world: TufWorld) -> None:
    targets = json.loads((world.repo / "1.targets.json").read_text())["signed"]
    (path, target), = targets["targets"].items()
    assert path == "tinynet/1.0/tinynet.pth"
    assert target["length"] == world.model.stat().st_size
    info = target["custom"]["gpenguard"]
    assert info["status"] == "approved" and info["license"] == "MIT"
    assert info["architecture"]["fingerprint"] == world.gate.entry["architecture"]["fingerprint"]
    assert targets["gpenguard"]["registry"] == "test-registry"


def test_publish_unchanged_keeps_the_targets_version(world: TufWorld) -> None:
    code, out = world.publish()
    assert code == 0, out
    assert "targets v1 (unchanged)" in out and "timestamp v2" in out
    assert world.verify()[0] == 0


def test_publish_needs_the_targets_key(world: TufWorld) -> None:
    world.gate.entry["license"] = "changed"
    world.gate.write(sign=False)
    code, out = run("registry", "publish", world.registry, "--repo", world.repo, "--targets-key", world.key("online"),
                    "--online-key", world.key("online"))
    assert code == 2, out
    assert "targets role needs 1 signature" in out


def test_publishing_the_shipped_registry_skips_unpinned_files(world: TufWorld) -> None:
    code, out = run("registry", "publish", REPO_ROOT / "weights-registry.yaml", "--repo", world.repo,
                    "--targets-key", world.key("targets"), "--online-key", world.key("online"))
    assert code == 0, out
    assert "GPEN-BFR-2048@1 GPEN-BFR-2048.pth: not published" in out


def test_show_lists_what_a_client_trusts(world: TufWorld) -> None:
    code, out = run("registry", "show", "--tuf-repo", world.repo, "--trust-root", world.pinned, "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["version"] == 1 and shown["signed_by"][0].startswith("tuf:")
    assert shown["artifacts"][0]["files"][0]["sha256"] == world.gate.entry["files"][0]["sha256"]


def test_refresh_extends_freshness_with_the_online_key_only(world: TufWorld) -> None:
    code, out = run("registry", "refresh", "--repo", world.repo, "--online-key", world.key("online"),
                    "--timestamp-expires", "2h")
    assert code == 0, out
    assert "timestamp v2" in out
    assert world.verify()[0] == 0
    code, out = run("registry", "refresh", "--repo", world.repo, "--online-key", world.key("targets"))
    assert code == 2, out


@pytest.mark.parametrize("bad", ["0d", "1y", "-1d", "d", "99999999d"])
def test_durations_are_strict(bad: str) -> None:
    from gpenguard.errors import UsageError

    with pytest.raises(UsageError):
        parse_duration(bad)


# -- revoke --------------------------------------------------------------------------------------


def test_revoke_blocks_the_file_and_an_old_yaml_cannot_undo_it(world: TufWorld, tmp_path: Path) -> None:
    old_yaml = tmp_path / "old-registry.yaml"
    shutil.copyfile(world.registry, old_yaml)
    code, out = run("registry", "revoke", "tinynet", "--registry", world.registry, "--repo", world.repo,
                    "--targets-key", world.key("targets"), "--online-key", world.key("online"))
    assert code == 0, out
    assert "revoked tinynet@1.0" in out and "version 2" in out
    code, out = world.verify()
    assert code == 1, out
    assert "is revoked" in out
    code, out = run("registry", "publish", old_yaml, "--repo", world.repo, "--targets-key", world.key("targets"),
                    "--online-key", world.key("online"))
    assert code == 2, out
    assert "undo the published revocation of tinynet/1.0/tinynet.pth" in out
    assert world.verify()[0] == 1
    code, out = run("registry", "publish", old_yaml, "--repo", world.repo, "--targets-key", world.key("targets"),
                    "--online-key", world.key("online"), "--allow-unrevoke")
    assert code == 0, out
    assert world.verify()[0] == 0


def test_revoke_keeps_the_yaml_comments_and_names_unknown_artifacts(world: TufWorld) -> None:
    world.registry.write_text("# keep me\n" + world.registry.read_text())
    code, out = run("registry", "revoke", "nosuch", "--registry", world.registry)
    assert code == 2, out
    code, out = run("registry", "revoke", "tinynet", "--registry", world.registry, "--version", "1.0")
    assert code == 0, out
    text = world.registry.read_text()
    assert text.startswith("# keep me\n") and "status: revoked" in text


# -- mirrors over HTTP ---------------------------------------------------------------------------


@pytest.mark.network
def test_an_http_mirror_serves_the_registry(world: TufWorld) -> None:
    with serve(world.repo) as url:
        code, out = world.verify(repo=url)
    assert code == 0, out
    assert "TUF update verified" in out


@pytest.mark.network
def test_an_http_mirror_sending_endless_data_is_cut_off(world: TufWorld) -> None:
    started = time.monotonic()
    with serve(world.repo, _Endless) as url:
        code, out = world.verify(repo=url)
    assert code == 1, out
    assert "exceeds" in out
    assert time.monotonic() - started < 30


@pytest.mark.network
def test_an_http_mirror_missing_metadata_is_an_io_error(world: TufWorld) -> None:
    (world.repo / "timestamp.json").unlink()
    with serve(world.repo) as url:
        code, out = world.verify(repo=url)
    assert code == 2, out
    assert "cannot fetch" in out


# -- convert -------------------------------------------------------------------------------------


def test_convert_takes_the_registry_from_tuf(world: TufWorld, tmp_path: Path) -> None:
    out_file = tmp_path / "tiny.safetensors"
    code, out = run("convert", world.model, "-o", out_file, "--tuf-repo", world.repo, "--trust-root", world.pinned)
    assert code == 0, out
    with safe_open(str(out_file), "pt") as f:
        assert set(f.keys()) == set(world.gate.state_dict)
    world.resign("timestamp.json", "online", lambda ts: setattr(ts, "version", ts.version + 1) or setattr(
        ts, "expires", ts.expires.replace(year=2000)))
    blocked = tmp_path / "blocked.safetensors"
    code, out = run("convert", world.model, "-o", blocked, "--tuf-repo", world.repo, "--trust-root", world.pinned)
    assert code == 1, out
    assert not blocked.exists()


def test_restore_gates_its_weights_through_tuf_before_any_sandbox(world: TufWorld, tmp_path: Path) -> None:
    from PIL import Image

    face = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (120, 90, 80)).save(face)
    evil = tmp_path / "gpen.pth"
    shutil.copyfile(world.model, evil)
    with evil.open("ab") as f:
        f.write(b"\0")  # not the approved bytes: no target has this length and digest
    store = tmp_path / "store"
    code, out = run("restore", face, "-o", tmp_path / "out", "--weights", evil, "--size", "256", "--mode", "aligned",
                    "--store", store, "--tuf-repo", world.repo, "--trust-root", world.pinned)
    assert code == 1, out
    assert "not a target of TUF repository" in out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_publish_with_a_wrong_online_key_writes_nothing(world: TufWorld) -> None:
    world.gate.entry["license"] = "changed"
    world.gate.write(sign=False)
    before = sorted(p.name for p in world.repo.iterdir())
    code, out = run("registry", "publish", world.registry, "--repo", world.repo, "--targets-key", world.key("targets"),
                    "--online-key", world.key("targets"))
    assert code == 2, out
    assert "snapshot role needs 1 signature" in out
    assert sorted(p.name for p in world.repo.iterdir()) == before


def test_unchanged_targets_are_re_signed_after_a_targets_key_rotation(world: TufWorld) -> None:
    from tests.trust.tufkit import add_key

    add_key(world, "targets2")
    assert run("registry", "rotate", "--repo", world.repo, "--role", "targets", "--add", world.pub("targets2"),
               "--remove", world.pub("targets"), "--sign-key", world.key("r1"), "--sign-key", world.key("r2"))[0] == 0
    code, out = run("registry", "publish", world.registry, "--repo", world.repo, "--targets-key", world.key("targets2"),
                    "--online-key", world.key("online"))
    assert code == 0, out
    assert "targets v2," in out and "unchanged" not in out
    assert world.verify()[0] == 0


class _Trickle(_Quiet):
    """Sends timestamp.json one byte at a time, each well inside the socket timeout."""

    def do_GET(self) -> None:
        if not self.path.endswith("timestamp.json"):
            super().do_GET()
            return
        self.send_response(200)
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(200):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.05)


@pytest.mark.network
def test_an_http_mirror_trickling_bytes_is_cut_off_at_the_deadline(world: TufWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpenguard.trust import tuf_client

    monkeypatch.setattr(tuf_client, "HTTP_DEADLINE_S", 1.0)
    with serve(world.repo, _Trickle) as url:
        started = time.monotonic()
        code, out = world.verify(repo=url)
        took = time.monotonic() - started
    assert code == 2, out
    assert "came too slowly" in out
    assert took < 8  # the mirror would trickle for 10 s


def test_init_into_a_file_is_an_io_error(tmp_path: Path, world: TufWorld) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    code, out = run("registry", "init", blocker, "--root-key", world.key("r1"), "--targets-key", world.pub("targets"),
                    "--online-key", world.pub("online"))
    assert code == 2, out
    assert "cannot create the repository folder" in out
    code, out = run("registry", "init", world.repo, "--root-key", world.key("r1"), "--targets-key", world.pub("targets"),
                    "--online-key", world.pub("online"))
    assert code == 2, out
    assert "already holds root.json" in out


def test_rotate_refuses_an_unknown_key_and_an_impossible_threshold(world: TufWorld) -> None:
    code, out = run("registry", "rotate", "--repo", world.repo, "--role", "root", "--remove", "deadbeef",
                    "--sign-key", world.key("r1"), "--sign-key", world.key("r2"))
    assert code == 2, out
    assert "is not a root key" in out
    code, out = run("registry", "rotate", "--repo", world.repo, "--role", "root", "--threshold", "3",
                    "--sign-key", world.key("r1"), "--sign-key", world.key("r2"))
    assert code == 2, out
    assert "could never be met" in out
    assert not (world.repo / "2.root.json").exists()
