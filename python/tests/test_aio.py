"""The asyncio client: many calls in flight on one connection, cancellation,
deadlines, streams, errors."""

from __future__ import annotations

import asyncio
import time

import ipc
import ipc.aio
from support import CALC, CONTROL, KEY, KEYED, KITCHEN, UNIX, AsyncTestCase, eventually_async


class Concurrency(AsyncTestCase):
    async def test_a_thousand_calls_in_flight_on_one_connection(self) -> None:
        async with ipc.aio.connect(CALC()) as client:
            calc = await client.get_exposed_object("Calculator")
            results = await asyncio.gather(*(calc.add(i, i * 1000) for i in range(1000)))
            self.assertEqual(results, [i + i * 1000 for i in range(1000)])
            self.assertEqual(client.links.current.generation, 1, "one connection")
            self.assertEqual(client.links.current.session.last_id, 2 + 1000, "schema, resolve, the calls")
            for _ in range(3):
                await asyncio.gather(*(calc.add(i, 1) for i in range(1000)))
            # Answered calls' deadlines do not pile up until they would expire.
            self.assertLessEqual(len(client.links.current.deadlines._heap), 1025)

    async def test_slow_calls_overlap(self) -> None:
        async with ipc.aio.connect(KITCHEN()) as client:
            kitchen = await client.get_exposed_object("Kitchen")
            started = time.monotonic()
            results = await asyncio.gather(*(kitchen.sleep_ms(300) for _ in range(200)))
            self.assertEqual(results, [300] * 200)
            self.assertLess(time.monotonic() - started, 5.0, "they ran at once, not one after another")

    async def test_the_issues_example(self) -> None:
        async with ipc.aio.connect(CALC()) as client:
            calc = await client.get_exposed_object("Calculator")
            self.assertEqual(await calc.add(2, 3), 5)
            with self.assertRaises(ipc.AppError) as caught:
                await calc.div(1, 0)
            self.assertEqual(caught.exception.value, "DivideByZero")
            names = [o.name for o in await client.objects()]
            self.assertEqual(sorted(names), ["Calculator", "Greeter"])

    async def test_a_client_can_be_awaited_and_closed(self) -> None:
        client = await ipc.aio.connect(UNIX())
        greeter = await client.get_exposed_object("Greeter")
        self.assertEqual(await greeter.greet("unix"), "Hello, unix!")
        client.close()
        self.assertTrue(client.is_closed())
        with self.assertRaises(ipc.ConnectionLost):
            await greeter.greet("again")

    async def test_the_shared_key(self) -> None:
        async with ipc.aio.connect(KEYED(), key=KEY()) as client:
            self.assertEqual(await (await client.get_exposed_object("Calculator")).add(1, 2), 3)
        with self.assertRaises(ipc.AuthFailed):
            await ipc.aio.connect(KEYED())


class CancellationAndDeadlines(AsyncTestCase):
    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.client = await ipc.aio.connect(KITCHEN())
        self.kitchen = await self.client.get_exposed_object("Kitchen")
        self.control_client = await ipc.aio.connect(CONTROL())
        self.control = await self.control_client.get_exposed_object("Control")

    async def asyncTearDown(self) -> None:
        self.client.close()
        self.control_client.close()

    async def in_flight(self) -> int:
        return int(await self.control.in_flight(KITCHEN()))

    async def test_cancelling_the_task_tells_the_server_to_drop_the_call(self) -> None:
        task = asyncio.ensure_future(self.kitchen.sleep_ms(30_000))
        await eventually_async(lambda: self._at_least_one(), "the call to start")
        started = time.monotonic()
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        await eventually_async(lambda: self._none(), "the server to drop the call")
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertEqual(await self.kitchen.ping(), 1, "the connection goes on")

    async def _at_least_one(self) -> bool:
        return await self.in_flight() >= 1

    async def _none(self) -> bool:
        return await self.in_flight() == 0

    async def test_a_deadline_raises_timeout_and_cancels_on_the_server(self) -> None:
        started = time.monotonic()
        with self.assertRaises(ipc.Timeout) as caught:
            await self.kitchen.with_timeout(0.2).sleep_ms(30_000)
        self.assertEqual(caught.exception.after, 0.2)
        self.assertLess(time.monotonic() - started, 3.0)
        await eventually_async(lambda: self._none(), "the server to drop the call")
        self.assertEqual(await self.kitchen.ping(), 1)

    async def test_wrong_arguments_raise_at_the_call_before_anything_is_sent(self) -> None:
        before = self.client.links.current.session.last_id
        with self.assertRaises(TypeError):
            self.kitchen.sleep_ms("soon")
        with self.assertRaises(ValueError):
            self.kitchen.sleep_ms(-1)
        with self.assertRaises(TypeError):
            self.kitchen.sleep_ms()
        self.assertEqual(self.client.links.current.session.last_id, before)


class AsyncStreams(AsyncTestCase):
    async def test_items_end_and_errors(self) -> None:
        async with ipc.aio.connect(KITCHEN()) as client:
            kitchen = await client.get_exposed_object("Kitchen")
            self.assertEqual([x async for x in await kitchen.count(1000)], list(range(1000)))
            stream = await kitchen.stream_then_panic()
            self.assertEqual(await stream.next(), 1)
            self.assertEqual(await stream.next(), 2)
            with self.assertRaises(ipc.RemotePanic):
                await stream.next()
            with self.assertRaises(ipc.AppError):
                await kitchen.shapes(0)

    async def test_many_streams_at_once(self) -> None:
        async with ipc.aio.connect(KITCHEN(), stream_window=64) as client:
            kitchen = await client.get_exposed_object("Kitchen")

            async def drain(n: int) -> int:
                return sum([x async for x in await kitchen.count(n)])

            sums = await asyncio.gather(*(drain(n) for n in range(1, 60)))
            self.assertEqual(sums, [sum(range(n)) for n in range(1, 60)])

    async def test_closing_a_stream_stops_the_producer(self) -> None:
        async with ipc.aio.connect(KITCHEN()) as client, ipc.aio.connect(CONTROL()) as control_client:
            kitchen = await client.get_exposed_object("Kitchen")
            control = await control_client.get_exposed_object("Control")
            async with await kitchen.count(10**12) as stream:
                self.assertEqual(await stream.next(), 0)

                async def producing() -> bool:
                    return int(await control.streams(KITCHEN())) >= 1

                await eventually_async(producing, "the stream to be produced")

            async def dropped() -> bool:
                return int(await control.streams(KITCHEN())) == 0

            await eventually_async(dropped, "the producer to be dropped")


class AsyncLifecycle(AsyncTestCase):
    async def test_a_server_killed_mid_call_fails_it_and_a_restart_reconnects(self) -> None:
        async with ipc.aio.connect(CONTROL()) as control_client:
            control = await control_client.get_exposed_object("Control")
            addr = await control.start("kitchen", "")
            try:
                async with ipc.aio.connect(addr) as client:
                    kitchen = await client.get_exposed_object("Kitchen")
                    task = asyncio.ensure_future(kitchen.sleep_ms(30_000))

                    async def started() -> bool:
                        return int(await control.in_flight(addr)) == 1

                    await eventually_async(started, "the call to start")
                    await control.abort(addr)
                    with self.assertRaises(ipc.ConnectionLost):
                        await asyncio.wait_for(task, 10)
                    self.assertEqual(await control.start("kitchen", addr), addr)
                    self.assertEqual(await kitchen.ping(), 1, "reconnected on the next call")
                    self.assertEqual(client.links.current.generation, 2)
            finally:
                await control.abort(addr)
