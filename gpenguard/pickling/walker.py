"""A symbolic pickle machine: follows the stack and memo, never imports or calls anything.

Every value an unpickler would build is represented by a stand-in: constants stay constants,
imports become `Global`, calls become `Call`. That is enough to resolve every import the way
the real VM would (STACK_GLOBAL operands fetched through the memo, EXT codes through the
extension registry) and to print the call a payload would make, without trusting the bytes.
"""

from __future__ import annotations

import copyreg
from collections.abc import Callable
from dataclasses import dataclass, field

from gpenguard.pickling.opcodes import FRAME_STRADDLE, Blob, DecodeError, Decoder, Op

# ---------------------------------------------------------------------------------------------
# stand-in values


class Mark:
    """Never on the stack; MARK opens a new stack frame like the real VM does."""


class Unknown:
    """A value the machine cannot know (a memo miss, an out-of-band buffer)."""

    def __init__(self, why: str):
        self.why = why


class Global:
    """An import the pickle makes: ``module.name``, located by the opcode that made it."""

    __slots__ = ("first_call", "module", "name", "offset", "via")

    def __init__(self, module: str, name: str, offset: int, via: str):
        self.module = module
        self.name = name
        self.offset = offset
        self.via = via
        self.first_call: Call | None = None

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


class Unresolved:
    """An import whose target the bytes do not fix statically (computed STACK_GLOBAL, unknown EXT)."""

    def __init__(self, offset: int, why: str):
        self.offset = offset
        self.why = why


class Call:
    """The result of REDUCE / NEWOBJ / NEWOBJ_EX / INST / OBJ: ``func(*args, **kwargs)``."""

    __slots__ = ("args", "func", "kind", "kwargs", "offset", "state")

    def __init__(self, func: object, args: object, offset: int, kind: str, kwargs: object = None):
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.offset = offset
        self.kind = kind
        self.state: object = None


class PersId:
    """A persistent id (torch: ``('storage', StorageType, key, location, numel)``)."""

    __slots__ = ("offset", "pid")

    def __init__(self, pid: object, offset: int):
        self.pid = pid
        self.offset = offset


class SList(list[object]):
    """A list built by the pickle (mutable: APPEND after memoization must show)."""


class SDict:
    """A dict built by the pickle; keys may be unhashable stand-ins, so pairs are kept."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[object, object]] = []


class SSet(list[object]):
    """A set or frozenset built by the pickle."""

    frozen = False


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with the program itself; scan/ turns it into a finding by rule id."""

    rule_id: str
    offset: int
    message: str
    call: str | None = None
    global_name: str | None = None


@dataclass(slots=True)
class WalkResult:
    """What one pickle program would do, as far as it can be known without running it."""

    start: int
    end: int | None
    """Offset just after STOP, or None when the program never reached a STOP."""
    value: object = None
    imports: list[Global] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    opcodes: int = 0
    protocol: int | None = None
    persistent_ids: int = 0
    frames: int = 0
    """FRAME opcodes read (every unpickler reads the same opcodes until the first one)."""
    pids: list[object] = field(default_factory=list)
    """The persistent ids themselves (stand-ins), for readers that follow storage records."""

    @property
    def complete(self) -> bool:
        return self.end is not None


@dataclass(frozen=True, slots=True)
class WalkLimits:
    """Bounds for one walk (taken from `gpenguard.formats.Limits`)."""

    max_opcodes: int = 50_000_000
    max_memo: int = 10_000_000
    max_depth: int = 10_000
    max_stack_items: int = 1_000_000


MAX_PROBLEMS_PER_RULE = 20


class _Stop(Exception):
    """The real VM would stop here (error or limit); the reason is already recorded."""


# ---------------------------------------------------------------------------------------------
# the machine


