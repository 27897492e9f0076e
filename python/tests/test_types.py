"""Every type shape round-trips through the Rust server, and the Python
encoding is the Rust encoding byte for byte; values that do not fit raise
before anything is sent."""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Iterator

import ipc
from support import CALC, KITCHEN, TestCase, sent_requests


def everything() -> dict:
    """A value of the Rust `Everything`: one field of every shape."""
    return {
        "flag": True,
        "small": -128,
        "short": -32768,
        "int": -(2**31),
        "long": -(2**63),
        "huge": -(2**127),
        "byte": 255,
        "ushort": 65535,
        "uint": 2**32 - 1,
        "ulong": 2**64 - 1,
        "uhuge": 2**128 - 1,
        "single": 1.5,
        "double": -0.0,
        "letter": "🦀",
        "text": "",
        "blob": b"\x00\xff\x10",
        "raw": bytes(range(256)),
        "maybe": None,
        "maybe_maybe": ipc.Some(None),
        "shapes": [
            "Empty",
            {"Circle": 2.5},
            {"Rect": (3, 4)},
            {"Poly": {"points": [{"x": 1, "y": -1}, {"x": -2147483648, "y": 2147483647}], "closed": False}},
        ],
        # In the order a BTreeMap keeps (by UTF-8 bytes), for the byte-for-byte test.
        "levels": {"": "Low", "a": "Low", "ü": "High"},
        "by_id": {1: [{"x": 0, "y": 0}], 4294967295: []},
        "triple": (1, "ünï©ødé", "High"),
        "grid": (0, 1, 65535),
        "nothing": None,
        "unit": None,
        "meters": 3.25,
        "pair": (9, "nine"),
        "inner": {
            "label": "outer",
            "tags": ["a", "", "🦀"],
            "next": {"label": "inner", "tags": [], "next": None},
        },
    }


