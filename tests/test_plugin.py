"""Packaging and the twistd plugin, as an operator meets them: real processes, no source tree.

Every command runs from a scratch directory with the environment cleaned of
``SYMPLE_*``, so what is found comes from the installed package, not from
the checkout or the caller's settings.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import sys
import zipfile

from twisted.internet import defer, utils
from twisted.trial import unittest

from symple_tx.tap import SympleOptions
from tests.support import (clean_environment, free_port, spawn_twistd, twistd_command,
                           wait_serving)

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scratch_dir(test: unittest.TestCase) -> str:
    path = os.path.abspath(test.mktemp())
    os.makedirs(path)
    return path


@defer.inlineCallbacks
def run(test: unittest.TestCase, argv: list[str], **environ: str):
    """Run a command to completion from a scratch directory; fires with (output, exit code)."""
    out, err, code = yield utils.getProcessOutputAndValue(
        argv[0], argv[1:], env=clean_environment(**environ), path=scratch_dir(test))
    return (out + err).decode("utf-8", "replace"), code


def twistd(test: unittest.TestCase, *args: str, **environ: str):
    return run(test, twistd_command() + list(args), **environ)


class DiscoveryTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_twistd_lists_the_plugin(self):
        output, code = yield twistd(self, "--help")
        self.assertEqual(code, 0, output)
        self.assertRegex(output, r"\n\s+symple\s+Symple v4 real-time messaging")

    @defer.inlineCallbacks
    def test_twistd_runs_the_plugin_and_serves_healthz(self):
        port = free_port()
        process = spawn_twistd(self, ["symple", "--listen", f"tcp:{port}:interface=127.0.0.1"])
        health = yield wait_serving(process, port)
        self.assertEqual(health["status"], "ok")
        process.signal("TERM")
        yield process.wait()
        self.assertEqual(process.exit_signal, signal.SIGTERM, process.text)

    @defer.inlineCallbacks
    def test_version(self):
        from symple_tx import __version__
        output, code = yield twistd(self, "symple", "--version")
        self.assertEqual((output.strip(), code), (f"symple_tx {__version__}", 0))


class HelpTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_help_documents_every_option_with_its_default(self):
        output, code = yield twistd(self, "symple", "--help")
        self.assertEqual(code, 0, output)
        blocks = option_blocks(output)
        for long_name, short, default, *_ in SympleOptions.optParameters:
            block = blocks.get(long_name)
            self.assertIsNotNone(block, f"--{long_name} missing from the help")
            if default is not None:
                self.assertIn(f"[default: {default}]", block, long_name)
            else:
                self.assertRegex(block, r"Default:? ", long_name)
            if short:
                self.assertIn(f"-{short}, --{long_name}=", output)
        for flag in SympleOptions.optFlags:
            self.assertIn(flag[0], blocks)
        for repeatable in ("listen", "allowed-origin"):
            self.assertIn("repeatable", blocks[repeatable])
            self.assertIn("Default:", blocks[repeatable])
        self.assertIn("SYMPLE_", output)


def option_blocks(help_text: str) -> dict[str, str]:
    """{option name: its help text with the line wrapping undone}."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        match = re.match(r" {2,6}(?:-\w, )?--([\w-]+)=?\s*(.*)", line)
        if match:
            current = match.group(1)
            blocks[current] = match.group(2)
        elif current and line.startswith(" " * 20):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


class BadValueTests(unittest.TestCase):
    """A mistake in the options ends twistd with one clear line, never a traceback."""

    @defer.inlineCallbacks
    def assert_one_line(self, args: list[str], *fragments: str, **environ: str):
        output, code = yield twistd(self, "-n", "--pidfile=", "symple", *args, **environ)
        self.assertNotEqual(code, 0, output)
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, output)
        for fragment in fragments:
            self.assertIn(fragment, lines[0])
        return lines[0]

    def test_unparseable_endpoint(self):
        return self.assert_one_line(["--listen", "tcp:notaport"], "--listen", "tcp:notaport",
                                    "port must be a number")

    def test_port_out_of_range(self):
        return self.assert_one_line(["--listen", "tcp:99999"], "port must be 0-65535")

    def test_unknown_endpoint_type(self):
        return self.assert_one_line(["--listen", "carrier-pigeon:1"], "carrier-pigeon")

    def test_missing_certificate(self):
        return self.assert_one_line(
            ["--listen", "ssl:0:privateKey=/nonexistent/key.pem"], "/nonexistent/key.pem")

    def test_garbage_certificate(self):
        path = os.path.join(scratch_dir(self), "garbage.pem")
        with open(path, "w") as f:
            f.write("not a certificate\n")
        return self.assert_one_line(["--ssl-key", path, "--ssl-cert", path], "not valid PEM")

    def test_unknown_hook_module(self):
        return self.assert_one_line(["--auth-hook", "no_such_module_xyz:hook"], "--auth-hook",
                                    "no_such_module_xyz")

    def test_bad_number(self):
        return self.assert_one_line(["--max-connections", "lots"], "--max-connections", "'lots'")

    def test_environment_variable_with_a_bad_value(self):
        return self.assert_one_line([], "SYMPLE_RATE_LIMIT", "'fast'", SYMPLE_RATE_LIMIT="fast")

    def test_unknown_option(self):
        return self.assert_one_line(["--colour"], "--colour")

    def test_port_in_use(self):
        import socket
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            output, code = yield twistd(self, "-n", "--pidfile=", "symple", "--listen",
                                        f"tcp:{port}:interface=127.0.0.1")
        self.assertNotEqual(code, 0)
        self.assertNotIn("Traceback", output)
        self.assertIn(f"cannot listen on 127.0.0.1:{port}", output)

    test_port_in_use = defer.inlineCallbacks(test_port_in_use)


