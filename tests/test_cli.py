"""The ``symple`` command, each subcommand run as a real subprocess."""

from __future__ import annotations

import os
import secrets

import orjson
from twisted.internet import defer
from twisted.trial import unittest

from symple_tx.config import Settings
from symple_tx.emitter import Sessions, connect_redis
from symple_tx.hooks import AuthRejected
from tests.process_support import PROCESS_WAIT, CliMixin
from tests.support import (ServerTestCase, free_port, redis_required, silent_server,
                           with_timeout)

REDIS = "redis://127.0.0.1:6379"


class HelpTests(CliMixin, unittest.TestCase):
    def test_every_command_has_help(self):
        from io import StringIO
        from unittest import mock

        from symple_tx import cli
        for command in ([], ["chat"], ["send"], ["listen"], ["watch"], ["session"],
                        ["session", "create"], ["session", "show"], ["session", "delete"],
                        ["emit"], ["stream"]):
            with mock.patch("sys.stdout", new_callable=StringIO) as stdout:
                exited = self.assertRaises(SystemExit, cli.main, command + ["--help"])
            self.assertEqual(exited.code, 0)
            self.assertIn("usage: symple", stdout.getvalue())

    @defer.inlineCallbacks
    def test_installed_script_answers_help(self):
        code, stdout, stderr = yield self.run_cli("--help")
        self.assertEqual(code, 0, stderr)
        self.assertIn("chat", "\n".join(stdout))

    @defer.inlineCallbacks
    def test_no_command_and_bad_arguments_are_usage_errors(self):
        code, _, stderr = yield self.run_cli()
        self.assertEqual(code, 2)
        self.assertIn("COMMAND", stderr)
        code, _, stderr = yield self.run_cli("send", "http://x/", "--user", "a")
        self.assertEqual(code, 2)
        self.assertIn("Invalid server URL", stderr)
        code, _, stderr = yield self.run_cli("send", "ws://127.0.0.1:1/", "--user", "a",
                                             "--data", "{bad json")
        self.assertEqual(code, 2)
        self.assertIn("invalid JSON", stderr)


    @defer.inlineCallbacks
    def test_usage_errors_show_the_subcommand_usage(self):
        cases = [
            (["session", "show", "x", "--redis", "foo://bar"], "symple session show",
             "--redis: Redis URL 'foo://bar' must start with redis://"),
            (["session", "create", "--user", "a", "--redis", "redis://h:port/0"],
             "symple session create", "--redis"),
            (["emit", "--to", "lobby", "--redis", "foo://bar"], "symple emit", "--redis"),
            (["emit", "--to", "lobby", "--type", "event"], "symple emit",
             "--type event needs --event-name"),
            (["send", "ws://127.0.0.1:1/", "--user", "a", "--type", "event"], "symple send",
             "--type event needs --event-name"),
            (["send", "ws://x:99999/", "--user", "a"], "symple send", "bad port"),
        ]
        from io import StringIO
        from unittest import mock

        from symple_tx import cli
        for number, (args, command, message) in enumerate(cases):
            if number == 0:  # as a person runs it; the others in this process, faster
                code, _, stderr = yield self.run_cli(*args)
            else:
                with mock.patch("sys.stderr", new_callable=StringIO) as captured:
                    code = self.assertRaises(SystemExit, cli.main, args).code
                stderr = captured.getvalue()
            self.assertEqual(code, 2, f"{args}: {stderr}")
            self.assertIn(f"usage: {command} [-h]", stderr)
            self.assertIn(f"{command}: error: ", stderr)
            self.assertIn(message, stderr)
        env = {**os.environ, "SYMPLE_REDIS_URL": "nope"}
        code, _, stderr = yield self.run_cli("emit", "--to", "lobby", env=env)
        self.assertEqual(code, 2, stderr)
        self.assertIn("symple emit: error: $SYMPLE_REDIS_URL: Redis URL 'nope'", stderr)

    @defer.inlineCallbacks
    def test_a_redis_password_is_never_printed(self):
        url = f"redis://ops:s3cret@127.0.0.1:{free_port()}/0"
        code, _, stderr = yield self.run_cli("session", "show", "x", "--redis", url,
                                             "--timeout", "3")
        self.assertEqual(code, 1, stderr)
        self.assertIn("cannot connect to Redis at 127.0.0.1:", stderr)
        self.assertNotIn("s3cret", stderr)


