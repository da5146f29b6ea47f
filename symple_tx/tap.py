"""``twistd symple``: command-line options and ``makeService``.

Every option can also come from the environment: ``SYMPLE_<OPTION>`` (dashes
as underscores, e.g. ``SYMPLE_MAX_CONNECTIONS``), plus the Node.js server's
names ``PORT``, ``REDIS_URL``, ``SYMPLE_AUTHENTICATION``,
``SYMPLE_DYNAMIC_ROOMS``, ``SYMPLE_SESSION_TTL``, ``SYMPLE_REDIS_URL``,
``SYMPLE_SSL_KEY`` and ``SYMPLE_SSL_CERT``.  The command line wins.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, Mapping, Optional

from OpenSSL import SSL, crypto
from twisted.internet import reactor as default_reactor
from twisted.internet.error import CannotListenError
from twisted.python import usage

from . import listen
from .cluster.workers import Supervisor, worker_endpoints
from .budgets import parse_networks
from .config import Settings
from .hooks import load_callable
from .redis.address import RedisAddress
from .service import SympleServer, SympleService

DEFAULT_PORT = 4500
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise usage.UsageError(f"{name} must be true or false, not {value!r}")


def _number(kind: Callable[[str], Any], minimum: float, doc: str) -> Callable[[str], Any]:
    noun = "a whole number" if kind is int else "a number"

    def convert(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise ValueError(f"expected {noun}, got {value!r}") from None
        if number != number or number < minimum:  # NaN too
            raise ValueError(f"must be {doc}, got {value!r}")
        return number
    convert.coerceDoc = f"({doc})"  # type: ignore[attr-defined]
    return convert


#: The defaults of every option come from here: one place to change them.
_DEFAULTS = Settings()

_int = _number(int, 0, "0 or more")
_positive_int = _number(int, 1, "1 or more")
_seconds = _number(float, 0, "seconds, 0 or more")
_positive_seconds = _number(float, 0.001, "seconds, more than 0")


def _networks(value: str) -> tuple[str, ...]:
    """``10.0.0.0/8, ::1`` as a tuple of networks; ``none`` for none."""
    items = tuple(value.replace(",", " ").split())
    if items in ((), ("none",)):
        return ()
    parse_networks(items)
    return items


_networks.coerceDoc = "(networks, comma-separated, or none)"  # type: ignore[attr-defined]


class _NamedCoercion(usage.CoerceParameter):
    """Name the option in a bad value's error: ``--rate-limit: expected ...``."""

    def dispatch(self, parameterName: str, value: Any) -> None:
        try:
            super().dispatch(parameterName, value)
        except usage.UsageError as exc:
            reason = str(exc).removeprefix("Parameter type enforcement failed: ")
            raise usage.UsageError(f"--{parameterName}: {reason}") from None

#: Environment names that differ from SYMPLE_<OPTION> (the Node.js server's).
ENV_ALIASES = {
    "port": ["SYMPLE_PORT", "PORT"],
    "redis": ["SYMPLE_REDIS_URL", "SYMPLE_REDIS", "REDIS_URL"],
}
#: (flag, variable, whether the variable means the opposite of the flag)
ENV_FLAGS = (
    ("authentication", "SYMPLE_AUTHENTICATION", False),
    ("no-dynamic-rooms", "SYMPLE_DYNAMIC_ROOMS", True),
    ("trust-proxy", "SYMPLE_TRUST_PROXY", False),
    ("no-demo", "SYMPLE_DEMO", True),
)


