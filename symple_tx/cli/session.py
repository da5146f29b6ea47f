"""``symple session create|show|delete``: session tokens in Redis."""

from __future__ import annotations

import argparse
import secrets
from typing import Any

from ..emitter import Sessions
from ..redis.keys import Keys
from .backend import with_redis
from .common import CommandError, json_lines, out


async def run_session(reactor: Any, args: argparse.Namespace) -> None:
    async def use(redis: Any) -> None:
        sessions = Sessions(redis, Keys(args.prefix).session_prefix)
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
