"""README, docs and bench scripts show commands anyone can run, no path of one machine.

A reader pastes ``python bench/run.py`` after ``pip install -e .[bench]``; a
developer's home directory or virtualenv in a page or a usage text works
nowhere else.
"""

from __future__ import annotations

import re
from typing import Iterable

from twisted.trial import unittest

from tests.text_support import project_files, relative

PAGES = ("README.md", "docs/**/*.md", "docs/examples/*.py", "bench/*.py", ".ci/*", "tox.ini")

#: Home and work directories, and the interpreter of a particular virtualenv.
MACHINE_PATH = re.compile(r"(?<![\w.~-])(?:/(?:work|root|home|Users)/[^\s`'\")]*"
                          r"|/[\w.-]+(?:/[\w.-]+)*/bin/python[\d.]*)")


def machine_paths(name: str, text: str) -> Iterable[str]:
    for number, line in enumerate(text.splitlines(), 1):
        for match in MACHINE_PATH.finditer(line):
            yield f"{name}:{number}: {match.group(0)}"


class DocPathTests(unittest.TestCase):
    def test_no_page_or_script_shows_a_machine_path(self):
        found = [problem for path in project_files(*PAGES)
                 for problem in machine_paths(relative(path), path.read_text(encoding="utf-8"))]
        self.assertEqual(found, [], "write commands anyone can run:\n" + "\n".join(found))

    def test_the_pattern_catches_what_it_is_for(self):
        text = ("/work/venv/bin/python bench/run.py\n~/bin/tool /home/ann/x\n"
                "/opt/venvs/s/bin/python3 -m x\npython bench/run.py  /usr/bin/chromium\n")
        self.assertEqual(list(machine_paths("f", text)),
                         ["f:1: /work/venv/bin/python", "f:2: /home/ann/x",
                          "f:3: /opt/venvs/s/bin/python3"])
