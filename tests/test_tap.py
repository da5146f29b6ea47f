"""``twistd symple`` options: every option and environment variable reaches Settings/endpoints."""

from __future__ import annotations

import os

from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.python import usage
from twisted.trial import unittest

from symple_tx.config import Settings
from symple_tx.tap import Options, SympleOptions, makeService
from tests.support import self_signed_cert


def allow_all(request) -> bool:
    """An auth/join hook for the option tests."""
    return True


def temp_dir(test: unittest.TestCase) -> str:
    path = test.mktemp()
    os.makedirs(path)
    return path


def parse(args: list[str], **environ: str) -> SympleOptions:
    options = SympleOptions(environ=environ)
    options.parseOptions(args)
    return options


#: (option, value on the command line, Settings attribute, expected value)
PARAMETERS = [
    ("session-ttl", "3600", "session_ttl", 3600),
    ("redis", "redis://127.0.0.1:6379/2", "redis_url", "redis://127.0.0.1:6379/2"),
    ("max-message-size", "2048", "max_message_size", 2048),
    ("rate-limit", "7", "rate_limit", 7),
    ("delivery-limit", "0", "delivery_limit", 0),
    ("rate-period", "2.5", "rate_period", 2.5),
    ("max-connections", "12", "max_connections", 12),
    ("max-send-buffer", "4096", "max_send_buffer", 4096),
    ("max-rooms", "5", "max_rooms", 5),
    ("max-presence-size", "100", "max_presence_size", 100),
    ("auth-timeout", "1.5", "auth_timeout", 1.5),
    ("ping-interval", "0", "ping_interval", 0.0),
    ("ping-timeout", "3", "ping_timeout", 3.0),
    ("drain-timeout", "4", "drain_timeout", 4.0),
    ("node-timeout", "2.5", "node_timeout", 2.5),
    ("hook-timeout", "0.5", "hook_timeout", 0.5),
    ("max-unauthenticated-per-address", "3", "max_unauthenticated_per_address", 3),
    ("max-connections-per-address", "7", "max_connections_per_address", 7),
    ("address-connection-rate", "0", "address_connection_rate", 0),
    ("budget-exempt", "10.0.0.0/8, ::1", "budget_exempt", ("10.0.0.0/8", "::1")),
    ("proxy-hops", "2", "proxy_hops", 2),
]


def variable_of(option: str) -> str:
    """The environment variable that sets ``--option`` (--redis reads SYMPLE_REDIS_URL)."""
    if option == "redis":
        return "SYMPLE_REDIS_URL"
    return "SYMPLE_" + option.upper().replace("-", "_")


#: (flag, Settings attribute, value when the flag is given)
FLAGS = [
    ("no-dynamic-rooms", "dynamic_rooms", False),
    ("trust-proxy", "trust_proxy", True),
    ("no-demo", "demo", False),
]


class DefaultTests(unittest.TestCase):
    def test_defaults_are_those_of_settings(self):
        options = parse([])
        self.assertEqual(options["settings"], Settings())
        self.assertEqual(options.descriptions(), ["tcp:4500"])
        [endpoint] = options["endpoints"]
        self.assertIsInstance(endpoint, TCP4ServerEndpoint)
        self.assertEqual(endpoint._port, 4500)

    def test_every_parameter_has_a_test_here(self):
        covered = {p[0] for p in PARAMETERS} | {"port", "auth-hook", "join-hook", "ssl-key",
                                                 "ssl-cert", "workers", "redis-ca"}
        self.assertEqual({p[0] for p in SympleOptions.optParameters}, covered)
        self.assertEqual({f[0] for f in SympleOptions.optFlags},
                         {f[0] for f in FLAGS} | {"authentication"})


