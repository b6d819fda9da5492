"""Which imports a checkpoint may make: an allowlist with a reason per entry.

Anything not allowed is a finding. Denylists fail open (every peer that used one was bypassed
by a callable it did not list), so the known-dangerous table below only decides *how bad* a
refusal is (CRITICAL instead of HIGH), never whether something passes.

Profiles:
  default  ordinary checkpoints: state_dicts, training checkpoints with optimizer/scheduler
           state, numpy values, argparse/Lightning/omegaconf hyper-parameters, whole
           ``torch.nn`` modules built only from stock layers.
  strict   plain tensors in (ordered) dicts: what a weights file needs and nothing more.
"""

from __future__ import annotations

import importlib
import re
import sys
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from gpenguard.findings import Severity
from gpenguard.policy import Policy
from gpenguard.scan._nn_modules import STOCK_NN_MODULES


class Profile(StrEnum):
    DEFAULT = "default"
    STRICT = "strict"


_STORAGE_NAMES = (
    "DoubleStorage", "FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage",
    "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage",
    "ComplexDoubleStorage", "ComplexFloatStorage", "QUInt8Storage", "QInt8Storage",
    "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage", "UntypedStorage",
    "Float8_e4m3fnStorage", "Float8_e5m2Storage", "UInt16Storage", "UInt32Storage",
    "UInt64Storage",
)  # fmt: skip

_DTYPES = (
    "float32", "float", "float64", "double", "float16", "half", "bfloat16", "int8", "uint8",
    "int16", "short", "int32", "int", "int64", "long", "bool", "complex32", "chalf",
    "complex64", "cfloat", "complex128", "cdouble", "uint16", "uint32", "uint64",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
    "float4_e2m1fn_x2", "quint8", "qint8", "qint32", "quint4x2", "quint2x4",
    "bits1x8", "bits2x4", "bits4x2", "bits8", "bits16",
    "int1", "int2", "int3", "int4", "int5", "int6", "int7",
    "uint1", "uint2", "uint3", "uint4", "uint5", "uint6", "uint7",
)  # fmt: skip

_TORCH_ENUMS = (
    "strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn",
    "contiguous_format", "channels_last", "channels_last_3d", "preserve_format",
    "per_tensor_affine", "per_channel_affine", "per_tensor_symmetric", "per_channel_symmetric",
    "per_channel_affine_float_qparams",
)  # fmt: skip

_PLAIN: dict[str, str] = {
    "torch._utils._rebuild_tensor_v2": "rebuilds a tensor view over a storage read from the archive",
    "torch._utils._rebuild_parameter": "wraps a rebuilt tensor as nn.Parameter",
    "collections.OrderedDict": "the container of every state_dict",
    "torch.storage.UntypedStorage": "byte storage, used for dtypes without a typed storage class (float8, uint16)",
    "torch.storage.TypedStorage": "typed storage wrapper; names a dtype only",
    **{
        f"torch.{n}": "typed storage class; names the dtype of raw storage bytes"
        for n in _STORAGE_NAMES
    },
    **{
        f"torch.cuda.{n}": "storage class of a tensor saved from a GPU (legacy files); names a dtype only"
        for n in _STORAGE_NAMES
        if n != "UntypedStorage"
    },
}

_ACTIVATIONS = (
    "relu", "gelu", "silu", "elu", "selu", "celu", "leaky_relu", "tanh", "sigmoid", "softmax",
    "log_softmax", "glu", "hardswish", "hardsigmoid", "mish", "softplus", "relu6",
)  # fmt: skip

# Builtins torch.nn.functional re-exports from its C extension (``F.gelu is torch._C._nn.gelu``),
# so a whole module that keeps one as its activation pickles it under this name.
_C_ACTIVATIONS = ("gelu", "softplus", "softshrink", "logsigmoid")

_NUMPY_RNG = (
    "numpy.random._pcg64.PCG64", "numpy.random._pcg64.PCG64DXSM", "numpy.random._mt19937.MT19937",
    "numpy.random._philox.Philox", "numpy.random._sfc64.SFC64",
    "numpy.random.bit_generator.SeedSequence",
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
)  # fmt: skip

