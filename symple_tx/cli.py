"""``symple``: a command-line Symple client and Redis backend tool.

    symple chat URL --user alice --room lobby    interactive chat
    symple send URL --user bot --to 'bob|id' --data '{"text": "hi"}'
    symple listen URL --user spy --room lobby    frames as JSON lines
    symple watch URL --user ops --room lobby     live roster
    symple session create|show|delete TOKEN      symple:session:<token> in Redis
    symple emit --to lobby --data '{...}'        publish on symple:broadcast

Exit status: 0 success, 1 runtime failure (unreachable, refused, missing),
2 usage errors (bad options, bad JSON).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from typing import Any, Callable, Optional

import orjson
from twisted.internet import defer, task
from twisted.internet.error import ConnectError as TwistedConnectError
from twisted.protocols.basic import LineReceiver

from .client import AuthError, ClientError, ConnectError, NotConnected, SympleClient, parse_url
from .emitter import Emitter, Sessions
from .redis_store import RedisAddress

DEFAULT_REDIS = "redis://127.0.0.1:6379"
CHAT_SUBTYPE = "chat"
#: Where ``symple chat`` talks when neither --room nor the server names a room.
DEFAULT_ROOM = "lobby"


class CommandError(Exception):
    """A failure to report in one line with exit status 1."""


def out(line: str) -> None:
    print(line, flush=True)


def err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def json_lines(frame: Any) -> str:
    return orjson.dumps(frame).decode("utf-8")


def json_argument(text: str) -> Any:
    """argparse type for JSON options: a clear message instead of a traceback."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON ({exc}): {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def json_object(text: str) -> dict:
    value = json_argument(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def build_frame(args: argparse.Namespace) -> dict[str, Any]:
    """The frame of ``send`` and ``emit`` from --type, --data, --subtype, --event-name, --field."""
    frame: dict[str, Any] = dict(args.fields or {})
    frame["type"] = args.type
    if args.subtype is not None:
        frame["subtype"] = args.subtype
    if args.event_name is not None:
        frame["name"] = args.event_name
    if args.data is not None:
        frame["data"] = args.data
    return frame


# -- the WebSocket commands ------------------------------------------------------

def make_client(args: argparse.Namespace, reconnect: bool) -> SympleClient:
    try:
        return SympleClient(args.url, args.user, name=args.name or "", token=args.token or "",
                            rooms=args.room or [], data=args.peer_data, reconnect=reconnect,
                            ca_file=args.ca_file, verify=not args.insecure,
                            connect_timeout=args.timeout)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--ca-file {args.ca_file}: {exc}" if args.ca_file else str(exc)) \
            from None


async def online(client: SympleClient, args: argparse.Namespace) -> dict:
    """Connect, then join the ``--room`` rooms the server did not put us in."""
    peer = await client.connect()
    for room in args.room or []:
        if room not in client.rooms:
            try:
                await client.join(room)
            except ClientError as exc:
                raise CommandError(f"cannot join {room!r}: {exc.message}") from None
    return peer


def peer_label(peer: dict) -> str:
    name = peer.get("name") or peer.get("user")
    return name if name == peer.get("user") else f"{name} ({peer.get('user')})"


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
            "/quit  leave the chat")

    def __init__(self, client: SympleClient, room: Optional[str]) -> None:
        self.client = client
        self.room = room
        self.done: defer.Deferred = defer.Deferred()
        client.on("connect", self.connected)
        client.on("disconnect", self.disconnected)
        #: No join/leave lines until the first roster is printed.
        self.quiet = True
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
                self.command(*line[1:].split(None, 1))
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
        if name == "who":
            peers = sorted(self.client.roster, key=lambda p: str(p.get("user")))
            out("* online: " + (", ".join(peer_label(p) for p in peers) or "nobody"))
        elif name in ("join", "room") and rest:
            if name == "join" or rest not in self.client.rooms:
                self.client.join(rest).addCallbacks(
                    lambda room: out(f"* talking in {room} (/help for commands)"),
                    lambda f: err(f"! cannot join {rest}: {f.getErrorMessage()}"))
            self.room = rest
        elif name == "leave" and rest:
            self.client.leave(rest).addCallbacks(
                lambda room: out(f"* left {room}"),
                lambda f: err(f"! cannot leave {rest}: {f.getErrorMessage()}"))
            if self.room == rest:
                self.room = None
        elif name == "msg" and " " in rest:
            user, text = rest.split(None, 1)
            peers = self.client.roster.find(user)
            for peer in peers or [{"user": user, "id": None}]:
                self.say(f"{peer['user']}|{peer['id']}" if peer["id"] else user, text)
        elif name in ("quit", "exit"):
            self.finish()
        else:
            out(self.HELP)

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
    await client.disconnect()


