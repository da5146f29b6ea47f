"""symple_tx: a Symple v4 server (and client tools) built on Twisted and Autobahn."""

__version__ = "0.1.0"