_DEFAULT: dict[str, str] = {
    **_PLAIN,
    **{
        f"torch.nn.functional.{n}": "activation function kept as an attribute by stock layers (pure tensor math)"
        for n in _ACTIVATIONS
    },
    **{
        f"torch._C._nn.{n}": "activation kept by a stock layer (TransformerEncoderLayer(activation='gelu') holds F.gelu, "
        "which is this builtin); any call is elementwise tensor math, non-tensor arguments only raise"
        for n in _C_ACTIVATIONS
    },
    **dict.fromkeys(_NUMPY_RNG, "numpy random-generator state (bit generator rebuilt from its saved state)"),
    "torch._C.Generator": "torch.Generator saved whole (the RNG of a training checkpoint): built from a torch.device, "
    "its state restored from a byte tensor by __setstate__; no file, process or import",
    "torch.Generator": "the public name of torch._C.Generator (same class)",
    "torch.nn.utils.weight_norm.WeightNorm": "forward pre-hook that nn.utils.weight_norm leaves on a whole module: "
    "__init__ only stores a parameter name and a dim, and the hook only recomputes that weight from tensors",
    "types.SimpleNamespace": "attribute bag (hyper-parameters); building one only sets attributes from a dict. "
    "Only this name: the rest of `types` (FunctionType, CodeType) builds code and stays refused",
    "torch._utils._rebuild_tensor": "pre-1.x tensor rebuild over a storage",
    "torch._utils._rebuild_tensor_v3": "tensor rebuild with an explicit dtype",
    "torch._utils._rebuild_parameter_with_state": "nn.Parameter with extra Python state",
    "torch._utils._rebuild_sparse_tensor": "sparse COO/CSR tensor from index and value tensors",
    "torch._utils._rebuild_qtensor": "quantized tensor from a storage and quantizer parameters",
    "torch._utils._rebuild_nested_tensor": "nested tensor from buffer and size tensors",
    "torch._utils._rebuild_device_tensor_from_numpy": "tensor saved from a device without storage (numpy bytes)",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": "tensor saved from a device via a CPU copy",
    "torch._utils._rebuild_meta_tensor_no_storage": "meta tensor: shape and dtype only",
    "torch._utils._rebuild_wrapper_subclass": "tensor subclass wrapper; the subclass itself is a separate import",
    "torch._tensor._rebuild_from_type_v2": "re-types a rebuilt tensor; function and type are separate imports",
    "torch._tensor._rebuild_from_type": "older form of _rebuild_from_type_v2",
    "torch.nn.parameter.Parameter": "nn.Parameter class",
    "torch.nn.parameter.UninitializedParameter": "lazy-module parameter placeholder",
    "torch.nn.parameter.Buffer": "nn.Buffer class",
    "torch.Tensor": "plain tensor type",
    "torch.Size": "tensor shape (a tuple)",
    "torch.device": "device tag such as 'cpu'; constructing it touches no device",
    "torch.serialization._get_layout": "looks a layout up by name in torch's own table",
    "torch.torch_version.TorchVersion": "a version string",
    **{f"torch.{n}": "dtype constant" for n in _DTYPES},
    **{f"torch.{n}": "layout / memory-format / qscheme constant" for n in _TORCH_ENUMS},
    "numpy.core.multiarray._reconstruct": "numpy array rebuild (data is plain bytes)",
    "numpy._core.multiarray._reconstruct": "numpy 2 array rebuild",
    "numpy.core.multiarray.scalar": "numpy scalar from dtype and bytes",
    "numpy._core.multiarray.scalar": "numpy 2 scalar",
    "numpy.core.numeric._frombuffer": "numpy array from a buffer (protocol 5 path)",
    "numpy._core.numeric._frombuffer": "numpy 2 array from a buffer",
    "numpy.ndarray": "numpy array type",
    "numpy.dtype": "numpy dtype from a type string",
    "numpy.random._pickle.__randomstate_ctor": "RandomState by bit-generator name from numpy's table",
    "numpy.random._pickle.__generator_ctor": "Generator by bit-generator name from numpy's table",
    "numpy.random._pickle.__bit_generator_ctor": "bit generator by name from numpy's table",
    "builtins.set": "set", "builtins.frozenset": "frozenset", "builtins.slice": "slice",
    "builtins.complex": "complex number", "builtins.bytearray": "byte array",
    "builtins.list": "list (e.g. a defaultdict factory)", "builtins.dict": "dict",
    "builtins.tuple": "tuple", "builtins.int": "int", "builtins.float": "float",
    "builtins.str": "str", "builtins.bytes": "bytes", "builtins.bool": "bool",
    "builtins.range": "range", "builtins.object": "base class argument of copyreg._reconstructor",
    "copyreg._reconstructor": "protocol 0/1 object rebuild; class and base are separate imports",
    "_codecs.encode": "how protocol 2 stores bytes (str -> latin-1 bytes)",
    "collections.Counter": "Counter", "collections.defaultdict": "defaultdict; its factory is a separate import",
    "collections.deque": "deque",
    "argparse.Namespace": "hyper-parameters of fairseq and many research checkpoints",
    "datetime.datetime": "timestamp", "datetime.date": "date", "datetime.time": "time",
    "datetime.timedelta": "duration", "datetime.timezone": "timezone",
    "decimal.Decimal": "decimal number", "fractions.Fraction": "fraction", "uuid.UUID": "UUID value",
    "pathlib.PosixPath": "path value (no I/O on construction)", "pathlib.WindowsPath": "path value",
    "pathlib.PurePosixPath": "path value", "pathlib.PureWindowsPath": "path value",
    "pathlib.Path": "path value",
    "pytorch_lightning.utilities.parsing.AttributeDict": "Lightning hyper-parameter dict",
    "lightning.fabric.utilities.data.AttributeDict": "Lightning hyper-parameter dict",
    "lightning_fabric.utilities.data.AttributeDict": "Lightning hyper-parameter dict",
    "omegaconf.dictconfig.DictConfig": "Hydra/fairseq config container",
    "omegaconf.listconfig.ListConfig": "Hydra/fairseq config list",
    "omegaconf.base.ContainerMetadata": "omegaconf node metadata",
    "omegaconf.base.Metadata": "omegaconf node metadata",
    "omegaconf.nodes.AnyNode": "omegaconf value node", "omegaconf.nodes.StringNode": "omegaconf value node",
    "omegaconf.nodes.IntegerNode": "omegaconf value node", "omegaconf.nodes.FloatNode": "omegaconf value node",
    "omegaconf.nodes.BooleanNode": "omegaconf value node",
    "typing.Any": "type annotation carried by omegaconf metadata",
}  # fmt: skip