def bits(x: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", x))[0])


def from_bits(b: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", b))[0])


class TypeShapes(TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.client = ipc.connect(KITCHEN(), max_frame_size=64 << 20)
        self.kitchen = self.client.get_exposed_object("Kitchen")

    def tearDown(self) -> None:
        self.client.close()
        super().tearDown()

    def test_every_shape_round_trips_through_echo(self) -> None:
        value = everything()
        back = self.kitchen.echo(value)
        self.assertEqual(back, value)
        self.assertEqual(bits(back["double"]), bits(-0.0), "the sign of zero survives")
        self.assertIsInstance(back["maybe_maybe"], ipc.Some)
        self.assertIsInstance(back["blob"], bytes)
        self.assertIsInstance(back["raw"], bytes)

    def test_the_python_encoding_is_the_rust_encoding_byte_for_byte(self) -> None:
        value = everything()
        mine = self.kitchen._state.by_name["encoded"].encode_args((value,), {})
        theirs = self.kitchen.encoded(value)
        self.assertEqual(mine, theirs)
        # And with the other branches of the options.
        value["maybe"] = 2**64 - 1
        value["maybe_maybe"] = "x"
        value["inner"]["next"] = None
        self.assertEqual(self.kitchen._state.by_name["encoded"].encode_args((value,), {}), self.kitchen.encoded(value))

    def test_enum_variants_of_every_kind_round_trip(self) -> None:
        for shape in ["Empty", {"Circle": -1.25}, {"Rect": (0, 4294967295)}, {"Poly": {"points": [], "closed": True}}]:
            self.assertEqual(self.kitchen.echo_shape(shape), shape)
        # A unit variant may also be written as a one-key dict.
        self.assertEqual(self.kitchen.echo_shape({"Empty": None}), "Empty")

    def test_extremes_decode_exactly(self) -> None:
        u64_max, i64_min, nan, i128_min, u128_max, empty, text = self.kitchen.extremes()
        self.assertEqual(u64_max, 2**64 - 1)
        self.assertEqual(i64_min, -(2**63))
        self.assertTrue(math.isnan(nan))
        self.assertEqual(i128_min, -(2**127))
        self.assertEqual(u128_max, 2**128 - 1)
        self.assertEqual(empty, "")
        self.assertEqual(text, "ünï©ødé 🦀")

    def test_nan_and_other_floats_keep_their_bits_both_ways(self) -> None:
        for b in [
            bits(float("nan")),
            0x7FF8000000000123,  # a quiet NaN with a payload
            0xFFF8000000000000,  # a negative NaN
            bits(float("inf")),
            bits(-0.0),
            1,  # the smallest subnormal
            bits(1.7976931348623157e308),
        ]:
            with self.subTest(bits=hex(b)):
                self.assertEqual(self.kitchen.f64_bits(from_bits(b)), b)
                self.assertEqual(bits(self.kitchen.f64_from_bits(b)), b)

    def test_sixteen_mib_byte_arguments_round_trip(self) -> None:
        big = bytes(range(256)) * (16 * 1024 * 4)
        self.assertEqual(len(big), 16 << 20)
        self.assertEqual(self.kitchen.echo_bytes(big), big)
        self.assertEqual(self.kitchen.echo_vec(bytearray(big)), big)
        self.assertEqual(self.kitchen.echo_vec([1, 2, 255]), b"\x01\x02\xff", "a list of ints is a Vec<u8> too")


class InputErrors(TestCase):
    """Wrong arity, wrong types, out-of-range integers, missing or unknown
    fields, unknown variants: raised before anything is sent."""

    def setUp(self) -> None:
        super().setUp()
        self.client = ipc.connect(KITCHEN(), max_frame_size=64 << 20)
        self.kitchen = self.client.get_exposed_object("Kitchen")
        self.calc_client = ipc.connect(CALC())
        self.calc = self.calc_client.get_exposed_object("Calculator")

    def tearDown(self) -> None:
        self.client.close()
        self.calc_client.close()
        super().tearDown()

    @contextlib.contextmanager
    def assert_raises_unsent(self, client: ipc.Client, error: type, *fragments: str) -> Iterator[None]:
        """Expects ``error`` with ``fragments`` in its message, and checks
        that the client sent nothing."""
        before = sent_requests(client)
        with self.assertRaises(error) as caught:
            yield
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))
        self.assertEqual(sent_requests(client), before, "something was sent")

    def test_wrong_arity_and_argument_names(self) -> None:
        with self.assert_raises_unsent(self.calc_client, TypeError, "add()", "missing argument 'b'"):
            self.calc.add(1)
        with self.assert_raises_unsent(self.calc_client, TypeError, "2 arguments (a, b), 3 given"):
            self.calc.add(1, 2, 3)
        with self.assert_raises_unsent(self.calc_client, TypeError, "unexpected argument 'c'"):
            self.calc.add(1, 2, c=3)
        with self.assert_raises_unsent(self.calc_client, TypeError, "missing argument 'b'"):
            self.calc.add(a=1)
        self.assertEqual(self.calc.add(2, b=3), 5)
        self.assertEqual(self.calc.add(b=3, a=2), 5)

    def test_wrong_types_name_the_argument(self) -> None:
        with self.assert_raises_unsent(self.calc_client, TypeError, "argument 'a'", "expected an int (i64)", "str"):
            self.calc.add("1", 2)
        with self.assert_raises_unsent(self.calc_client, TypeError, "argument 'b'", "bool"):
            self.calc.add(1, True)
        with self.assert_raises_unsent(self.calc_client, TypeError, "argument 'b'"):
            self.calc.add(1, 2.0)

    def test_out_of_range_integers_name_the_argument_and_range(self) -> None:
        with self.assert_raises_unsent(self.calc_client, ValueError, "argument 'a'", "out of range for i64"):
            self.calc.add(2**63, 0)
        with self.assert_raises_unsent(self.calc_client, ValueError, "argument 'b'", "out of range"):
            self.calc.add(0, -(2**63) - 1)
        self.assertEqual(self.calc.add(2**63 - 1, -(2**63)), -1)

    def test_struct_fields_are_checked_with_their_path(self) -> None:
        value = everything()
        value["byte"] = 256
        with self.assert_raises_unsent(self.client, ValueError, "argument 'value'.byte", "out of range for u8"):
            self.kitchen.echo(value)
        value = everything()
        del value["flag"]
        with self.assert_raises_unsent(self.client, ValueError, "missing field 'flag'"):
            self.kitchen.echo(value)
        value = everything()
        value["colour"] = "red"
        with self.assert_raises_unsent(self.client, ValueError, "unknown field 'colour'"):
            self.kitchen.echo(value)
        value = everything()
        value["shapes"][1] = {"Circle": "wide"}
        with self.assert_raises_unsent(self.client, TypeError, "'value'.shapes[1].Circle", "expected a float"):
            self.kitchen.echo(value)
        value = everything()
        value["inner"]["next"]["tags"] = ["ok", 3]
        with self.assert_raises_unsent(self.client, TypeError, "'value'.inner.next.tags[1]", "expected a str"):
            self.kitchen.echo(value)
        value = everything()
        value["grid"] = (1, 2)
        with self.assert_raises_unsent(self.client, ValueError, ".grid", "expected 3 items"):
            self.kitchen.echo(value)

    def test_enum_variants_are_checked(self) -> None:
        with self.assert_raises_unsent(self.client, ValueError, "'Hexagon' is not a variant of Shape", "Empty, Circle"):
            self.kitchen.echo_shape("Hexagon")
        with self.assert_raises_unsent(self.client, ValueError, "Shape::Rect needs a payload"):
            self.kitchen.echo_shape("Rect")
        with self.assert_raises_unsent(self.client, ValueError, "Shape::Empty has no payload"):
            self.kitchen.echo_shape({"Empty": 1})
        with self.assert_raises_unsent(self.client, TypeError, "expected a variant of enum Shape"):
            self.kitchen.echo_shape(3)

    def test_a_method_taking_an_object_cannot_be_called(self) -> None:
        with self.assert_raises_unsent(self.client, TypeError, "subscribe() cannot be called from Python", "Remote"):
            self.kitchen.subscribe(None)
        self.assertIn("<opaque:", str(self.kitchen.schema.method("subscribe")[1].args[0][1]))
        self.assertEqual(self.kitchen.ping(), 1, "the rest of the object works")

    def test_unknown_methods_say_which_exist(self) -> None:
        with self.assertRaises(AttributeError) as caught:
            self.calc.mul(2, 3)
        self.assertIn("add, div", str(caught.exception))
