"""What every ``symple`` command shares: output, one-line failures, frames from options."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson


class CommandError(Exception):
    """A failure to report in one line with exit status 1."""


def out(line: str) -> None:
    print(line, flush=True)


def err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def json_lines(frame: Any) -> str:
    return orjson.dumps(frame).decode("utf-8")


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