class WebSocketCommandTests(CliMixin, ServerTestCase):
    @defer.inlineCallbacks
    def test_send_delivers_and_prints_the_frame(self):
        bob = yield self.peer("bob", rooms=["lobby"])
        code, stdout, stderr = yield self.run_cli(
            "send", self.url, "--user", "bot", "--room", "lobby", "--to", bob.address,
            "--data", '{"text": "hi"}', "--subtype", "note")
        self.assertEqual(code, 0, stderr)
        frame = yield bob.expect("message")
        self.assertEqual(frame["data"], {"text": "hi"})
        self.assertEqual(frame["subtype"], "note")
        self.assertEqual(orjson.loads(stdout[-1])["id"], frame["id"])

    @defer.inlineCallbacks
    def test_send_reports_a_refused_frame(self):
        code, _, stderr = yield self.run_cli("send", self.url, "--user", "bot",
                                             "--field", '{"to": 5}')
        self.assertEqual(code, 1)
        self.assertIn("the server refused the frame", stderr)
        self.assertIn("(400)", stderr)

    @defer.inlineCallbacks
    def test_send_to_a_peer_that_is_not_online_fails(self):
        bob = yield self.peer("bob", rooms=["lobby"])
        stranger = yield self.peer("stranger", rooms=["elsewhere"])
        for to in ("no|such", stranger.address):
            code, stdout, stderr = yield self.run_cli("send", self.url, "--user", "bot",
                                                      "--room", "lobby", "--to", to,
                                                      "--data", "1")
            self.assertEqual(code, 1, stderr)
            self.assertEqual(stdout, [])
            self.assertIn(f"symple: {to} is not online or shares no room with bot: "
                          "nothing sent", stderr)
        self.assertEqual([f for f in stranger.drain() if f.get("type") == "message"], [])
        code, _, stderr = yield self.run_cli("send", self.url, "--user", "bot", "--room", "lobby",
                                             "--to", bob.address, "--data", "1")
        self.assertEqual(code, 0, stderr)

    @defer.inlineCallbacks
    def test_unreachable_server_is_a_clear_error(self):
        code, _, stderr = yield self.run_cli("send", f"ws://127.0.0.1:{free_port()}/",
                                             "--user", "bot", "--data", "1")
        self.assertEqual(code, 1)
        self.assertIn("symple: Cannot connect to ws://127.0.0.1:", stderr)
        self.assertNotIn("Traceback", stderr)

    @defer.inlineCallbacks
    def test_listen_prints_json_lines(self):
        cli = self.spawn("listen", self.url, "--user", "spy", "--room", "lobby",
                         "--type", "message", "--count", "2")
        yield cli.stderr_has("listening as spy|")
        alice = yield self.peer("alice", rooms=["lobby"])
        alice.send_json({"type": "message", "to": "lobby", "data": 1})
        alice.send_json({"type": "event", "name": "skip me", "to": "lobby"})
        alice.send_json({"type": "message", "to": "lobby", "data": {"n": 2}})
        code = yield with_timeout(cli.ended, PROCESS_WAIT, what="listen to exit")
        self.assertEqual(code, 0, cli.err_text())
        frames = [orjson.loads(line) for line in cli.stdout]
        self.assertEqual([f["data"] for f in frames], [1, {"n": 2}])
        self.assertEqual({f["from"] for f in frames}, {alice.address})

    @defer.inlineCallbacks
    def test_watch_shows_peers_coming_and_going(self):
        cli = self.spawn("watch", self.url, "--user", "ops", "--room", "lobby")
        yield cli.expect("= 0 peers visible")
        alice = yield self.peer("alice", name="Alice", rooms=["lobby"])
        line = yield cli.expect("+ ")
        self.assertEqual(line, f"+ {alice.address}  Alice")
        alice.send_json({"type": "presence", "data": {"status": "away"}})
        line = yield cli.expect("~ ")
        self.assertIn('"status":"away"', line)
        alice.transport.loseConnection()
        line = yield cli.expect("- ")
        self.assertTrue(line.startswith(f"- {alice.address}"))

    @defer.inlineCallbacks
    def test_two_terminal_chat(self):
        alice = self.spawn("chat", self.url, "--user", "alice", "--room", "lobby")
        yield alice.expect("* online: nobody else")
        bob = self.spawn("chat", self.url, "--user", "bob", "--name", "Bob", "--room", "lobby")
        yield bob.expect("* online: alice")
        yield alice.expect("* Bob (bob) joined")
        bob.write("hello alice")
        yield alice.expect("<Bob (bob)> hello alice")
        alice.write("/who")
        yield alice.expect("* online: Bob (bob)")
        alice.write("/msg bob psst")
        yield bob.expect("<alice> (direct) psst")
        bob.write("/quit")
        code = yield with_timeout(bob.ended, PROCESS_WAIT, what="bob's chat to exit")
        self.assertEqual(code, 0, bob.err_text())
        yield alice.expect("* Bob (bob) left")
        alice.transport.closeStdin()  # Ctrl-D
        code = yield with_timeout(alice.ended, PROCESS_WAIT, what="alice's chat to exit")
        self.assertEqual(code, 0, alice.err_text())

    @defer.inlineCallbacks
    def test_chat_commands_say_what_they_did(self):
        frank = yield self.peer("frank", rooms=["lobby"])
        chat = self.spawn("chat", self.url, "--user", "erin", "--room", "lobby")
        yield chat.expect("* online:")
        chat.write("/bogus stuff")
        yield chat.stderr_has("! unknown command /bogus (/help lists the commands)")
        chat.write("/join")
        yield chat.stderr_has("! usage: /join ROOM")
        chat.write("/room lobby")
        yield chat.expect("* talking in lobby")
        chat.write("/join dev")
        yield chat.expect("* talking in dev")
        chat.write("/help")
        yield chat.expect("/quit  leave the chat")
        self.assertEqual(sum("/who  list who is online" in line for line in chat.stdout), 1,
                         "only /help prints the help")
        chat.write("/room lobby")
        yield chat.expect("* talking in lobby")
        # Quitting right after a /leave and a line waits for both instead of cutting them off.
        chat.transport.write(b"/leave dev\nbye\n/quit\n")
        code = yield with_timeout(chat.ended, PROCESS_WAIT, what="chat to exit")
        self.assertEqual(code, 0, chat.err_text())
        self.assertIn("* left dev", chat.stdout)
        said = yield frank.expect(lambda f: f.get("type") == "message")
        self.assertEqual(said["data"], {"text": "bye"})
        self.assertNotIn("cannot leave", chat.err_text())
        self.assertNotIn("Connection lost", chat.err_text())

    @defer.inlineCallbacks
    def test_chat_without_room_joins_the_lobby(self):
        carol = yield self.peer("carol", rooms=["lobby"])
        chat = self.spawn("chat", self.url, "--user", "dave")
        yield chat.expect("* talking in lobby")
        yield chat.expect("* online: carol")
        chat.write("hi all")
        frame = yield carol.expect("message")
        self.assertEqual((frame["subtype"], frame["data"]), ("chat", {"text": "hi all"}))


