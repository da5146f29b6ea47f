"""The ``SympleClient`` of the WebSocket commands, built from their options."""

from __future__ import annotations

import argparse

from ..client import ClientError, SympleClient
from .common import CommandError


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
