"""Embedding: the two ways docs/embedding.md shows to put the server into a Twisted app."""

from __future__ import annotations

import os
import re
import sys
import tempfile

import orjson
from twisted.application.service import Application, IServiceCollection, MultiService
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from symple_tx.config import Settings
from symple_tx.hooks import AuthRejected, JoinRefused
from symple_tx.client import SympleClient
from symple_tx.service import SympleServer, SympleService
from tests.process_support import PROCESS_WAIT, CliMixin
from tests.support import ServerTestCase, http_get, with_timeout
from tests.text_support import ROOT


# -- hooks in the three styles an application may write -------------------------

def sync_auth(request) -> dict | bool:
    """Plain function: the token names the rooms."""
    if request.token != "let-me-in":
        raise AuthRejected("Unknown token, sorry")
    return {"rooms": ["staff"], "name": request.user.title()}


def deferred_join(peer: dict, room: str) -> defer.Deferred:
    """Returns a Deferred, as a database lookup would."""
    return deferLater(reactor, 0.01, lambda: room.startswith("open-"))


async def async_auth(request):
    """``async def`` awaiting a Deferred."""
    await deferLater(reactor, 0.01, lambda: None)
    if request.token == "banned":
        return False
    return {"rooms": ["async-room"]}


async def async_join(peer: dict, room: str) -> bool:
    await deferLater(reactor, 0.01, lambda: None)
    if room == "vip":
        raise JoinRefused("VIPs only")
    return True


class MountedTestCase(ServerTestCase):
    """(a) ``SympleServer(...).resource()`` under /symple of an application's own Site."""

    hooks: dict = {"auth_hook": sync_auth, "join_hook": deferred_join}
    demo = False

    def setUp(self):
        # The application: its own site, pages and port; the server knows nothing of it.
        root = Resource()
        root.putChild(b"", Data(b"the application's home page", "text/plain"))
        self.server = SympleServer(Settings(authentication=True, demo=self.demo, **self.hooks))
        root.putChild(b"symple", self.server.resource())
        self.drainer = SympleService(self.server, [])  # no listeners: drains on stop
        self.drainer.startService()
        self.listening = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.serve_peers_on(self.listening.getHost().port, "/symple")

    @defer.inlineCallbacks
    def stop_server(self):
        yield self.drainer.stopService()
        yield self.listening.stopListening()


