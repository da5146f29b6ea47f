"""The roster's presence rules, without sockets."""

from twisted.trial import unittest

from symple_tx.roster import Roster


def presence(peer_id: str, user: str = "bob", online: bool = True, **data) -> dict:
    return {"type": "presence", "from": f"{user}|{peer_id}",
            "data": {"id": peer_id, "user": user, "online": online, **data}}


class RosterTests(unittest.TestCase):
    def setUp(self):
        self.roster = Roster(own_id="me")

    def test_online_adds_then_updates_offline_removes(self):
        self.assertEqual(self.roster.apply(presence("b1"))[0], "add")
        change, peer = self.roster.apply(presence("b1", mood="busy"))
        self.assertEqual((change, peer["mood"]), ("update", "busy"))
        change, peer = self.roster.apply(presence("b1", online=False))
        self.assertEqual(change, "remove")
        self.assertFalse(peer["online"])
        self.assertEqual(len(self.roster), 0)

    def test_offline_for_an_unknown_peer_changes_nothing(self):
        self.assertIsNone(self.roster.apply(presence("b1", online=False)))

    def test_frames_without_id_or_user_and_our_own_are_ignored(self):
        for frame in ({"type": "presence"}, {"type": "presence", "data": "x"},
                      {"type": "presence", "data": {"id": "x", "online": True}},
                      {"type": "presence", "data": {"user": "x", "online": True}},
                      presence("me", "alice")):
            self.assertIsNone(self.roster.apply(frame))
        self.assertEqual(len(self.roster), 0)

    def test_lookup_by_id_address_user_and_predicate(self):
        self.roster.apply(presence("b1"))
        self.roster.apply(presence("b2"))
        self.roster.apply(presence("c1", "carol", video=True))
        self.assertEqual(self.roster.get("b1")["id"], "b1")
        self.assertIsNotNone(self.roster.get("bob|b1"))
        self.assertIsNone(self.roster.get("carol|b1"))
        self.assertIn("carol|c1", self.roster)
        self.assertEqual(len(self.roster.find("bob")), 2)
        self.assertEqual(self.roster.find(lambda p: p.get("video"))[0]["user"], "carol")
        self.assertEqual(self.roster.users(), ["bob", "carol"])
        self.assertEqual(self.roster.addresses(), ["bob|b1", "bob|b2", "carol|c1"])
        self.assertEqual(len(self.roster.clear()), 3)
        self.assertEqual(len(self.roster), 0)
