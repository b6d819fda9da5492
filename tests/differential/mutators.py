"""Structure-aware mutations of zip, legacy-stream, tar and pickle bytes.

Each mutator takes the input and a source of choices (`Choices`: a seeded ``random.Random`` in
CI, atheris' data provider in the campaign) and returns new bytes, or None where it does not
apply. They edit the fields two readers could read differently: which end record, which
directory entry, which name, which size, which number form; not random noise.
"""

from __future__ import annotations

import io
import itertools
import pickle
import random
import struct
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


class Choices(Protocol):
    def randint(self, a: int, b: int) -> int: ...


def pick(r: Choices, seq: Sequence[T]) -> T:
    return seq[r.randint(0, len(seq) - 1)]


def some_bytes(r: Choices, n: int) -> bytes:
    return bytes(r.randint(0, 255) for _ in range(n))


def payload(r: Choices) -> bytes:
    """A harmless program that imports something no allowlist passes (``os.system('true')``)."""
    proto = pick(r, [0, 1, 2, 4])
    if proto == 0:
        return b"cos\nsystem\n(S'true'\ntR."
    if proto == 4:
        return b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R."
    return b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R."


def _interesting(r: Choices, old: int, width: int) -> int:
    top = (1 << (8 * width)) - 1
    return pick(
        r,
        [0, 1, old + 1, max(old - 1, 0), old + r.randint(1, 64), top, top >> 1, 0x10,
         r.randint(0, top)],
    ) & top  # fmt: skip


# ---------------------------------------------------------------------------------------------
# zip


@dataclass
class Entry:
    cd_offset: int
    name: bytes
    method: int
    csize: int
    usize: int
    local: int
    """Local header offset as written (relative to the archive start)."""


@dataclass
class ZipLayout:
    eocd: int
    count: int
    cd_size: int
    cd_offset: int
    entries: list[Entry]


def parse_zip(data: bytes) -> ZipLayout | None:
    """The layout as a writer would have made it: last end record, entries in order."""
    eocd = data.rfind(b"PK\x05\x06")
    if eocd < 0 or eocd + 22 > len(data):
        return None
    _, _, _, _, count, cd_size, cd_offset, _ = struct.unpack_from("<4sHHHHIIH", data, eocd)
    entries = []
    pos = cd_offset
    for _ in range(count):
        if data[pos : pos + 4] != b"PK\x01\x02" or pos + 46 > len(data):
            break
        f = struct.unpack_from("<4sHHHHHHIIIHHHHHII", data, pos)
        nlen, xlen, clen = f[10], f[11], f[12]
        entries.append(Entry(pos, data[pos + 46 : pos + 46 + nlen], f[4], f[8], f[9], f[16]))
        pos += 46 + nlen + xlen + clen
    return ZipLayout(eocd, count, cd_size, cd_offset, entries)


