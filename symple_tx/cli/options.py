"""argparse option groups and value types shared by the ``symple`` subcommands."""

from __future__ import annotations

import argparse
from typing import Any, Callable

import orjson

from .backend import DEFAULT_REDIS


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
    # No argparse default: main() picks it (backend.choose_redis) and says where from.
    parser.add_argument("--redis", metavar="URL",
                        help="Redis URL (default $SYMPLE_REDIS_URL, $REDIS_URL or "
                             f"{DEFAULT_REDIS})")
    parser.add_argument("--redis-ca", metavar="PEM",
                        help="trust these CA certificates for rediss:// (default: the "
                             "system's, or the URL's ?ssl_ca_certs=)")
    parser.set_defaults(command_parser=parser)
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
    parser.set_defaults(run=run, command_parser=parser)
    return parser
