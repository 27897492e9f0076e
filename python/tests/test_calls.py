"""The synchronous client: calls, the directory, schemas, oneway, streams,
Unix sockets, threads sharing a client."""

from __future__ import annotations

import threading

import ipc
from ipc import wire
from support import CALC, KITCHEN, UNIX, Servers, TestCase, eventually


class Calls(TestCase):
    def test_the_issues_example(self) -> None:
        with ipc.connect(CALC()) as client:
            calc = client.get_exposed_object("Calculator")
            self.assertEqual(calc.add(2, 3), 5)
            with self.assertRaises(ipc.AppError) as caught:
                calc.div(1, 0)
            self.assertEqual(caught.exception.value, "DivideByZero")
            greeter = client.get_exposed_object("Greeter")
            self.assertEqual(greeter.greet("Ünïcødé 🦀"), "Hello, Ünïcødé 🦀!")
            self.assertEqual(greeter.greet(""), "Hello, !")

    def test_the_directory_lists_objects_methods_and_flags(self) -> None:
        with ipc.connect(KITCHEN()) as client:
            (kitchen,) = client.objects()
            self.assertEqual((kitchen.name, kitchen.trait_name), ("Kitchen", "Kitchen"))
            methods = {m.name: m for m in kitchen.methods}
            self.assertEqual(methods["echo"].signature, "echo(Everything)->Everything")
            self.assertTrue(methods["note"].oneway)
            self.assertTrue(methods["ping"].idempotent)
            self.assertTrue(methods["count"].streaming)
            self.assertTrue(methods["subscribe"].object_args)
            signatures = [m.signature for m in kitchen.methods]
            self.assertEqual(wire.fingerprint(kitchen.trait_name, signatures), kitchen.fingerprint)

    def test_the_schema_describes_arguments_and_outputs(self) -> None:
        with ipc.connect(CALC()) as client:
            schema = client.schema("Calculator")
            self.assertEqual(schema.trait_name, "Calculator")
            _, div = schema.method("div")
            self.assertEqual([(n, str(f)) for n, f in div.args], [("a", "i64"), ("b", "i64")])
            self.assertEqual(div.output, ("Fallible", ipc.Format("I64"), ipc.Format("TypeName", "MathError")))
            self.assertEqual(dict(schema.types)["MathError"], ipc.ContainerFormat("Enum", (("DivideByZero", ipc.VariantFormat("Unit")),)))
            calc = client.get_exposed_object("Calculator")
            self.assertIn("div(a: i64, b: i64) -> Result<i64, MathError>", calc.div.__doc__)
            self.assertIn("add", dir(calc))

    def test_oneway_calls_return_at_once_and_run_in_order(self) -> None:
        with ipc.connect(KITCHEN()) as client:
            kitchen = client.get_exposed_object("Kitchen")
            first = len(kitchen.notes())
            for n in range(100):
                self.assertIsNone(kitchen.note(n))
            notes = eventually(lambda: (lambda ns: ns if len(ns) >= first + 100 else None)(kitchen.notes()), "the notes")
            self.assertEqual(notes[first:], list(range(100)))

    def test_a_unix_socket_address(self) -> None:
        self.assertTrue(UNIX().startswith("unix:"))
        with ipc.connect(UNIX()) as client:
            self.assertEqual(client.get_exposed_object("Calculator").add(20, 22), 42)

    def test_threads_share_one_client(self) -> None:
        with ipc.connect(KITCHEN()) as client:
            kitchen = client.get_exposed_object("Kitchen")
            errors: list = []

            def work(base: int) -> None:
                try:
                    for i in range(50):
                        if i % 10 == 0:
                            assert kitchen.sleep_ms(5) == 5
                        assert kitchen.echo_shape({"Rect": (base, i)}) == {"Rect": (base, i)}
                except BaseException as e:  # reported below
                    errors.append(e)

            threads = [threading.Thread(target=work, args=(b,)) for b in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            self.assertEqual(errors, [])
            self.assertEqual(client._links.current.generation, 1, "one connection throughout")

    def test_proxies_with_their_own_deadline(self) -> None:
        with ipc.connect(KITCHEN(), timeout=5) as client:
            kitchen = client.get_exposed_object("Kitchen")
            self.assertEqual(kitchen.timeout, 5)
            quick = kitchen.with_timeout(0.1)
            self.assertEqual(quick.timeout, 0.1)
            self.assertEqual(quick.ping(), 1)
            with self.assertRaises(ipc.Timeout):
                quick.sleep_ms(2000)
            self.assertEqual(kitchen.sleep_ms(1), 1)
            self.assertEqual(kitchen.call("ping"), 1)


class Streams(TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.client = ipc.connect(KITCHEN())
        self.kitchen = self.client.get_exposed_object("Kitchen")

    def tearDown(self) -> None:
        self.client.close()
        super().tearDown()

    def test_items_arrive_in_order_and_the_end_is_clean(self) -> None:
        self.assertEqual(list(self.kitchen.count(5)), [0, 1, 2, 3, 4])
        self.assertEqual(list(self.kitchen.count(0)), [])

    def test_a_long_stream_needs_credit_again_and_again(self) -> None:
        # 100,000 items of 17-byte frames: about seven 256 KiB windows.
        total = 0
        n = 0
        for item in self.kitchen.count(100_000):
            self.assertEqual(item, n)
            total += item
            n += 1
        self.assertEqual(n, 100_000)
        self.assertEqual(total, sum(range(100_000)))

    def test_a_tiny_window_still_delivers_everything(self) -> None:
        with ipc.connect(KITCHEN(), stream_window=1) as client:
            kitchen = client.get_exposed_object("Kitchen")
            self.assertEqual(list(kitchen.count(300)), list(range(300)))

    def test_a_fallible_stream_refuses_with_the_methods_error(self) -> None:
        shapes = list(self.kitchen.shapes(4))
        self.assertEqual(shapes, ["Empty", {"Rect": (1, 2)}, {"Poly": {"points": [{"x": -1, "y": 1}], "closed": True}}, "Empty"])
        with self.assertRaises(ipc.AppError) as caught:
            self.kitchen.shapes(0)
        self.assertEqual(caught.exception.value, {"Invalid": {"reason": "no shapes"}})

    def test_a_producer_that_panics_ends_the_stream_with_remote_panic(self) -> None:
        stream = self.kitchen.stream_then_panic()
        self.assertEqual(next(stream), 1)
        self.assertEqual(next(stream), 2)
        with self.assertRaises(ipc.RemotePanic) as caught:
            next(stream)
        self.assertIn("the producer gave up", caught.exception.message)
        with self.assertRaises(StopIteration):
            next(stream)

    def test_closing_a_stream_early_stops_the_producer(self) -> None:
        with Servers() as servers:
            with self.kitchen.count(10**12) as stream:
                self.assertEqual([next(stream) for _ in range(3)], [0, 1, 2])
                eventually(lambda: servers.control.streams(KITCHEN()) >= 1, "the stream to be produced")
            eventually(lambda: servers.control.streams(KITCHEN()) == 0, "the producer to be dropped")
        self.assertEqual(self.kitchen.ping(), 1)

    def test_a_stream_and_calls_interleave_on_one_connection(self) -> None:
        stream = self.kitchen.count(1000)
        got = []
        for i, item in enumerate(stream):
            got.append(item)
            if i % 100 == 0:
                self.assertEqual(self.kitchen.ping(), 1)
        self.assertEqual(got, list(range(1000)))

    def test_waiting_for_an_item_can_time_out(self) -> None:
        stream = self.kitchen.count(2)
        self.assertEqual(stream.next(timeout=5), 0)
        self.assertEqual(stream.next(timeout=5), 1)
        with self.assertRaises(StopIteration):
            stream.next(timeout=5)
