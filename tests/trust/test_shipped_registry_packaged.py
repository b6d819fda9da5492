"""The shipped registry travels inside the package, so an installed gpenguard finds it."""

from __future__ import annotations

from pathlib import Path

from gpenguard.trust.registry import default_registry_path

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_registry_is_the_root_registry() -> None:
    packaged = ROOT / "gpenguard" / "data" / "weights-registry.yaml"
    assert packaged.is_file(), "gpenguard/data/weights-registry.yaml must ship with the package"
    assert packaged.read_bytes() == (ROOT / "weights-registry.yaml").read_bytes()
    assert default_registry_path().read_bytes() == packaged.read_bytes()
