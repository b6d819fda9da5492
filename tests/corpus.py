"""Generate malicious and benign checkpoint corpora (never committed; built on demand).

Imported by the scanner tests and by the peers benchmark (bench/). Every malicious payload is
harmless even if some loader did execute it: it runs ``true``, prints, or evaluates a
constant; nothing writes, deletes or connects. Each malicious item names the bypass class from
shared/research/scanners.md section 2 that it reproduces, and the rule, severity and global
gpenguard must report for it.

    items = make_malicious_corpus(tmp_path / "bad")
    items = make_benign_corpus(tmp_path / "good")
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class CorpusItem:
    """One generated file and what a scanner should say about it."""

    path: Path
    name: str
    bypass_class: str
    """Class from scanners.md section 2 (A denylist gap, B parser differential, C container, ...)."""
    description: str
    expect_rule: str | None = None
    """A rule id gpenguard must report (malicious items)."""
    expect_severity: str | None = None
    """Its severity name (``CRITICAL``, ``HIGH``, ...)."""
    expect_global: str | None = None
    """The ``module.qualname`` that finding must name, when it is about an import."""
    expect_member: str | None = None
    """The member chain that finding must name (None: any / the file itself)."""
    malicious: bool = True
    also_rules: tuple[str, ...] = ()
    """Further rule ids the report must contain (e.g. the polyglot finding next to the payload)."""
    expect_verdict: str = "block"
    """``block`` for payloads; ``error`` where failing closed on an unreadable container is right."""


# ---------------------------------------------------------------------------------------------
# a tiny pickle assembler, for programs pickle.dumps would never write


def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def op_str(text: str) -> bytes:
    raw = text.encode()
    if len(raw) < 256:
        return b"\x8c" + bytes([len(raw)]) + raw
    return b"X" + struct.pack("<I", len(raw)) + raw


def op_bstr(text: str) -> bytes:
    """BINUNICODE: valid from protocol 1, unlike SHORT_BINUNICODE."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


P2 = b"\x80\x02"
P4 = b"\x80\x04"
STOP = b"."
REDUCE = b"R"
TUPLE1 = b"\x85"
K1 = b"K\x01"
MARK = b"("


def call(module: str, name: str, *args: str, proto: bytes = P2) -> bytes:
    """``module.name(*args)`` as a protocol-2 program."""
    body = b"".join(op_bstr(a) for a in args)
    return proto + op_global(module, name) + MARK + body + b"t" + REDUCE + STOP


def os_system_true(proto: int) -> bytes:
    class _Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("true",))

    return pickle.dumps(_Payload(), protocol=proto)


def _wrap_in_dict(payload_expr: bytes) -> bytes:
    """``{'state_dict': {}, 'extra': <payload>}`` around a protocol-2 expression (no PROTO/STOP)."""
    return (
        P2
        + b"}"
        + op_bstr("state_dict")
        + b"}"
        + b"s"
        + op_bstr("extra")
        + payload_expr
        + b"s"
        + STOP
    )


# ---------------------------------------------------------------------------------------------
# a tiny zip writer, for archives zipfile refuses but torch (miniz) loads


@dataclass
class ZipEntry:
    name: str
    data: bytes
    deflate: bool = False
    crc: int | None = None
    local_name: str | None = None
    flags: int = 0
    local_flags: int | None = None


def build_zip(entries: list[ZipEntry], *, prefix: bytes = b"") -> bytes:
    """Write a zip by hand: each entry may lie about its CRC, local name or flags."""
    out = bytearray(prefix)
    central = bytearray()
    for e in entries:
        payload = e.data
        method = 0
        if e.deflate:
            co = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = co.compress(e.data) + co.flush()
            method = 8
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        name = e.name.encode()
        lname = (e.local_name if e.local_name is not None else e.name).encode()
        lflags = e.flags if e.local_flags is None else e.local_flags
        offset = len(out) - len(prefix) if not prefix else len(out)
        out += struct.pack(
            "<4sHHHHHIIIHH",
            b"PK\x03\x04",
            20,
            lflags,
            method,
            0,
            0x21,
            crc,
            len(payload),
            len(e.data),
            len(lname),
            0,
        )
        out += lname + payload
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, e.flags, method, 0, 0x21, crc,
            len(payload), len(e.data), len(name), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        central += name
    cd_offset = len(out)
    out += central
    out += struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), cd_offset, 0
    )
    return bytes(out)


def torch_like_zip(
    root: str, data_pkl: bytes, extra: list[ZipEntry] | None = None, **kw: object
) -> bytes:
    """A torch-layout archive whose data.pkl is `data_pkl` (entry options via `kw`)."""
    entries = [ZipEntry(f"{root}/data.pkl", data_pkl, **kw)]  # type: ignore[arg-type]
    entries += extra or []
    entries += [ZipEntry(f"{root}/byteorder", b"little"), ZipEntry(f"{root}/version", b"3\n")]
    return build_zip(entries)


# ---------------------------------------------------------------------------------------------
# legacy torch formats written by hand (torch can read them, but no longer writes the tar one)


