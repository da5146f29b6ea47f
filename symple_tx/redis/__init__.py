"""The one Redis layer: where Redis is, what its keys are called, how to connect.

* ``address`` — ``RedisAddress``, parsed once from a ``redis://``,
  ``rediss://`` or ``unix:`` URL (``SCHEMES`` takes more schemes);
* ``keys`` — ``Keys(prefix)``, the one place key and channel names are spelled;
* ``connect`` — every txredisapi connection of the server, the backend
  helpers and the CLI: verified TLS, backoff, one subscriber that subscribes
  again after each reconnect, and one readable log line per outage;
* ``store`` — the ``<prefix>session:<token>`` session store;
* ``sentinel`` — ``redis+sentinel://``: the master found through Sentinel
  before every connection, and connections moved when Sentinel announces
  a new master (``+switch-master``), so a failover is followed.
"""

from .address import SCHEMES, RedisAddress
from .keys import Keys
from .sentinel import SentinelAddress  # registers redis+sentinel:// in SCHEMES

__all__ = ["SCHEMES", "Keys", "RedisAddress", "SentinelAddress"]