async def run_send(reactor: Any, args: argparse.Namespace) -> None:
    client = make_client(args, reconnect=False)
    try:
        await online(client, args)
        if args.wait_for:
            try:
                await client.wait_for_peer(args.wait_for, timeout=args.timeout)
            except defer.TimeoutError:
                raise CommandError(f"{args.wait_for} did not come online within "
                                   f"{args.timeout:g}s") from None
        frame = build_frame(args)
        if args.to is not None:
            frame["to"] = args.to
        refusals: list[ClientError] = []
        client.on("error", lambda e: refusals.append(e) if type(e) is ClientError else None)
        sent = client.send(frame)
        await client.sync(args.timeout)  # routed or refused by now
        if refusals:
            raise CommandError(f"the server refused the frame: {refusals[0].message} "
                               f"({refusals[0].status})")
        out(json_lines(sent))
    finally:
        await client.disconnect()


async def run_listen(reactor: Any, args: argparse.Namespace) -> None:
    client = make_client(args, reconnect=not args.count)
    done: defer.Deferred = defer.Deferred()
    seen = [0]

    def frame(f: dict) -> None:
        if args.type and f.get("type") not in args.type:
            return
        out(json_lines(f))
        seen[0] += 1
        if args.count and seen[0] >= args.count and not done.called:
            done.callback(None)

    client.on("frame", frame)
    client.on("error", lambda e: err(f"symple: {e}") if type(e) is ClientError else None)
    peer = await online(client, args)
    err(f"listening as {peer['user']}|{peer['id']} in {', '.join(client.rooms)}")
    if args.count:
        await done
    else:
        await defer.Deferred()  # until interrupted
    await client.disconnect()


class Watch:
    """``symple watch``: the roster, redrawn on a terminal, as +/- lines otherwise."""

    def __init__(self, client: SympleClient, tty: bool) -> None:
        self.client = client
        self.tty = tty
        client.on("add_peer", lambda p: self.changed("+", p))
        client.on("update_peer", lambda p: self.changed("~", p))
        client.on("remove_peer", lambda p: self.changed("-", p))
        client.on("connect", lambda p: self.draw() if self.tty else None)

    def line(self, peer: dict) -> str:
        extra = {k: v for k, v in peer.items()
                 if k not in ("id", "user", "name", "online", "host")}
        suffix = f"  {json_lines(extra)}" if extra else ""
        return f"{peer.get('user')}|{peer.get('id')}  {peer.get('name', '')}{suffix}"

    def changed(self, sign: str, peer: dict) -> None:
        if self.tty:
            self.draw()
        else:
            out(f"{sign} {self.line(peer)}")

    def draw(self) -> None:
        peers = sorted(self.client.roster, key=lambda p: (str(p.get("user")), str(p.get("id"))))
        state = "online" if self.client.online else "reconnecting"
        lines = [f"symple watch: {self.client.url} ({state}), {len(peers)} peers visible", ""]
        lines += [self.line(p) for p in peers]
        sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        sys.stdout.flush()


async def run_watch(reactor: Any, args: argparse.Namespace) -> None:
    client = make_client(args, reconnect=True)
    Watch(client, sys.stdout.isatty())
    await online(client, args)
    if not sys.stdout.isatty():
        out(f"= {len(client.roster)} peers visible")
    await defer.Deferred()  # until interrupted


# -- the Redis commands -----------------------------------------------------------

async def open_redis(reactor: Any, args: argparse.Namespace) -> Any:
    """A connection that fails fast (no retrying) when Redis is unreachable."""
    import txredisapi

    try:
        address = RedisAddress.parse(args.redis)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    options = dict(dbid=address.db or None, reconnect=False, password=address.password,
                   convertNumbers=False)
    if address.unix_path:
        pending = txredisapi.UnixConnection(address.unix_path, **options)
    else:
        pending = txredisapi.Connection(address.host, address.port, username=address.username,
                                        ssl_context_factory=address.tls,
                                        connectTimeout=args.timeout, **options)
    try:
        return await pending.addTimeout(args.timeout, reactor)
    except (TwistedConnectError, defer.TimeoutError, ValueError, ConnectionError) as exc:
        raise CommandError(f"cannot connect to Redis at {args.redis}: {exc}") from None