class WheelTests(unittest.TestCase):
    """The built wheel ships the plugin, and a fresh environment finds it there."""

    @defer.inlineCallbacks
    def test_wheel_installs_a_working_plugin_into_a_fresh_venv(self):
        try:
            import setuptools  # noqa: F401
            import wheel  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("building the wheel needs setuptools and wheel "
                                    "(pip install -e .[test])")
        wheel_path = yield self.build_wheel()
        names = set(zipfile.ZipFile(wheel_path).namelist())
        self.assertIn("twisted/plugins/symple_plugin.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertIn("symple_tx/static/index.html", names)
        modules = {f"symple_tx/{os.path.basename(p)}"
                   for p in glob.glob(os.path.join(SOURCE_ROOT, "symple_tx", "*.py"))}
        self.assertEqual(modules - names, set())

        python, site_dir = yield self.fresh_venv()
        zipfile.ZipFile(wheel_path).extractall(site_dir)
        output, code = yield run(self, [python, "-c",
                                        "import symple_tx, twisted.plugins.symple_plugin as p;"
                                        "print(symple_tx.__file__); print(p.__file__)"])
        self.assertEqual(code, 0, output)
        for path in output.split():
            self.assertTrue(path.startswith(site_dir), output)

        twistd_in_venv = [python, "-c", "from twisted.scripts.twistd import run; run()"]
        output, code = yield run(self, twistd_in_venv + ["--help"])
        self.assertEqual(code, 0, output)
        self.assertIn("symple", output)
        port = free_port()
        process = spawn_twistd(self, ["symple", "--listen", f"tcp:{port}:interface=127.0.0.1"],
                               command=twistd_in_venv)
        yield wait_serving(process, port)
        process.signal("TERM")
        yield process.wait()

    @defer.inlineCallbacks
    def build_wheel(self):
        """Build from a copy of the source, so the checkout gains no build/ or egg-info."""
        source = os.path.join(scratch_dir(self), "src")
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "dropin.cache")
        for name in ("symple_tx", "twisted"):
            shutil.copytree(os.path.join(SOURCE_ROOT, name), os.path.join(source, name),
                            ignore=ignore)
        for name in ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md"):
            if os.path.exists(os.path.join(SOURCE_ROOT, name)):
                shutil.copy(os.path.join(SOURCE_ROOT, name), source)
        out_dir = os.path.join(scratch_dir(self), "dist")
        output, code = yield run(self, [sys.executable, "-m", "pip", "wheel", "--no-deps",
                                        "--no-build-isolation", "--no-index", "-q",
                                        "-w", out_dir, source])
        self.assertEqual(code, 0, output)
        [wheel_path] = glob.glob(os.path.join(out_dir, "*.whl"))
        return wheel_path

    @defer.inlineCallbacks
    def fresh_venv(self):
        """A new venv holding nothing of ours; it borrows the dependencies by path."""
        venv = os.path.join(scratch_dir(self), "venv")
        output, code = yield run(self, [sys.executable, "-m", "venv", "--without-pip", venv])
        self.assertEqual(code, 0, output)
        python = os.path.join(venv, "bin", "python")
        output, code = yield run(self, [python, "-c",
                                        "import sysconfig; print(sysconfig.get_path('purelib'))"])
        site_dir = output.strip()
        # Plain path lines to mirrors of the dependencies' directories without this
        # package (installed or editable) in them, so only the wheel can provide it.
        borrowed = [p for p in sys.path if p.endswith("site-packages")]
        mirrors = [mirror_without_symple(p, os.path.join(scratch_dir(self), f"deps{i}"))
                   for i, p in enumerate(borrowed)]
        with open(os.path.join(site_dir, "zz_dependencies.pth"), "w") as f:
            f.write("\n".join(mirrors) + "\n")
        return python, site_dir


def mirror_without_symple(site_packages: str, mirror: str) -> str:
    """Symlink ``site_packages`` entry by entry, leaving out symple_tx and its plugin."""
    def link_all(source: str, target: str, skip) -> None:
        os.makedirs(target)
        for name in os.listdir(source):
            if not skip(name):
                os.symlink(os.path.join(source, name), os.path.join(target, name))

    link_all(site_packages, mirror,
             lambda name: name.startswith(("symple_tx", "__editable__")) or name == "twisted"
             or name.endswith(".pth"))
    twisted = os.path.join(site_packages, "twisted")
    if os.path.isdir(twisted):
        link_all(twisted, os.path.join(mirror, "twisted"), lambda name: name == "plugins")
        link_all(os.path.join(twisted, "plugins"), os.path.join(mirror, "twisted", "plugins"),
                 lambda name: name.startswith("symple_plugin") or name == "dropin.cache")
    return mirror