def _put(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


_EOCD_FIELDS = [(4, "<H"), (6, "<H"), (8, "<H"), (10, "<H"), (12, "<I"), (16, "<I"), (20, "<H")]
_CD_FIELDS = [
    (6, "<H"), (8, "<H"), (10, "<H"), (16, "<I"), (20, "<I"), (24, "<I"), (28, "<H"),
    (30, "<H"), (32, "<H"), (34, "<H"), (36, "<H"), (38, "<I"), (42, "<I"),
]  # fmt: skip
_LOCAL_FIELDS = [(6, "<H"), (8, "<H"), (14, "<I"), (18, "<I"), (22, "<I"), (26, "<H"), (28, "<H")]


def zip_eocd_field(data: bytes, r: Choices) -> bytes | None:
    z = parse_zip(data)
    if z is None:
        return None
    off, fmt = pick(r, _EOCD_FIELDS)
    old = struct.unpack_from(fmt, data, z.eocd + off)[0]
    return _put(data, z.eocd + off, fmt, _interesting(r, old, struct.calcsize(fmt)))


def zip_cd_field(data: bytes, r: Choices) -> bytes | None:
    z = parse_zip(data)
    if z is None or not z.entries:
        return None
    e = pick(r, z.entries)
    off, fmt = pick(r, _CD_FIELDS)
    old = struct.unpack_from(fmt, data, e.cd_offset + off)[0]
    if off == 38 and r.randint(0, 1):  # external attributes: the DOS directory bit
        return _put(data, e.cd_offset + off, fmt, old | 0x10)
    return _put(data, e.cd_offset + off, fmt, _interesting(r, old, struct.calcsize(fmt)))


def zip_local_field(data: bytes, r: Choices) -> bytes | None:
    z = parse_zip(data)
    if z is None or not z.entries:
        return None
    e = pick(r, z.entries)
    if data[e.local : e.local + 4] != b"PK\x03\x04":
        return None
    off, fmt = pick(r, _LOCAL_FIELDS)
    old = struct.unpack_from(fmt, data, e.local + off)[0]
    return _put(data, e.local + off, fmt, _interesting(r, old, struct.calcsize(fmt)))


def _case(r: Choices, name: bytes) -> bytes:
    chars = bytearray(name)
    for _ in range(r.randint(1, 4)):
        i = r.randint(0, max(len(chars) - 1, 0))
        if chars and 97 <= chars[i] <= 122:
            chars[i] -= 32
        elif chars and 65 <= chars[i] <= 90:
            chars[i] += 32
    return bytes(chars)


def zip_rename(data: bytes, r: Choices) -> bytes | None:
    """Change a central (or local) name in place, same length: case, NUL, slash, another's name."""
    z = parse_zip(data)
    if z is None or not z.entries:
        return None
    e = pick(r, z.entries)
    at = pick(r, ["cd", "cd", "local"])
    how = r.randint(0, 3)
    name = e.name
    if how == 0:
        new = _case(r, name)
    elif how == 1 and name:
        i = r.randint(0, len(name) - 1)
        new = name[:i] + pick(r, [b"\0", b"/", b"\\", b".", b" "]) + name[i + 1 :]
    else:
        same = [o.name for o in z.entries if len(o.name) == len(name) and o.name != name]
        new = pick(r, same) if same else _case(r, name)
    if at == "cd":
        start = e.cd_offset + 46
    else:
        if data[e.local : e.local + 4] != b"PK\x03\x04":
            return None
        if struct.unpack_from("<H", data, e.local + 26)[0] != len(name):
            return None
        start = e.local + 30
    return data[:start] + new + data[start + len(name) :]


def _rebuild(
    members: list[tuple[bytes, bytes, int]],
    *,
    prefix: bytes = b"",
    extra_cd: list[bytes] | None = None,
) -> bytes:
    """A fresh zip of (name, data, method) with offsets relative to the archive start."""
    out = bytearray(prefix)
    cd = bytearray()
    for name, raw, method in members:
        body = raw
        if method == 8:
            co = zlib.compressobj(6, zlib.DEFLATED, -15)
            body = co.compress(raw) + co.flush()
        crc = zlib.crc32(raw)
        off = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc,
                           len(body), len(raw), len(name), 0)  # fmt: skip
        out += name + body
        cd += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc,
                          len(body), len(raw), len(name), 0, 0, 0, 0, 0, off)  # fmt: skip
        cd += name
    for raw_cd in extra_cd or []:
        cd += raw_cd
    n = len(members) + len(extra_cd or [])
    cd_off = len(out)
    out += cd
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(cd), cd_off, 0)
    return bytes(out)


