"""The demo web app end to end: two (or more) real Chromium pages on one real server.

Each test starts the server in process on a loopback port, opens headless
Chromium pages on it and drives them like a person would (typing, clicking);
assertions read the states the page exposes as ``data-*`` attributes.
Screenshots of a call land in ``artifacts/``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable
from urllib.parse import urlencode

from twisted.internet import defer, reactor
from twisted.internet.threads import blockingCallFromThread, deferToThread

from symple_tx.config import Settings
from tests.browser.support import Page, artifact_path, require_browser
from tests.support import ServerTestCase

ICE_CONNECTED = ("connected", "completed")


class DemoPageTestCase(ServerTestCase):
    """A server plus helpers to open demo pages; browsers are closed after each test."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        require_browser()
        yield super().setUp()
        self.pages: list[Page] = []
        self.addCleanup(lambda: deferToThread(self._quit_pages))

    def _quit_pages(self) -> None:
        with ThreadPoolExecutor() as pool:
            list(pool.map(Page.quit, self.pages))

    def in_browser(self, scenario: Callable[[], Any]) -> defer.Deferred:
        """Run a blocking Selenium scenario off the reactor thread, so the server keeps serving."""
        return deferToThread(scenario)

    def on_reactor(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """From a scenario: call ``function`` in the reactor thread and wait for its result."""
        return blockingCallFromThread(reactor, function, *args, **kwargs)

    def open_page(self, user: str, **query: str) -> Page:
        """A page that connects at once as ``user`` (the query fills in the login form)."""
        page = Page(f"{self._testMethodName}-{user}")
        self.pages.append(page)
        params = {"user": user, "name": user.title(), "room": "demo", **query} if user else {}
        page.open(f"http://127.0.0.1:{self.port}/" + (f"?{urlencode(params)}" if params else ""))
        return page

    def open_online(self, *users: str) -> list[Page]:
        """Open one page per user (browsers start in parallel) and wait until every
        page lists all the others."""
        with ThreadPoolExecutor() as pool:
            pages = list(pool.map(self.open_page, users))
        for page, user in zip(pages, users):
            page.wait_state(conn="online")
            others = sorted(u for u in users if u != user)
            page.wait(lambda p, others=others: p.roster_users() == others, f"roster {others}")
        return pages

    def address(self, page: Page) -> str:
        state = page.state()
        return f"{page.label.rsplit('-', 1)[1]}|{state['peerId']}"

    def start_call(self, caller: Page, callee: Page, callee_user: str) -> None:
        """Caller clicks Call on the callee's roster entry; the callee rings."""
        caller.click(f'#roster li[data-user="{callee_user}"] button[data-action="call"]')
        caller.wait_state(call="calling")
        callee.wait_state(call="ringing")

    def connect_call(self, caller: Page, callee: Page, callee_user: str) -> None:
        """Ring, accept, and wait until both sides are in the call with ICE connected."""
        self.start_call(caller, callee, callee_user)
        callee.click("#accept")
        for page in (caller, callee):
            page.wait_state(call="in-call", ice=ICE_CONNECTED)

    def assert_receiving_video(self, page: Page, element_id: str = "remote-video") -> None:
        """The <video> shows frames: it has a size and its clock advances."""
        first = page.wait(lambda p: (v := p.video(element_id))["width"] > 0 and v,
                          f"{element_id} to have a size")
        page.wait(lambda p: p.video(element_id)["time"] > first["time"] + 0.3,
                  f"{element_id} time to advance past {first['time']}")
        self.assertFalse(page.video(element_id)["paused"])


class RosterAndChatTests(DemoPageTestCase):
    def test_pages_see_each_other_chat_and_leave(self):
        def scenario():
            alice, bob = self.open_online("alice", "bob")
            [bob_entry] = alice.roster()
            self.assertEqual(bob_entry["name"], "Bob")
            self.assertEqual(bob_entry["id"], bob.state()["peerId"])
            self.assertEqual(sorted(bob_entry["caps"]), ["call", "chat", "video"])
            self.assertTrue(bob_entry["callable"])
            self.assertEqual(alice.text("#conn-status"), "Online")

            alice.type("#chat-input", "hello from alice")
            bob.wait(lambda p: p.messages(), "alice's chat message")
            self.assertEqual(bob.messages(), [
                {"from": self.address(alice), "own": False, "text": "hello from alice"}])
            self.assertEqual(alice.messages(), [
                {"from": self.address(alice), "own": True, "text": "hello from alice"}])
            bob.type("#chat-input", "hi alice")
            alice.wait(lambda p: len(p.messages()) == 2, "bob's reply")
            self.assertEqual(alice.messages()[1]["text"], "hi alice")

            bob.quit()
            alice.wait(lambda p: p.roster() == [], "bob to leave alice's roster")
            self.assertTrue(alice.visible("#roster-empty"))
            self.assertEqual([m["text"] for m in alice.messages("system")],
                             ["Bob is online", "Bob left"])
        return self.in_browser(scenario)

    def test_page_reconnects_after_losing_its_connection(self):
        def scenario():
            alice, bob = self.open_online("alice", "bob")
            old_id = alice.state()["peerId"]
            self.on_reactor(
                lambda: self.server.router.sessions[old_id].link.transport.abortConnection())
            alice.wait_state(conn="reconnecting")
            state = alice.wait_state(conn="online")
            self.assertNotEqual(state["peerId"], old_id)
            bob.wait(lambda p: [e["id"] for e in p.roster()] == [state["peerId"]],
                     "alice's new session in bob's roster")
            alice.wait(lambda p: p.roster_users() == ["bob"], "bob back in alice's roster")
        return self.in_browser(scenario)


class CallTests(DemoPageTestCase):
    def test_call_connects_both_videos_and_caller_hangs_up(self):
        def scenario():
            alice, bob = self.open_online("alice", "bob")
            started = time.monotonic()
            self.start_call(alice, bob, "bob")
            self.assertEqual(bob.state()["callPeer"], self.address(alice))
            self.assertEqual(alice.state()["callPeer"], self.address(bob))
            self.assertEqual(bob.text("#call-status"), "Alice is calling you")
            self.assertTrue(bob.visible("#accept") and bob.visible("#reject"))
            bob.click("#accept")
            for page in (alice, bob):
                page.wait_state(call="in-call", ice=ICE_CONNECTED)
            connected = time.monotonic() - started
            for page in (alice, bob):
                self.assert_receiving_video(page, "remote-video")
                self.assert_receiving_video(page, "local-video")
            self.assertEqual(alice.text("#call-status"), "In call with Bob")
            # Busy pages cannot start another call; chat goes on during the call.
            self.assertFalse(alice.roster()[0]["callable"])
            alice.type("#chat-input", "Can you see me?")
            bob.wait(lambda p: [m["text"] for m in p.messages()] == ["Can you see me?"], "chat")
            bob.type("#chat-input", "Loud and clear")
            alice.wait(lambda p: len(p.messages()) == 2, "bob's chat reply")
            alice.screenshot("demo-call-alice")
            bob.screenshot("demo-call-bob")
            with open(artifact_path("demo-call-timing.txt"), "w") as f:
                f.write(f"click Call -> both ICE connected: {connected:.2f} s\n")

            alice.click("#hangup")
            alice.wait_state(call=("ended", "idle"), callEnd="hangup")
            bob.wait_state(call=("ended", "idle"), callEnd="remote-hangup")
            for page in (alice, bob):
                state = page.wait_state(call="idle", ice="new")
                self.assertEqual(state["callPeer"], "")
                self.assertFalse(page.video("remote-video")["hasStream"])
                self.assertTrue(page.roster()[0]["callable"])
        return self.in_browser(scenario)

    def test_callee_hangs_up(self):
        def scenario():
            alice, bob = self.open_online("alice", "bob")
            self.connect_call(bob, alice, "alice")
            alice.click("#hangup")
            alice.wait_state(callEnd="hangup")
            bob.wait_state(callEnd="remote-hangup")
            for page in (alice, bob):
                page.wait_state(call="idle")
        return self.in_browser(scenario)

    def test_busy_peers_refuse_and_callee_rejects(self):
        def scenario():
            alice, bob = self.open_online("alice", "bob")
            carol = self.on_reactor(self.peer, "carol", rooms=["demo"],
                                    data={"capabilities": {"call": True}})
            for page in (alice, bob):
                page.wait(lambda p: "carol" in p.roster_users(), "carol in the roster")
            carol_entry = [e for e in alice.roster() if e["user"] == "carol"][0]
            self.assertEqual(carol_entry["caps"], ["call"])

            self.start_call(alice, bob, "bob")
            for page in (alice, bob):  # ringing either way: both are busy
                self.on_reactor(carol.send_json, {"type": "message", "to": self.address(page),
                                                  "subtype": "call:init", "data": {"callId": "c1"}})
                refusal = self.on_reactor(
                    carol.expect, lambda f: f.get("subtype") == "call:reject", "busy reply")
                self.assertEqual(refusal["from"], self.address(page))
                self.assertEqual(refusal["to"], carol.address)
                self.assertEqual(refusal["data"], {"callId": "c1", "reason": "busy"})
            self.assertEqual(bob.state()["call"], "ringing")

            bob.click("#reject")
            alice.wait(lambda p: p.state()["callEnd"] == "rejected"
                       and p.text("#call-status") == "Call ended: declined", "rejection shown")
            bob.wait_state(call=("ended", "idle"), callEnd="rejected")
            for page in (alice, bob):
                page.wait_state(call="idle")

            # The caller's side of "busy", with carol reading the wire.
            alice.click('#roster li[data-user="carol"] button[data-action="call"]')
            init = self.on_reactor(
                carol.expect, lambda f: f.get("subtype") == "call:init", "call:init")
            self.assertEqual((init["type"], init["to"], init["from"]),
                             ("message", carol.address, self.address(alice)))
            self.assertIsInstance(init["data"]["callId"], str)
            self.on_reactor(carol.send_json, {
                "type": "message", "to": init["from"], "subtype": "call:reject",
                "data": {"callId": init["data"]["callId"], "reason": "busy"}})
            alice.wait(lambda p: p.state()["callEnd"] == "busy"
                       and p.text("#call-status") == "Call ended: they are busy", "busy shown")
        return self.in_browser(scenario)

    def test_ringing_call_ends_when_the_caller_leaves(self):
        def scenario():
            alice, bob = self.open_online("alice", "bob")
            self.start_call(alice, bob, "bob")
            alice.quit()
            bob.wait_state(call=("ended", "idle"), callEnd=("cancelled", "peer-left"))
            bob.wait_state(call="idle")
        return self.in_browser(scenario)

    def test_candidates_that_arrive_before_the_offer_are_buffered(self):
        """CallManager alone in a page, against a real RTCPeerConnection as the caller."""
        def scenario():
            page = self.open_page("")
            page.driver.set_script_timeout(20)
            result = page.driver.execute_async_script(TRICKLE_BEFORE_OFFER)
            self.assertNotIn("error", result, result.get("error"))
            self.assertGreater(result["remoteCandidates"], 0)
            # Trickled before the offer: held back, then all added with the offer.
            self.assertEqual(result["bufferedBeforeOffer"], result["remoteCandidates"])
            self.assertFalse(result["hadRemoteDescription"])
            self.assertEqual(result["pendingAfterOffer"], 0)
            self.assertEqual(result["candidatesInRemoteDescription"], result["remoteCandidates"])
            self.assertEqual(result["iceState"], "connected")
            sent = result["sent"]
            self.assertEqual(sent[0], "call:accept")
            self.assertEqual(sent.count("call:answer"), 1)
            self.assertEqual(set(sent[1:]), {"call:answer", "call:candidate"})
            self.assertEqual(result["addressedTo"], ["carol|c1"])
            self.assertEqual(result["callIds"], ["k1"])
        return self.in_browser(scenario)


#: Runs in a demo page: feeds a callee CallManager a fake client's frames from a real
#: RTCPeerConnection playing the caller, candidates first, offer last.
TRICKLE_BEFORE_OFFER = """
const done = arguments[arguments.length - 1];
const until = async (test) => {
  for (let i = 0; i < 300 && !test(); i++) await new Promise((r) => setTimeout(r, 20));
  if (!test()) throw new Error("timed out: " + test);
};
(async () => {
  const {CallManager} = await import("/js/call.js");
  const client = new EventTarget();
  const sent = [];
  client.sendMessage = (to, subtype, data) => sent.push({to, subtype, data});
  const deliver = (subtype, data = {}) => client.dispatchEvent(new CustomEvent("message", {
    detail: {type: "message", from: "carol|c1", subtype, data: {callId: "k1", ...data}}}));
  const calls = new CallManager(client);

  const caller = new RTCPeerConnection({iceServers: []});
  const callerCandidates = [];
  caller.onicecandidate = (e) => e.candidate && callerCandidates.push(e.candidate.toJSON());
  caller.addTransceiver("video");
  const offer = await caller.createOffer();  // taken before gathering: no candidates inside
  await caller.setLocalDescription(offer);
  await until(() => caller.iceGatheringState === "complete");

  deliver("call:init");
  await calls.accept();
  for (const candidate of callerCandidates) deliver("call:candidate", {candidate});
  await until(() => calls._pending.length >= callerCandidates.length || sent.length > 1);
  const hadRemoteDescription = Boolean(calls.pc.remoteDescription);
  const bufferedBeforeOffer = calls._pending.length;
  deliver("call:offer", {sdp: {type: offer.type, sdp: offer.sdp}});
  await until(() => sent.some((m) => m.subtype === "call:answer"));
  const answer = sent.find((m) => m.subtype === "call:answer").data.sdp;
  await until(() => calls.pc.iceGatheringState === "complete");  // all its candidates sent
  await caller.setRemoteDescription(answer);
  for (const m of sent.filter((m) => m.subtype === "call:candidate")) {
    await caller.addIceCandidate(m.data.candidate);
  }
  await until(() => calls.iceState === "connected" || calls.iceState === "completed");
  const remoteSdp = calls.pc.remoteDescription.sdp;
  const result = {
    remoteCandidates: callerCandidates.length,
    bufferedBeforeOffer,
    hadRemoteDescription,
    pendingAfterOffer: calls._pending.length,
    candidatesInRemoteDescription: callerCandidates.filter(
      (c) => remoteSdp.includes("a=" + c.candidate.split(" generation")[0])).length,
    iceState: calls.iceState === "completed" ? "connected" : calls.iceState,
    sent: sent.map((m) => m.subtype),
    addressedTo: [...new Set(sent.map((m) => m.to))],
    callIds: [...new Set(sent.map((m) => m.data.callId))],
  };
  calls.hangup();
  caller.close();
  done(result);
})().catch((err) => done({error: String(err && err.stack || err)}));
"""


def allow_letmein(request: Any) -> bool:
    """An auth hook: the token "letmein" lets anyone in, and grants no rooms."""
    return request.token == "letmein"


class LoginTests(DemoPageTestCase):
    settings = Settings(authentication=True, auth_hook=allow_letmein)

    def test_login_form_shows_refusal_then_joins_the_room(self):
        def scenario():
            dave = self.open_page("")
            self.assertTrue(dave.visible("#login"))
            self.assertFalse(dave.visible("#app"))
            self.assertEqual(dave.state()["conn"], "idle")
            dave.type('#login [name="user"]', "dave", submit=False)
            dave.type('#login [name="token"]', "wrong")
            state = dave.wait_state(conn="error")
            self.assertEqual(state["error"], "Authentication rejected")
            self.assertIn("Authentication rejected", dave.text("#errors"))
            self.assertTrue(dave.visible("#login"))

            dave.driver.find_element("css selector", '#login [name="token"]').clear()
            dave.type('#login [name="token"]', "letmein")
            dave.wait_state(conn="online")
            self.assertFalse(dave.visible("#login"))
            # With authentication on, rooms are not taken from auth: the page joins "demo".
            alice = self.open_page("alice", token="letmein")
            alice.wait(lambda p: p.roster_users() == ["dave"], "dave in alice's roster")
            dave.wait(lambda p: p.roster_users() == ["alice"], "alice in dave's roster")
        return self.in_browser(scenario)
