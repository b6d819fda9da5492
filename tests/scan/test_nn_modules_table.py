"""The static table of stock layers agrees with the installed torch, entry for entry."""

from __future__ import annotations

import importlib
import pkgutil

import torch
import torch.nn.modules

from gpenguard.scan._nn_modules import STOCK_NN_MODULES
from gpenguard.scan.allowlist import _is_stock_nn_module


def _installed() -> set[str]:
    names = set()
    for info in pkgutil.iter_modules(torch.nn.modules.__path__):
        mod = importlib.import_module(f"torch.nn.modules.{info.name}")
        for name, obj in vars(mod).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, torch.nn.Module)
                and obj.__module__ == mod.__name__
                and not name.startswith("_")
            ):
                names.add(f"{mod.__name__}.{name}")
    return names


def test_table_lists_exactly_the_installed_layers() -> None:
    assert set(STOCK_NN_MODULES) == _installed()


def test_lookups_outside_the_table_still_consult_torch() -> None:
    assert _is_stock_nn_module("torch.nn.modules.conv", "Conv2d")
    assert not _is_stock_nn_module("torch.nn.modules.conv", "F")  # a module attribute, not a layer
    assert not _is_stock_nn_module("torch.nn.modules.conv", "NoSuchLayer")
