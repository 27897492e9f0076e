"""Servers that stop, die, restart: go-away, lost connections, reconnecting
with Rust's retry rules."""

from __future__ import annotations

import threading
import time
from typing import Any, List

import ipc
from support import Servers, TestCase, eventually


def in_background(call: Any) -> "tuple[threading.Thread, List[Any]]":
    """Runs ``call()`` in a thread; its result or exception lands in the list."""
    out: List[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as e:  # handed to the test
            out.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


class ServerStops(TestCase):
    def test_a_server_that_dies_mid_call_fails_the_call_with_connection_lost(self) -> None:
        with Servers() as servers:
            addr = servers.start("kitchen")
            client = ipc.connect(addr, reconnect=ipc.NEVER)
            kitchen = client.get_exposed_object("Kitchen")
            thread, out = in_background(lambda: kitchen.sleep_ms(30_000))
            eventually(lambda: servers.control.in_flight(addr) == 1, "the call to start")
            started = time.monotonic()
            servers.control.abort(addr)
            thread.join(10)
            self.assertEqual(len(out), 1)
            self.assertIsInstance(out[0], ipc.ConnectionLost)
            self.assertLess(time.monotonic() - started, 5)
            with self.assertRaises(ipc.ConnectionLost):
                kitchen.ping()
            client.close()

    def test_a_graceful_stop_lets_the_call_finish_and_later_calls_see_it_gone(self) -> None:
        with Servers() as servers:
            addr = servers.start("kitchen")
            with ipc.connect(addr) as client:
                kitchen = client.get_exposed_object("Kitchen")
                thread, out = in_background(lambda: kitchen.sleep_ms(700))
                eventually(lambda: servers.control.in_flight(addr) == 1, "the call to start")
                self.assertTrue(servers.control.begin_stop(addr))
                thread.join(10)
                self.assertEqual(out, [700], "the call in flight finished")
                with self.assertRaises(ipc.Error) as caught:
                    kitchen.ping()
                self.assertTrue(caught.exception.connection_error, repr(caught.exception))
                self.assertIsInstance(caught.exception, (ipc.ShuttingDown, ipc.ConnectError))

    def test_the_next_call_after_a_restart_reconnects(self) -> None:
        with Servers() as servers:
            addr = servers.start("calc")
            with ipc.connect(addr) as client:
                calc = client.get_exposed_object("Calculator")
                self.assertEqual(calc.add(1, 2), 3)
                servers.control.stop(addr)
                servers.start("calc", addr)
                self.assertEqual(calc.add(3, 4), 7)
                self.assertEqual(client._links.current.generation, 2)
                self.assertEqual(calc.add(5, 6), 11)

    def test_without_reconnect_a_lost_connection_stays_lost(self) -> None:
        with Servers() as servers:
            addr = servers.start("calc")
            with ipc.connect(addr, reconnect=ipc.NEVER) as client:
                calc = client.get_exposed_object("Calculator")
                servers.control.stop(addr)
                servers.start("calc", addr)
                with self.assertRaises(ipc.Error) as caught:
                    calc.add(1, 1)
                self.assertTrue(caught.exception.connection_error)

    def test_after_a_failed_round_of_attempts_calls_fail_at_once(self) -> None:
        with Servers() as servers:
            addr = servers.start("calc")
            policy = ipc.Reconnect(max_attempts=3, initial_backoff=0.05, max_backoff=2.0)
            with ipc.connect(addr, reconnect=policy) as client:
                calc = client.get_exposed_object("Calculator")
                servers.control.stop(addr)
                started = time.monotonic()
                with self.assertRaises(ipc.ConnectError):
                    calc.add(1, 1)
                # Three attempts: 50 ms, then 100 ms between them.
                self.assertGreaterEqual(time.monotonic() - started, 0.14)
                started = time.monotonic()
                with self.assertRaises(ipc.ConnectError):
                    calc.add(1, 1)
                self.assertLess(time.monotonic() - started, 0.1, "no second round before the backoff")
                # The next attempt is due after the policy's next backoff (200 ms).
                servers.start("calc", addr)
                time.sleep(0.25)
                self.assertEqual(calc.add(1, 1), 2)

    def test_waiting_for_the_server_outlasts_a_failed_round(self) -> None:
        with Servers() as servers:
            addr = servers.start("calc")
            policy = ipc.Reconnect(max_attempts=2, initial_backoff=0.05, max_backoff=0.1)
            with ipc.connect(addr, reconnect=policy, wait_for_server=True, timeout=20) as client:
                calc = client.get_exposed_object("Calculator")
                servers.control.stop(addr)
                thread, out = in_background(lambda: calc.add(2, 2))
                time.sleep(0.5)
                self.assertEqual(out, [], "still waiting for the server")
                servers.start("calc", addr)
                thread.join(10)
                self.assertEqual(out, [4])