class Walker:
    """Run one pickle program symbolically. Never raises for bad input: see `problems`."""

    def __init__(self, buf: memoryview, start: int = 0, limits: WalkLimits | None = None):
        self.buf = buf
        self.start = start
        self.limits = limits or WalkLimits()
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.memo: dict[int, object] = {}
        self.ext_registry: dict[int, tuple[str, str]] = dict(copyreg._inverted_registry)  # type: ignore[attr-defined]
        self.result = WalkResult(start=start, end=None)
        self._overwritten = False
        self._per_rule: dict[str, int] = {}

    # -- driver -------------------------------------------------------------------------------

    def run(self) -> WalkResult:
        lim = self.limits
        res = self.result
        decoder = Decoder(self.buf, self.start)
        next_op = decoder.next_op
        notes = decoder.notes
        dispatch = _DISPATCH
        max_ops, max_items = lim.max_opcodes, lim.max_stack_items
        count = 0
        try:
            while True:
                try:
                    op = next_op()
                except DecodeError as exc:
                    rule = "GG111" if exc.reason.startswith("unknown opcode") else "GG110"
                    self._problem(rule, exc.offset, exc.reason)
                    raise _Stop from None
                if notes:
                    for note in notes:
                        rule = "GG120" if note.kind == FRAME_STRADDLE else "GG119"
                        self._problem(rule, note.offset, note.message)
                    notes.clear()
                count += 1
                if count > max_ops:
                    self._problem(
                        "GG115", op.offset, f"more than {max_ops} opcodes; not walked further"
                    )
                    raise _Stop
                dispatch[op.name](self, op)  # the table covers every opcode pickletools knows
                if len(self.stack) > max_items:
                    self._problem("GG115", op.offset, f"stack holds more than {max_items} items")
                    raise _Stop
                if op.name == "STOP":
                    res.end = op.end
                    break
        except _Stop:
            pass
        res.opcodes = count
        return res

    def _problem(self, rule_id: str, offset: int, message: str, **kw: str | None) -> None:
        # A hostile program can repeat one trick a million times; the first few say enough.
        seen = self._per_rule.get(rule_id, 0) + 1
        self._per_rule[rule_id] = seen
        if seen <= MAX_PROBLEMS_PER_RULE:
            self.result.problems.append(Problem(rule_id, offset, message, **kw))
        elif seen == MAX_PROBLEMS_PER_RULE + 1:
            more = (
                f"{message} (and more like it; only the first {MAX_PROBLEMS_PER_RULE} are listed)"
            )
            self.result.problems.append(Problem(rule_id, offset, more, **kw))

    def _malformed(self, op: Op, why: str) -> None:
        self._problem("GG110", op.offset, f"{op.name}: {why}; the unpickler would fail here")
        raise _Stop

    def _pop(self, op: Op) -> object:
        if not self.stack:
            self._malformed(op, "stack underflow")
        return self.stack.pop()

    def _top(self, op: Op) -> object:
        if not self.stack:
            self._malformed(op, "stack underflow")
        return self.stack[-1]

    def _pop_mark(self, op: Op) -> list[object]:
        if not self.metastack:
            self._malformed(op, "no MARK to pop to")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _push(self, value: object) -> None:
        self.stack.append(value)

    # -- constants ------------------------------------------------------------------------------

    def _const(self, op: Op) -> None:
        self.stack.append(op.arg)

    op_int = op_binint = op_binint1 = op_binint2 = op_long = op_long1 = op_long4 = _const
    op_float = op_binfloat = _const
    op_string = op_binstring = op_short_binstring = _const
    op_unicode = op_short_binunicode = op_binunicode = op_binunicode8 = _const
    op_binbytes = op_short_binbytes = op_binbytes8 = _const

    def op_bytearray8(self, op: Op) -> None:
        self._push(bytearray(op.arg) if isinstance(op.arg, bytes) else op.arg)

    def op_none(self, op: Op) -> None:
        self._push(None)

    def op_newtrue(self, op: Op) -> None:
        self._push(True)

    def op_newfalse(self, op: Op) -> None:
        self._push(False)

    def op_next_buffer(self, op: Op) -> None:
        self._problem("GG117", op.offset, "out-of-band buffer (protocol 5 NEXT_BUFFER)")
        self._push(Unknown("out-of-band buffer"))

    def op_readonly_buffer(self, op: Op) -> None:
        self._top(op)

    # -- containers -----------------------------------------------------------------------------

    def op_empty_list(self, op: Op) -> None:
        self._push(SList())

    def op_empty_tuple(self, op: Op) -> None:
        self._push(())

    def op_empty_dict(self, op: Op) -> None:
        self._push(SDict())

    def op_empty_set(self, op: Op) -> None:
        self._push(SSet())

    def op_mark(self, op: Op) -> None:
        if len(self.metastack) >= self.limits.max_depth:
            self._problem("GG115", op.offset, f"MARK nesting deeper than {self.limits.max_depth}")
            raise _Stop
        self.metastack.append(self.stack)
        self.stack = []

    def op_list(self, op: Op) -> None:
        self._push(SList(self._pop_mark(op)))

    def op_tuple(self, op: Op) -> None:
        self._push(tuple(self._pop_mark(op)))

    def op_tuple1(self, op: Op) -> None:
        self._push((self._pop(op),))

    def op_tuple2(self, op: Op) -> None:
        b = self._pop(op)
        a = self._pop(op)
        self._push((a, b))

    def op_tuple3(self, op: Op) -> None:
        c = self._pop(op)
        b = self._pop(op)
        a = self._pop(op)
        self._push((a, b, c))

    def op_dict(self, op: Op) -> None:
        items = self._pop_mark(op)
        if len(items) % 2:
            self._malformed(op, "odd number of items for a dict")
        d = SDict()
        d.items.extend(zip(items[::2], items[1::2], strict=True))
        self._push(d)

    def op_frozenset(self, op: Op) -> None:
        s = SSet(self._pop_mark(op))
        s.frozen = True
        self._push(s)

    def op_append(self, op: Op) -> None:
        value = self._pop(op)
        self._extend(op, self._top(op), [value])

    def op_appends(self, op: Op) -> None:
        items = self._pop_mark(op)
        self._extend(op, self._top(op), items)

    def op_additems(self, op: Op) -> None:
        items = self._pop_mark(op)
        target = self._top(op)
        if isinstance(target, SSet) and not target.frozen:
            target.extend(items)
        else:
            self._mutation(op, target, "add to")

    def _extend(self, op: Op, target: object, items: list[object]) -> None:
        if isinstance(target, SList):
            target.extend(items)
        else:
            self._mutation(op, target, "append to")

    def op_setitem(self, op: Op) -> None:
        value = self._pop(op)
        key = self._pop(op)
        self._setitems(op, self._top(op), [key, value])

    def op_setitems(self, op: Op) -> None:
        items = self._pop_mark(op)
        if len(items) % 2:
            self._malformed(op, "odd number of items for SETITEMS")
        self._setitems(op, self._top(op), items)

    def _setitems(self, op: Op, target: object, items: list[object]) -> None:
        if isinstance(target, SDict):
            target.items.extend(zip(items[::2], items[1::2], strict=True))
        else:
            self._mutation(op, target, "set items on")

    def _mutation(self, op: Op, target: object, verb: str) -> None:
        """APPEND/SETITEM/BUILD on something that is not a plain container calls its methods."""
        if isinstance(target, Global):
            self._problem(
                "GG107",
                op.offset,
                f"{op.name} would {verb} the imported object {target.qualname} itself (monkey-patching)",
                global_name=target.qualname,
            )
        elif isinstance(target, Call):
            return  # an instance of an imported class; the import itself is judged
        elif not isinstance(target, Unknown | Unresolved | PersId):
            self._malformed(op, f"cannot {verb} a {type(target).__name__}")

    # -- stack and memo ---------------------------------------------------------------------------

    def op_pop(self, op: Op) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark(op)

    def op_pop_mark(self, op: Op) -> None:
        self._pop_mark(op)

    def op_dup(self, op: Op) -> None:
        self._push(self._top(op))

    def _get(self, op: Op) -> None:
        idx = op.arg
        assert isinstance(idx, int)
        if idx in self.memo:
            self._push(self.memo[idx])
            return
        self._problem("GG114", op.offset, f"{op.name} {idx}: memo slot was never set")
        raise _Stop

    op_get = op_binget = op_long_binget = _get

    def _put(self, op: Op) -> None:
        idx = op.arg
        assert isinstance(idx, int)
        if idx < 0:
            self._malformed(op, "negative memo index")
        if idx > op.offset - self.start:
            # Writers number memo slots 0, 1, 2... and each PUT takes at least two bytes;
            # C's unpickler sizes its memo table by the index (0xFFFFFFF0: gigabytes).
            self._problem(
                "GG119", op.offset, f"{op.name} {idx}: a memo index no pickle writer reaches here"
            )
        self._store(op, idx)

    op_put = op_binput = op_long_binput = _put

    def op_memoize(self, op: Op) -> None:
        self._store(op, len(self.memo))

    def _store(self, op: Op, idx: int) -> None:
        value = self._top(op)
        if idx in self.memo:
            if self.memo[idx] is not value and not self._overwritten:
                self._overwritten = True
                self._problem(
                    "GG116", op.offset, f"memo slot {idx} overwritten with a different value"
                )
        elif len(self.memo) >= self.limits.max_memo:
            self._problem(
                "GG115", op.offset, f"memo holds more than {self.limits.max_memo} entries"
            )
            raise _Stop
        self.memo[idx] = value

    # -- imports ----------------------------------------------------------------------------------

    def _import(self, module: str, name: str, offset: int, via: str) -> Global:
        g = Global(module, name, offset, via)
        self.result.imports.append(g)
        return g

    def op_global(self, op: Op) -> None:
        module, name = _pair(op.arg)
        self._push(self._import(module, name, op.offset, "GLOBAL"))

    def op_stack_global(self, op: Op) -> None:
        name = self._pop(op)
        module = self._pop(op)
        if isinstance(module, str) and isinstance(name, str):
            self._push(self._import(module, name, op.offset, "STACK_GLOBAL"))
            return
        why = f"STACK_GLOBAL operands are not constant strings ({render(module)}, {render(name)})"
        self._problem("GG103", op.offset, why, call=f"find_class({render(module)}, {render(name)})")
        self._push(Unresolved(op.offset, why))

    def _ext(self, op: Op) -> None:
        code = op.arg
        assert isinstance(code, int)
        target = self.ext_registry.get(code)
        if target is None:
            why = f"{op.name} {code}: extension code not in the copyreg registry; the import depends on the loading process"
            self._problem("GG104", op.offset, why)
            self._push(Unresolved(op.offset, why))
            return
        module, name = target
        self._problem(
            "GG105",
            op.offset,
            f"{op.name} {code} imports {module}.{name} through the copyreg extension registry",
            global_name=f"{module}.{name}",
        )
        self._push(self._import(module, name, op.offset, op.name))

    op_ext1 = op_ext2 = op_ext4 = _ext

    # -- calls ------------------------------------------------------------------------------------

    def _call(self, op: Op, func: object, args: object, kind: str, kwargs: object = None) -> None:
        if isinstance(func, PersId):
            # torch's legacy loader returns the class of a ('module', cls, file, source) id
            pid = func.pid
            if (
                isinstance(pid, tuple)
                and len(pid) >= 2
                and pid[0] == "module"
                and isinstance(pid[1], Global)
            ):
                func = pid[1]
        call = Call(func, args, op.offset, kind, kwargs)
        if isinstance(func, Global):
            if func.first_call is None:
                func.first_call = call
        elif isinstance(func, Call | PersId):
            self._problem(
                "GG106",
                op.offset,
                f"{op.name} calls a computed value ({render(func.func) + '(...)' if isinstance(func, Call) else render(func)})",
                call=render(call),
                global_name=_root_import(func),
            )
        elif not isinstance(func, Unresolved | Unknown):
            self._malformed(op, f"{render(func)} is not callable")
        self._push(call)

    def op_reduce(self, op: Op) -> None:
        args = self._pop(op)
        func = self._pop(op)
        if not isinstance(args, tuple | Call | Unknown | Unresolved):
            self._malformed(op, f"arguments are {render(args, 60)}, not a tuple")
        self._call(op, func, args, "REDUCE")

    def op_newobj(self, op: Op) -> None:
        args = self._pop(op)
        cls = self._pop(op)
        self._call(op, cls, args, "NEWOBJ")

    def op_newobj_ex(self, op: Op) -> None:
        kwargs = self._pop(op)
        args = self._pop(op)
        cls = self._pop(op)
        self._call(op, cls, args, "NEWOBJ_EX", kwargs)

    def op_inst(self, op: Op) -> None:
        module, name = _pair(op.arg)
        args = tuple(self._pop_mark(op))  # C looks for the MARK before it imports
        self._call(op, self._import(module, name, op.offset, "INST"), args, "INST")

    def op_obj(self, op: Op) -> None:
        items = self._pop_mark(op)
        if not items:
            self._malformed(op, "no class to instantiate")
        self._call(op, items[0], tuple(items[1:]), "OBJ")

    def op_build(self, op: Op) -> None:
        state = self._pop(op)
        inst = self._top(op)
        if isinstance(inst, Call):
            inst.state = state
        else:
            self._mutation(op, inst, "set state on")

    def op_persid(self, op: Op) -> None:
        self.result.persistent_ids += 1
        self.result.pids.append(op.arg)
        self._push(PersId(op.arg, op.offset))

    def op_binpersid(self, op: Op) -> None:
        self.result.persistent_ids += 1
        pid = self._pop(op)
        self.result.pids.append(pid)
        self._push(PersId(pid, op.offset))

    # -- framing ----------------------------------------------------------------------------------

    def op_proto(self, op: Op) -> None:
        proto = op.arg
        assert isinstance(proto, int)
        if proto > 5:
            self._malformed(op, f"unsupported protocol {proto}")
        if op.offset != self.start:
            self._problem("GG118", op.offset, f"PROTO {proto} not at the start of the pickle")
        elif self.result.protocol is None:
            self.result.protocol = proto

    def op_frame(self, op: Op) -> None:
        length = op.arg
        assert isinstance(length, int)
        self.result.frames += 1
        if op.end + length > len(self.buf):
            self._malformed(op, f"frame of {length} bytes runs past the end")

    def op_stop(self, op: Op) -> None:
        self.result.value = self._pop(op)
        if self.stack or self.metastack:
            self._problem("GG118", op.offset, "values left on the stack at STOP")


