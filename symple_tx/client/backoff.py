"""Retry delays for the client's ``ClientService``."""

from __future__ import annotations

import random
from typing import Callable

from twisted.application.internet import backoffPolicy


def backoff(initial: float = 1.0, maximum: float = 30.0, factor: float = 2.0,
            jitter: float = 1.0) -> Callable[[int], float]:
    """Twisted's ``backoffPolicy`` with jitter up to ``jitter`` seconds.

    ``ClientService`` counts failed attempts from 1, and the first retry waits
    ``initial``: initial, x factor each time, capped at ``maximum``, plus jitter.
    """
    policy = backoffPolicy(initial, maximum, factor, jitter=lambda: random.uniform(0, jitter))
    return lambda attempt: policy(max(attempt - 1, 0))
