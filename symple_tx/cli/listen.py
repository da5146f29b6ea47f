"""``symple listen``: every frame received as one JSON line."""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer

from ..client import ClientError
from .common import err, json_lines, out
from .connect import make_client, online


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
