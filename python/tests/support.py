"""What the tests share: the servers' addresses (from the environment the
Rust harness, ``tests/tests/python.rs``, sets), a per-test timeout, and the
``Control`` object that starts and stops servers of a test's own."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import time
import unittest
from typing import Any, Callable

import ipc

#: Seconds a test may take before the whole suite is stopped with a traceback.
TEST_TIMEOUT = 60.0


def env(name: str) -> str:
    """An address (or the key) the harness passed in; fails loudly without it."""
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: run this suite through `cargo test -p ipc-tests --test python`, "
            "which starts the servers it needs"
        )
    return value


CALC = lambda: env("IPC_TEST_CALC")  # noqa: E731
KITCHEN = lambda: env("IPC_TEST_KITCHEN")  # noqa: E731
KEYED = lambda: env("IPC_TEST_KEYED")  # noqa: E731
KEY = lambda: env("IPC_TEST_KEY")  # noqa: E731
UNIX = lambda: env("IPC_TEST_UNIX")  # noqa: E731
CONTROL = lambda: env("IPC_TEST_CONTROL")  # noqa: E731


class Timed:
    """Arms a watchdog for each test: a test still running after
    ``timeout`` seconds dumps every thread's stack and ends the suite (which
    the Rust harness reports as a failure), instead of hanging it."""

    timeout = TEST_TIMEOUT

    def setUp(self) -> None:  # noqa: N802 - unittest's name
        faulthandler.dump_traceback_later(self.timeout, exit=True, file=sys.stderr)
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:  # noqa: N802
        super().tearDown()  # type: ignore[misc]
        faulthandler.cancel_dump_traceback_later()


class TestCase(Timed, unittest.TestCase):
    """A test with its own timeout."""


class AsyncTestCase(Timed, unittest.IsolatedAsyncioTestCase):
    """An asyncio test with its own timeout. Its loop runs in debug mode
    (unittest's choice: un-awaited coroutines are reported); a step slower
    than a second is reported too, not the 0.1 s default, which a loaded
    machine reaches while a thousand calls are encoded."""

    async def asyncSetUp(self) -> None:  # noqa: N802 - unittest's name
        asyncio.get_running_loop().slow_callback_duration = 1.0
        await super().asyncSetUp()


def eventually(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Polls ``check()`` until it returns something true (a condition on the
    server, which sends no signal of its own), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


async def eventually_async(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """:func:`eventually` for asyncio tests (``check`` may be a coroutine function)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Servers:
    """Servers a test starts through the harness's ``Control`` object; all
    stopped (aborted) at the end."""

    def __init__(self) -> None:
        self.client = ipc.connect(CONTROL(), timeout=30)
        self.control = self.client.get_exposed_object("Control")
        self.started: list = []

    def start(self, kind: str, addr: str = "") -> str:
        started = self.control.start(kind, addr)
        self.started.append(started)
        return str(started)

    def close(self) -> None:
        for addr in self.started:
            self.control.abort(addr)
        self.client.close()

    def __enter__(self) -> "Servers":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def sent_requests(client: "ipc.Client") -> int:
    """The id of the last request the client's connection sent (to check
    that nothing was sent)."""
    return int(client._links.current.session.last_id)
