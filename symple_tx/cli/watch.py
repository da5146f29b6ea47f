"""``symple watch``: a live view of the peers one can see."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet import defer

from ..client import SympleClient
from .common import json_lines, out
from .connect import make_client, online


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
