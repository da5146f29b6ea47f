"""The Redis commands' connection, and ``symple emit`` (publish on the broadcast channel)."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.error import ConnectError as TwistedConnectError

from ..emitter import Emitter
from ..redis_store import RedisAddress
from .common import CommandError, build_frame, err, json_lines, out

DEFAULT_REDIS = "redis://127.0.0.1:6379"


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
