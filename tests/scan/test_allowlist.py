"""Allowlist semantics: reasons for every entry, policy allow/deny, nn.Module check."""

from __future__ import annotations

import pytest

from gpenguard.findings import Severity
from gpenguard.policy import AllowEntry, Policy
from gpenguard.scan.allowlist import Profile, entries, is_dangerous, judge, normalize


def test_every_entry_has_a_reason() -> None:
    for profile in Profile:
        table = entries(profile)
        assert table
        assert all(reason.strip() for reason in table.values())


def test_strict_is_a_subset_of_default() -> None:
    assert set(entries("strict")) <= set(entries("default"))


def test_python2_names_are_normalised() -> None:
    assert normalize("__builtin__", "set") == "builtins.set"
    assert normalize("copy_reg", "_reconstructor") == "copyreg._reconstructor"
    assert judge("__builtin__", "set", Policy()) is None


@pytest.mark.parametrize(
    "name",
    ["os.system", "posix.system", "builtins.getattr", "operator.attrgetter", "_operator.itemgetter",
     "functools.partial", "asyncio.unix_events._UnixSubprocessTransport", "uuid._get_command_stdout",
     "torch.load", "torch.hub.load", "torch.storage._load_from_bytes", "torch._C._jit_pass", "ctypes.util.find_library", "pkgutil.resolve_name"],
)  # fmt: skip
def test_known_dangerous_are_critical(name: str) -> None:
    module, _, attr = name.rpartition(".")
    verdict = judge(module, attr, Policy())
    assert (
        verdict is not None and verdict.severity is Severity.CRITICAL and verdict.rule_id == "GG100"
    )


def test_unknown_is_high_and_not_silently_allowed() -> None:
    verdict = judge("mypkg.models", "Net", Policy())
    assert verdict is not None and verdict.rule_id == "GG101" and verdict.severity is Severity.HIGH
    assert not is_dangerous("uuid.UUID")
    assert judge("uuid", "UUID", Policy()) is None


def test_policy_allow_and_deny() -> None:
    allow = Policy(allow=(AllowEntry("mypkg.models.Net", "our own class, reviewed"),))
    assert judge("mypkg.models", "Net", allow) is None
    deny = Policy(deny=("collections.*",))
    verdict = judge("collections", "OrderedDict", deny)
    assert verdict is not None and verdict.rule_id == "GG102"
    assert judge("collections", "Counter", Policy(deny=("collections",))) is not None
    deny_exact = Policy(deny=("numpy.dtype",))
    assert judge("numpy", "dtype", deny_exact) is not None
    assert judge("numpy", "ndarray", deny_exact) is None


def test_unknown_profile_fails_closed_to_strict() -> None:
    assert judge("argparse", "Namespace", Policy(scan_profile="no-such-profile")) is not None


@pytest.mark.parametrize(
    ("module", "name", "allowed"),
    [
        ("torch.nn.modules.conv", "Conv2d", True),
        ("torch.nn.modules.container", "Sequential", True),
        ("torch.nn.modules.conv", "F", False),  # torch.nn.functional, a module alias
        ("torch.nn.modules.module", "Module", True),
        ("torch.nn.modules.conv", "Tensor", False),  # defined elsewhere
        ("torch.nn.modules.nosuch", "Conv2d", False),
        ("torch.nn.modules.conv.F", "relu", False),
        ("torch.nn.modules.conv", "Conv2d.forward", False),
    ],
)
def test_stock_nn_modules_are_checked_against_installed_torch(
    module: str, name: str, allowed: bool
) -> None:
    assert (judge(module, name, Policy()) is None) is allowed
    assert judge(module, name, Policy(scan_profile="strict")) is not None


def test_gpu_saved_legacy_storages_are_plain() -> None:
    assert judge("torch.cuda", "HalfStorage", Policy(scan_profile="strict")) is None
