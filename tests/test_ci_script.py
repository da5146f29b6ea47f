"""``.ci/run`` leaves the machine's Python alone: tox comes from a throw-away virtualenv."""

from __future__ import annotations

import re

from twisted.internet import defer, utils
from twisted.trial import unittest

from tests.text_support import ROOT

SCRIPT = ROOT / ".ci" / "run"


class CiScriptTests(unittest.TestCase):
    def test_every_pip_install_runs_in_the_throw_away_virtualenv(self):
        text = SCRIPT.read_text(encoding="utf-8")
        code = [line.split("#")[0] for line in text.splitlines()]
        installs = [line.strip() for line in code if re.search(r"\bpip\b.*\binstall\b", line)]
        self.assertNotEqual(installs, [], "tox is installed somewhere")
        for line in installs:
            self.assertTrue(line.startswith('"$toolenv/bin/python" -m pip install'), line)
        self.assertIn('python3 -m venv "$toolenv"', text)
        self.assertIn("trap 'rm -rf \"$toolenv\"' EXIT", text)
        self.assertIn('"$toolenv/bin/python" -m tox', text)

    @defer.inlineCallbacks
    def test_the_script_parses(self):
        out, err, code = yield utils.getProcessOutputAndValue("bash", ["-n", str(SCRIPT)])
        self.assertEqual(code, 0, err.decode())