class AuthFailureTests(CliMixin, ServerTestCase):
    settings = Settings(authentication=True, auth_hook=lambda request: _reject())

    @defer.inlineCallbacks
    def test_auth_failure_is_a_clear_error(self):
        commands = ("send", "listen", "watch", "chat")
        results = yield defer.gatherResults([
            self.run_cli(command, self.url, "--user", "eve", "--token", "wrong")
            for command in commands])
        for command, (code, _, stderr) in zip(commands, results):
            self.assertEqual(code, 1, f"{command}: {stderr}")
            self.assertIn("symple: authentication failed: bad token (401)", stderr)


def _reject() -> None:
    raise AuthRejected("bad token")


class SilentRedisTests(CliMixin, unittest.TestCase):
    """A Redis address that accepts and never answers: one line and exit 1, no hang."""

    @defer.inlineCallbacks
    def test_session_and_emit_give_up_after_the_timeout(self):
        port, _ = silent_server(self)
        url = f"redis://127.0.0.1:{port}"
        for args in (["session", "show", "x"], ["emit", "--to", "lobby", "--data", "1"]):
            code, stdout, stderr = yield self.run_cli(*args, "--redis", url, "--timeout", "1")
            self.assertEqual(code, 1, stderr)
            self.assertEqual(stdout, [])
            self.assertEqual(stderr.splitlines(),
                             [f"symple: cannot connect to Redis at 127.0.0.1:{port}: no answer "
                              f"(is it a Redis server, with TLS if rediss://?)"])

    @defer.inlineCallbacks
    def test_a_command_redis_never_answers_gives_up_after_the_timeout(self):
        port, received = silent_server(self, answer_ping=True)
        url = f"redis://127.0.0.1:{port}"
        for args in (["session", "show", "x"], ["emit", "--to", "lobby", "--data", "1"]):
            code, stdout, stderr = yield self.run_cli(*args, "--redis", url, "--timeout", "1")
            self.assertEqual(code, 1, stderr)
            self.assertEqual(stdout, [])
            self.assertEqual(stderr.splitlines(),
                             [f"symple: no answer from Redis at 127.0.0.1:{port} within 1s: "
                              f"connected, but no reply"])
        sent = b"".join(received).upper()
        self.assertIn(b"GET", sent)  # the commands did reach the server
        self.assertIn(b"PUBLISH", sent)