async def with_redis(reactor: Any, args: argparse.Namespace,
                     use: Callable[[Any], Any]) -> None:
    redis = await open_redis(reactor, args)
    try:
        await use(redis)
    finally:
        await redis.disconnect()


async def run_session(reactor: Any, args: argparse.Namespace) -> None:
    async def use(redis: Any) -> None:
        sessions = Sessions(redis, args.prefix + "session:")
        if args.action == "create":
            token = args.token or secrets.token_urlsafe(24)
            session: dict[str, Any] = dict(args.session_data or {})
            session["user"] = args.user
            if args.name:
                session["name"] = args.name
            if args.room:
                session["rooms"] = args.room
            await sessions.set(token, session, args.ttl)
            out(token)
        elif args.action == "show":
            session = await sessions.get(args.token)
            if session is None:
                raise CommandError(f"no session for token {args.token!r}")
            out(json_lines(session))
        elif not await sessions.delete(args.token):
            raise CommandError(f"no session for token {args.token!r}")
    await with_redis(reactor, args, use)


async def run_emit(reactor: Any, args: argparse.Namespace) -> None:
    frame = build_frame(args)
    if args.sender:
        frame["from"] = args.sender
    try:
        emitter = Emitter(None, channel=args.prefix + "broadcast").to(
            args.to[0] if len(args.to) == 1 and not args.rooms else args.to)
        frame = emitter.frame(frame)
    except ValueError as exc:
        raise CommandError(str(exc)) from None

    async def use(redis: Any) -> None:
        count = await Emitter(redis, channel=emitter.channel).emit(frame)
        out(json_lines(frame))
        err(f"published to {count} server node(s)")
    await with_redis(reactor, args, use)


# -- argument parsing ---------------------------------------------------------------

def connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="server URL, ws://host:port/ or wss://...")
    parser.add_argument("--user", "-u", required=True, help="user name to authenticate as")
    parser.add_argument("--name", "-n", help="display name (default: the user name)")
    parser.add_argument("--token", "-t", help="session token (servers with authentication on)")
    parser.add_argument("--room", "-r", action="append", metavar="ROOM",
                        help="room to be in (repeatable); joined after connecting if needed")
    parser.add_argument("--peer-data", type=json_object, metavar="JSON",
                        help="extra peer fields as a JSON object, e.g. '{\"peerType\": \"bot\"}'")
    parser.add_argument("--ca-file", metavar="PEM", help="trust these CA certificates for wss://")
    parser.add_argument("--insecure", action="store_true",
                        help="do not verify the server's TLS certificate (testing only)")
    timeout_option(parser)


def timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="give up connecting or waiting after this long (default 10)")


def redis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", default=os.environ.get("SYMPLE_REDIS_URL")
                        or os.environ.get("REDIS_URL") or DEFAULT_REDIS, metavar="URL",
                        help="Redis URL (default $SYMPLE_REDIS_URL, $REDIS_URL or "
                             f"{DEFAULT_REDIS})")
    parser.add_argument("--prefix", default="symple:",
                        help="key prefix, as the server's key prefix (default symple:)")
    timeout_option(parser)


def frame_options(parser: argparse.ArgumentParser, default_type: str = "message") -> None:
    parser.add_argument("--type", default=default_type,
                        choices=["message", "event", "command", "presence"],
                        help=f"frame type (default {default_type})")
    parser.add_argument("--data", type=json_argument, metavar="JSON",
                        help="the frame's data, as JSON")
    parser.add_argument("--subtype", help="the frame's subtype")
    parser.add_argument("--event-name", metavar="NAME", help="the event name (--type event)")
    parser.add_argument("--field", dest="fields", type=json_object, metavar="JSON",
                        help="more top-level fields as a JSON object")


