"""Every citation of the specification names a section that docs/spec.md has.

Code, tests and docs cite the contract as ``docs/spec.md §4`` (or
``§4, §5 and §13``) and docs link to it as ``spec.md#4-routing-...``; a
renumbered or removed section turns each stale citation into a failure here.
"""

from __future__ import annotations

import re
from typing import Iterable

from twisted.trial import unittest

from tests.text_support import ROOT, project_files, relative

SPEC = ROOT / "docs" / "spec.md"
CITING = ("README.md", "docs/*.md", "symple_tx/**/*.py", "symple_tx/static/**/*.js",
          "tests/**/*.py", "bench/*.py", "twisted/plugins/*.py")

HEADING = re.compile(r"^(#{2,4}) +((\d+(?:\.\d+)*)\.? .*?) *$", re.M)
#: ``spec.md §4``, ``spec.md`` §4, §5 and §13 (a line break may fall anywhere between).
CITATION = re.compile(r"spec\.md`?\s+((?:§\d+(?:\.\d+)*(?:,\s*|\s+and\s+|\s*))+)")
BARE = re.compile(r"§(\d+(?:\.\d+)*)")
LINK = re.compile(r"spec\.md#([\w-]+)")


def anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def sections(spec_text: str) -> tuple[set[str], set[str]]:
    """The spec's section numbers and heading anchors."""
    numbers, anchors = set(), set()
    for match in HEADING.finditer(spec_text):
        numbers.add(match.group(3))
        anchors.add(anchor(match.group(2)))
    return numbers, anchors


def stale(name: str, text: str, numbers: set[str], anchors: set[str],
          bare: bool = False) -> Iterable[str]:
    """Citations in ``text`` that name no section; ``bare``: any §N counts (the spec itself)."""
    cited = ([m.group(1) for m in BARE.finditer(text)] if bare else
             [n for m in CITATION.finditer(text) for n in BARE.findall(m.group(1))])
    for number in cited:
        if number not in numbers:
            yield f"{name}: §{number} is not a section of docs/spec.md"
    for match in LINK.finditer(text):
        if match.group(1) not in anchors:
            yield f"{name}: spec.md#{match.group(1)} is not a heading of docs/spec.md"
    if "PROTOCOL.md" in text:
        yield f"{name}: cites PROTOCOL.md, which is docs/spec.md"


class SpecReferenceTests(unittest.TestCase):
    def test_every_citation_names_a_section(self):
        numbers, anchors = sections(SPEC.read_text(encoding="utf-8"))
        self.assertIn("13", numbers)
        problems: list[str] = []
        cited = 0
        for path in project_files(*CITING):
            if path.name == "test_spec_references.py":
                continue  # its samples are stale on purpose
            text = path.read_text(encoding="utf-8")
            cited += len(CITATION.findall(text))
            problems += stale(relative(path), text, numbers, anchors, bare=path == SPEC)
        self.assertEqual(problems, [], "\n".join(problems))
        self.assertGreater(cited, 20, "the code cites the spec; the pattern must see it")

    def test_a_stale_citation_is_reported(self):
        numbers, anchors = sections("# Spec\n\n## 1. Transport\n\n## 2. Rooms **[ext]**\n")
        self.assertEqual(anchors, {"1-transport", "2-rooms-ext"})
        text = ("see docs/spec.md §1, §2\nand §9; docs/spec.md\n§7 too;"
                " [x](spec.md#2-rooms-ext) [y](spec.md#3-gone) PROTOCOL.md section 4")
        self.assertEqual(list(stale("f", text, numbers, anchors)), [
            "f: §9 is not a section of docs/spec.md",
            "f: §7 is not a section of docs/spec.md",
            "f: spec.md#3-gone is not a heading of docs/spec.md",
            "f: cites PROTOCOL.md, which is docs/spec.md"])
        self.assertEqual(list(stale("spec", "as §2 says; §5 too", numbers, anchors, bare=True)),
                         ["spec: §5 is not a section of docs/spec.md"])