class CommandLineTests(unittest.TestCase):
    def test_each_parameter_maps_to_its_setting(self):
        for option, value, attribute, expected in PARAMETERS:
            settings = parse([f"--{option}={value}"])["settings"]
            self.assertEqual(getattr(settings, attribute), expected, option)
            self.assertEqual(type(getattr(settings, attribute)), type(expected), option)

    def test_each_flag_maps_to_its_setting(self):
        for flag, attribute, expected in FLAGS:
            settings = parse([f"--{flag}"])["settings"]
            self.assertEqual(getattr(settings, attribute), expected, flag)
            self.assertEqual(getattr(Settings(), attribute), not expected, flag)

    def test_redis_ca_goes_with_a_tls_redis_url(self):
        ca = self.mktemp()
        with open(ca, "w") as f:
            f.write("")
        settings = parse(["--redis", "rediss://redis.example:6380", "--redis-ca", ca])["settings"]
        self.assertEqual(settings.redis_ca, ca)
        for argv, message in (
                (["--redis-ca", ca], "--redis-ca needs --redis"),
                (["--redis", "redis://127.0.0.1", "--redis-ca", ca], "needs rediss://"),
                (["--redis", "rediss://h", "--redis-ca", ca + ".missing"], "cannot read"),
                (["--redis", "redis://h/0?ssl_ca_certs=x"], "needs rediss://"),
                (["--redis", "redis://h/0?timeout=3"], "unknown option 'timeout'")):
            with self.assertRaises(usage.UsageError) as caught:
                parse(argv)
            self.assertIn(message, str(caught.exception), argv)

    def test_authentication_with_hooks(self):
        settings = parse(["-a", "--auth-hook", "tests.test_tap:allow_all",
                          "--join-hook", "tests.test_tap:allow_all"])["settings"]
        self.assertTrue(settings.authentication)
        self.assertIs(settings.auth_hook, allow_all)
        self.assertIs(settings.join_hook, allow_all)

    def test_listen_is_repeatable(self):
        options = parse(["--listen", "tcp:4501:interface=127.0.0.1",
                         "--listen", "unix:/tmp/symple-test.sock"])
        self.assertEqual(options.descriptions(),
                         ["tcp:4501:interface=127.0.0.1", "unix:/tmp/symple-test.sock"])
        tcp, unix = options["endpoints"]
        self.assertIsInstance(tcp, TCP4ServerEndpoint)
        self.assertEqual((tcp._port, tcp._interface), (4501, "127.0.0.1"))
        self.assertIsInstance(unix, UNIXServerEndpoint)

    def test_port_is_added_to_listen(self):
        options = parse(["--listen", "tcp:4501", "-p", "4502"])
        self.assertEqual(options.descriptions(), ["tcp:4501", "tcp:4502"])

    def test_allowed_origin_is_repeatable(self):
        settings = parse(["--allowed-origin", "https://a.example",
                          "--allowed-origin", "https://b.example"])["settings"]
        self.assertEqual(settings.allowed_origins, ("https://a.example", "https://b.example"))
        self.assertTrue(settings.origin_allowed("https://b.example"))
        self.assertFalse(settings.origin_allowed("https://c.example"))

    def test_ssl_key_and_cert_make_the_port_tls(self):
        key, cert = self_signed_cert(temp_dir(self))
        options = parse(["--port", "4443", "--ssl-key", key, "--ssl-cert", cert])
        self.assertEqual(options.descriptions(),
                         [f"ssl:4443:privateKey={key}:certKey={cert}"])
        self.assertIsInstance(options["endpoints"][0], SSL4ServerEndpoint)

    def test_ssl_paths_with_colons_are_quoted(self):
        options = SympleOptions(environ={})
        options.update({"listen": [], "port": "4443", "ssl-key": "C:\\k.pem",
                        "ssl-cert": "a:b.pem"})
        self.assertEqual(options.descriptions(),
                         ["ssl:4443:privateKey=C\\:\\\\k.pem:certKey=a\\:b.pem"])

    def test_make_service_listens_on_every_endpoint(self):
        service = makeService(parse(["--listen", "tcp:0", "--listen", "tcp:0", "--no-demo"]))
        self.assertEqual(len(list(service)), 2)
        self.assertFalse(service.server.settings.demo)


