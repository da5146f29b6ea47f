"""The server under test as a separate process: start, watch (/proc), stop."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Optional

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """In the child: get SIGTERM if the benchmark dies without stopping us."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process so far (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    return sum(cpu_times(pid))


def twistd() -> list[str]:
    """The ``twistd`` of the running interpreter's environment."""
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def symple_command(port: int, *extra: str) -> list[str]:
    return [*twistd(), "-n", "--pidfile=", "symple",
            "--listen", f"tcp:{port}:interface={HOST}:backlog=1024",
            "--max-connections", "50000", "--rate-limit", "1000000", "--rate-period", "1",
            "--delivery-limit", "0",
            "--no-demo", *extra]


def symple_port_command(port: int, *extra: str) -> list[str]:
    """``twistd symple --port N`` with its defaults (listen, backlog, limits) unless ``extra``."""
    return [*twistd(), "-n", "--pidfile=", "symple", "--port", str(port), *extra]


#: Lifts the rate budgets (frames and deliveries) for the runs that measure throughput.
UNLIMITED = ("--rate-limit", "1000000", "--rate-period", "1", "--delivery-limit", "0",
             "--ping-interval", "0")


def node_command(directory: str) -> list[str]:
    """The Node.js reference server (``symple-server``), started as its README says."""
    return ["node", str(Path(directory).resolve() / "server.js")]


def echo_command(port: int, broadcast: bool = False) -> list[str]:
    command = [sys.executable, str(BENCH_DIR / "baseline_echo.py"), "--port", str(port)]
    return command + ["--broadcast"] if broadcast else command


def floor_command(port: int, mode: str) -> list[str]:
    """One of the thinnest servers for the echo workload (bench/floor.py)."""
    return [sys.executable, str(BENCH_DIR / "floor.py"), "--mode", mode, "--port", str(port)]


class ServerProcess:
    """A server started for one measurement and always stopped afterwards."""

    def __init__(self, command: list[str], port: int, pythonpath: Optional[str] = None,
                 env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        self.command = command
        self.port = port
        self.env = dict(os.environ, **(env or {}))
        if pythonpath:  # e.g. a patched copy of symple_tx to compare with
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (pythonpath, self.env.get("PYTHONPATH")) if p)
        self.log = tempfile.NamedTemporaryFile(prefix="symple-bench-", suffix=".log", delete=False)
        self._own_cwd = cwd is None
        self.cwd = tempfile.mkdtemp(prefix="symple-bench-") if cwd is None else cwd
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 90.0) -> None:
        self.proc = subprocess.Popen(self.command, cwd=self.cwd, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"server did not listen on {self.port} in {timeout}s:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.log.close()
        os.unlink(self.log.name)
        if self._own_cwd:
            try:
                os.rmdir(self.cwd)
            except OSError:
                pass

    def log_tail(self, lines: int = 30) -> str:
        with open(self.log.name, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        return cpu_seconds(self.pid)

    def cpu_times(self) -> tuple[float, float]:
        """User and system (kernel) CPU time of the server process so far."""
        return cpu_times(self.pid)

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def wait_idle(self, quiet: float = 0.3, timeout: float = 60.0) -> None:
        """Wait until the server has used no CPU for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.cpu_seconds()
            if now - last < 1.5 / CLOCK_TICKS:
                return
            last = now
        raise RuntimeError("the server did not become idle")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "-"
    except (OSError, subprocess.SubprocessError):
        return "-"


def machine() -> dict:
    """What the figures were measured on."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from autobahn.websocket import USES_NVX
    except ImportError:
        USES_NVX = False
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in
                     ("symple_tx", "Twisted", "autobahn", "orjson", "prometheus_client")},
        "autobahn_nvx": bool(USES_NVX),
        "node": _node_version(),
        "loadavg": os.getloadavg(),
    }