def zip_members(data: bytes) -> list[tuple[bytes, bytes, int]] | None:
    """(name, uncompressed data, method) of every entry a writer's layout describes."""
    z = parse_zip(data)
    if z is None or not z.entries:
        return None
    out = []
    for e in z.entries:
        if data[e.local : e.local + 4] != b"PK\x03\x04":
            return None
        nlen, xlen = struct.unpack_from("<HH", data, e.local + 26)
        start = e.local + 30 + nlen + xlen
        body = data[start : start + e.csize]
        if e.method == 8:
            try:
                body = zlib.decompressobj(-15).decompress(body)
            except zlib.error:
                return None
        elif e.method != 0:
            return None
        out.append((e.name, body, e.method))
    return out


def zip_add_twin(data: bytes, r: Choices) -> bytes | None:
    """Add an entry named like an existing one (same, other case, other root) holding a payload."""
    members = zip_members(data)
    if not members:
        return None
    name, raw, _ = pick(r, members)
    how = r.randint(0, 3)
    twin = (
        name
        if how == 0
        else _case(r, name)
        if how == 1
        else name.upper()
        if how == 2
        else (b"x" + name)
    )
    body = payload(r) if r.randint(0, 2) else raw
    at = r.randint(0, len(members))
    members = [*members[:at], (twin, body, pick(r, [0, 8])), *members[at:]]
    return _rebuild(members)


def zip_recompress(data: bytes, r: Choices) -> bytes | None:
    """Store a member deflated (or the other way round), or with a method torch cannot read."""
    members = zip_members(data)
    if not members:
        return None
    i = r.randint(0, len(members) - 1)
    name, raw, method = members[i]
    members[i] = (name, raw, 0 if method == 8 else 8)
    out = _rebuild(members)
    if r.randint(0, 3) == 0:
        z = parse_zip(out)
        assert z is not None
        out = _put(out, z.entries[i].cd_offset + 10, "<H", pick(r, [1, 9, 12, 14, 93, 99]))
    return out


def zip_replace_member(
    data: bytes, r: Choices, mutate: Callable[[bytes, Choices], bytes | None]
) -> bytes | None:
    """Rewrite the archive with one member's content mutated (e.g. data.pkl's pickle)."""
    members = zip_members(data)
    if not members:
        return None
    pkls = [i for i, m in enumerate(members) if m[0].endswith(b".pkl")] or list(range(len(members)))
    i = pick(r, pkls)
    new = mutate(members[i][1], r)
    if new is None:
        return None
    members[i] = (members[i][0], new, members[i][2])
    return _rebuild(members)


def zip_prepend_append(data: bytes, r: Choices) -> bytes | None:
    """Bytes before or after the archive; a second archive; a second end record."""
    how = r.randint(0, 4)
    if how == 0:
        return some_bytes(r, r.randint(1, 64)) + data
    if how == 1:
        return data + some_bytes(r, r.randint(1, 64))
    if how == 2:
        members = zip_members(data)
        if not members:
            return None
        evil = [(n, payload(r) if n.endswith(b".pkl") else b, m) for n, b, m in members]
        return data + _rebuild(evil)
    z = parse_zip(data)
    if z is None:
        return None
    eocd = data[z.eocd : z.eocd + 22]
    if how == 3:
        return data + eocd
    # a prefix, with the directory offset shifted the way zipfile would expect it or not
    pre = b"PK\x03\x04" + some_bytes(r, r.randint(0, 40))
    return pre + data