class SyncHooksTests(MountedTestCase):
    """Hooks written as a plain function and as a Deferred-returning one."""

    @defer.inlineCallbacks
    def test_websocket_at_the_mount_point(self):
        alice = yield self.peer("alice", token="let-me-in")
        self.assertEqual(alice.welcome["rooms"], ["alice", "staff"])
        self.assertEqual(alice.welcome["peer"]["name"], "Alice")
        bob = yield self.peer("bob", token="let-me-in")
        yield alice.expect("presence")
        bob.send_json({"type": "message", "subtype": "hello"})
        message = yield alice.expect("message")
        self.assertEqual(message["from"], bob.address)

    @defer.inlineCallbacks
    def test_sync_hook_refusal(self):
        peer = yield self.connect()
        peer.send_json({"type": "auth", "user": "mallory", "token": "guess"})
        error = yield peer.expect("error")
        self.assertEqual((error["status"], error["message"]), (401, "Unknown token, sorry"))
        code, _ = yield peer.wait_closed()
        self.assertEqual(code, 4401)

    @defer.inlineCallbacks
    def test_deferred_join_hook(self):
        alice = yield self.peer("alice", token="let-me-in")
        alice.send_json({"type": "join", "room": "open-plan", "id": "j1"})
        alice.send_json({"type": "join", "room": "closed", "id": "j2"})
        ok = yield alice.expect("join:ok")
        self.assertEqual(ok["room"], "open-plan")
        refused = yield alice.expect("error")
        self.assertEqual((refused["status"], refused["id"]), (403, "j2"))

    @defer.inlineCallbacks
    def test_application_pages_and_server_pages_side_by_side(self):
        base = f"http://127.0.0.1:{self.port}"
        code, _, body = yield http_get(base + "/")
        self.assertEqual((code, body), (200, b"the application's home page"))
        code, _, body = yield http_get(base + "/symple/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(orjson.loads(body)["status"], "ok")
        code, _, body = yield http_get(base + "/symple/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b"symple_connections", body)
        code, _, body = yield http_get(base + "/symple")
        self.assertEqual(code, 200)
        self.assertIn(b"symple_tx", body)

    @defer.inlineCallbacks
    def test_stopping_the_drainer_says_goodbye(self):
        alice = yield self.peer("alice", token="let-me-in")
        yield self.drainer.stopService()
        event = yield alice.expect("event")
        self.assertEqual(event["name"], "shutdown")
        code, _ = yield alice.wait_closed()
        self.assertEqual(code, 1001)
        # The application's own site keeps serving.
        code, _, _ = yield http_get(f"http://127.0.0.1:{self.port}/")
        self.assertEqual(code, 200)


class MountedDemoTests(MountedTestCase):
    demo = True

    @defer.inlineCallbacks
    def test_demo_page_and_websocket_below_the_mount(self):
        code, headers, body = yield http_get(f"http://127.0.0.1:{self.port}/symple/")
        self.assertEqual(code, 200)
        self.assertIn(b"text/html", headers.getRawHeaders(b"content-type")[0])
        self.assertIn(b"<html", body.lower())
        self.url = f"ws://127.0.0.1:{self.port}/symple/"  # the trailing slash upgrades too
        alice = yield self.peer("alice", token="let-me-in")
        self.assertEqual(alice.welcome["peer"]["user"], "alice")


class AsyncHooksTests(MountedTestCase):
    hooks = {"auth_hook": async_auth, "join_hook": async_join}

    @defer.inlineCallbacks
    def test_async_auth_hook_admits_and_refuses(self):
        alice = yield self.peer("alice", token="anything")
        self.assertEqual(alice.welcome["rooms"], ["alice", "async-room"])
        peer = yield self.connect()
        peer.send_json({"type": "auth", "user": "eve", "token": "banned"})
        error = yield peer.expect("error")
        self.assertEqual(error["status"], 401)

    @defer.inlineCallbacks
    def test_async_join_hook(self):
        alice = yield self.peer("alice", token="anything")
        alice.send_json({"type": "join", "room": "vip"})
        error = yield alice.expect("error")
        self.assertEqual((error["status"], error["message"]), (403, "VIPs only"))
        alice.send_json({"type": "join", "room": "lounge"})
        ok = yield alice.expect("join:ok")
        self.assertEqual(ok["room"], "lounge")


class ChildServiceTests(ServerTestCase):
    """(b) ``SympleService`` as a child of an application's MultiService."""

    @defer.inlineCallbacks
    def setUp(self):
        self.application = Application("existing-app")
        self.app_services = IServiceCollection(self.application)
        other = MultiService()  # the application's own services
        other.setName("other")
        other.setServiceParent(self.app_services)
        self.server = SympleServer(Settings(demo=False))
        self.service = SympleService(self.server, ["tcp:0:interface=127.0.0.1"])
        self.service.setName("symple")
        self.service.setServiceParent(self.app_services)
        self.app_services.startService()
        ports = yield self.service.listening()
        self.serve_peers_on(ports[0].getHost().port)

    def stop_server(self):
        if self.app_services.running:
            return self.app_services.stopService()
        return None

    @defer.inlineCallbacks
    def test_serves_while_the_application_runs(self):
        self.assertIs(self.app_services.getServiceNamed("symple"), self.service)
        alice = yield self.peer("alice", rooms=["lobby"])
        bob = yield self.peer("bob", rooms=["lobby"])
        yield alice.expect("presence")
        bob.send_json({"type": "message", "subtype": "hi"})
        message = yield alice.expect("message")
        self.assertEqual(message["from"], bob.address)

    @defer.inlineCallbacks
    def test_stopping_the_application_drains_peers(self):
        alice = yield self.peer("alice")
        stopped = self.app_services.stopService()
        event = yield alice.expect("event")
        self.assertEqual(event["name"], "shutdown")
        code, _ = yield alice.wait_closed()
        self.assertEqual(code, 1001)
        yield stopped
        self.assertEqual(self.server.router.links, set())


def documented_app() -> str:
    """The ``app.py`` example of docs/embedding.md, exactly as a reader copies it."""
    page = (ROOT / "docs" / "embedding.md").read_text(encoding="utf-8")
    [code] = re.findall(r"```python\n(# app\.py.*?)```", page, re.S)
    return code


class DocumentedAppTests(CliMixin, unittest.TestCase):
    """docs/embedding.md's ``python app.py [PORT]``, run as a reader would."""

    def setUp(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: [os.remove(os.path.join(directory, "app.py")),
                                 os.rmdir(directory)])
        self.app = os.path.join(directory, "app.py")
        with open(self.app, "w", encoding="utf-8") as f:
            f.write(documented_app())

    @defer.inlineCallbacks
    def test_free_port_by_default_and_a_taken_port_in_one_line(self):
        app = self.spawn(self.app, program=[sys.executable])
        line = yield app.expect("serving ws://127.0.0.1:")
        url = line.split()[-1]
        port = int(url.split(":")[2].split("/")[0])
        self.assertNotEqual(port, 0)
        code, _, body = yield http_get(f"http://127.0.0.1:{port}/symple/healthz")
        self.assertEqual(code, 200, body)
        client = SympleClient(url, "alice", token="let-me-in", reconnect=False)
        peer = yield with_timeout(client.connect(), PROCESS_WAIT, what="welcome from app.py")
        self.assertEqual(peer["user"], "alice")
        self.assertIn("staff", client.rooms)
        yield client.disconnect()

        taken = self.spawn(self.app, str(port), program=[sys.executable])
        code = yield with_timeout(taken.ended, PROCESS_WAIT, what="app.py on a taken port")
        self.assertEqual(code, 1)
        self.assertEqual(taken.err_text().strip().splitlines(),
                         [f"app.py: cannot listen on 127.0.0.1:{port}: Address already in use"])
        self.assertEqual(taken.stdout, [])
