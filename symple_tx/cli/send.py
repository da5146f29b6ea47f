"""``symple send``: connect, send one frame, print it, exit.

The server drops a frame to a peer that is not online (or shares no room with
the sender) without telling the sender, so a direct ``--to user|id`` checks the
roster first and fails instead of reporting a send that reached nobody.
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer

from ..client import ClientError
from .common import CommandError, build_frame, json_lines, out
from .connect import make_client, online


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
        if args.to is not None and "|" in args.to and args.to != client.address:
            await client.sync(args.timeout)  # the roster holds every visible peer now
            if client.roster.get(args.to) is None:
                raise CommandError(f"{args.to} is not online or shares no room with "
                                   f"{args.user}: nothing sent")
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