def zip_zip64(data: bytes, r: Choices) -> bytes | None:
    """Add a zip64 end record and locator whose fields may disagree with the 32-bit ones."""
    z = parse_zip(data)
    if z is None:
        return None
    count = z.count if r.randint(0, 1) else max(z.count + pick(r, [-1, 1]), 0)
    cd_off = z.cd_offset if r.randint(0, 1) else z.cd_offset + pick(r, [-1, 1, 30])
    rec_at = z.eocd
    rec = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, z.cd_size,
                      cd_off)  # fmt: skip
    loc_target = rec_at if r.randint(0, 2) else rec_at + pick(r, [-4, 8, 1 << 20])
    loc = struct.pack("<4sIQI", b"PK\x06\x07", 0, loc_target, 1)
    eocd = bytearray(data[z.eocd : z.eocd + 22])
    if r.randint(0, 1):
        struct.pack_into("<HHII", eocd, 8, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    return data[: z.eocd] + rec + loc + bytes(eocd) + data[z.eocd + 22 :]


def zip_extra_field(data: bytes, r: Choices) -> bytes | None:
    """Give one local header an extra field (the data moves) and maybe not its central entry."""
    members = zip_members(data)
    if not members:
        return None
    out = _rebuild(members)
    z = parse_zip(out)
    assert z is not None
    e = pick(r, z.entries)
    extra = struct.pack("<HH", pick(r, [0x0001, 0x5455, 0xCAFE]), 4) + some_bytes(r, 4)
    nlen = len(e.name)
    ins = e.local + 30 + nlen
    out = _put(out, e.local + 28, "<H", len(extra))
    shift = len(extra)
    body = out[:ins] + extra + out[ins:]
    # every later offset moves; fix the central directory unless asked not to
    fixed = bytearray(body)
    z2 = parse_zip(bytes(fixed))
    if z2 is None:
        return None
    if r.randint(0, 3):
        for o in z2.entries:
            if o.local > e.local:
                struct.pack_into("<I", fixed, o.cd_offset + 42, o.local + shift)
        struct.pack_into("<I", fixed, z2.eocd + 16, z2.cd_offset + shift)
    return bytes(fixed)


_RECORD_VALUES = {
    b"byteorder": [b"big", b"little", b"LITTLE", b"little\n", b""],
    b"version": [b"3", b" 3junk", b"11", b"0", b"3\n", b"1"],
    b".format_version": [b"1", b"A", b"0", b""],
    b".storage_alignment": [b"64", b"0", b"x"],
}


def zip_record_value(data: bytes, r: Choices) -> bytes | None:
    """Give a small record torch interprets (byteorder, version...) another value, or drop it."""
    members = zip_members(data)
    if not members:
        return None
    spots = [i for i, m in enumerate(members) if m[0].rsplit(b"/", 1)[-1] in _RECORD_VALUES]
    if not spots:
        return None
    i = pick(r, spots)
    name, _, method = members[i]
    if r.randint(0, 5) == 0:
        del members[i]
    else:
        members[i] = (name, pick(r, _RECORD_VALUES[name.rsplit(b"/", 1)[-1]]), method)
    return _rebuild(members)


ZIP_MUTATORS: list[Callable[[bytes, Choices], bytes | None]] = [
    zip_eocd_field, zip_cd_field, zip_local_field, zip_rename, zip_add_twin, zip_recompress,
    zip_prepend_append, zip_zip64, zip_extra_field, zip_record_value,
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# pickles


def _int_text(r: Choices, value: int) -> bytes:
    forms = [
        str(value).encode(), hex(value).encode(), hex(value).upper().encode(),
        oct(value).encode(), b"0" + oct(value)[2:].encode(), b" " + str(value).encode(),
        b"+" + str(value).encode(), str(value).encode() + b"\0junk",
        f"{value:_}".encode(), bin(value).encode(),
    ]  # fmt: skip
    return pick(r, forms)


def pickle_int_forms(data: bytes, r: Choices) -> bytes | None:
    """Re-encode one binary int (BININT*/LONG1) as INT/LONG text in a form CPython accepts."""
    from gpenguard.pickling.opcodes import Decoder

    spots = []

    try:
        for op in itertools.islice(Decoder(memoryview(data), 0), 20_000):
            if op.name in ("BININT", "BININT1", "BININT2", "LONG1"):
                spots.append((op.offset, op.end, op.arg))
            if op.name == "STOP":
                break
    except Exception:
        pass
    if not spots:
        return None
    start, end, value = pick(r, spots)
    if not isinstance(value, int):
        return None
    code = b"L" if r.randint(0, 2) == 0 else b"I"
    text = _int_text(r, value) + (b"L" if code == b"L" and r.randint(0, 1) else b"")
    return data[:start] + code + text + b"\n" + data[end:]


def pickle_frame(data: bytes, r: Choices) -> bytes | None:
    """Frame the program (protocol 4): honestly, or with a length that cuts an opcode in two."""
    if not data or data[:2] not in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        return None
    body = data[2:]
    cut = r.randint(0, len(body))
    first, rest = body[:cut], body[cut:]
    length = len(first) + pick(r, [0, 0, -1, 1, r.randint(-8, 8)])
    length = max(length, 0)
    out = b"\x80\x04\x95" + struct.pack("<Q", length) + first
    if rest:
        out += b"\x95" + struct.pack("<Q", len(rest)) + rest
    return out


def pickle_memo(data: bytes, r: Choices) -> bytes | None:
    """Swap memo forms: BINPUT -> MEMOIZE / LONG_BINPUT / PUT, BINGET -> GET (text)."""
    from gpenguard.pickling.opcodes import Decoder

    spots = []
    try:
        for op in itertools.islice(Decoder(memoryview(data), 0), 20_000):
            if op.name in ("BINPUT", "BINGET", "LONG_BINPUT", "LONG_BINGET"):
                spots.append((op.offset, op.end, op.name, op.arg))
            if op.name == "STOP":
                break
    except Exception:
        pass
    if not spots:
        return None
    start, end, name, arg = pick(r, spots)
    put = "PUT" in name
    how = r.randint(0, 3)
    if how == 0:
        new = (b"p" if put else b"g") + _int_text(r, arg) + b"\n"
    elif how == 1:
        new = (b"r" if put else b"j") + struct.pack("<I", arg)
    elif how == 2 and put:
        new = b"\x94"
    else:
        new = (b"q" if put else b"h") + bytes([(arg + r.randint(0, 2)) & 0xFF])
    return data[:start] + new + data[end:]


def pickle_stop(data: bytes, r: Choices) -> bytes | None:
    """Move STOP: an early STOP, or bytes (a second program) after it."""
    how = r.randint(0, 2)
    if how == 0 and len(data) > 2:
        i = r.randint(1, len(data) - 1)
        return data[:i] + b"." + data[i:]
    if how == 1:
        return data + payload(r)
    return data + some_bytes(r, r.randint(1, 16))


def pickle_global_line(data: bytes, r: Choices) -> bytes | None:
    """Replace a binary-string global (STACK_GLOBAL) or append a GLOBAL whose line ends oddly."""
    idx = data.find(b"c")
    if idx < 0:
        return None
    line = pick(r, [b"cos\nsystem\n", b"cos\nsystem\r\n", b"ctorch._utils\n_rebuild_tensor_v2 \n"])
    return data[:idx] + line + b"0" + data[idx:]


PICKLE_MUTATORS: list[Callable[[bytes, Choices], bytes | None]] = [
    pickle_int_forms, pickle_frame, pickle_memo, pickle_stop, pickle_global_line,
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# legacy stream


def legacy_programs(data: bytes) -> list[tuple[int, int]] | None:
    """(start, end) of the five programs, as CPython's unpickler finds them (inertly)."""
    from tests.differential.inert import run_pickle

    f = io.BytesIO(data)
    spans = []
    for _ in range(5):
        run = run_pickle(f)
        if run.end is None:
            return None
        spans.append((run.start, run.end))
    return spans


def _magic_program(r: Choices, value: int) -> bytes:
    text = _int_text(r, value)
    return pick(
        r,
        [
            b"I" + text + b"\n.",
            b"L" + text + b"L\n.",
            b"L" + text + b"\n.",
            b"\x80\x02I" + text + b"\n.",
            b"\x80\x04\x95" + struct.pack("<Q", len(text) + 3) + b"I" + text + b"\n.",
            pickle.dumps(value, protocol=pick(r, [0, 1, 2, 3, 4, 5])),
        ],
    )


def legacy_record(data: bytes, r: Choices) -> bytes | None:
    """Re-encode the magic number or protocol version, or swap sys_info, in another form."""
    spans = legacy_programs(data)
    if spans is None:
        return None
    which = r.randint(0, 2)
    start, end = spans[which]
    if which == 0:
        new = _magic_program(r, MAGIC_NUMBER)
    elif which == 1:
        new = _magic_program(r, 1001)
    else:
        info = {"protocol_version": 1001, "little_endian": bool(r.randint(0, 1)),
                "type_sizes": {"short": 2, "int": 4, "long": 4}}  # fmt: skip
        new = pickle.dumps(info, protocol=pick(r, [0, 2, 4])) if r.randint(0, 2) else payload(r)
    return data[:start] + new + data[end:]


def legacy_tail(data: bytes, r: Choices) -> bytes | None:
    """Edit a storage element count, or add bytes or a program between or after records."""
    spans = legacy_programs(data)
    if spans is None:
        return None
    tail = spans[-1][1]
    how = r.randint(0, 3)
    if how == 0 and tail + 8 <= len(data):
        old = struct.unpack_from("<q", data, tail)[0]
        return _put(data, tail, "<q", old + pick(r, [-1, 1, 2, -old, 1 << 40]))
    if how == 1:
        return data + payload(r)
    if how == 2:
        at = pick(r, [s for s, _ in spans] + [tail])
        return data[:at] + payload(r) + data[at:]
    start, end = spans[pick(r, [0, 1, 2, 3, 4])]
    mutated = pick(r, PICKLE_MUTATORS)(data[start:end], r)
    return None if mutated is None else data[:start] + mutated + data[end:]


LEGACY_MUTATORS: list[Callable[[bytes, Choices], bytes | None]] = [legacy_record, legacy_tail]


# ---------------------------------------------------------------------------------------------
# tar


def _tar_headers(data: bytes) -> list[int]:
    offs = []
    pos = 0
    while pos + 512 <= len(data) and len(offs) < 64:
        block = data[pos : pos + 512]
        if block == b"\0" * 512:
            break
        offs.append(pos)
        try:
            size = int(block[124:136].replace(b"\0", b" ").strip() or b"0", 8)
        except ValueError:
            break
        pos += 512 + (size + 511) // 512 * 512
    return offs


def _checksum(block: bytearray, r: Choices) -> None:
    block[148:156] = b" " * 8
    unsigned = sum(block)
    signed = sum(struct.unpack("512b", bytes(block)))
    value = unsigned if r.randint(0, 2) else signed
    form = r.randint(0, 3)
    if form == 0:
        field = b"%06o\0 " % value
    elif form == 1:
        field = b"%07o\0" % value
    elif form == 2:
        field = b"%o" % value + b"\0" + b"junk"[: 7 - len(b"%o" % value)]
        field = field[:8].ljust(8, b"\0")
    else:
        field = b" %o  " % value
        field = field[:8].ljust(8, b" ")
    block[148:156] = field[:8]


def tar_header(data: bytes, r: Choices) -> bytes | None:
    """Edit a header's name, size (octal forms, base-256) or type, then re-checksum it."""
    heads = _tar_headers(data)
    if not heads:
        return None
    at = pick(r, heads)
    block = bytearray(data[at : at + 512])
    how = r.randint(0, 3)
    if how == 0:
        name = block[0:100].split(b"\0", 1)[0]
        new = pick(r, [b"pickle", b"storages", b"tensors", b"sys_info", name + b"/", b"./" + name,
                       name.upper()])  # fmt: skip
        block[0:100] = new[:100].ljust(100, b"\0")
    elif how == 1:
        size = int(block[124:136].replace(b"\0", b" ").strip() or b"0", 8)
        new_size = size + pick(r, [0, 0, -1, 1, 512])
        form = r.randint(0, 3)
        if form == 0:
            field = b"\x80" + max(new_size, 0).to_bytes(11, "big")
        elif form == 1:
            field = (b"0o%o" % max(new_size, 0)).ljust(11, b" ") + b"\0"
        elif form == 2:
            field = (b"%o" % max(new_size, 0)) + b"\0"
            field = field.rjust(12, b"0")
        else:
            field = (b"%011o" % max(new_size, 0)) + b"\0"
        block[124:136] = field[:12].ljust(12, b"\0")
    elif how == 2:
        block[156:157] = pick(r, [b"0", b"\0", b"x", b"g", b"L", b"5"])
    _checksum(block, r)
    if how == 3:  # only the checksum's form changes
        pass
    return data[:at] + bytes(block) + data[at + 512 :]


def tar_add_member(data: bytes, r: Choices) -> bytes | None:
    """Append (before the end blocks) a member whose name repeats one, or a pax name override."""
    heads = _tar_headers(data)
    if not heads:
        return None
    end = heads[-1]
    last = data[end : end + 512]
    try:
        size = int(last[124:136].replace(b"\0", b" ").strip() or b"0", 8)
    except ValueError:
        return None
    stop = end + 512 + (size + 511) // 512 * 512
    buf = io.BytesIO()
    name = pick(r, ["pickle", "storages", "tensors", "sys_info", "PICKLE", "pickle/"])
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        body = payload(r)
        info = tarfile.TarInfo(name if r.randint(0, 1) else "innocent")
        if info.name == "innocent":
            info.pax_headers = {"path": name}
        info.size = len(body)
        tf.addfile(info, io.BytesIO(body))
    extra = buf.getvalue()
    extra = extra[: len(extra) - 1024] if len(extra) > 1024 else extra
    at = pick(r, [stop, heads[0]])
    return data[:at] + extra + data[at:]


TAR_MUTATORS: list[Callable[[bytes, Choices], bytes | None]] = [tar_header, tar_add_member]


# ---------------------------------------------------------------------------------------------
# dispatch


def generic(data: bytes, r: Choices) -> bytes | None:
    """A plain byte edit somewhere: flip, insert, delete, or duplicate a slice."""
    if not data:
        return some_bytes(r, 8)
    i = r.randint(0, len(data) - 1)
    how = r.randint(0, 3)
    if how == 0:
        return data[:i] + bytes([data[i] ^ (1 << r.randint(0, 7))]) + data[i + 1 :]
    if how == 1:
        return data[:i] + some_bytes(r, r.randint(1, 8)) + data[i:]
    if how == 2:
        return data[:i] + data[i + r.randint(1, 8) :]
    j = r.randint(i, min(len(data), i + 64))
    return data[:j] + data[i:j] + data[j:]


def mutators_for(data: bytes) -> list[Callable[[bytes, Choices], bytes | None]]:
    if data[:4] == b"PK\x03\x04":
        return [*ZIP_MUTATORS, lambda d, r: zip_replace_member(d, r, pick(r, PICKLE_MUTATORS))]
    if len(data) >= 512 and b"ustar" in data[257:265]:
        return TAR_MUTATORS
    if legacy_programs(data) is not None:
        return LEGACY_MUTATORS + PICKLE_MUTATORS
    return PICKLE_MUTATORS


def mutate(data: bytes, r: Choices, rounds: int = 1) -> bytes:
    """`rounds` structural mutations (a plain byte edit one time in eight)."""
    for _ in range(rounds):
        options = mutators_for(data)
        fn = generic if r.randint(0, 7) == 0 else pick(r, options)
        try:
            new = fn(data, r)
        except (struct.error, ValueError, IndexError, OverflowError, TypeError):
            new = None
        if new is not None:
            data = new
    return data


def seeded(seed: int) -> random.Random:
    return random.Random(seed)
