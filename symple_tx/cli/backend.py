"""The Redis commands' connection, and ``symple emit`` (publish on the broadcast channel)."""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Optional

from ..emitter import Emitter
from ..redis import connect
from ..redis.address import RedisAddress
from ..redis.keys import Keys
from .common import CommandError, build_frame, err, json_lines, out

DEFAULT_REDIS = "redis://127.0.0.1:6379"
#: Where the URL comes from when --redis is not given, in order.
REDIS_VARIABLES = ("SYMPLE_REDIS_URL", "REDIS_URL")


def choose_redis(args: argparse.Namespace) -> Optional[str]:
    """Settle ``args.redis`` and ``args.redis_source``; a usage problem, or None."""
    args.redis_source = "--redis"
    if args.redis is None:
        args.redis_source, args.redis = "the default", DEFAULT_REDIS
        for name in REDIS_VARIABLES:
            if os.environ.get(name):
                args.redis_source, args.redis = f"${name}", os.environ[name]
                break
    try:
        RedisAddress.parse(args.redis)
    except ValueError as exc:
        return f"{args.redis_source}: {exc}"
    return None


def shown_redis(args: argparse.Namespace) -> str:
    """Which Redis (never its password), and where its URL came from unless --redis."""
    shown = str(RedisAddress.parse(args.redis))
    if args.redis_source == "the default":
        return f"{shown} (the default; choose with --redis URL or $SYMPLE_REDIS_URL)"
    if args.redis_source != "--redis":
        return f"{shown} (from {args.redis_source})"
    return shown


async def open_redis(reactor: Any, args: argparse.Namespace) -> Any:
    """A connection that fails fast (no retrying) when Redis is unreachable, and
    whose commands wait at most ``--timeout`` seconds.

    ``rediss://`` verifies the server's certificate (``--redis-ca`` or the
    system's CAs), like every other Redis connection.
    """
    try:
        address = RedisAddress.parse(args.redis, getattr(args, "redis_ca", None))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        return await connect.connect_once(address, reactor, args.timeout, args.timeout)
    except ConnectionError as exc:
        raise CommandError(str(exc)) from None


async def with_redis(reactor: Any, args: argparse.Namespace,
                     use: Callable[[Any], Any]) -> None:
    redis = await open_redis(reactor, args)
    try:
        await use(redis)
    except connect.RedisUnavailable as exc:
        raise CommandError(str(exc)) from None
    finally:
        await redis.disconnect()


async def run_emit(reactor: Any, args: argparse.Namespace) -> None:
    frame = build_frame(args)
    if args.sender:
        frame["from"] = args.sender
    try:
        emitter = Emitter(None, channel=Keys(args.prefix).broadcast).to(
            args.to[0] if len(args.to) == 1 and not args.rooms else args.to)
        frame = emitter.frame(frame)
    except ValueError as exc:
        raise CommandError(str(exc)) from None

    async def use(redis: Any) -> None:
        count = await Emitter(redis, channel=emitter.channel).emit(frame)
        out(json_lines(frame))
        err(f"published to {count} server node(s) via Redis at {shown_redis(args)}")
    await with_redis(reactor, args, use)
