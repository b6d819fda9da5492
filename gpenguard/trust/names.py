"""Whether a file name is a look-alike of a registry entry's file name.

Under the default policy an unknown file passes with a warning, so a tampered
``GPEN-BFR-2048.pth`` must not escape its entry by a rename that a person would not notice:
another case, a homoglyph (Cyrillic ``Р`` for Latin ``P``), a full-width or zero-width
character, or a suffix (``GPEN-BFR-2048 (1).pth``, ``GPEN-BFR-2048.pth.bak``). Homoglyphs come
from the Unicode confusables data as packaged by ``confusable-homoglyphs``.
"""

from __future__ import annotations

import functools
import unicodedata

from confusable_homoglyphs import confusables

MIN_STEM = 3
"""Shortest entry stem matched as a prefix; shorter ones (``g.pth``) would catch everything."""


def skeleton(name: str) -> str:
    """`name` as a reader sees it: NFKC, without format characters, each look-alike class as one character."""
    text = "".join(c for c in unicodedata.normalize("NFKC", name) if unicodedata.category(c) != "Cf")
    return "".join(_canonical(c) for c in text)


@functools.lru_cache(maxsize=4096)
def _canonical(char: str) -> str:
    """The least member of `char`'s class: closed over upper/lower case and ASCII look-alikes.

    The confusables data is one-directional and case-sensitive (``O`` lists ``0``, ``o`` lists
    nothing; Cyrillic ``о`` lists ``o``), so the class is grown until it stops changing:
    Cyrillic ``о``, ``o``, ``O`` and ``0`` all become ``0``.
    """
    seen = {char}
    todo = [char]
    while todo:
        c = todo.pop()
        found = confusables.is_confusable(c, greedy=True, preferred_aliases=[]) or []
        alike = {h["c"] for hit in found for h in hit["homoglyphs"]}
        nxt = {c.lower(), c.upper(), *(a for a in alike if len(a) == 1 and a.isascii() and a.isalnum())}
        for n in nxt:
            if len(n) == 1 and n not in seen:
                seen.add(n)
                todo.append(n)
    return min(seen)


def resembles(candidate: str, entry_file: str) -> bool:
    """Whether `candidate` is `entry_file` seen loosely: the same skeleton, or its stem plus a suffix."""
    if candidate == entry_file:
        return True
    seen, listed = skeleton(candidate), skeleton(entry_file)
    if seen == listed:
        return True
    stem = listed.split(".", 1)[0]
    return len(stem) >= MIN_STEM and seen.startswith(stem)
