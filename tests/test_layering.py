"""The client side loads nothing of the server, and the two meet only in shared modules.

A script that imports ``symple_tx.client`` should not pay for (or be changed
by) the server: no router, no server transport, no Prometheus registry, and
Autobahn exactly as it ships.  The import graph check reads the sources, so a
lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

import orjson
from twisted.internet import defer, utils
from twisted.trial import unittest

import symple_tx

PACKAGE = Path(symple_tx.__file__).resolve().parent

#: Where the server starts (the twistd plugin names symple_tx.tap) and its layers.
SERVER_ROOTS = ("symple_tx.tap", "symple_tx.service", "symple_tx.web", "symple_tx.websocket",
                "symple_tx.router", "symple_tx.session", "symple_tx.auth", "symple_tx.hooks",
                "symple_tx.broadcast", "symple_tx.bus", "symple_tx.metrics",
                "symple_tx.ratelimit", "symple_tx.config", "symple_tx.cluster")
#: Where the client side starts: the client, the command line, the backend emitter, the
#: media peer.
CLIENT_ROOTS = ("symple_tx.client", "symple_tx.cli", "symple_tx.emitter", "symple_tx.roster",
                "symple_tx.media")
#: Modules both sides may load: the wire format, Autobahn helpers, endpoints, the Redis layer.
SHARED = frozenset({"symple_tx", "symple_tx.wire", "symple_tx.autobahn_support",
                    "symple_tx.endpoints", "symple_tx.redis_store"})
SHARED_PACKAGES = ("symple_tx.redis",)


def is_shared(module: str) -> bool:
    return module in SHARED or any(module == p or module.startswith(p + ".")
                                   for p in SHARED_PACKAGES)


def all_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known and "." in target:
            target = target.rpartition(".")[0]
        if target in known:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                add(candidate if candidate in known else target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def with_parents(module: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a`` and ``a.b`` first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def reach(graph: dict[str, set[str]], roots: Iterable[str]) -> dict[str, Optional[str]]:
    """Every module loaded from ``roots``, each with the module that first imported it."""
    seen: dict[str, Optional[str]] = {}
    stack: list[tuple[str, Optional[str]]] = []
    for root in roots:
        stack += [(m, None) for m in with_parents(root)]
        stack += [(m, None) for m in graph if m.startswith(root + ".")]
    while stack:
        module, via = stack.pop()
        if module in seen:
            continue
        seen[module] = via
        for target in graph.get(module, ()):
            for loaded in with_parents(target):
                stack.append((loaded, module))
    return seen


def chain(seen: dict[str, Optional[str]], module: str) -> str:
    steps = [module]
    while seen.get(steps[-1]) is not None:
        steps.append(seen[steps[-1]])  # type: ignore[arg-type]
    return " <- ".join(steps)


def crossings(graph: dict[str, set[str]], server: Iterable[str],
              client: Iterable[str]) -> list[str]:
    """Modules that both sides load although they are not shared, with both import chains."""
    server_side, client_side = reach(graph, server), reach(graph, client)
    return [f"{m}: server {chain(server_side, m)}; client {chain(client_side, m)}"
            for m in sorted(set(server_side) & set(client_side)) if not is_shared(m)]


class ImportGraphTests(unittest.TestCase):
    def test_server_and_client_meet_only_in_shared_modules(self):
        found = crossings(import_graph(), SERVER_ROOTS, CLIENT_ROOTS)
        self.assertEqual(found, [], "server and client code share non-shared modules:\n"
                         + "\n".join(found))

    def test_the_graph_sees_the_imports_that_matter(self):
        graph = import_graph()
        self.assertIn("symple_tx.router", graph["symple_tx.websocket"])
        self.assertIn("symple_tx.autobahn_support", graph["symple_tx.client.protocol"])
        self.assertIn("symple_tx.endpoints", graph["symple_tx.redis.address"])
        self.assertIn("symple_tx.redis.connect", graph["symple_tx.cli.backend"])
        self.assertIn("symple_tx.cluster.redis_bus", reach(graph, ["symple_tx.tap"]))
        self.assertIn("symple_tx.client.peer", reach(graph, ["symple_tx.cli"]))

    def test_a_crossing_is_reported_with_both_chains(self):
        graph = {"symple_tx": set(), "symple_tx.router": {"symple_tx.wire"},
                 "symple_tx.wire": set(), "symple_tx.redis": set(),
                 "symple_tx.redis.keys": set(), "symple_tx.client": {"symple_tx.helper"},
                 "symple_tx.helper": {"symple_tx.router", "symple_tx.redis.keys"}}
        found = crossings(graph, ["symple_tx.router"], ["symple_tx.client"])
        self.assertEqual(found, ["symple_tx.router: server symple_tx.router; client "
                                 "symple_tx.router <- symple_tx.helper <- symple_tx.client"])
        graph["symple_tx.router"] = {"symple_tx.wire", "symple_tx.redis.keys"}
        del graph["symple_tx.helper"]
        graph["symple_tx.client"] = {"symple_tx.redis.keys"}
        self.assertEqual(crossings(graph, ["symple_tx.router"], ["symple_tx.client"]), [])


PROBE = """
import json, pprint, sys
{imports}
from autobahn.websocket import protocol
print(json.dumps({{
    "modules": sorted(m for m in sys.modules
                      if m.split(".")[0] in ("symple_tx", "prometheus_client")),
    "patched": protocol.pformat is not pprint.pformat,
}}))
"""


class FreshInterpreterTests(unittest.TestCase):
    @defer.inlineCallbacks
    def probe(self, *imports: str) -> defer.Deferred:
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, ["-c", PROBE.format(imports="\n".join(imports))],
            env=dict(os.environ), path=str(PACKAGE.parent))
        self.assertEqual(code, 0, err.decode())
        return orjson.loads(out.splitlines()[-1])

    @defer.inlineCallbacks
    def test_importing_the_client_loads_no_server_and_patches_nothing(self):
        found = yield self.probe("import symple_tx.client")
        self.assertIn("symple_tx.client.peer", found["modules"])
        for server_only in ("symple_tx.router", "symple_tx.websocket", "symple_tx.metrics",
                            "symple_tx.auth", "symple_tx.service", "prometheus_client"):
            self.assertNotIn(server_only, found["modules"])
        self.assertFalse(found["patched"])

    @defer.inlineCallbacks
    def test_the_server_factory_applies_the_pformat_workaround_itself(self):
        found = yield self.probe("import symple_tx.websocket")
        self.assertIn("symple_tx.router", found["modules"])
        self.assertFalse(found["patched"], "importing the transport changes nothing")
        found = yield self.probe("from symple_tx.service import SympleServer",
                                 "SympleServer()")
        self.assertTrue(found["patched"])