class EnvironmentTests(unittest.TestCase):
    def test_each_parameter_reads_its_variable(self):
        for option, value, attribute, expected in PARAMETERS:
            variable = variable_of(option)
            settings = parse([], **{variable: value})["settings"]
            self.assertEqual(getattr(settings, attribute), expected, variable)

    def test_node_server_names(self):
        self.assertEqual(parse([], PORT="4600").descriptions(), ["tcp:4600"])
        self.assertEqual(parse([], SYMPLE_PORT="4601", PORT="4600").descriptions(),
                         ["tcp:4601"])
        self.assertEqual(parse([], REDIS_URL="redis://h:1/0")["settings"].redis_url,
                         "redis://h:1/0")
        self.assertEqual(parse([], SYMPLE_REDIS_URL="redis://a:1/0",
                               REDIS_URL="redis://b:1/0")["settings"].redis_url,
                         "redis://a:1/0")

    def test_boolean_variables(self):
        for value, expected in (("true", True), ("1", True), ("yes", True),
                                ("false", False), ("0", False), ("off", False)):
            settings = parse([], SYMPLE_AUTHENTICATION=value,
                             SYMPLE_AUTH_HOOK="tests.test_tap:allow_all",
                             SYMPLE_DYNAMIC_ROOMS=value, SYMPLE_TRUST_PROXY=value,
                             SYMPLE_DEMO=value)["settings"]
            self.assertEqual((settings.authentication, settings.dynamic_rooms,
                              settings.trust_proxy, settings.demo), (expected,) * 4, value)
            self.assertIs(settings.auth_hook, allow_all)

    def test_hooks_from_the_environment(self):
        settings = parse([], SYMPLE_JOIN_HOOK="tests.test_tap:allow_all")["settings"]
        self.assertIs(settings.join_hook, allow_all)

    def test_ssl_variables(self):
        key, cert = self_signed_cert(temp_dir(self))
        options = parse([], PORT="4443", SYMPLE_SSL_KEY=key, SYMPLE_SSL_CERT=cert)
        self.assertEqual(options.descriptions(), [f"ssl:4443:privateKey={key}:certKey={cert}"])
        self.assertIsInstance(options["endpoints"][0], SSL4ServerEndpoint)

    def test_listen_and_origins_variables(self):
        options = parse([], SYMPLE_LISTEN="tcp:4700 tcp:4701",
                        SYMPLE_ALLOWED_ORIGINS="https://a.example, https://b.example")
        self.assertEqual(options.descriptions(), ["tcp:4700", "tcp:4701"])
        self.assertEqual(options["settings"].allowed_origins,
                         ("https://a.example", "https://b.example"))

    def test_budget_exempt_none_and_bad_networks(self):
        self.assertEqual(parse(["--budget-exempt", "none"])["settings"].budget_exempt, ())
        self.assertEqual(parse([], SYMPLE_BUDGET_EXEMPT="")["settings"].budget_exempt, ())
        with self.assertRaisesRegex(usage.UsageError, "--budget-exempt: .*'10.0.0.300'"):
            parse(["--budget-exempt", "10.0.0.300"])

    def test_max_connections_variable(self):
        self.assertEqual(parse([], SYMPLE_MAX_CONNECTIONS="500")["settings"].max_connections,
                         500)