def legacy_stream(
    *, magic: bytes | None = None, sys_info: bytes | None = None, main: bytes | None = None
) -> bytes:
    """The five-pickle legacy layout with no storages; any record may be replaced."""
    parts = [
        magic if magic is not None else pickle.dumps(MAGIC_NUMBER, protocol=2),
        pickle.dumps(1001, protocol=2),
        sys_info
        if sys_info is not None
        else pickle.dumps(
            {
                "protocol_version": 1001,
                "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4},
            },
            protocol=2,
        ),
        main if main is not None else pickle.dumps({"epoch": 3}, protocol=2),
        pickle.dumps([], protocol=2),
    ]
    return b"".join(parts)


def legacy_tar(*, pickle_member: bytes, storages: bytes | None = None) -> bytes:
    """Pre-1.0 tar layout: sys_info, pickle, storages (count, records), tensors (count)."""
    members = {
        "sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
        "pickle": pickle_member,
        "storages": storages
        if storages is not None
        else pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2),
        "tensors": pickle.dumps(0, protocol=2),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def npy_object(payload: bytes) -> bytes:
    """An .npy whose dtype is object, so its body is the pickle `payload`."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


# ---------------------------------------------------------------------------------------------
# malicious corpus


def make_malicious_corpus(dest: Path) -> list[CorpusItem]:
    """Write one file per bypass class into `dest`; return what each should trigger."""
    import torch

    dest.mkdir(parents=True, exist_ok=True)
    items: list[CorpusItem] = []

    def add(
        filename: str,
        data: bytes,
        name: str,
        klass: str,
        desc: str,
        rule: str,
        sev: str,
        glob: str | None,
        member: str | None = None,
        also: tuple[str, ...] = (),
    ) -> None:
        path = dest / filename
        path.write_bytes(data)
        items.append(CorpusItem(path, name, klass, desc, rule, sev, glob, member, also_rules=also))

    system = os_system_true(2)

    # A. denylist gaps: callables some denylist did not list
    add(
        "reduce_os_system.pkl",
        system,
        "reduce-os-system",
        "A: plain reduce",
        "REDUCE on os.system (pickled as posix.system)",
        "GG100",
        "CRITICAL",
        "posix.system",
    )
    add(
        "posix_alias.pkl",
        call("posix", "system", "true"),
        "posix-alias",
        "A: os aliases",
        "posix.system named directly",
        "GG100",
        "CRITICAL",
        "posix.system",
    )
    add(
        "nt_alias.pkl",
        call("nt", "system", "true"),
        "nt-alias",
        "A: os aliases",
        "nt.system (Windows os)",
        "GG100",
        "CRITICAL",
        "nt.system",
    )
    add(
        "pip_main.pkl",
        call("pip", "main", "--version"),
        "pip-main",
        "A: incomplete denylist (CVE-2025-1716)",
        "pip.main installs packages",
        "GG100",
        "CRITICAL",
        "pip.main",
    )
    add(
        "asyncio_submodule.pkl",
        call("asyncio.unix_events", "_UnixSubprocessTransport"),
        "asyncio-submodule",
        "A: submodule of denied package (CVE-2025-10157)",
        "asyncio.unix_events subprocess transport",
        "GG100",
        "CRITICAL",
        "asyncio.unix_events._UnixSubprocessTransport",
    )
    add(
        "operator_attrgetter.pkl",
        call("_operator", "attrgetter", "system"),
        "operator-attrgetter",
        "A: _operator gadgets",
        "_operator.attrgetter",
        "GG100",
        "CRITICAL",
        "_operator.attrgetter",
    )
    add(
        "operator_methodcaller.pkl",
        call("operator", "methodcaller", "system", "true"),
        "operator-methodcaller",
        "A: operator gadgets",
        "operator.methodcaller",
        "GG100",
        "CRITICAL",
        "operator.methodcaller",
    )
    add(
        "cprofile_run.pkl",
        call("cProfile", "run", "None"),
        "profiler-exec",
        "A: profilers/debuggers that exec strings",
        "cProfile.run('None')",
        "GG100",
        "CRITICAL",
        "cProfile.run",
    )
    add(
        "timeit.pkl",
        call("timeit", "timeit", "None"),
        "timeit-exec",
        "A: profilers/debuggers that exec strings",
        "timeit.timeit('None')",
        "GG100",
        "CRITICAL",
        "timeit.timeit",
    )
    add(
        "nested_loads.pkl",
        P2
        + op_global("_pickle", "loads")
        + MARK
        + b"C"
        + bytes([len(system)])
        + system
        + b"t"
        + REDUCE
        + STOP,
        "nested-pickle-loads",
        "A: nested pickle.loads",
        "_pickle.loads of an inner payload",
        "GG100",
        "CRITICAL",
        "_pickle.loads",
    )
    add(
        "pkgutil_resolve.pkl",
        call("pkgutil", "resolve_name", "os:getpid"),
        "pkgutil-resolve-name",
        "A: universal resolver",
        "pkgutil.resolve_name('os:getpid')",
        "GG100",
        "CRITICAL",
        "pkgutil.resolve_name",
    )
    add(
        "uuid_shellout.pkl",
        call("uuid", "_get_command_stdout", "true"),
        "stdlib-shellout",
        "A: stdlib helpers that shell out (CVE-2026-56315)",
        "uuid._get_command_stdout('true')",
        "GG100",
        "CRITICAL",
        "uuid._get_command_stdout",
    )
    add(
        "logging_filehandler.pkl",
        call("logging", "FileHandler", "/dev/null"),
        "logging-filehandler",
        "A: file creation (CVE-2026-56304)",
        "logging.FileHandler('/dev/null')",
        "GG100",
        "CRITICAL",
        "logging.FileHandler",
    )
    add(
        "marshal_function.pkl",
        P2
        + op_global("types", "FunctionType")
        + MARK
        + op_global("marshal", "loads")
        + MARK
        + b"C\x00"
        + b"t"
        + REDUCE
        + b"}"
        + b"t"
        + REDUCE
        + STOP,
        "marshal-functiontype",
        "A: marshal + FunctionType",
        "types.FunctionType(marshal.loads(b''), {})",
        "GG100",
        "CRITICAL",
        "marshal.loads",
    )
    add(
        "pty_spawn.pkl",
        call("pty", "spawn", "true"),
        "pty-spawn",
        "A: pty.spawn",
        "pty.spawn('true')",
        "GG100",
        "CRITICAL",
        "pty.spawn",
    )
    add(
        "posixsubprocess.pkl",
        call("_posixsubprocess", "fork_exec"),
        "posixsubprocess-fork-exec",
        "A: _posixsubprocess",
        "_posixsubprocess.fork_exec()",
        "GG100",
        "CRITICAL",
        "_posixsubprocess.fork_exec",
    )
    add(
        "subinterpreters_build.pkl",
        P2
        + op_global("_interpreters", "create")
        + b")"
        + REDUCE
        + b"}"
        + op_bstr("x")
        + b"K\x01s"
        + b"b"
        + STOP,
        "subinterpreters-build",
        "A: private stdlib via BUILD",
        "_interpreters.create() then BUILD",
        "GG100",
        "CRITICAL",
        "_interpreters.create",
    )
    add(
        "collect_env.pkl",
        call("torch.utils.collect_env", "run", "true"),
        "torch-gadget",
        "A: torch gadgets",
        "torch.utils.collect_env.run('true')",
        "GG100",
        "CRITICAL",
        "torch.utils.collect_env.run",
    )
    add(
        "runpy.pkl",
        call("runpy", "run_path", "/dev/null"),
        "runpy",
        "A: runpy",
        "runpy.run_path('/dev/null')",
        "GG100",
        "CRITICAL",
        "runpy.run_path",
    )
    add(
        "webbrowser.pkl",
        call("webbrowser", "open", "about:blank"),
        "webbrowser",
        "A: network/UI",
        "webbrowser.open",
        "GG100",
        "CRITICAL",
        "webbrowser.open",
    )
    add(
        "asyncio_subprocess.pkl",
        call("asyncio", "create_subprocess_exec", "true"),
        "asyncio-subprocess",
        "A: async subprocess",
        "asyncio.create_subprocess_exec('true')",
        "GG100",
        "CRITICAL",
        "asyncio.create_subprocess_exec",
    )
    add(
        "builtins_eval.pkl",
        call("builtins", "eval", "1+1"),
        "builtins-eval",
        "A: builtins eval",
        "builtins.eval('1+1')",
        "GG100",
        "CRITICAL",
        "builtins.eval",
    )
    add(
        "py2_builtin_eval.pkl",
        b"c__builtin__\neval\n(S'1+1'\ntR.",
        "py2-builtin-alias",
        "A: __builtin__ alias (protocol 0)",
        "__builtin__.eval maps to builtins.eval",
        "GG100",
        "CRITICAL",
        "builtins.eval",
    )
    add(
        "torch_load.pkl",
        call("torch", "load", "/dev/null"),
        "torch-load-reentry",
        "A: loader re-entry",
        "torch.load('/dev/null')",
        "GG100",
        "CRITICAL",
        "torch.load",
    )
    add(
        "torch_serialization.pkl",
        call("torch.serialization", "load", "/dev/null"),
        "torch-serialization-reentry",
        "A: loader re-entry",
        "torch.serialization.load",
        "GG100",
        "CRITICAL",
        "torch.serialization.load",
    )
    add(
        "unknown_module.pkl",
        call("totally_harmless_pkg.module", "Thing"),
        "unknown-import",
        "A: gadget in a third-party package no list knows",
        "an import nobody listed",
        "GG101",
        "HIGH",
        "totally_harmless_pkg.module.Thing",
    )
    getattr_chain = (
        P2 + op_global("builtins", "getattr") + MARK
        + op_global("builtins", "__import__") + MARK + op_bstr("os") + b"t" + REDUCE
        + op_bstr("system") + b"t" + REDUCE
        + MARK + op_bstr("true") + b"t" + REDUCE + STOP
    )  # fmt: skip
    add(
        "getattr_chain.pkl",
        getattr_chain,
        "builtins-getattr-chain",
        "A: builtins.getattr chains",
        "getattr(__import__('os'), 'system')('true')",
        "GG100",
        "CRITICAL",
        "builtins.getattr",
        also=("GG106",),
    )
    partial = (
        P2
        + op_global("functools", "partial")
        + MARK
        + op_global("posix", "system")
        + op_bstr("true")
        + b"t"
        + REDUCE
        + b")"
        + REDUCE
        + STOP
    )
    add(
        "functools_partial.pkl",
        partial,
        "functools-partial",
        "A: functools.partial wrapper",
        "functools.partial(os.system, 'true')()",
        "GG100",
        "CRITICAL",
        "functools.partial",
    )

    # B. parser differentials
    memo_sg = (
        P4
        + op_str("os")
        + b"\x94"
        + b"0"
        + op_str("system")
        + b"\x94"
        + b"0"
        + b"h\x00h\x01\x93"
        + op_str("true")
        + TUPLE1
        + REDUCE
        + STOP
    )
    add(
        "memo_stack_global.pkl",
        memo_sg,
        "memo-stack-global",
        "B: STACK_GLOBAL operands via memo",
        "module/name MEMOIZEd, popped, fetched back by BINGET",
        "GG100",
        "CRITICAL",
        "os.system",
    )
    confusion = (
        P4 + op_str("os") + b"\x94" + b"0" + op_str("system") + b"\x94" + b"0"
        + op_str("torch") + op_str("LongStorage") + b"00"
        + b"h\x00h\x01\x93" + op_str("true") + TUPLE1 + REDUCE + STOP
    )  # fmt: skip
    add(
        "memo_confusion.pkl",
        confusion,
        "memo-confusion",
        "B: memo confusion (picklescan#22)",
        "previous-opcode heuristics see torch.LongStorage",
        "GG100",
        "CRITICAL",
        "os.system",
    )
    computed = (
        P4
        + op_global("_codecs", "encode")
        + op_str("os")
        + op_str("latin1")
        + b"\x86"
        + REDUCE
        + op_str("system")
        + b"\x93"
        + op_str("true")
        + TUPLE1
        + REDUCE
        + STOP
    )
    add(
        "stack_global_computed.pkl",
        computed,
        "stack-global-computed",
        "B: STACK_GLOBAL operands computed at load time (modelscan#331)",
        "module name is the result of a call",
        "GG103",
        "CRITICAL",
        None,
    )
    add(
        "inst_opcode.pkl",
        b"(S'true'\nios\nsystem\n.",
        "inst-opcode",
        "B: INST",
        "INST os system",
        "GG100",
        "CRITICAL",
        "os.system",
    )
    add(
        "obj_opcode.pkl",
        b"\x80\x01(cos\nsystem\nX\x04\x00\x00\x00trueo.",
        "obj-opcode",
        "B: OBJ",
        "MARK class args OBJ",
        "GG100",
        "CRITICAL",
        "os.system",
    )
    add(
        "newobj_ex.pkl",
        P4 + op_global("subprocess", "Popen") + op_str("true") + TUPLE1 + b"}" + b"\x92" + STOP,
        "newobj-ex",
        "B: NEWOBJ_EX (crashes fickling)",
        "subprocess.Popen via NEWOBJ_EX",
        "GG100",
        "CRITICAL",
        "subprocess.Popen",
    )
    add(
        "ext1_unknown.pkl",
        P2 + b"\x82\x42" + op_bstr("true") + TUPLE1 + REDUCE + STOP,
        "ext-code",
        "D: EXT opcodes via copyreg registry",
        "EXT1 0x42 with no registry entry",
        "GG104",
        "CRITICAL",
        None,
    )
    add(
        "ext4_unknown.pkl",
        P2 + b"\x84" + struct.pack("<i", 0x7FFF0001) + op_bstr("true") + TUPLE1 + REDUCE + STOP,
        "ext-code-4",
        "D: EXT opcodes via copyreg registry",
        "EXT4 with no registry entry",
        "GG104",
        "CRITICAL",
        None,
    )
    add(
        "broken_after_payload.pkl",
        system[:-1] + b"\xff\xfe garbage",
        "broken-pickle",
        "B: nullifAI broken pickle",
        "payload first, then corrupt bytes",
        "GG100",
        "CRITICAL",
        "posix.system",
        also=("GG111",),
    )
    add(
        "monkeypatch_build.pkl",
        P2
        + op_global("collections", "OrderedDict")
        + b"N}"
        + op_bstr("__repr__")
        + op_global("posix", "system")
        + b"s\x86b"
        + STOP,
        "build-on-class",
        "B: BUILD on an imported class",
        "setattr on OrderedDict via BUILD slot state",
        "GG107",
        "HIGH",
        "collections.OrderedDict",
    )
    cyclic = P2 + op_global("posix", "system") + b"]q\x00h\x00a" + TUPLE1 + REDUCE + STOP
    add(
        "cyclic_memo.pkl",
        cyclic,
        "cyclic-memo",
        "E: DoS via cyclic structure (fickling#196)",
        "L.append(L) passed to os.system",
        "GG100",
        "CRITICAL",
        "posix.system",
    )
    add(
        "memo_miss.pkl",
        P2 + b"h\x07" + STOP,
        "memo-miss",
        "B: GET of a slot never set",
        "BINGET 7 on an empty memo",
        "GG114",
        "HIGH",
        None,
    )

    # more denylist gaps named in the advisories: one import each, all must be CRITICAL
    gaps = [
        ("http.client", "HTTPConnection", "example.invalid", "network-exfiltration"),
        ("requests", "get", "http://example.invalid", "requests-exfiltration"),
        ("ssl", "get_server_certificate", "example.invalid", "ssl-network"),
        ("pdb", "run", "None", "debugger-exec"),
        ("doctest", "debug_script", "None", "doctest-exec"),
        ("idlelib.pyshell", "main", "", "idlelib-exec"),
        ("site", "addsitedir", "/nonexistent", "site-pth"),
        ("atexit", "register", "", "atexit-hook"),
        ("multiprocessing.util", "spawnv_passfds", "true", "multiprocessing-spawn"),
        ("pandas", "read_csv", "http://example.invalid/x.csv", "pandas-read-url"),
        ("mlflow.projects.backend.local", "_run_entry_point", "true", "mlflow-entry-point"),
        ("importlib", "import_module", "os", "importlib-import"),
        ("ensurepip", "_run_pip", "--version", "ensurepip-run-pip"),
        ("venv", "create", "/nonexistent", "venv-create"),
        ("code", "InteractiveInterpreter", "", "code-interpreter"),
        ("shutil", "rmtree", "/nonexistent-gpenguard-corpus", "shutil-rmtree"),
        ("tempfile", "mkdtemp", "", "tempfile-create"),
        ("signal", "raise_signal", "0", "signal-raise"),
        ("threading", "Thread", "", "threading-thread"),
        ("torch.hub", "load", "x/y", "torch-hub-load"),
        ("torch.jit", "load", "/dev/null", "torch-jit-load"),
        ("torch.storage", "_load_from_bytes", "", "torch-storage-load-from-bytes"),
        ("ctypes", "CDLL", "libc.so.6", "ctypes-cdll"),
        ("sys", "exit", "0", "sys-exit"),
        ("socket", "create_connection", "example.invalid", "socket-connect"),
    ]
    for module, attr, arg, name in gaps:
        args = (arg,) if arg else ()
        add(
            f"{name}.pkl",
            call(module, attr, *args),
            name,
            "A: incomplete denylist",
            f"{module}.{attr}",
            "GG100",
            "CRITICAL",
            f"{module}.{attr}",
        )
    gadget = P2 + op_global("numpy", "__builtins__") + b"}" + op_bstr("x") + K1 + b"s" + b"b" + STOP
    add(
        "numpy_builtins.pkl",
        gadget,
        "numpy-builtins-gadget",
        "B: attribute gadget (modelscan#330)",
        "numpy.__builtins__ then BUILD",
        "GG100",
        "CRITICAL",
        "numpy.__builtins__",
    )
    eop = (
        P2
        + b"("
        + op_global("posix", "system")
        + op_bstr("true")
        + TUPLE1
        + REDUCE
        + op_global("builtins", "int")
        + op_bstr("not-a-number")
        + TUPLE1
        + REDUCE
        + b"t"
        + STOP
    )
    add(
        "exception_oriented.pkl",
        eop,
        "exception-oriented",
        "B: exception-oriented programming",
        "payload, then a call that raises on purpose",
        "GG100",
        "CRITICAL",
        "posix.system",
    )
    add(
        "setitem_non_dict.pkl",
        P2 + b"]" + b"K\x00K\x01s" + STOP,
        "setitem-on-non-dict",
        "D: SETITEM on a non-dict (CVE-2026-24747)",
        "SETITEM applied to a list",
        "GG110",
        "HIGH",
        None,
    )
    add(
        "deep_marks.pkl",
        P2 + b"(" * 20_001 + STOP,
        "deep-mark-nesting",
        "E: DoS by nesting",
        "20001 nested MARKs",
        "GG115",
        "HIGH",
        None,
    )

    # protocol variants
    for proto in range(6):
        add(
            f"proto{proto}.pkl",
            os_system_true(proto),
            f"protocol-{proto}",
            "protocols 0-5",
            f"os.system payload in protocol {proto}",
            "GG100",
            "CRITICAL",
            "posix.system",
        )

    # C. containers and extensions
    for fname in ("model.bin", "model.ckpt", "model.pt", "model"):
        add(
            f"renamed_{fname}",
            system,
            f"pickle-as-{fname}",
            "C: raw pickle renamed (CVE-2025-10155)",
            f"bare pickle named {fname}",
            "GG100",
            "CRITICAL",
            "posix.system",
        )
    payload_dict = _wrap_in_dict(op_global("posix", "system") + op_bstr("true") + TUPLE1 + REDUCE)
    add(
        "zip_bad_crc.pt",
        torch_like_zip("archive", payload_dict, crc=0x1234),
        "zip-bad-crc",
        "C: bad CRC-32 (CVE-2025-10156)",
        "data.pkl with a wrong CRC",
        "GG100",
        "CRITICAL",
        "posix.system",
        "archive/data.pkl",
    )
    add(
        "zip_name_mismatch.pt",
        torch_like_zip("archive", payload_dict, local_name="archive/other.pkl"),
        "zip-local-name-mismatch",
        "C: local/central name mismatch (CVE-2025-1944)",
        "local header names another file",
        "GG100",
        "CRITICAL",
        "posix.system",
        "archive/data.pkl",
    )
    root = "modèle"
    add(
        "zip_utf8_flag.pt",
        torch_like_zip(root, payload_dict, flags=0x800, local_flags=0),
        "zip-utf8-flag",
        "C: flag bits (CVE-2025-1945)",
        "UTF-8 flag cleared in the local header of a non-ASCII root",
        "GG100",
        "CRITICAL",
        "posix.system",
        f"{root}/data.pkl",
    )
    benign_pkl = pickle.dumps({"state_dict": {}}, protocol=2)
    add(
        "zip_extra_member.pt",
        torch_like_zip("archive", benign_pkl, [ZipEntry("archive/extra.pkl", system)]),
        "non-data-pkl-member",
        "C: pickle members beyond data.pkl (CVE-2025-1889)",
        "payload in archive/extra.pkl",
        "GG100",
        "CRITICAL",
        "posix.system",
        "archive/extra.pkl",
    )
    add(
        "zip_odd_ext.pt",
        torch_like_zip("archive", benign_pkl, [ZipEntry("archive/weights.bin", system)]),
        "pickle-member-odd-extension",
        "C: pickle members beyond data.pkl (CVE-2025-1889)",
        "payload in a member named .bin",
        "GG100",
        "CRITICAL",
        "posix.system",
        "archive/weights.bin",
    )
    add(
        "zip_dup.pt",
        torch_like_zip("archive", benign_pkl, [ZipEntry("archive/data.pkl", system)]),
        "zip-duplicate-member",
        "C: duplicate member names",
        "second archive/data.pkl holds the payload",
        "GG100",
        "CRITICAL",
        "posix.system",
        "archive/data.pkl",
    )
    add(
        "zip_traversal.zip",
        build_zip([ZipEntry("../../evil.pkl", system)]),
        "zip-path-traversal",
        "C: path traversal",
        "member ../../evil.pkl",
        "GG201",
        "HIGH",
        None,
    )
    add(
        "zip_encrypted.pt",
        torch_like_zip("archive", system, flags=0x1),
        "zip-encrypted-member",
        "C: encrypted member",
        "data.pkl flagged encrypted",
        "GG202",
        "HIGH",
        None,
    )
    add(
        "zip_bomb.zip",
        build_zip(
            [
                ZipEntry("archive/data.pkl", benign_pkl),
                ZipEntry("archive/data/0", b"\0" * (24 * 2**20), deflate=True),
            ]
        ),
        "zip-bomb",
        "E: compression bomb",
        "24 MiB of zeros deflated ~1000:1",
        "GG203",
        "HIGH",
        None,
    )

    sd = {"w": torch.zeros(2)}

    class _Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("true",))

    path = dest / "GPEN-BFR-2048.pth"
    torch.save({"state_dict": sd, "x": _Payload()}, path)
    items.append(
        CorpusItem(
            path,
            "any-root-name",
            "C: any root folder name",
            "torch.save to a path: root is the file stem",
            "GG100",
            "CRITICAL",
            "posix.system",
            "GPEN-BFR-2048/data.pkl",
        )
    )
    inner = io.BytesIO()
    torch.save({"x": _Payload()}, inner)
    add(
        "nested.zip",
        build_zip([ZipEntry("inner.pt", inner.getvalue())]),
        "nested-zip",
        "C: nested archive",
        "torch checkpoint stored inside a zip",
        "GG100",
        "CRITICAL",
        "posix.system",
        "inner.pt!archive/data.pkl",
    )
    nested2 = build_zip([ZipEntry("inner.pt", inner.getvalue())])
    add(
        "nested2.zip",
        build_zip([ZipEntry("level1.zip", nested2, deflate=True)]),
        "nested-zip-deflated",
        "C: nested archive",
        "zip in a deflated zip in a zip",
        "GG100",
        "CRITICAL",
        "posix.system",
        "level1.zip!inner.pt!archive/data.pkl",
    )
    legacy = io.BytesIO()
    torch.save({"x": _Payload(), "w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    add(
        "legacy.pt",
        legacy.getvalue(),
        "legacy-format",
        "C: legacy non-zip format (modelscan reads the first pickle only)",
        "payload in the object pickle",
        "GG100",
        "CRITICAL",
        "posix.system",
    )
    add(
        "legacy_sysinfo.pt",
        legacy_stream(sys_info=system),
        "legacy-sys-info",
        "C: legacy format, payload in sys_info",
        "sys_info record is the payload",
        "GG100",
        "CRITICAL",
        "posix.system",
    )
    add(
        "legacy_magic_eval.pt",
        legacy_stream(magic=call("builtins", "eval", str(MAGIC_NUMBER))),
        "legacy-magic-eval",
        "C: magic number via eval",
        "the magic number is computed by eval",
        "GG100",
        "CRITICAL",
        "builtins.eval",
    )
    add(
        "legacy.tar",
        legacy_tar(pickle_member=system),
        "tar-format",
        "C: legacy tar format (picklescan: not implemented)",
        "payload in the tar 'pickle' member",
        "GG100",
        "CRITICAL",
        "posix.system",
        "pickle",
    )
    storages = pickle.dumps(1, protocol=2) + system + pickle.dumps([], protocol=2)
    add(
        "legacy_storages.tar",
        legacy_tar(pickle_member=pickle.dumps({}, protocol=2), storages=storages),
        "tar-storages-record",
        "C: legacy tar, payload in a storage record",
        "the storages stream's record pickle",
        "GG100",
        "CRITICAL",
        "posix.system",
        "storages",
    )
    add(
        "object.npy",
        npy_object(system),
        "npy-object-array",
        "C: npy object arrays",
        "object dtype: the body is a pickle",
        "GG100",
        "CRITICAL",
        "posix.system",
    )
    add(
        "object.npz",
        build_zip([ZipEntry("arr_0.npy", npy_object(system))]),
        "npz-object-array",
        "C: npz with an object array",
        "object .npy inside an .npz",
        "GG100",
        "CRITICAL",
        "posix.system",
        "arr_0.npy",
    )
    joblib_like = (
        P2
        + op_global("joblib.numpy_pickle", "NumpyArrayWrapper")
        + b")\x81}b"
        + b"\x00\x01\x02\x03raw-array-bytes"
        + system[2:]
    )
    add(
        "joblib_style.joblib",
        joblib_like,
        "joblib-style",
        "C: joblib (raw array bytes inside the pickle)",
        "joblib wrapper then raw bytes",
        "GG100",
        "CRITICAL",
        "joblib.numpy_pickle.NumpyArrayWrapper",
    )
    add(
        "trailing_pickle.pkl",
        pickle.dumps({"a": 1}, protocol=2) + system,
        "trailing-pickle",
        "B: pickle after STOP",
        "benign pickle followed by a second, malicious one",
        "GG100",
        "CRITICAL",
        "posix.system",
    )
    add(
        "trailing_pickle_in_zip.pt",
        torch_like_zip("archive", benign_pkl + system),
        "trailing-pickle-in-data-pkl",
        "B: pickle after STOP",
        "data.pkl carries a second program",
        "GG100",
        "CRITICAL",
        "posix.system",
        "archive/data.pkl",
    )
    polyglot = pickle.dumps({"a": 1}, protocol=2) + torch_like_zip("archive", payload_dict)
    add(
        "polyglot_pickle_zip.pt",
        polyglot,
        "polyglot-pickle-zip",
        "C: polyglot (pickle at 0, zip after it)",
        "zip readers and pickle readers see different files",
        "GG100",
        "CRITICAL",
        "posix.system",
        "[as zip-embedded]!archive/data.pkl",
        also=("GG207",),
    )

    path = dest / "wrapped.pt.gz"
    path.write_bytes(gzip.compress(system))
    items.append(
        CorpusItem(
            path,
            "gzip-wrapped",
            "C: compressed wrapper (nullifAI used 7z)",
            "a pickle inside gzip: not a container torch opens, so it must fail closed, never pass",
            expect_verdict="error",
        )
    )

    class _Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    path = dest / "scripted.pt"
    torch.jit.save(torch.jit.script(_Tiny()), str(path))
    items.append(
        CorpusItem(
            path,
            "torchscript-archive",
            "D: TorchScript archive (CVE-2025-32434)",
            "torch.jit.save output: code runs on load",
            "GG210",
            "HIGH",
            None,
        )
    )
    return items


# ---------------------------------------------------------------------------------------------
# benign corpus


def _gpen_keys(limit: int = 12) -> list[tuple[str, list[int]]]:
    keys = [
        ("generator.style.1.weight", [8, 8]),
        ("generator.style.1.bias", [8]),
        ("generator.input.input", [1, 8, 4, 4]),
        ("generator.conv1.conv.weight", [1, 8, 8, 3, 3]),
        ("generator.conv1.conv.modulation.weight", [8, 8]),
        ("generator.conv1.conv.modulation.bias", [8]),
        ("generator.conv1.noise.weight", [1]),
        ("generator.conv1.activate.bias", [8]),
        ("generator.to_rgb1.bias", [1, 3, 1, 1]),
        ("generator.to_rgb1.conv.weight", [1, 3, 8, 1, 1]),
        ("generator.convs.0.conv.blur.kernel", [4, 4]),
        ("generator.noises.noise_0", [1, 1, 4, 4]),
    ]
    return keys[:limit]


def make_benign_corpus(dest: Path) -> list[CorpusItem]:
    """Write ordinary checkpoints made by torch.save / safetensors / numpy into `dest`."""
    import argparse
    import collections

    import numpy as np
    import torch
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    items: list[CorpusItem] = []
    torch.manual_seed(0)

    def save(filename: str, obj: object, name: str, desc: str, **kw: object) -> None:
        path = dest / filename
        torch.save(obj, path, **kw)  # type: ignore[arg-type]
        items.append(CorpusItem(path, name, "benign", desc, malicious=False))

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    dtypes = {
        f"t_{d}": torch.ones(3, 2, dtype=d)
        for d in (torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.int64, torch.bool)
    }
    save("state_dict.pt", net.state_dict(), "state-dict-zip", "plain state_dict, zip format")
    save(
        "state_dict_legacy.pt",
        net.state_dict(),
        "state-dict-legacy",
        "plain state_dict, legacy format",
        _use_new_zipfile_serialization=False,
    )
    save("dtypes.pth", dtypes, "dtypes", "fp32/fp16/bf16/int8/int64/bool tensors")
    save(
        "dtypes_legacy.pth",
        dtypes,
        "dtypes-legacy",
        "dtypes in the legacy format",
        _use_new_zipfile_serialization=False,
    )
    save(
        "nested.pt",
        {
            "model": {"encoder": net.state_dict(), "heads": [torch.zeros(2), {"b": torch.ones(1)}]},
            "meta": ("x", 1, 2.5, None, True),
        },
        "nested-dicts",
        "nested dicts, lists and tuples",
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(2, 3, 3, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10)
    save(
        "train_state.ckpt",
        {
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": 3,
            "rng": torch.get_rng_state(),
        },
        "training-checkpoint",
        "optimizer and scheduler state",
    )
    ns = argparse.Namespace(lr=0.1, arch="gpen", sizes=[256, 512], flags={"amp": True})
    save(
        "namespace.pt",
        {"args": ns, "model": net.state_dict()},
        "argparse-namespace",
        "argparse.Namespace hyper-parameters",
    )
    save(
        "numpy_inside.pt",
        {
            "mean": np.zeros(3, dtype=np.float32),
            "step": np.int64(7),
            "scale": np.float32(0.5),
            "dt": np.dtype("float16"),
            "np_rng": np.random.RandomState(0).get_state(),
        },
        "numpy-values",
        "numpy arrays, scalars and dtypes",
    )
    save(
        "collections.pt",
        {
            "s": {1, 2},
            "fs": frozenset({"a"}),
            "c": collections.Counter("aab"),
            "dd": collections.defaultdict(list, {"k": [1]}),
            "dq": collections.deque([1, 2]),
            "od": collections.OrderedDict(a=1),
            "sl": slice(1, 5),
            "cx": 1 + 2j,
            "ba": bytearray(b"ab"),
            "by": b"raw",
        },
        "builtin-collections",
        "sets, Counter, defaultdict, deque, slice, complex, bytes",
    )
    save(
        "sparse.pt",
        {"coo": torch.eye(3).to_sparse(), "csr": torch.eye(3).to_sparse_csr()},
        "sparse-tensors",
        "sparse COO and CSR tensors",
    )
    qt = torch.quantize_per_tensor(torch.rand(4), 0.1, 10, torch.quint8)
    qc = torch.quantize_per_channel(
        torch.rand(2, 3), torch.tensor([0.1, 0.2]), torch.tensor([1, 2]), 0, torch.qint8
    )
    save(
        "quantized.pt",
        {"q": qt, "qc": qc},
        "quantized-tensors",
        "per-tensor and per-channel quantized tensors",
    )
    save(
        "params.pt",
        {
            "p": torch.nn.Parameter(torch.zeros(2)),
            "size": torch.Size([2, 3]),
            "dtype": torch.float16,
            "device": torch.device("cpu"),
        },
        "parameters-and-meta",
        "nn.Parameter, torch.Size, dtype, device",
    )
    lightning = {
        "epoch": 4, "global_step": 400, "pytorch-lightning_version": "2.2.0",
        "state_dict": collections.OrderedDict((f"model.{k}", v) for k, v in net.state_dict().items()),
        "optimizer_states": [opt.state_dict()], "lr_schedulers": [sched.state_dict()],
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.5)}},
        "hyper_parameters": {"lr": 0.001, "batch_size": 8}, "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 4}}}},
    }  # fmt: skip
    save("lightning.ckpt", lightning, "lightning-checkpoint", "Lightning-style checkpoint dict")
    fairseq = {
        "args": argparse.Namespace(arch="transformer", lr=[0.0005], max_tokens=4096),
        "model": net.state_dict(),
        "optimizer_history": [
            {
                "criterion_name": "CrossEntropyCriterion",
                "optimizer_name": "Adam",
                "lr_scheduler_state": {"best": 2.1},
                "num_updates": 100,
            }
        ],
        "extra_state": {
            "epoch": 2,
            "val_loss": 2.1,
            "train_iterator": {"epoch": 2, "iterations_in_epoch": 0},
        },
        "last_optimizer_state": opt.state_dict(),
    }
    save("fairseq.pt", fairseq, "fairseq-checkpoint", "fairseq-style checkpoint dict")
    save("whole_module.pt", net, "whole-nn-module", "a stock nn.Module pickled whole")
    gpen = collections.OrderedDict((k, torch.randn(*shape)) for k, shape in _gpen_keys())
    save(
        "GPEN-BFR-2048.pth",
        gpen,
        "gpen-shaped",
        "GPEN-style keys, small shapes (root named after the file)",
    )
    save(
        "gpen_params_ema.pth", {"params_ema": gpen}, "gpen-params-ema", "GPEN keys under params_ema"
    )
    save(
        "proto4.pt",
        net.state_dict(),
        "protocol-4",
        "state_dict pickled with protocol 4",
        pickle_protocol=4,
    )
    save("noext", net.state_dict(), "no-extension", "checkpoint without an extension")

    path = dest / "model.safetensors"
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        str(path),
        metadata={"format": "pt"},
    )
    items.append(
        CorpusItem(
            path, "safetensors", "benign", "safetensors.torch.save_file output", malicious=False
        )
    )
    path = dest / "gpen.safetensors"
    save_file(dict(gpen), str(path))
    items.append(
        CorpusItem(path, "safetensors-gpen", "benign", "GPEN-shaped safetensors", malicious=False)
    )
    path = dest / "array.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(3, 4))
    items.append(CorpusItem(path, "npy", "benign", ".npy without objects", malicious=False))
    path = dest / "arrays.npz"
    np.savez(path, a=np.zeros(3), b=np.ones((2, 2), dtype=np.int16))
    items.append(CorpusItem(path, "npz", "benign", ".npz of plain arrays", malicious=False))
    return items
