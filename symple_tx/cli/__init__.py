"""``symple``: a command-line Symple client and Redis backend tool.

    symple chat URL --user alice --room lobby    interactive chat
    symple send URL --user bot --to 'bob|id' --data '{"text": "hi"}'
    symple listen URL --user spy --room lobby    frames as JSON lines
    symple watch URL --user ops --room lobby     live roster
    symple session create|show|delete TOKEN      symple:session:<token> in Redis
    symple emit --to lobby --data '{...}'        publish on symple:broadcast
    symple stream URL --user cam --room lobby    be a media peer (WebRTC, MJPEG)

Exit status: 0 success, 1 runtime failure (unreachable, refused, missing),
2 usage errors (bad options, bad JSON).

The package by job: this module parses the command line and runs a command;
``chat``, ``send``, ``listen``, ``watch`` are the WebSocket commands (their
client built by ``connect``), ``session`` and ``backend`` (Redis connection,
``emit``) the Redis ones; ``stream`` the media peer (the ``media`` extra); ``options`` and ``common`` are what they share.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional

from twisted.internet import defer, task

from ..client import AuthError, ConnectError, NotConnected, parse_url
from .backend import DEFAULT_REDIS, choose_redis, open_redis, run_emit, with_redis
from .chat import CHAT_SUBTYPE, DEFAULT_ROOM, Chat, ChatInput, run_chat
from .common import CommandError, build_frame, err, json_lines, out
from .connect import make_client, online, peer_label
from .listen import run_listen
from .options import (add_command, connection_options, frame_options, json_argument,
                      json_object, positive_int, redis_options, timeout_option)
from .send import run_send
from .session import run_session
from .stream import run_stream, stream_options, use_asyncio_reactor
from .watch import Watch, run_watch

#: The names of the former single-module ``symple_tx.cli``, importable as before.
__all__ = [
    "CHAT_SUBTYPE", "DEFAULT_REDIS", "DEFAULT_ROOM", "Chat", "ChatInput", "CommandError",
    "Watch", "add_command", "build_frame", "build_parser", "connection_options", "err",
    "fail", "frame_options", "json_argument", "json_lines", "json_object", "main",
    "make_client", "online", "open_redis", "out", "peer_label", "positive_int",
    "redis_options", "run_chat", "run_emit", "run_listen", "run_send", "run_session",
    "run_watch", "timeout_option", "with_redis",
]


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

    add_command(commands, "stream", run_stream, "stream video to WebRTC and MJPEG viewers",
                "Be a media peer: advertise a stream in presence and answer calls "
                "(the demo page's Watch button) with a test pattern, a looped file or a "
                "camera; optionally serve MJPEG over HTTP. Needs the media extra: "
                "pip install 'symple_tx[media]'.", connection_options, stream_options)
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        raise SystemExit(2)
    # Usage errors print the usage of the (sub)command they are about, and exit 2.
    usage = getattr(args, "command_parser", parser)
    if args.command in ("send", "emit") and args.type == "event" and not args.event_name:
        usage.error("--type event needs --event-name")
    if hasattr(args, "url"):
        try:
            parse_url(args.url)
        except ValueError as exc:
            usage.error(str(exc))
    if hasattr(args, "redis"):
        problem = choose_redis(args)
        if problem:
            usage.error(problem)
    if args.command == "stream":
        use_asyncio_reactor()  # aiortc and the client on one asyncio loop
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

