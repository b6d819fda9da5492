"""Scan entry points: container -> pickle walks -> findings -> verdict per file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from gpenguard import __version__
from gpenguard.errors import GpenguardError, InputError
from gpenguard.findings import FileReport, Finding, ScanReport, Severity, Verdict
from gpenguard.formats.container import Container, Format, Limits, PickleStream, read_container
from gpenguard.formats.source import Source
from gpenguard.formats.tar import ELEMENT_SIZE
from gpenguard.formats.ziparchive import LazyStorages
from gpenguard.pickling import crosscheck
from gpenguard.pickling.walker import Global, WalkResult, render, walk
from gpenguard.policy import Policy
from gpenguard.rules import RULES, finding
from gpenguard.scan.allowlist import judge, normalize
from gpenguard.trust.hashing import hash_source

_MAX_IMPORT_FINDINGS = 200
"""Distinct refused imports listed per pickle; beyond it, one summary finding."""

# Findings of these rules mean part of the file was not looked at (or not as the loader reads
# it: a frame straddle, a disagreement with CPython's own unpickler); they block under any policy.
_NOT_CHECKED_RULES = frozenset(
    {"GG115", "GG120", "GG121", "GG202", "GG203", "GG204", "GG212", "GG213", "GG306"}
)
_ZIP_FORMATS = frozenset({Format.TORCH_ZIP, Format.ZIP, Format.NUMPY_ZIP})


def _containers(box: Container) -> Iterator[Container]:
    yield box
    for child in box.children:
        yield from _containers(child)


def analyse_stream(
    stream: PickleStream, *, path: str, policy: Policy, limits: Limits
) -> tuple[list[Finding], list[str]]:
    """Findings for one pickle program, and every import it makes (normalised names)."""
    findings, seen, _res = _analyse_stream(stream, path=path, policy=policy, limits=limits)
    return findings, seen


def _analyse_stream(
    stream: PickleStream, *, path: str, policy: Policy, limits: Limits
) -> tuple[list[Finding], list[str], WalkResult | None]:
    base = stream.offset
    if len(stream.data) > limits.max_pickle_bytes:
        msg = f"pickle of {len(stream.data)} bytes exceeds the {limits.max_pickle_bytes}-byte bound; not analysed"
        return [finding("GG115", msg, path=path, member=stream.member, offset=base)], [], None
    # the record, not just up to the STOP found: a FRAME may claim bytes beyond it (GG120)
    res = walk(stream.record if stream.record is not None else stream.data, 0, limits.walk_limits())
    out: list[Finding] = [
        finding(
            p.rule_id,
            p.message,
            path=path,
            member=stream.member,
            offset=base + p.offset,
            global_name=p.global_name,
            call=p.call,
        )
        for p in res.problems
    ]
    seen: list[str] = []
    by_name: dict[str, list[Global]] = {}
    for g in res.imports:
        name = normalize(g.module, g.name)
        if name not in by_name:
            seen.append(name)
        by_name.setdefault(name, []).append(g)
    refused = 0
    for name, uses in by_name.items():
        first = uses[0]
        verdict = judge(first.module, first.name, policy)
        if verdict is None:
            continue
        refused += 1
        if refused > _MAX_IMPORT_FINDINGS:
            # Still blocks (the worst one is listed); thousands of distinct names add nothing.
            continue
        called = next((g for g in uses if g.first_call is not None), None)
        raw = f"{first.module}.{first.name}"
        alias = f" (as {raw})" if raw != name else ""
        times = f"; imported {len(uses)} times" if len(uses) > 1 else ""
        out.append(
            finding(
                verdict.rule_id,
                f"imports {name}{alias} via {first.via}: {verdict.reason}{times}",
                path=path,
                member=stream.member,
                offset=base + first.offset,
                global_name=name,
                call=render(called.first_call)
                if called is not None and called.first_call is not None
                else None,
                severity=verdict.severity,
            )
        )
    if refused > _MAX_IMPORT_FINDINGS:
        worst = max((f for f in out if f.global_name), key=lambda f: f.severity)
        note = f"{refused - _MAX_IMPORT_FINDINGS} more refused imports not listed; the first {_MAX_IMPORT_FINDINGS} are"
        out.append(
            finding(
                worst.rule_id,
                note,
                path=path,
                member=stream.member,
                offset=base,
                severity=worst.severity,
            )
        )
    return out, seen, res


def _check_storages(box: Container, stream: PickleStream, res: WalkResult) -> list[Finding]:
    """Persistent ids of a torch zip's data.pkl against its ``data/<key>`` records."""
    if not isinstance(box.storages, LazyStorages):
        return []
    storages = box.storages
    out: list[Finding] = []
    referenced: set[str] = set()
    for pid in res.pids:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            continue
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(key, str):
            continue
        referenced.add(key)
        if key not in storages:
            msg = f"the pickle refers to storage {key!r}, which the archive lacks"
            out.append(
                finding("GG307", msg, path=box.path, member=stream.member, offset=stream.offset)
            )
            continue
        size = ELEMENT_SIZE.get(kind.name) if isinstance(kind, Global) else None
        if size is not None and isinstance(numel, int) and numel * size != storages.nbytes(key):
            msg = f"storage {key!r} holds {storages.nbytes(key)} bytes; the pickle expects {numel} x {size}"
            out.append(
                finding("GG307", msg, path=box.path, member=stream.member, offset=stream.offset)
            )
    if not res.complete:
        return out  # a walk cut short has not seen every reference
    prefix = f"{box.member}!" if box.member else ""
    out.extend(
        finding(
            "GG307",
            "storage record no tensor refers to (data torch never reads)",
            path=box.path,
            member=f"{prefix}{box.root}/data/{key}",
            offset=0,
            severity=Severity.LOW,
        )
        for key in sorted(set(storages) - referenced)[:100]
    )
    return out