class SympleOptions(usage.Options):
    """The options, raising ``UsageError`` (see ``Options`` for twistd)."""

    synopsis = "[options]"
    longdesc = ("Run a Symple v4 server: WebSocket + JSON messaging, presence and "
                "WebRTC signalling.  Every option can also be set as the environment "
                "variable SYMPLE_<OPTION> (e.g. SYMPLE_MAX_CONNECTIONS=500).")

    optFlags = [
        ["authentication", "a", "Require a token: look it up in Redis "
         "(symple:session:<token>) or ask the --auth-hook. Env SYMPLE_AUTHENTICATION."],
        ["no-dynamic-rooms", None, "Refuse join/leave frames (403). "
         "Env SYMPLE_DYNAMIC_ROOMS=false."],
        ["trust-proxy", None, "Take the client address from X-Forwarded-For (the entry "
         "--proxy-hops from the right) or X-Real-IP. Env SYMPLE_TRUST_PROXY."],
        ["no-demo", None, "Serve a short status text at / instead of the demo web app."],
    ]
    optParameters = [
        ["port", "p", None, f"Shorthand for --listen tcp:PORT (or ssl:PORT with "
         f"--ssl-key/--ssl-cert). Default {DEFAULT_PORT} when no --listen is given. Env PORT."],
        ["redis", "r", None, "Redis URL (redis://[:password@]host:port/db, rediss://, "
         "unix:/path, redis+sentinel://[:password@]host:26379,host2:26379/service[/db]) "
         "for the session store. Default: none (no session store). "
         "Env SYMPLE_REDIS_URL or REDIS_URL."],
        ["redis-ca", None, None, "PEM file of the CAs that sign the Redis server's "
         "certificate (rediss://). Default: the system's trust store, or the URL's "
         "?ssl_ca_certs=. Env SYMPLE_REDIS_CA."],
        ["session-ttl", None, 0, "Seconds to extend a stored session's expiry at each "
         "auth; 0 leaves it alone.", _int],
        ["auth-hook", None, None, "module:callable deciding each auth (sync, Deferred or "
         "async). Default: none (the token check alone decides)."],
        ["join-hook", None, None, "module:callable deciding each join (sync, Deferred or "
         "async). Default: none (every join allowed)."],
        ["hook-timeout", None, 5, "Seconds an auth or join hook may take: a slower join "
         "is answered with error 504, a slower auth closes with 4504; 0 waits for ever.",
         _seconds],
        ["ssl-key", None, None, "TLS private key (PEM) for --port. Default: none (plain "
         "TCP). Env SYMPLE_SSL_KEY."],
        ["ssl-cert", None, None, "TLS certificate chain (PEM) for --port. Default: none. "
         "Env SYMPLE_SSL_CERT."],
        ["max-message-size", None, _DEFAULTS.max_message_size, "Largest accepted frame "
         "in bytes (larger: error 413 and close).", _positive_int],
        ["rate-limit", None, _DEFAULTS.rate_limit, "Frames one client (address and user, "
         "all its connections) may send per --rate-period (token bucket; over it: error "
         "429; far over it: close 4429).", _positive_int],
        ["delivery-limit", None, _DEFAULTS.delivery_limit, "Deliveries one client's "
         "frames may cause per --rate-period: a frame to a 500-member room costs 500 "
         "(over it: error 429). 0: no limit.", _int],
        ["rate-period", None, _DEFAULTS.rate_period, "Seconds of the rate and delivery "
         "limits' window.", _positive_seconds],
        ["max-connections", None, 10000, "Connections per process (more: error 503 and "
         "close).", _positive_int],
        ["max-send-buffer", None, 1048576, "Unsent bytes queued for one peer before it "
         "is disconnected as a slow consumer (4008).", _positive_int],
        ["max-rooms", None, _DEFAULTS.max_rooms, "Named rooms one session may be in "
         "(auth rooms, stored session rooms and joins together; its user room is not "
         "counted); more: error 400 at auth, 403 on join.", _positive_int],
        ["max-presence-size", None, _DEFAULTS.max_presence_size, "Largest presence data "
         "a session may have stored, in bytes of JSON (auth data or a presence frame's "
         "data); more: error 413.", _positive_int],
        ["auth-timeout", None, 10, "Seconds a connection has to authenticate (error 408); "
         "also the deadline for a request head and for each HTTP request.",
         _positive_seconds],
        ["ping-interval", None, 25, "Seconds between WebSocket pings; 0 disables.", _seconds],
        ["ping-timeout", None, 10, "Seconds to wait for a pong before dropping the peer.",
         _positive_seconds],
        ["drain-timeout", None, 10, "Seconds to wait for peers to close at shutdown.",
         _seconds],
        ["node-timeout", None, _DEFAULTS.node_timeout, "With --redis: seconds after which "
         "the sessions of a cluster process that went silent are announced offline "
         "(heartbeats every node-timeout/8, at most 1 s apart).", _positive_seconds],
        ["max-unauthenticated-per-address", None,
         _DEFAULTS.max_unauthenticated_per_address, "Connections one client address "
         "(IPv6: its /64; with --trust-proxy the forwarded address) may hold before "
         "authenticating, HTTP ones included; more get HTTP 429. 0: no cap.", _int],
        ["max-connections-per-address", None, _DEFAULTS.max_connections_per_address,
         "Connections one client address may hold at once, authenticated or not (same "
         "address rules); more get HTTP 429. 0: no cap.", _int],
        ["address-connection-rate", None, _DEFAULTS.address_connection_rate, "New "
         "connections one client address may open per 10 s (token bucket); more get "
         "HTTP 429. 0: no cap.", _int],
        ["budget-exempt", None, None, "Networks the per-address budgets do not count "
         "(comma-separated, or none). Default: 127.0.0.0/8,::1 (a local proxy or tool).",
         _networks],
        ["proxy-hops", None, _DEFAULTS.proxy_hops, "With --trust-proxy: how many "
         "proxies in front of the server append to X-Forwarded-For; the client address "
         "is the entry that many from the right (what the outermost one saw).",
         _positive_int],
        ["workers", None, 1, "Server processes sharing the listening ports (needs "
         "--redis); dead ones are restarted.", _positive_int],
    ]
    compData = usage.Completions(optActions={"ssl-key": usage.CompleteFiles("*.pem"),
                                             "ssl-cert": usage.CompleteFiles("*.pem")})

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        super().__init__()
        for name, handler in self._dispatch.items():
            if isinstance(handler, usage.CoerceParameter):
                self._dispatch[name] = _NamedCoercion(self, handler.coerce)
        self.environ = os.environ if environ is None else environ
        self._from_env: set[str] = set()
        self["listen"] = []
        self["allowed-origin"] = []
        self._env_origins = False
        self._apply_environment()

    def opt_listen(self, description: str) -> None:
        """Listen on a Twisted endpoint (repeatable): tcp:4500, ssl:4443:privateKey=key.pem:certKey=cert.pem, unix:/run/symple.sock. Default: tcp:4500. Env SYMPLE_LISTEN (space-separated)."""  # noqa: E501 (the help text)
        self["listen"].append(description)

    def opt_allowed_origin(self, origin: str) -> None:
        """Accept WebSocket handshakes only from this Origin (repeatable). Default: any. Env SYMPLE_ALLOWED_ORIGINS (comma-separated)."""  # noqa: E501
        if self._env_origins:  # the command line replaces the environment's list
            self["allowed-origin"], self._env_origins = [], False
        self["allowed-origin"].append(origin)

    def opt_version(self) -> None:
        """Print the version and exit."""
        from . import __version__
        print(f"symple_tx {__version__}")
        raise SystemExit(0)

    def _env(self, *names: str) -> Optional[str]:
        for name in names:
            value = self.environ.get(name)
            if value is not None:
                return value
        return None

    def _apply_environment(self) -> None:
        """Environment values become the defaults; the command line parsed later wins."""
        self._env_errors: list[str] = []
        for long_name, _, _, _, *coerce in self.optParameters:
            env_names = ENV_ALIASES.get(
                long_name, ["SYMPLE_" + long_name.upper().replace("-", "_")])
            value = self._env(*env_names)
            if value is None:
                continue
            if coerce:
                try:
                    value = coerce[0](value)
                except ValueError as exc:
                    self._env_errors.append(f"{env_names[0]}: {exc}")
                    continue
            self[long_name] = value
            self._from_env.add(long_name)
        for flag, env_name, inverted in ENV_FLAGS:
            value = self._env(env_name)
            if value is None:
                continue
            try:
                self[flag] = _flag(value, env_name) != inverted
            except usage.UsageError as exc:
                self._env_errors.append(str(exc))
        listen = self._env("SYMPLE_LISTEN")
        if listen:
            self._env_listen = listen.split()
        origins = self._env("SYMPLE_ALLOWED_ORIGINS", "SYMPLE_ALLOWED_ORIGIN")
        if origins:
            self["allowed-origin"] = origins.replace(",", " ").split()
            self._env_origins = True

    def postOptions(self) -> None:
        if self._env_errors:
            raise usage.UsageError(self._env_errors[0])
        if self["listen"]:
            # --listen on the command line replaces the environment's port (PORT is
            # often set by the platform) as well as its SYMPLE_LISTEN.
            for name in ("port", "ssl-key", "ssl-cert"):
                if name in self._from_env:
                    self[name] = None
        else:
            self["listen"] = list(getattr(self, "_env_listen", []))
        self["settings"] = self.settings()
        self["endpoints"] = self.endpoints()
        if self["workers"] > 1 and not self["settings"].redis_url:
            raise usage.UsageError("--workers needs --redis: the workers talk through it")

    def settings(self) -> Settings:
        settings = Settings(
            authentication=bool(self["authentication"]),
            dynamic_rooms=not self["no-dynamic-rooms"],
            session_ttl=self["session-ttl"],
            redis_url=self["redis"],
            redis_ca=self["redis-ca"],
            max_message_size=self["max-message-size"],
            rate_limit=self["rate-limit"],
            delivery_limit=self["delivery-limit"],
            rate_period=self["rate-period"],
            max_connections=self["max-connections"],
            max_send_buffer=self["max-send-buffer"],
            max_rooms=self["max-rooms"],
            max_presence_size=self["max-presence-size"],
            auth_timeout=self["auth-timeout"],
            ping_interval=self["ping-interval"],
            ping_timeout=self["ping-timeout"],
            allowed_origins=tuple(self["allowed-origin"]),
            trust_proxy=bool(self["trust-proxy"]),
            proxy_hops=self["proxy-hops"],
            demo=not self["no-demo"],
            drain_timeout=self["drain-timeout"],
            node_timeout=self["node-timeout"],
            hook_timeout=self["hook-timeout"],
            max_unauthenticated_per_address=self["max-unauthenticated-per-address"],
            max_connections_per_address=self["max-connections-per-address"],
            address_connection_rate=self["address-connection-rate"],
        )
        if self["budget-exempt"] is not None:
            settings.budget_exempt = self["budget-exempt"]
        for option, attribute in (("auth-hook", "auth_hook"), ("join-hook", "join_hook")):
            if self[option]:
                try:
                    setattr(settings, attribute, load_callable(self[option]))
                except ValueError as exc:
                    raise usage.UsageError(f"--{option}: {exc}")
        if settings.redis_url:
            try:
                address = RedisAddress.parse(settings.redis_url, settings.redis_ca)
            except ValueError as exc:
                raise usage.UsageError(f"--redis: {exc}")
            if address.ca_file is not None and not os.access(address.ca_file, os.R_OK):
                raise usage.UsageError(f"--redis-ca: cannot read {address.ca_file!r}")
        elif settings.redis_ca:
            raise usage.UsageError("--redis-ca needs --redis")
        if settings.authentication and not (settings.redis_url or settings.auth_hook):
            raise usage.UsageError("--authentication needs --redis (session store) or --auth-hook")
        return settings

    def endpoints(self, reactor: Any = None) -> list:
        """The listening endpoints, for ``reactor`` (default: the global one)."""
        if reactor is None:
            reactor = default_reactor
        endpoints = []
        for description in self.descriptions():
            problem = port_problem(description)
            if problem:
                raise usage.UsageError(f"--listen {description!r}: {problem}")
            try:
                endpoints.append(listen.server_endpoint(reactor, description))
            except (SSL.Error, crypto.Error) as exc:  # OpenSSL alone is cryptic
                raise usage.UsageError(f"--listen {description!r}: the TLS key or "
                                       f"certificate is not valid PEM ({_one_line(exc)})")
            except Exception as exc:  # parse errors, unreadable files
                raise usage.UsageError(f"--listen {description!r}: {_one_line(exc)}")
        return endpoints

    def descriptions(self) -> list[str]:
        """The endpoint strings to listen on: every --listen, plus --port's."""
        descriptions = list(self["listen"])
        key, cert = self["ssl-key"], self["ssl-cert"]
        if bool(key) != bool(cert):
            raise usage.UsageError("--ssl-key and --ssl-cert go together")
        if self["port"] is not None or not descriptions:
            port = self["port"] if self["port"] is not None else str(DEFAULT_PORT)
            if not str(port).isdigit():
                raise usage.UsageError(f"--port must be a port number, not {port!r}")
            if key:
                descriptions.append(f"ssl:{port}:privateKey={_quote(key)}:certKey={_quote(cert)}")
            else:
                descriptions.append(f"tcp:{port}")
        return descriptions


