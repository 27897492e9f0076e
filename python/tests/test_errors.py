"""Each kind of error maps to its exception class."""

from __future__ import annotations

import copy
import socket
import time

import ipc
from support import CALC, KEY, KEYED, KITCHEN, Servers, TestCase, eventually, sent_requests


def dead_address() -> str:
    """A loopback address where, almost certainly, nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class ApplicationErrors(TestCase):
    def test_a_unit_variant_error_is_its_name(self) -> None:
        with ipc.connect(CALC()) as client:
            calc = client.get_exposed_object("Calculator")
            with self.assertRaises(ipc.AppError) as caught:
                calc.div(1, 0)
            self.assertEqual(caught.exception.value, "DivideByZero")
            self.assertEqual(caught.exception.method, "div")
            self.assertNotIsInstance(caught.exception, ipc.Error, "kept apart from framework errors")
            self.assertEqual(calc.div(7, 2), 3)

    def test_errors_with_data_are_small_objects(self) -> None:
        with ipc.connect(KITCHEN()) as client:
            kitchen = client.get_exposed_object("Kitchen")
            expected = {
                "not_found": "NotFound",
                "invalid": {"Invalid": {"reason": "bad input"}},
                "code": {"Code": -7},
                "pair": {"Pair": (1, 2)},
            }
            for kind, value in expected.items():
                with self.subTest(kind=kind), self.assertRaises(ipc.AppError) as caught:
                    kitchen.fail(kind)
                self.assertEqual(caught.exception.value, value)
            self.assertEqual(kitchen.fail("none"), 7)


class FrameworkErrors(TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.client = ipc.connect(KITCHEN())
        self.kitchen = self.client.get_exposed_object("Kitchen")

    def tearDown(self) -> None:
        self.client.close()
        super().tearDown()

    def test_a_panic_is_remote_panic_and_the_connection_goes_on(self) -> None:
        with self.assertRaises(ipc.RemotePanic) as caught:
            self.kitchen.panic("the oven caught fire")
        self.assertIn("the oven caught fire", caught.exception.message)
        self.assertEqual(self.kitchen.ping(), 1)

    def test_an_unknown_object_is_unknown_object(self) -> None:
        with self.assertRaises(ipc.UnknownObject) as caught:
            self.client.get_exposed_object("Pantry")
        self.assertEqual(caught.exception.name, "Pantry")
        with self.assertRaises(ipc.UnknownObject):
            self.client.schema("Pantry")

    def test_an_unknown_method_index_is_unknown_method(self) -> None:
        plan = copy.copy(self.kitchen._state.by_name["ping"])
        plan.index = 999
        with self.assertRaises(ipc.UnknownMethod) as caught:
            self.kitchen._attempts(plan, b"", time.monotonic() + 10)
        self.assertIn("999", caught.exception.detail)

    def test_arguments_the_server_cannot_decode_are_bad_request(self) -> None:
        plan = self.kitchen._state.by_name["sleep_ms"]
        with self.assertRaises(ipc.BadRequest):
            self.kitchen._attempts(plan, b"\x01\x02", time.monotonic() + 10)
        self.assertEqual(self.kitchen.ping(), 1)

    def test_a_deadline_is_timeout_and_the_server_drops_the_call(self) -> None:
        started = time.monotonic()
        with self.assertRaises(ipc.Timeout) as caught:
            self.kitchen.with_timeout(0.2).sleep_ms(5000)
        elapsed = time.monotonic() - started
        self.assertEqual(caught.exception.after, 0.2)
        self.assertIsInstance(caught.exception, TimeoutError)
        self.assertLess(elapsed, 3.0)
        self.assertGreaterEqual(elapsed, 0.19)
        self.assertEqual(self.kitchen.ping(), 1, "the connection stays usable")
        with Servers() as servers:
            self.assertEqual(
                eventually(lambda: servers.control.in_flight(KITCHEN()) == 0, "the server to drop the call"), True
            )

    def test_connecting_where_nothing_listens_is_connect_error(self) -> None:
        addr = dead_address()
        with self.assertRaises(ipc.ConnectError) as caught:
            ipc.connect(addr)
        self.assertTrue(caught.exception.connection_error)
        self.assertIn(addr, str(caught.exception))

    def test_malformed_addresses_are_invalid_address(self) -> None:
        bad = ["nonsense", "host:port", "host:99999", "unix:", "::1:80", " localhost:9099", "local host:1",
               "a/b:1", ":9099", "host:", "host:\u00b2", "[::1:80", "[example.com]:80", "tcp:", "localhost:+1"]
        for addr in bad:
            with self.subTest(addr=addr), self.assertRaises(ipc.InvalidAddress):
                ipc.connect(addr)
        # As strict as Rust's Address, which accepts these:
        from ipc.config import parse_address

        for addr, host, port in [("[::1]:80", "::1", 80), ("tcp:my_host-1.lan:0", "my_host-1.lan", 0),
                                 ("127.0.0.1:65535", "127.0.0.1", 65535)]:
            with self.subTest(addr=addr):
                parsed = parse_address(addr)
                self.assertEqual((parsed.kind, parsed.host, parsed.port), ("tcp", host, port))
        with self.assertRaises(ValueError):
            ipc.connect("nonsense")
        with self.assertRaises(ipc.ConfigError):
            ipc.connect("tls://localhost:9443")


class Authentication(TestCase):
    def test_the_right_key_connects(self) -> None:
        with ipc.connect(KEYED(), key=KEY()) as client:
            self.assertEqual(client.get_exposed_object("Calculator").add(40, 2), 42)

    def test_no_key_another_key_or_an_unexpected_key_is_auth_failed(self) -> None:
        with self.assertRaises(ipc.AuthFailed) as caught:
            ipc.connect(KEYED())
        self.assertIn("requires a key", caught.exception.reason)
        with self.assertRaises(ipc.AuthFailed) as caught:
            ipc.connect(KEYED(), key="another key, long enough")
        self.assertIn("does not match", caught.exception.reason)
        with self.assertRaises(ipc.AuthFailed) as caught:
            ipc.connect(CALC(), key=KEY())
        self.assertIn("does not use a key", caught.exception.reason)

    def test_a_short_key_is_a_config_error(self) -> None:
        with self.assertRaises(ipc.ConfigError):
            ipc.connect(KEYED(), key="short")

    def test_a_key_file_loses_one_final_newline(self) -> None:
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".key", delete=False) as f:
            f.write(KEY() + "\n")
        with ipc.connect(KEYED(), key_file=f.name) as client:
            self.assertEqual(client.get_exposed_object("Calculator").add(1, 1), 2)


class ServerLimits(TestCase):
    def test_a_request_over_the_servers_frame_limit_is_frame_too_large_and_unsent(self) -> None:
        with Servers() as servers:
            addr = servers.start("small")
            with ipc.connect(addr) as client:
                kitchen = client.get_exposed_object("Kitchen")
                limit = client._links.current.session.peer_max_frame
                self.assertEqual(limit, 4096, "the server's announced limit")
                before = sent_requests(client)
                # A request frame holds 9 + 10 bytes, and the Vec's 8-byte
                # length, besides the payload.
                self.assertEqual(len(kitchen.echo_vec(b"x" * (limit - 27))), limit - 27)
                with self.assertRaises(ipc.FrameTooLarge) as caught:
                    kitchen.echo_vec(b"x" * (limit - 26))
                self.assertEqual((caught.exception.size, caught.exception.limit), (limit + 1, limit))
                self.assertEqual(sent_requests(client), before + 1, "the large one was not sent")

    def test_a_reply_over_the_clients_frame_limit_is_frame_too_large(self) -> None:
        with ipc.connect(KITCHEN(), max_frame_size=16384) as client:
            kitchen = client.get_exposed_object("Kitchen")
            # A response frame holds 9 + 1 bytes, and the Vec's 8-byte length.
            self.assertEqual(len(kitchen.sized(16384 - 18)), 16384 - 18)
            with self.assertRaises(ipc.FrameTooLarge) as caught:
                kitchen.sized(16384 - 17)
            self.assertEqual(caught.exception.limit, 16384)
            self.assertGreater(caught.exception.size, 16384)
            self.assertEqual(kitchen.ping(), 1, "the connection is unaffected")

    def test_a_refused_call_is_permission_denied_and_a_hidden_object_unknown(self) -> None:
        with Servers() as servers, ipc.connect(servers.start("guarded")) as client:
            calc = client.get_exposed_object("Calculator")
            self.assertEqual(calc.add(1, 2), 3)
            with self.assertRaises(ipc.PermissionDenied):
                calc.div(4, 2)
            with self.assertRaises(ipc.UnknownObject):
                client.get_exposed_object("Greeter")
            self.assertEqual([o.name for o in client.objects()], ["Calculator"])

    def test_calls_past_the_in_flight_limit_are_overloaded(self) -> None:
        import threading

        with Servers() as servers:
            addr = servers.start("narrow")
            with ipc.connect(addr) as client:
                kitchen = client.get_exposed_object("Kitchen")
                results: list = []
                slow = threading.Thread(target=lambda: results.append(kitchen.sleep_ms(1500)))
                slow.start()
                eventually(lambda: servers.control.in_flight(addr) == 1, "the slow call to start")
                with self.assertRaises(ipc.Overloaded):
                    kitchen.sleep_ms(10)
                slow.join(10)
                self.assertEqual(results, [1500])


class StaleSchema(TestCase):
    def test_a_trait_changed_after_the_schema_was_fetched_is_trait_mismatch(self) -> None:
        with Servers() as servers:
            addr = servers.start("v1")
            with ipc.connect(addr) as client:
                versioned = client.get_exposed_object("Versioned")
                self.assertEqual(versioned.version(), 1)
                servers.control.stop(addr)
                servers.start("v2", addr)
                # The next call reconnects and looks the object up again with
                # the schema it has: the server's trait is another.
                with self.assertRaises(ipc.TraitMismatch) as caught:
                    versioned.version()
                e = caught.exception
                self.assertEqual(e.object, "Versioned")
                self.assertEqual(e.proxy_fingerprint, versioned.schema.fingerprint)
                self.assertNotEqual(e.server_fingerprint, e.proxy_fingerprint)
                self.assertIn("version", e.detail)
                # A fresh schema works.
                self.assertEqual(client.get_exposed_object("Versioned").version(40), 42)
