"""The demo app's files as served over HTTP and as installed; no browser needed.

A browser refuses an ES module served with a non-JavaScript type and stops at
the first import that 404s, so every file the page reaches is fetched here.
"""

from __future__ import annotations

import os
import re
from importlib import metadata

from twisted.internet import defer
from twisted.trial import unittest

from symple_tx.web import static_root
from tests.support import ServerTestCase, http_get

#: Static references in HTML (src/href) and in modules (import ... from / import "...").
HTML_REFERENCE = re.compile(rb"""(?:src|href)\s*=\s*["']([^"']+)["']""")
MODULE_IMPORT = re.compile(rb"""^\s*(?:import\s+(?:[\w*{}\s,]+\s+from\s+)?"""
                           rb"""|export\s+[\w*{}\s,]+\s+from\s+)["']([^"']+)["']""", re.M)
EXPECTED_TYPES = {".html": b"text/html", ".js": b"text/javascript", ".css": b"text/css"}


def static_files() -> list[str]:
    """Paths of the demo files relative to the static folder, with '/' separators."""
    root = static_root()
    return sorted(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                  for folder, _, names in os.walk(root) for name in names)


class ServedFilesTests(ServerTestCase):
    def get(self, path: str, **kwargs):
        return http_get(f"http://127.0.0.1:{self.port}{path}", **kwargs)

    @defer.inlineCallbacks
    def test_every_file_the_page_reaches_is_served_with_its_type(self):
        seen: set[str] = set()
        queue = ["/"]
        while queue:
            path = queue.pop()
            if path in seen:
                continue
            seen.add(path)
            code, headers, body = yield self.get(path)
            self.assertEqual(code, 200, f"{path} is not served")
            extension = os.path.splitext(path)[1] or ".html"
            content_type = headers.getRawHeaders(b"content-type")[0]
            self.assertTrue(content_type.startswith(EXPECTED_TYPES[extension]),
                            f"{path} served as {content_type!r}")
            self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-cache"])
            pattern = MODULE_IMPORT if extension == ".js" else HTML_REFERENCE
            base = path.rsplit("/", 1)[0] + "/"
            for reference in pattern.findall(body):
                target = reference.decode()
                if target.startswith("data:"):
                    continue
                self.assertFalse(re.match(r"^([a-z]+:)?//", target),
                                 f"{path} loads {target} from elsewhere (no network allowed)")
                queue.append(os.path.normpath(base + target))
        self.assertTrue({"/js/app.js", "/js/symple.js", "/js/call.js", "/app.css"} <= seen, seen)

    @defer.inlineCallbacks
    def test_folders_are_not_listed(self):
        code, _, body = yield self.get("/js/")
        self.assertEqual(code, 404)
        self.assertNotIn(b"app.js", body)

    @defer.inlineCallbacks
    def test_paths_outside_the_folder_are_refused(self):
        code, _, body = yield self.get("/js/../../web.py")
        self.assertEqual(code, 404)
        self.assertNotIn(b"import", body)


class InstalledFilesTests(unittest.TestCase):
    def test_every_static_file_is_installed(self):
        """package_data must carry subfolders too (the ``static/**/*`` glob)."""
        try:
            recorded = metadata.files("symple_tx") or []
        except metadata.PackageNotFoundError:
            raise unittest.SkipTest("symple_tx is not installed")
        installed = {str(path).replace(os.sep, "/") for path in recorded}
        if "symple_tx/web.py" not in installed:
            raise unittest.SkipTest("editable install: the source tree is what runs")
        missing = [name for name in static_files() if f"symple_tx/static/{name}" not in installed]
        self.assertEqual(missing, [])
        self.assertIn("js/app.js", static_files())
