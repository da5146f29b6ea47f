from twisted.internet import defer

from tests.support import ServerTestCase


class SmokeTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_two_peers_see_each_other_and_talk(self):
        alice = yield self.peer("alice", rooms=["lobby"])
        bob = yield self.peer("bob", rooms=["lobby"])
        presence = yield alice.expect("presence")
        self.assertEqual(presence["data"]["user"], "bob")
        snapshot = yield bob.expect("presence")
        self.assertEqual(snapshot["data"]["user"], "alice")
        alice.send_json({"type": "message", "data": "hi", "token": "secret"})
        msg = yield bob.expect("message")
        self.assertEqual(msg["from"], alice.address)
        self.assertNotIn("token", msg)