class PrecedenceTests(unittest.TestCase):
    """The command line wins over the environment."""

    def test_parameters(self):
        for option, value, attribute, expected in PARAMETERS:
            env_value = {"redis": "redis://other:1/0",
                         "budget-exempt": "192.168.0.0/16"}.get(option, "99")
            environ = {variable_of(option): env_value}
            settings = parse([f"--{option}={value}"], **environ)["settings"]
            self.assertEqual(getattr(settings, attribute), expected, option)

    def test_port(self):
        self.assertEqual(parse(["-p", "4800"], PORT="4600").descriptions(), ["tcp:4800"])

    def test_listen_replaces_the_environment_port_and_listen(self):
        self.assertEqual(parse(["--listen", "tcp:4900"], PORT="4600").descriptions(),
                         ["tcp:4900"])
        self.assertEqual(parse(["--listen", "tcp:4900"],
                               SYMPLE_LISTEN="tcp:4700").descriptions(), ["tcp:4900"])

    def test_allowed_origins(self):
        settings = parse(["--allowed-origin", "https://cli.example"],
                         SYMPLE_ALLOWED_ORIGINS="https://env.example")["settings"]
        self.assertEqual(settings.allowed_origins, ("https://cli.example",))

    def test_flags_set_on_the_command_line(self):
        settings = parse(["--trust-proxy"], SYMPLE_TRUST_PROXY="false")["settings"]
        self.assertTrue(settings.trust_proxy)


class BadValueTests(unittest.TestCase):
    """Each bad value is refused with a message that names it."""

    def assert_refused(self, args: list[str], *fragments: str, **environ: str) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            parse(args, **environ)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_bad_numbers(self):
        self.assert_refused(["--rate-limit", "abc"], "--rate-limit", "'abc'")
        self.assert_refused(["--rate-limit", "0"], "--rate-limit", "1 or more")
        self.assert_refused(["--max-connections", "1.5"], "--max-connections", "whole number")
        self.assert_refused(["--ping-timeout", "0"], "--ping-timeout", "more than 0")
        self.assert_refused(["--auth-timeout", "nan"], "--auth-timeout")
        self.assert_refused(["--drain-timeout", "-1"], "--drain-timeout")

    def test_bad_environment_values(self):
        self.assert_refused([], "SYMPLE_MAX_CONNECTIONS", "'lots'", SYMPLE_MAX_CONNECTIONS="lots")
        self.assert_refused([], "SYMPLE_AUTHENTICATION", "'maybe'", SYMPLE_AUTHENTICATION="maybe")
        self.assert_refused([], "'abc'", PORT="abc")

    def test_bad_endpoints(self):
        self.assert_refused(["--listen", "tcp:notaport"], "tcp:notaport",
                            "port must be a number, not 'notaport'")
        self.assert_refused(["--listen", "tcp:port=x:interface=127.0.0.1"],
                            "port must be a number")
        self.assert_refused(["--listen", "ssl:99999:privateKey=k.pem"], "port must be 0-65535")
        self.assert_refused(["--listen", "tcp:"], "the port is missing")
        self.assert_refused(["--listen", "bogus:1"], "Unknown endpoint type")
        self.assert_refused(["--port", "http"], "--port", "'http'")

    def test_unreadable_certificate(self):
        self.assert_refused(["--listen", "ssl:0:privateKey=/nonexistent/k.pem"],
                            "/nonexistent/k.pem")
        self.assert_refused(["--ssl-key", "/nonexistent/k.pem", "--ssl-cert",
                             "/nonexistent/c.pem"], "/nonexistent/")
        self.assert_refused(["--ssl-key", "k.pem"], "--ssl-key and --ssl-cert")

    def test_bad_hooks(self):
        self.assert_refused(["--auth-hook", "no_such_module_xyz:f"], "--auth-hook",
                            "no_such_module_xyz")
        self.assert_refused(["--join-hook", "tests.test_tap:missing"], "--join-hook", "missing")
        self.assert_refused(["--join-hook", "just_a_name"], "--join-hook", "module:callable")

    def test_authentication_needs_a_source(self):
        self.assert_refused(["-a"], "--authentication", "--redis")

    def test_bad_redis_url(self):
        self.assert_refused(["--redis", "http://x"], "--redis", "http://x")

    def test_twistd_options_exit_with_one_line(self):
        """twistd would print its whole usage before a UsageError; ours prints one line."""
        options = Options(environ={})
        with self.assertRaises(SystemExit) as caught:
            options.parseOptions(["--rate-limit", "x"])
        message = caught.exception.code
        self.assertIsInstance(message, str)
        self.assertNotIn("\n", message)
        self.assertIn("--rate-limit", message)
