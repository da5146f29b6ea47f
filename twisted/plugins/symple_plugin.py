"""twistd plugin: ``twistd -n symple --listen tcp:4500``."""

from twisted.application.service import ServiceMaker

symple = ServiceMaker(
    "Symple v4 server",
    "symple_tx.tap",
    "Symple v4 real-time messaging, presence and WebRTC signalling over WebSocket",
    "symple",
)