def add_command(commands: Any, name: str, run: Callable, summary: str, description: str,
                *options: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """A subcommand that runs ``run``; ``options`` (e.g. connection_options) come first."""
    parser = commands.add_parser(name, help=summary, description=description)
    for add_options in options:
        add_options(parser)
    parser.set_defaults(run=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symple", description="Talk to a Symple v4 server from a terminal, or "
        "manage its Redis sessions and broadcast channel.",
        epilog="Run 'symple COMMAND --help' for the options of each command.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_command(commands, "chat", run_chat, "interactive chat in a room",
                "Chat in a room; shows who joins and leaves. "
                "Type text to talk, /help for commands, Ctrl-D to quit.", connection_options)

    send = add_command(commands, "send", run_send, "send one frame and exit",
                       "Connect, send one frame, print it as JSON, exit.", connection_options)
    send.add_argument("--to", help="user|id, a user or room name (default: everyone "
                      "sharing a room)")
    send.add_argument("--wait-for", metavar="PEER",
                      help="first wait until this user (or user|id) is online")
    frame_options(send)

    listen = add_command(commands, "listen", run_listen, "print received frames as JSON lines",
                         "Print every frame received as one JSON object "
                         "per line (status goes to stderr), e.g. | jq .data", connection_options)
    listen.add_argument("--type", action="append", metavar="TYPE",
                        help="only frames of this type (repeatable)")
    listen.add_argument("--count", type=int, default=0, metavar="N",
                        help="exit after N frames (default: run until interrupted)")

    add_command(commands, "watch", run_watch, "live view of the visible peers",
                "Show the peers you can see, live. On a terminal "
                "the list is redrawn; piped, each change is a +/-/~ line.", connection_options)

    session = add_command(commands, "session", run_session,
                          "create, show or delete session tokens",
                          "Manage symple:session:<token> keys in Redis, "
                          "as the server reads them with --authentication.")
    actions = session.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="store a session; prints its token",
                                description="Store a session and print its token.")
    create.add_argument("token", nargs="?", help="the token (default: a random one)")
    create.add_argument("--user", "-u", required=True, help="the session's user")
    create.add_argument("--name", "-n", help="display name")
    create.add_argument("--room", "-r", action="append", metavar="ROOM",
                        help="room the session joins (repeatable)")
    create.add_argument("--data", dest="session_data", type=json_object, metavar="JSON",
                        help="extra session fields as a JSON object")
    create.add_argument("--ttl", type=positive_int, metavar="SECONDS",
                        help="expire after this many seconds (default: never)")
    for action in (create,
                   actions.add_parser("show", help="print a session as JSON",
                                      description="Print a stored session as JSON."),
                   actions.add_parser("delete", help="delete a session (log out)",
                                      description="Delete a stored session.")):
        if action is not create:
            action.add_argument("token", help="the session token")
        redis_options(action)

    emit = add_command(commands, "emit", run_emit, "publish a frame on symple:broadcast",
                       "Publish one frame on <prefix>broadcast; every "
                       "server node delivers it to its local sessions.")
    emit.add_argument("--to", action="append", required=True, metavar="TARGET",
                      help="user|id, a user or room name; repeat for several rooms")
    emit.add_argument("--rooms", action="store_true",
                      help="send 'to' as an array of rooms even with a single --to")
    emit.add_argument("--from", dest="sender", metavar="ADDRESS",
                      help="the frame's from (e.g. bot|backend)")
    frame_options(emit)
    redis_options(emit)
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        raise SystemExit(2)
    if args.command in ("send", "emit") and args.type == "event" and not args.event_name:
        parser.error("--type event needs --event-name")
    if hasattr(args, "url"):
        try:
            parse_url(args.url)
        except ValueError as exc:
            parser.error(str(exc))
    task.react(_run, (args,))


async def _command(reactor: Any, args: argparse.Namespace) -> None:
    try:
        await args.run(reactor, args)
    except AuthError as exc:
        fail(f"authentication failed: {exc.message} ({exc.status})")
    except (ConnectError, CommandError, NotConnected, ValueError) as exc:
        fail(str(exc))
    except defer.TimeoutError:
        fail(f"timed out after {args.timeout:g}s")


def _run(reactor: Any, args: argparse.Namespace) -> defer.Deferred:
    return defer.ensureDeferred(_command(reactor, args))


def fail(message: str) -> None:
    err(f"symple: {message}")
    raise SystemExit(1)


if __name__ == "__main__":
    main()