def analyse(
    box: Container,
    *,
    policy: Policy,
    limits: Limits,
    whole: memoryview | None = None,
    cross_check: bool = True,
) -> tuple[list[Finding], list[str]]:
    """Findings for a container and everything nested in it, and all imports seen.

    With `cross_check`, every pickle walked is also run through CPython's C unpickler with
    inert globals (`gpenguard.pickling.crosscheck`); `whole` is the file the top-level
    container was read from, for streams that know no record of their own (legacy).
    """
    findings: list[Finding] = []
    seen: dict[str, None] = {}
    walked: list[tuple[Container, PickleStream, WalkResult]] = []
    for sub in _containers(box):
        findings.extend(sub.findings)
        for stream in sub.pickles:
            found, names, res = _analyse_stream(stream, path=box.path, policy=policy, limits=limits)
            findings.extend(found)
            seen.update(dict.fromkeys(names))
            if res is not None:
                walked.append((sub, stream, res))
            main = sub.main_pickle  # what torch finds as data.pkl (its lookup ignores case)
            if (
                res is not None
                and main
                and stream.index == 0
                and (stream.member or "").endswith(main)
            ):
                findings.extend(_check_storages(sub, stream, res))
    if cross_check:
        findings.extend(_cross_check(box.path, walked, whole))
    return findings, list(seen)


def _cross_check(
    path: str, walked: list[tuple[Container, PickleStream, WalkResult]], whole: memoryview | None
) -> list[Finding]:
    """CPython's C unpickler over the same bytes, fed as the loader feeds them (GG121)."""
    jobs: list[crosscheck.Job] = []
    owners: list[PickleStream] = []
    results: list[WalkResult] = []
    for sub, stream, res in walked:
        record = stream.record
        if record is None:
            top = whole is not None and sub.member is None and stream.member is None
            record = whole[stream.offset :] if top and whole is not None else stream.data
        primary = crosscheck.BYTESIO if sub.format in _ZIP_FORMATS else crosscheck.FILE
        for feed in crosscheck.feeds_for(primary, res):
            jobs.append(crosscheck.Job(record, feed, weight=len(stream.data)))
            owners.append(stream)
            results.append(res)
    if not jobs:
        return []
    try:
        readings = crosscheck.run(jobs)
    except crosscheck.CrossCheckError as exc:
        first = owners[0]
        msg = f"cross-check with CPython's unpickler not done: {exc}"
        return [finding("GG121", msg, path=path, member=first.member, offset=first.offset)]
    out: list[Finding] = []
    for stream, res, reading in zip(owners, results, readings, strict=True):
        out.extend(
            finding(
                p.rule_id,
                p.message,
                path=path,
                member=stream.member,
                offset=stream.offset + p.offset,
                global_name=p.global_name,
            )
            for p in crosscheck.compare(res, reading)
        )
    return out


def _verdict(findings: Sequence[Finding], policy: Policy) -> Verdict:
    """BLOCK at the policy's threshold, and always when part of the file went unchecked."""
    if any(f.severity >= policy.fail_on or f.rule_id in _NOT_CHECKED_RULES for f in findings):
        return Verdict.BLOCK
    return Verdict.PASS


def scan_source(
    source: Source,
    *,
    policy: Policy | None = None,
    limits: Limits | None = None,
    cross_check: bool = True,
) -> FileReport:
    """Scan the bytes of an open `Source`; unreadable content yields an ERROR report.

    `cross_check=False` skips the CPython second opinion (for measuring its cost only).
    """
    policy = policy or Policy()
    limits = limits or Limits()
    try:
        box = read_container(source, limits=limits)
        findings, seen = analyse(
            box, policy=policy, limits=limits, whole=source.buf, cross_check=cross_check
        )
    except GpenguardError as exc:
        return FileReport(
            path=source.name, verdict=Verdict.ERROR, size=source.size, error=exc.message
        )
    except RecursionError:
        return FileReport(
            path=source.name,
            verdict=Verdict.ERROR,
            size=source.size,
            error="structure nests too deeply to analyse",
        )
    except Exception as exc:  # a scanner bug must fail closed, never read as clean
        why = f"internal scanner error ({type(exc).__name__}: {exc}); the file was not checked"
        return FileReport(path=source.name, verdict=Verdict.ERROR, size=source.size, error=why)
    not_checked = tuple(
        f"{f.member + ': ' if f.member else ''}{f.message}"
        for f in findings
        if f.rule_id in _NOT_CHECKED_RULES
    )
    return FileReport(
        path=source.name,
        verdict=_verdict(findings, policy),
        format=box.format.value,
        size=source.size,
        findings=tuple(findings),
        not_checked=not_checked,
        globals_seen=tuple(seen),
    )