_DISPATCH: dict[str, Callable[[Walker, Op], None]] = {
    name[3:].upper(): getattr(Walker, name) for name in dir(Walker) if name.startswith("op_")
}


def _pair(arg: object) -> tuple[str, str]:
    assert isinstance(arg, tuple) and len(arg) == 2
    return str(arg[0]), str(arg[1])


def _root_import(value: object, depth: int = 0) -> str | None:
    """The import at the bottom of a chain of calls (``getattr(...)(...)`` -> builtins.getattr)."""
    while isinstance(value, Call) and depth < 50:
        value = value.func
        depth += 1
    return value.qualname if isinstance(value, Global) else None


def walk(buf: memoryview, start: int = 0, limits: WalkLimits | None = None) -> WalkResult:
    """Walk the pickle program at `start` of `buf`; never raises for malformed input."""
    return Walker(buf, start, limits).run()


# ---------------------------------------------------------------------------------------------
# rendering and constant extraction


def render(value: object, limit: int = 240) -> str:
    """Python-syntax text for a stand-in value, bounded in length and safe on cycles."""
    out: list[str] = []
    _render(value, out, set(), 0)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render(value: object, out: list[str], active: set[int], depth: int) -> None:
    if sum(len(s) for s in out[-64:]) > 4096 or len(out) > 2048:
        out.append("...")
        return
    if depth > 8:
        out.append("...")
        return
    if isinstance(value, Global):
        out.append(value.qualname)
        return
    if isinstance(value, str | bytes | bytearray | int | float | bool | type(None)):
        text = repr(value)
        out.append(text if len(text) <= 120 else text[:117] + "...")
        return
    if isinstance(value, Blob):
        out.append(repr(value))
        return
    if isinstance(value, Unresolved):
        out.append("<unresolved import>")
        return
    if isinstance(value, Unknown):
        out.append(f"<{value.why}>")
        return
    if isinstance(value, PersId):
        out.append("persistent_load(")
        _render(value.pid, out, active, depth + 1)
        out.append(")")
        return
    key = id(value)
    if key in active:
        out.append("<cycle>")
        return
    active.add(key)
    try:
        if isinstance(value, Call):
            _render(value.func, out, active, depth + 1)
            out.append("(")
            args = value.args if isinstance(value.args, tuple) else (value.args,)
            parts: list[tuple[str | None, object]] = [(None, a) for a in args[:8]]
            if isinstance(value.kwargs, SDict):
                parts += [(str(k), v) for k, v in value.kwargs.items[:8]]
            for i, (kw, arg) in enumerate(parts):
                if i:
                    out.append(", ")
                if kw is not None:
                    out.append(f"{kw}=")
                _render(arg, out, active, depth + 1)
            if len(args) > 8:
                out.append(", ...")
            out.append(")")
        elif isinstance(value, tuple | SList | SSet):
            opener, closer = ("(", ")") if isinstance(value, tuple) else ("[", "]")
            if isinstance(value, SSet):
                opener, closer = ("frozenset({", "})") if value.frozen else ("{", "}")
            out.append(opener)
            for i, item in enumerate(value[:8]):
                if i:
                    out.append(", ")
                _render(item, out, active, depth + 1)
            if len(value) > 8:
                out.append(", ...")
            if isinstance(value, tuple) and len(value) == 1:
                out.append(",")
            out.append(closer)
        elif isinstance(value, SDict):
            out.append("{")
            for i, (k, v) in enumerate(value.items[:8]):
                if i:
                    out.append(", ")
                _render(k, out, active, depth + 1)
                out.append(": ")
                _render(v, out, active, depth + 1)
            if len(value.items) > 8:
                out.append(", ...")
            out.append("}")
        else:
            out.append(f"<{type(value).__name__}>")
    finally:
        active.discard(key)


def constant(value: object, depth: int = 0) -> object:
    """Plain Python value of a stand-in made only of constants and containers, else raise.

    Used by the container readers to read records such as the legacy magic number or a
    storage-key list; anything involving an import or a call raises `ValueError`.
    """
    if depth > 32:
        raise ValueError("too deep")
    if isinstance(value, str | bytes | bytearray | int | float | bool | type(None)):
        return value
    if isinstance(value, tuple):
        return tuple(constant(v, depth + 1) for v in value)
    if isinstance(value, SList):
        return [constant(v, depth + 1) for v in value]
    raise ValueError(f"not a constant: {type(value).__name__}")
