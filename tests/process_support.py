"""Commands run as real subprocesses: the ``symple`` script, example programs."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional, Union

from twisted.internet import defer, error, reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import ProcessProtocol

from tests.support import with_timeout

#: Seconds to wait for a subprocess: starting Python on a loaded machine is slow.
PROCESS_WAIT = 30.0


def symple_command() -> list[str]:
    """The installed console script, or the module when running from a bare checkout."""
    script = os.path.join(os.path.dirname(sys.executable), "symple")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "symple_tx.cli"]


class Cli(ProcessProtocol):
    """A running ``symple`` process: stdout lines as a queue, stderr collected."""

    def __init__(self) -> None:
        self.lines: DeferredQueue = DeferredQueue()
        self.stdout: list[str] = []
        self.stderr = b""
        self.ended: Deferred = Deferred()
        self._partial = b""
        self._stderr_waiters: list[tuple[str, Deferred]] = []

    def outReceived(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        for line in complete:
            text = line.decode("utf-8")
            self.stdout.append(text)
            self.lines.put(text)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        for item in list(self._stderr_waiters):
            if item[0] in self.stderr.decode("utf-8", "replace"):
                self._stderr_waiters.remove(item)
                item[1].callback(None)

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)

    def write(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\n")

    def err_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    @defer.inlineCallbacks
    def expect(self, match: Union[str, Callable[[str], bool]], what: str = ""):
        """The next stdout line containing ``match`` (or passing it); earlier lines are skipped."""
        test = (lambda line: match in line) if isinstance(match, str) else match
        while True:
            line = yield with_timeout(self.lines.get(), PROCESS_WAIT,
                                      what=what or f"stdout line {match!r}")
            if test(line):
                return line

    def stderr_has(self, text: str) -> Deferred:
        if text in self.err_text():
            return defer.succeed(None)
        d: Deferred = Deferred()
        self._stderr_waiters.append((text, d))
        return with_timeout(d, PROCESS_WAIT, what=f"stderr {text!r}")


class CliMixin:
    """Starts ``symple`` processes and makes sure none outlives its test."""

    def spawn(self, *args: str, program: Optional[list[str]] = None,
              env: Optional[dict[str, str]] = None) -> Cli:
        """Start ``symple ARGS`` (or ``program ARGS``), in ``env`` or this environment."""
        cli = Cli()
        command = (program or symple_command()) + list(args)
        reactor.spawnProcess(cli, command[0], command,
                             env=os.environ.copy() if env is None else env)

        def stop():
            if not cli.ended.called:
                try:
                    cli.transport.signalProcess("KILL")
                except error.ProcessExitedAlready:
                    pass
            return cli.ended
        self.addCleanup(stop)  # type: ignore[attr-defined]
        return cli

    @defer.inlineCallbacks
    def run_cli(self, *args: str, seconds: float = PROCESS_WAIT,
                env: Optional[dict[str, str]] = None):
        """Run to completion: (exit code, stdout lines, stderr text)."""
        cli = self.spawn(*args, env=env)
        code = yield with_timeout(cli.ended, seconds, what=f"symple {' '.join(args)}")
        return code, cli.stdout, cli.err_text()