def scan_file(path: str, policy: Policy | None = None, limits: Limits | None = None) -> FileReport:
    """Map one file, scan it and hash the same mapping."""
    try:
        src = Source.open(path)
    except InputError as exc:
        return FileReport(path=path, verdict=Verdict.ERROR, error=exc.message)
    with src:
        report = scan_source(src, policy=policy, limits=limits)
        digest = hash_source(src)  # the same mapping, streamed with flat memory
    return _with(report, sha256=digest.sha256, size=digest.size)


def _with(report: FileReport, **changes: object) -> FileReport:
    import dataclasses

    return dataclasses.replace(report, **changes)  # type: ignore[arg-type]


def expand(paths: Sequence[str | Path], *, recursive: bool) -> list[str]:
    """Files named by `paths`, directories expanded (sorted) in input order; missing kept.

    Nothing in a directory is dropped unseen (fail closed): a FIFO, a dangling link or a link
    loop is listed and its scan reports why it cannot be read, and a directory that cannot be
    listed is listed itself, so its scan reports the error. Only subdirectories are left out
    (all of them without `recursive`; links to directories, which are not followed, with it).
    """
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if _is_dir(path):
            out.extend(str(f) for f in sorted(_listing(path, recursive=recursive)))
        else:
            out.append(str(path))
    return out


def _listing(directory: Path, *, recursive: bool) -> list[Path]:
    """Every non-directory entry under `directory`, and each directory that cannot be listed."""
    found: list[Path] = []
    if recursive:
        # os.walk does not follow directory symlinks, so a link loop cannot recurse forever
        unlisted: list[Path] = []
        walk = os.walk(directory, onerror=lambda e: unlisted.append(Path(e.filename)))
        found.extend(Path(d) / n for d, _subdirs, names in walk for n in names)
        return found + unlisted
    try:
        found.extend(f for f in directory.iterdir() if not _is_dir(f))
    except OSError:
        found.append(directory)
    return found


def _is_dir(path: Path) -> bool:
    """A directory (following links); anything that cannot be stat'ed is scanned, not skipped."""
    try:
        return path.is_dir()
    except OSError:
        return False


_POOL_MIN_BYTES = 32 * 2**20


def _auto_workers(files: Sequence[str]) -> int:
    """One process per core for real work; inline when a pool would cost more than it saves.

    Starting workers costs about a second; a directory of small files scans faster inline.
    """
    total = 0
    for f in files:
        with contextlib.suppress(OSError):
            total += Path(f).stat().st_size
    if len(files) < 2 or total < _POOL_MIN_BYTES:
        return 1
    return min(len(files), os.cpu_count() or 1)


def scan_paths(
    paths: Sequence[str | Path],
    *,
    recursive: bool = False,
    policy: Policy | None = None,
    limits: Limits | None = None,
    jobs: int | None = None,
    on_file: Callable[[FileReport], None] | None = None,
) -> ScanReport:
    """Scan files in parallel processes (inline for one file); reports keep input order."""
    policy = policy or Policy()
    limits = limits or Limits()
    files = expand(paths, recursive=recursive)
    workers = jobs if jobs is not None else _auto_workers(files)
    reports: list[FileReport | None] = [None] * len(files)
    if workers <= 1 or len(files) <= 1:
        for i, f in enumerate(files):
            reports[i] = scan_file(f, policy, limits)
            if on_file is not None:
                on_file(reports[i])  # type: ignore[arg-type]
    else:
        # forkserver: workers never inherit the caller's threads or locks (a forked copy of a
        # multi-threaded parent can deadlock), and start far faster than spawned interpreters.
        import multiprocessing  # NOTE: only a multi-file scan pays for these imports
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("forkserver")
        ) as pool:
            futures = {pool.submit(scan_file, f, policy, limits): i for i, f in enumerate(files)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    rep = fut.result()
                except Exception as exc:
                    rep = FileReport(
                        path=files[i], verdict=Verdict.ERROR, error=f"scanner failed: {exc!r}"
                    )
                reports[i] = rep
                if on_file is not None:
                    on_file(rep)
    return ScanReport(
        files=tuple(r for r in reports if r is not None),
        tool_version=__version__,
        fail_on=policy.fail_on,
        rules=tuple(RULES.values()),
    )


def scan(
    path: str | Path, *, policy: Policy | None = None, limits: Limits | None = None
) -> ScanReport:
    """One file, or every file under a directory (recursively)."""
    return scan_paths(
        [path],
        recursive=True,
        policy=policy,
        limits=limits,
        jobs=None if _is_dir(Path(path)) else 1,
    )