_PROFILES: dict[Profile, dict[str, str]] = {Profile.DEFAULT: _DEFAULT, Profile.STRICT: _PLAIN}

_NN_MODULE_REASON = "stock torch.nn layer class (pickled whole model); checked to be an nn.Module subclass defined in that module"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Known to run code, spawn processes, touch files or the network, or reach any other callable.
_DANGEROUS_MODULES = frozenset(
    [
        "os",
        "posix",
        "nt",
        "subprocess",
        "_posixsubprocess",
        "_winapi",
        "runpy",
        "pty",
        "socket",
        "_socket",
        "ssl",
        "ctypes",
        "_ctypes",
        "importlib",
        "pickle",
        "_pickle",
        "cPickle",
        "pickletools",
        "dill",
        "cloudpickle",
        "joblib",
        "shelve",
        "dbm",
        "marshal",
        "webbrowser",
        "pip",
        "ensurepip",
        "venv",
        "code",
        "codeop",
        "shutil",
        "sys",
        "types",
        "operator",
        "_operator",
        "functools",
        "asyncio",
        "multiprocessing",
        "threading",
        "_thread",
        "signal",
        "tempfile",
        "urllib",
        "urllib2",
        "http",
        "httplib",
        "requests",
        "aiohttp",
        "httpx",
        "ftplib",
        "smtplib",
        "telnetlib",
        "imaplib",
        "poplib",
        "nntplib",
        "xmlrpc",
        "socketserver",
        "profile",
        "cProfile",
        "pstats",
        "trace",
        "pdb",
        "bdb",
        "timeit",
        "doctest",
        "pydoc",
        "idlelib",
        "lib2to3",
        "_osx_support",
        "_aix_support",
        "_pyrepl",
        "pkgutil",
        "site",
        "atexit",
        "_interpreters",
        "_xxsubinterpreters",
        "interpreters",
        "concurrent",
        "logging",
        "io",
        "_io",
        "zipimport",
        "glob",
        "gc",
        "inspect",
        "ast",
        "zipfile",
        "tarfile",
        "gzip",
        "bz2",
        "lzma",
        "sqlite3",
        "mmap",
        "fcntl",
        "resource",
        "select",
        "selectors",
        "uuid._",
        "torch.hub",
        "torch.jit",
        "torch._C",
        "torch.serialization",
        "torch.package",
        "torch.utils.collect_env",
        "torch.utils.cpp_extension",
        "torch._dynamo",
        "torch._inductor",
        "torch.distributed",
        "torch.multiprocessing",
        "torch.ops",
        "torch.fx",
        "torch.onnx",
        "torch.testing",
        "numpy.testing",
        "numpy.f2py",
        "numpy.distutils",
        "numpy.lib.npyio",
        "pandas",
        "mlflow",
        "yaml",
    ]
)
_DANGEROUS_NAMES = frozenset(
    [
        "builtins.eval",
        "builtins.exec",
        "builtins.getattr",
        "builtins.setattr",
        "builtins.delattr",
        "builtins.__import__",
        "builtins.compile",
        "builtins.open",
        "builtins.breakpoint",
        "builtins.globals",
        "builtins.locals",
        "builtins.vars",
        "builtins.input",
        "builtins.exit",
        "builtins.quit",
        "builtins.help",
        "builtins.__build_class__",
        "builtins.memoryview",
        "builtins.type",
        "builtins.super",
        "torch.load",
        "torch.save",
        "torch.compile",
        "torch.from_file",
        "torch.classes",
        "torch.ops",
        "torch.storage._load_from_bytes",
        "torch._weights_only_unpickler.load",
        "numpy.load",
        "numpy.save",
        "numpy.fromfile",
        "numpy.loadtxt",
        "numpy.genfromtxt",
        "numpy.memmap",
        "copyreg.add_extension",
        "copyreg.__newobj_ex__",
        "types.CodeType",
        "types.FunctionType",
    ]
)


