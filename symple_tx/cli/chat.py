"""``symple chat``: an interactive room chat, compatible with the demo page."""

from __future__ import annotations

import argparse
from typing import Any, Optional

from twisted.internet import defer
from twisted.protocols.basic import LineReceiver

from ..client import ClientError, NotConnected, SympleClient
from .common import err, json_lines, out
from .connect import make_client, online, peer_label

CHAT_SUBTYPE = "chat"
#: Where ``symple chat`` talks when neither --room nor the server names a room.
DEFAULT_ROOM = "lobby"
#: At most this many seconds (or --timeout if shorter) for /quit to let what
#: was sent (a /leave, the last lines) reach the server before disconnecting.
QUIT_WAIT = 5.0


class ChatInput(LineReceiver):
    """Lines typed by the user: chat text or /commands."""

    delimiter = b"\n"

    def __init__(self, chat: "Chat") -> None:
        self.chat = chat

    def lineReceived(self, line: bytes) -> None:
        self.chat.typed(line.decode("utf-8", "replace").rstrip("\r"))

    def connectionLost(self, reason: Any = None) -> None:
        self.chat.finish()


class Chat:
    """``symple chat``: a room chat compatible with the demo page (subtype ``chat``)."""

    HELP = ("/who  list who is online    /join ROOM  join and talk there\n"
            "/leave ROOM    /room ROOM  talk in ROOM    /msg USER TEXT  direct message\n"
            "/quit  leave the chat       /help  this list")
    #: Every command, with how it is used.
    USAGE = {"who": "/who", "join": "/join ROOM", "room": "/room ROOM", "leave": "/leave ROOM",
             "msg": "/msg USER TEXT", "quit": "/quit", "exit": "/exit", "help": "/help"}

    def __init__(self, client: SympleClient, room: Optional[str]) -> None:
        self.client = client
        self.room = room
        self.done: defer.Deferred = defer.Deferred()
        client.on("connect", self.connected)
        client.on("disconnect", self.disconnected)
        #: No join/leave lines until the first roster is printed.
        self.quiet = True
        #: Set by /quit: requests cut short by the disconnect are not errors.
        self.quitting = False
        client.on("add_peer", self.peer_joined)
        client.on("remove_peer", self.peer_left)
        client.on("message", self.message)
        client.on("error", self.error)

    def connected(self, peer: dict) -> None:
        if self.room is None:
            others = [r for r in self.client.rooms if r != peer["user"]]
            self.room = others[0] if others else None
        if self.room is not None:
            out(f"* connected as {peer_label(peer)}; talking in {self.room} (/help for commands)")

    def error(self, error: Exception) -> None:
        if type(error) is ClientError:
            err(f"! {error.message} ({error.status})")
        elif self.client.rooms and not self.done.called:
            self.done.errback(error)  # gave up reconnecting: end the chat with the reason

    def disconnected(self, info: dict) -> None:
        if info["reconnecting"]:
            out(f"* connection lost ({info['code']}); reconnecting...")

    def peer_joined(self, peer: dict) -> None:
        if not self.quiet:
            out(f"* {peer_label(peer)} joined")

    def peer_left(self, peer: dict) -> None:
        if self.client.online and not self.quiet:
            out(f"* {peer_label(peer)} left")

    def message(self, frame: dict) -> None:
        sender = self.client.roster.get(str(frame.get("from", "")))
        name = peer_label(sender) if sender else str(frame.get("from", "?")).partition("|")[0]
        data = frame.get("data")
        if frame.get("subtype") == CHAT_SUBTYPE and isinstance(data, dict) and "text" in data:
            where = "" if frame.get("to") == self.room else " (direct)" if "|" in str(
                frame.get("to")) else f" [{frame.get('to')}]"
            out(f"<{name}>{where} {data['text']}")
        else:
            out(f"<{name}> {json_lines(frame)}")

    def typed(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            if line.startswith("/"):
                self.command(*(line[1:].split(None, 1) or [""]))
            else:
                self.say(self.room, line)
        except NotConnected:
            err("! not connected: message not sent")

    def say(self, to: Optional[str], text: str) -> None:
        if to is None:
            err("! no room: /join ROOM first")
            return
        self.client.send_message(to, {"text": text}, subtype=CHAT_SUBTYPE, room=to)

    def command(self, name: str, rest: str = "") -> None:
        rest = rest.strip()
        needs = {"join": rest, "room": rest, "leave": rest, "msg": " " in rest}
        if name not in self.USAGE:
            err(f"! unknown command /{name} (/help lists the commands)")
        elif not needs.get(name, True):
            err(f"! usage: {self.USAGE[name]}")
        elif name == "help":
            out(self.HELP)
        elif name == "who":
            peers = sorted(self.client.roster, key=lambda p: str(p.get("user")))
            out("* online: " + (", ".join(peer_label(p) for p in peers) or "nobody"))
        elif name in ("join", "room"):
            if name == "join" or rest not in self.client.rooms:
                self.client.join(rest).addCallbacks(
                    lambda room: out(f"* talking in {room} (/help for commands)"),
                    lambda f: self.failed(f"cannot join {rest}", f))
            else:
                out(f"* talking in {rest}")
            self.room = rest
        elif name == "leave":
            self.client.leave(rest).addCallbacks(
                lambda room: out(f"* left {room}"),
                lambda f: self.failed(f"cannot leave {rest}", f))
            if self.room == rest:
                self.room = None
        elif name == "msg":
            user, text = rest.split(None, 1)
            peers = self.client.roster.find(user)
            for peer in peers or [{"user": user, "id": None}]:
                self.say(f"{peer['user']}|{peer['id']}" if peer["id"] else user, text)
        else:  # quit, exit
            self.finish()

    def failed(self, what: str, failure: Any) -> None:
        if not self.quitting:
            err(f"! {what}: {failure.getErrorMessage()}")

    def finish(self) -> None:
        if not self.done.called:
            self.done.callback(None)


async def run_chat(reactor: Any, args: argparse.Namespace) -> None:
    from twisted.internet.stdio import StandardIO

    client = make_client(args, reconnect=True)
    chat = Chat(client, args.room[-1] if args.room else None)
    await online(client, args)
    if chat.room is None:
        chat.room = await client.join(DEFAULT_ROOM)
        out(f"* talking in {chat.room} (/help for commands)")
    await client.sync(args.timeout)  # the roster is complete now
    chat.quiet = False
    names = ", ".join(peer_label(p) for p in client.roster) or "nobody else"
    out(f"* online: {names}")
    StandardIO(ChatInput(chat), reactor=reactor)
    await chat.done
    chat.quitting = True
    try:
        # The server handles a session's frames in order: once it answers this,
        # a pending /leave has been answered and the last lines were routed.
        await client.sync(min(args.timeout, QUIT_WAIT))
    except (NotConnected, defer.TimeoutError):
        pass  # offline or slow: quit anyway, within the bound
    await client.disconnect()
