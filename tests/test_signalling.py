"""WebRTC call signalling (docs/spec.md §11) between two real peers."""

from __future__ import annotations

from twisted.internet import defer

from tests.routing_support import RoutingCase

OFFER_SDP = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0 1\r\na=msid-semantic: WMS stream\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 103\r\nc=IN IP4 0.0.0.0\r\n"
    "a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:F7gI\r\na=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n"
    "a=fingerprint:sha-256 D1:2C:BE:AD:C4:F6:64:5C:25:16:11:9C:AF:E7:0F:73\r\n"
    "a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n"
    'a=x-unicode:"héllo ✓" \\ {"not": "json"}\r\n'
)
ANSWER_SDP = OFFER_SDP.replace("a=setup:actpass", "a=setup:active")
CANDIDATE = {
    "candidate": "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx "
                 "raddr 10.0.0.2 rport 46154 generation 0 ufrag F7gI network-cost 999",
    "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "F7gI",
}


class SignallingTests(RoutingCase):
    @defer.inlineCallbacks
    def test_call_flow_passes_through_untouched(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"], dave=["lobby"],
                                carol=["side"])
        alice, bob = p["alice"], p["bob"]
        flow = [
            (alice, bob, "call:init", {"video": True, "audio": True}),
            (bob, alice, "call:accept", None),
            (alice, bob, "call:offer", {"type": "offer", "sdp": OFFER_SDP}),
            (bob, alice, "call:answer", {"type": "answer", "sdp": ANSWER_SDP}),
            (alice, bob, "call:candidate", CANDIDATE),
            (bob, alice, "call:candidate", {**CANDIDATE, "sdpMid": "1", "sdpMLineIndex": 1}),
            (alice, bob, "call:candidate", {"candidate": "", "sdpMid": "0"}),  # end of candidates
            (bob, alice, "call:hangup", {"reason": "user"}),
            (alice, bob, "call:reject", {"reason": "busy"}),
        ]
        by_peer = {alice: "alice", bob: "bob"}
        for number, (sender, receiver, subtype, data) in enumerate(flow):
            frame = {"type": "message", "subtype": subtype, "to": receiver.address,
                     "id": f"sig-{number}", "token": "session-token"}
            if data is not None:
                frame["data"] = data
            got = yield self.assert_reaches(sender, frame, p, {by_peer[receiver]})
            copy = got[by_peer[receiver]][0]
            expected = {k: v for k, v in frame.items() if k != "token"}
            expected["from"] = sender.address
            self.assertEqual(copy, expected)

    @defer.inlineCallbacks
    def test_signalling_to_a_peer_without_a_shared_room_is_dropped(self):
        p = yield self.peers_in(alice=["lobby"], carol=["side"])
        for to in (p["carol"].address, p["carol"].session_id):
            frame = {"type": "message", "subtype": "call:offer", "to": to,
                     "data": {"type": "offer", "sdp": OFFER_SDP}}
            yield self.assert_reaches(p["alice"], frame, p, set())