#: Endpoint types whose first argument (or ``port=``) is a TCP port.
_PORT_TYPES = frozenset({"tcp", "tcp6", "ssl"})


def port_problem(description: str) -> Optional[str]:
    """What is wrong with a tcp/ssl endpoint's port, in words (Twisted says ``int()``)."""
    kind, _, rest = description.partition(":")
    if kind.lower() not in _PORT_TYPES:
        return None
    arguments = re.split(r"(?<!\\):", rest)
    named = [a.partition("=")[2] for a in arguments if a.startswith("port=")]
    positional = [a for a in arguments if "=" not in a]
    port = (named or positional or [""])[0]
    if not port.isdigit():
        return f"port must be a number, not {port!r}" if port else "the port is missing"
    if int(port) > 65535:
        return f"port must be 0-65535, not {port}"
    return None


def _quote(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:")


def _one_line(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return " ".join(text.split())


def server_endpoint(description: str) -> Any:
    return listen.server_endpoint(default_reactor, description)


class Options(SympleOptions):
    """What ``twistd symple`` parses: a bad value ends the process with one line."""

    def parseOptions(self, options: Optional[list] = None) -> None:
        #: The command line, for ``--workers`` to start the workers with.
        self.argv = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as exc:
            # twistd would print its whole usage text before the error: say just what is wrong.
            raise SystemExit(f"twistd symple: {exc} (see: twistd symple --help)") from None


class _TwistdService(SympleService):
    """Under twistd, a port that cannot be bound ends the process with one line."""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as exc:
            where = f"{exc.interface or '*'}:{exc.port}"
            raise SystemExit(f"twistd symple: cannot listen on {where}: "
                             f"{_one_line(exc.socketError)}") from None


def makeService(options: SympleOptions, reactor: Any = None) -> Any:
    """The service ``twistd symple`` runs; its endpoints and connections use ``reactor``
    (default: the global one), so tests can hand it a ``MemoryReactor``."""
    if reactor is None or reactor is default_reactor:
        reactor, listen_on = default_reactor, options["endpoints"]
    else:
        listen_on = options.endpoints(reactor)
    endpoints = worker_endpoints(reactor, listen_on)
    if endpoints is None and options["workers"] > 1:
        return Supervisor(options["workers"], listen_on, getattr(options, "argv", []),
                          options["settings"].drain_timeout)
    server = SympleServer(options["settings"], reactor)
    return _TwistdService(server, endpoints or listen_on)
