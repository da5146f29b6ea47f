"""Plain scripts with ``symple_tx.client.run``: the documented echo bot, run as a process."""

from __future__ import annotations

import os
import sys

from twisted.internet import defer

from tests.process_support import PROCESS_WAIT, CliMixin
from tests.support import ServerTestCase, with_timeout

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "examples", "echo_bot.py")
PYTHON = [sys.executable]


class ScriptTests(CliMixin, ServerTestCase):
    @defer.inlineCallbacks
    def test_echo_bot_example(self):
        bot = self.spawn(EXAMPLE, self.url, "1", program=PYTHON)
        yield bot.expect("ready as echo|")
        alice = yield self.peer("alice", rooms=["lobby"])
        yield bot.expect("online: alice")
        presence = yield alice.expect(lambda f: f.get("type") == "presence"
                                      and f["data"]["user"] == "echo")
        self.assertEqual(presence["data"]["capabilities"], {"echo": True})
        alice.send_json({"type": "message", "to": "lobby", "subtype": "chat",
                         "data": {"text": "hi"}})
        reply = yield alice.expect("message")
        self.assertEqual(reply["data"], {"text": "echo: hi"})
        self.assertEqual(reply["to"], alice.address)
        code = yield with_timeout(bot.ended, PROCESS_WAIT, what="the bot to exit")
        self.assertEqual(code, 0, bot.err_text())

    @defer.inlineCallbacks
    def test_a_failing_main_exits_with_status_1(self):
        script = ("from symple_tx.client import SympleClient, run\n"
                  "async def main(reactor, url):\n"
                  "    await SympleClient(url, 'x').connect()\n"
                  "run(main, 'ws://127.0.0.1:1/')\n")
        cli = self.spawn("-c", script, program=PYTHON)
        code = yield with_timeout(cli.ended, PROCESS_WAIT, what="the script to exit")
        self.assertEqual(code, 1)
        self.assertIn("ConnectError", cli.err_text())