@dataclass(frozen=True, slots=True)
class Judgement:
    """Why an import is refused: rule id, severity and a reason for people."""

    rule_id: str
    severity: Severity
    reason: str


def normalize(module: str, name: str) -> str:
    """``module.qualname`` after Python 2 name mapping (``__builtin__`` -> ``builtins``)."""
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


# Attribute names that reach interpreter internals from any object (namespace escapes).
_DUNDER_ESCAPES = frozenset(
    [
        "__builtins__",
        "__globals__",
        "__dict__",
        "__class__",
        "__subclasses__",
        "__bases__",
        "__mro__",
        "__getattribute__",
        "__getattr__",
        "__setattr__",
        "__delattr__",
        "__import__",
        "__loader__",
        "__spec__",
        "__code__",
        "__closure__",
        "__func__",
        "__self__",
        "__reduce__",
        "__reduce_ex__",
        "__setstate__",
        "__init__",
        "__new__",
        "__call__",
        "__getitem__",
        "__setitem__",
        "__module__",
    ]
)


def is_dangerous(qualname: str) -> bool:
    """Known to run code or reach the OS: a listed module or name, or a dunder escape."""
    if qualname in _DANGEROUS_NAMES:
        return True
    parts = qualname.split(".")
    if any(p in _DUNDER_ESCAPES for p in parts):
        return True
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix in _DANGEROUS_MODULES:
            return True
        if i < len(parts) and f"{prefix}._" in _DANGEROUS_MODULES and parts[i].startswith("_"):
            return True
    return False


def _matches(qualname: str, pattern: str) -> bool:
    """``a.b.c`` matches ``a.b.c``, ``a.b.*`` and ``a.b`` (a module denies all it holds)."""
    if pattern.endswith(".*"):
        return qualname.startswith(pattern[:-1])
    return qualname == pattern or qualname.startswith(pattern + ".")


def reason_allowed(qualname: str, module: str, name: str, profile: Profile) -> str | None:
    """The allowlist's reason for `qualname`, or None when the profile does not allow it."""
    table = _PROFILES[profile]
    if qualname in table:
        return table[qualname]
    if profile is Profile.DEFAULT and _is_stock_nn_module(module, name):
        return _NN_MODULE_REASON
    return None


@lru_cache(maxsize=1024)
def _is_stock_nn_module(module: str, name: str) -> bool:
    """``torch.nn.modules.<file>.<Class>`` where Class really is an nn.Module subclass there.

    A prefix rule alone would also pass module-level helpers (``F``, ``os`` if imported):
    the installed torch is consulted, never the file, to tell a layer class from the rest.
    """
    parts = module.split(".")
    if len(parts) != 4 or parts[:3] != ["torch", "nn", "modules"] or not _IDENT.match(parts[3]):
        return False
    if not _IDENT.match(name) or name.startswith("_"):
        return False
    if f"{module}.{name}" in STOCK_NN_MODULES:
        return True
    try:
        import torch

        mod = sys.modules.get(module) or importlib.import_module(module)
    except ImportError:
        return False
    obj = vars(mod).get(name)
    return isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == module


def judge(module: str, name: str, policy: Policy) -> Judgement | None:
    """None when the import is allowed; otherwise the rule, severity and reason it is refused."""
    qualname = normalize(module, name)
    raw = f"{module}.{name}"
    dangerous = is_dangerous(qualname) or is_dangerous(raw)
    for pattern in policy.deny:
        if _matches(qualname, pattern) or _matches(raw, pattern):
            sev = Severity.CRITICAL if dangerous else Severity.HIGH
            return Judgement("GG102", sev, f"denied by policy {policy.name!r} ({pattern})")
    if any(entry.name in (qualname, raw) for entry in policy.allow):
        return None
    try:
        profile = Profile(policy.scan_profile)
    except ValueError:
        profile = Profile.STRICT
    if reason_allowed(qualname, module, name, profile) is not None:
        return None
    if dangerous:
        return Judgement(
            "GG100", Severity.CRITICAL, "known to execute code, reach the OS or re-enter a loader"
        )
    return Judgement("GG101", Severity.HIGH, f"not on the {profile.value!r} allowlist")


def entries(profile: Profile | str = Profile.DEFAULT) -> dict[str, str]:
    """The explicit allowlist of a profile (name -> reason), for audits and docs."""
    return dict(_PROFILES[Profile(profile)])