class RedisCommandTests(CliMixin, ServerTestCase):
    def make_settings(self):
        redis_required(self)
        self.prefix = f"test{secrets.token_hex(4)}:"
        return Settings(redis_url=REDIS, key_prefix=self.prefix)

    def redis_args(self) -> list[str]:
        return ["--redis", REDIS, "--prefix", self.prefix]

    @defer.inlineCallbacks
    def test_session_create_show_delete(self):
        code, stdout, stderr = yield self.run_cli(
            "session", "create", "tok1", "--user", "alice", "--name", "Alice",
            "--room", "team-a", "--data", '{"plan": "pro"}', "--ttl", "60", *self.redis_args())
        self.assertEqual((code, stdout), (0, ["tok1"]), stderr)
        redis = connect_redis(REDIS)
        self.addCleanup(redis.disconnect)
        stored = yield Sessions(redis, self.prefix + "session:").get("tok1")
        self.assertEqual(stored, {"plan": "pro", "user": "alice", "name": "Alice",
                                  "rooms": ["team-a"]})
        code, stdout, _ = yield self.run_cli("session", "show", "tok1", *self.redis_args())
        self.assertEqual((code, orjson.loads(stdout[0])), (0, stored))
        code, _, _ = yield self.run_cli("session", "delete", "tok1", *self.redis_args())
        self.assertEqual(code, 0)
        code, _, stderr = yield self.run_cli("session", "show", "tok1", *self.redis_args())
        self.assertEqual(code, 1)
        self.assertIn("no session for token 'tok1'", stderr)

    @defer.inlineCallbacks
    def test_session_create_makes_a_random_token(self):
        code, stdout, _ = yield self.run_cli("session", "create", "--user", "bob",
                                             *self.redis_args())
        self.assertEqual(code, 0)
        self.assertGreaterEqual(len(stdout[0]), 24)
        yield self.run_cli("session", "delete", stdout[0], *self.redis_args())

    @defer.inlineCallbacks
    def test_emit_reaches_a_client(self):
        yield with_timeout(self.server.router.bus.subscriber.when_subscribed(), what="subscription")
        alice = yield self.peer("alice", rooms=["lobby"])
        code, stdout, stderr = yield self.run_cli(
            "emit", "--to", "lobby", "--from", "bot|backend", "--data", '{"text": "deploy done"}',
            *self.redis_args())
        self.assertEqual(code, 0, stderr)
        self.assertIn("published to 1 server node(s) via Redis at 127.0.0.1:6379\n", stderr)
        frame = yield alice.expect("message")
        self.assertEqual((frame["from"], frame["data"]), ("bot|backend", {"text": "deploy done"}))
        self.assertEqual(orjson.loads(stdout[0])["to"], "lobby")

    @defer.inlineCallbacks
    def test_emit_without_redis_says_it_used_the_default(self):
        env = {k: v for k, v in os.environ.items() if k not in ("SYMPLE_REDIS_URL", "REDIS_URL")}
        code, _, stderr = yield self.run_cli("emit", "--to", "lobby", "--data", "1",
                                             "--prefix", self.prefix, env=env)
        self.assertEqual(code, 0, stderr)
        self.assertIn("via Redis at 127.0.0.1:6379 (the default; choose with --redis",
                      stderr)
        env["SYMPLE_REDIS_URL"] = REDIS + "/0"
        code, _, stderr = yield self.run_cli("emit", "--to", "lobby", "--data", "1",
                                             "--prefix", self.prefix, env=env)
        self.assertEqual(code, 0, stderr)
        self.assertIn("via Redis at 127.0.0.1:6379 (from $SYMPLE_REDIS_URL)", stderr)

    @defer.inlineCallbacks
    def test_unreachable_redis_is_a_clear_error(self):
        port = free_port()
        url = f"redis://127.0.0.1:{port}"
        for args in (["session", "show", "x"], ["emit", "--to", "lobby", "--data", "1"]):
            code, _, stderr = yield self.run_cli(*args, "--redis", url, "--timeout", "3")
            self.assertEqual(code, 1, stderr)
            self.assertIn(f"symple: cannot connect to Redis at 127.0.0.1:{port}: "
                          f"connection refused", stderr)
            self.assertNotIn("Traceback", stderr)
