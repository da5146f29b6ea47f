"""A Python media peer: streams a test pattern, a file or a camera over WebRTC and MJPEG.

Behind the ``media`` install extra (``pip install symple_tx[media]``: aiortc,
PyAV, Pillow).  Importing this package is cheap and never fails; its modules
import aiortc, so call ``require()`` first where a clear message beats an
ImportError.  The server never imports it.
"""

from __future__ import annotations

import importlib

#: The distributions behind the extra, by the module each one provides.
MODULES = {"aiortc": "aiortc", "av": "av", "PIL": "pillow"}


class MediaUnavailable(Exception):
    """The media extra is not installed."""


def require() -> None:
    """Raise ``MediaUnavailable`` naming the extra when aiortc, PyAV or Pillow is missing."""
    missing = []
    for module, distribution in MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    if missing:
        raise MediaUnavailable(f"{', '.join(missing)} not installed: "
                               "pip install 'symple_tx[media]'")
