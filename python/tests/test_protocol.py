"""The codec and the protocol state without a server: the README's example
frames, fingerprints, and what a receiver must refuse."""

from __future__ import annotations

import struct
import unittest

import ipc
from ipc import wire
from ipc.codec import Codec
from ipc.protocol import Handshake, Session, Waiter, split_frames
from ipc.schema import ContainerFormat, Format, VariantFormat, decode_schema
from support import TestCase


class Recorder(Waiter):
    def __init__(self) -> None:
        self.got: list = []

    def resolve(self, status: int, body: bytes) -> None:
        self.got.append((status, body))

    def reject(self, error: ipc.Error) -> None:
        self.got.append(error)


def frame(kind: int, id: int, payload: bytes = b"") -> bytes:
    return struct.pack("<IBQ", 9 + len(payload), kind, id) + payload


class Wire(TestCase):
    def test_the_readme_example_request_and_answer(self) -> None:
        args = struct.pack("<qq", 2, 3)
        request = wire.request_head(False, 7, 1, 0, 0, len(args)) + args
        self.assertEqual(
            request.hex(" "),
            "23 00 00 00 01 07 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 "
            "02 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00",
        )
        session = Session(1 << 20, 1 << 20, 1024)
        waiter = Recorder()
        session.last_id = 6
        session.request(1, 0, 0, args, waiter)
        session.feed(bytes.fromhex("12 00 00 00 02 07 00 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00"))
        self.assertEqual(waiter.got, [(0, struct.pack("<q", 5))])

    def test_fingerprints_are_fnv1a_over_name_and_signatures(self) -> None:
        self.assertEqual(wire.fingerprint("", []), 0xCBF29CE484222325)
        self.assertEqual(wire.fingerprint("a", []), 0xAF63DC4C8601EC8C)
        self.assertNotEqual(wire.fingerprint("T", ["f()->()"]), wire.fingerprint("T", ["f()->u8"]))

    def test_deadlines_round_up_to_whole_milliseconds(self) -> None:
        self.assertEqual(wire.deadline_ms(None), 0)
        self.assertEqual(wire.deadline_ms(0.0001), 1)
        self.assertEqual(wire.deadline_ms(0.2), 200)
        self.assertEqual(wire.deadline_ms(1.0005), 1001)
        self.assertEqual(wire.deadline_ms(10**9), 2**32 - 1)

    def test_auth_proofs_bind_both_nonces_and_the_role(self) -> None:
        key = b"k" * 16
        c, s = b"c" * 32, b"s" * 32
        server = wire.proof(key, b"S", c, s)
        self.assertNotEqual(server, wire.proof(key, b"C", c, s))
        self.assertNotEqual(server, wire.proof(key, b"S", s, c))
        hello = wire.ServerHello(2, 1 << 20, s, server)
        self.assertEqual(wire.check_server_proof(key, c, hello), wire.proof(key, b"C", c, s))
        with self.assertRaises(ipc.AuthFailed):
            wire.check_server_proof(b"x" * 16, c, hello)

    def test_the_key_is_never_shown(self) -> None:
        from ipc.config import settings

        config = settings("localhost:9099", key="a secret of twenty bytes")
        self.assertEqual(config.key, b"a secret of twenty bytes")
        self.assertNotIn("secret", repr(config))

    def test_a_hello_from_another_version_or_not_an_ipc_peer(self) -> None:
        with self.assertRaises(ipc.ProtocolMismatch):
            wire.parse_hello(b"IPCR" + struct.pack("<HI", 3, 1 << 20))
        with self.assertRaises(ipc.ProtocolMismatch):
            wire.parse_hello(b"HTTP" + struct.pack("<HI", 2, 1 << 20))
        with self.assertRaises(ipc.ProtocolError):
            wire.parse_hello(b"IPCR" + struct.pack("<HI", 2, 1 << 20) + b"\x02")
        hs = Handshake(1 << 20, None)
        self.assertEqual(hs.on_frame(0, 0, b"IPCR" + struct.pack("<HI", 2, 100))[0], True)
        self.assertEqual(hs.peer_max_frame, 1024, "a limit below 1 KiB counts as 1 KiB")
        with self.assertRaises(ipc.Overloaded):
            Handshake(1 << 20, None).on_frame(wire.GO_AWAY, 1, b"")


class ReceiverChecks(TestCase):
    def session(self) -> Session:
        return Session(4096, 4096, 100)

    def test_a_response_nobody_awaits_breaks_the_protocol(self) -> None:
        with self.assertRaises(ipc.ProtocolError):
            self.session().feed(frame(wire.RESPONSE, 5, b"\x00"))

    def test_an_unknown_status_or_kind_breaks_the_protocol(self) -> None:
        s = self.session()
        s.request(1, 0, 0, b"", Recorder())
        with self.assertRaises(ipc.ProtocolError):
            s.feed(frame(wire.RESPONSE, 1, b"\x63"))
        with self.assertRaises(ipc.ProtocolError):
            self.session().feed(frame(12, 0))

    def test_frames_over_the_limit_are_refused_before_they_arrive(self) -> None:
        buf = bytearray(struct.pack("<I", 4097))
        with self.assertRaises(ipc.ProtocolError):
            split_frames(buf, 4096)
        with self.assertRaises(ipc.ProtocolError):
            split_frames(bytearray(struct.pack("<I", 8) + b"\x00" * 8), 4096)

    def test_stream_items_beyond_the_credit_break_the_protocol(self) -> None:
        s = self.session()
        _, frames, state = s.request(1, 0, 0, b"", Recorder(), stream=lambda: None)
        self.assertEqual(frames[-1], wire.credit(1, 100), "the window is granted right after the request")
        s.feed(frame(wire.RESPONSE, 1, b"\x00"))
        item = b"x" * 60
        s.feed(frame(wire.STREAM_ITEM, 1, item))  # 69 of 100
        s.feed(frame(wire.STREAM_ITEM, 1, item))  # 138: overshoot by one item is allowed
        with self.assertRaises(ipc.ProtocolError):
            s.feed(frame(wire.STREAM_ITEM, 1, item))

    def test_taking_half_a_window_grants_it_again(self) -> None:
        s = self.session()
        _, _, state = s.request(1, 0, 0, b"", Recorder(), stream=lambda: None)
        assert state is not None
        s.feed(frame(wire.STREAM_ITEM, 1, b"x" * 41))  # 50 bytes with its header
        self.assertEqual(s.output(), [])
        s.take(state)
        self.assertEqual(s.output(), [wire.credit(1, 50)])
        s.feed(frame(wire.STREAM_END, 1, b"\x00"))
        self.assertEqual(state.end, (0, b""))

    def test_stream_frames_for_requests_never_sent_break_the_protocol_others_are_ignored(self) -> None:
        s = self.session()
        s.request(1, 0, 0, b"", Recorder())
        s.feed(frame(wire.STREAM_ITEM, 1, b"x"))  # a stream we do not hold: ignored
        with self.assertRaises(ipc.ProtocolError):
            s.feed(frame(wire.STREAM_END, 2, b"\x00"))

    def test_a_release_breaks_the_protocol_and_requests_get_16(self) -> None:
        with self.assertRaises(ipc.ProtocolError):
            self.session().feed(frame(wire.RELEASE, 2**31))
        s = self.session()
        s.feed(frame(wire.REQUEST, 3, b"\x00" * 10))
        (answer,) = s.output()
        self.assertEqual(answer[4:14], bytes([wire.RESPONSE]) + struct.pack("<Q", 3) + b"\x10")
        with self.assertRaises(ipc.ProtocolError):
            s.feed(frame(wire.REQUEST, 3, b"\x00" * 10))

    def test_calls_past_the_last_request_read_did_not_run(self) -> None:
        s = self.session()
        a, b = Recorder(), Recorder()
        s.request(1, 0, 0, b"", a)
        s.request(1, 0, 0, b"", b)
        s.feed(frame(wire.GO_AWAY, 0, struct.pack("<Q", 1)))
        self.assertFalse(s.takes_calls())
        s.close(ipc.ConnectionLost("gone"))
        self.assertIsInstance(a.got[0], ipc.ConnectionLost)
        self.assertIsInstance(b.got[0], ipc.ShuttingDown)

    def test_a_cancelled_call_is_told_to_the_server_and_its_late_answer_discarded(self) -> None:
        s = self.session()
        waiter = Recorder()
        id, _, _ = s.request(1, 0, 0, b"", waiter)
        s.abandon(id)
        self.assertEqual(s.output(), [wire.cancel(id)])
        s.feed(frame(wire.RESPONSE, id, bytes([25])))
        self.assertEqual(waiter.got, [])
        with self.assertRaises(ipc.ProtocolError):
            s.feed(frame(wire.RESPONSE, id, bytes([25])))


class Codecs(TestCase):
    types = {
        "Tree": ContainerFormat(
            "Enum",
            (("Leaf", VariantFormat("Unit")), ("Node", VariantFormat("Tuple", (Format("TypeName", "Tree"), Format("TypeName", "Tree"))))),
        ),
        "Id": ContainerFormat("NewTypeStruct", Format("U32")),
        "Empty": ContainerFormat("UnitStruct"),
    }

    def round_trip(self, fmt: Format, value: object) -> bytes:
        codec = Codec(self.types)
        out = bytearray()
        codec.encoder(fmt)(value, out)
        self.assertEqual(codec.decode(codec.decoder(fmt), bytes(out)), value)
        return bytes(out)

    def test_recursive_types_and_every_primitive(self) -> None:
        tree = {"Node": ({"Node": ("Leaf", "Leaf")}, "Leaf")}
        self.assertEqual(self.round_trip(Format("TypeName", "Tree"), tree), struct.pack("<IIIII", 1, 1, 0, 0, 0))
        self.assertEqual(self.round_trip(Format("Char"), "é"), "é".encode())
        self.assertEqual(self.round_trip(Format("I128"), -1), b"\xff" * 16)
        self.assertEqual(self.round_trip(Format("Option", Format("TypeName", "Empty")), ipc.Some(None)), b"\x01")
        self.assertEqual(self.round_trip(Format("Seq", Format("TypeName", "Empty")), [None, None]), struct.pack("<Q", 2))
        self.round_trip(Format("Map", Format("TypeName", "Id"), Format("Str")), {1: "a", 2: ""})
        self.round_trip(Format("Tuple", (Format("Bool"), Format("F32"))), (False, 0.5))

    def test_malformed_bodies_are_decode_errors(self) -> None:
        codec = Codec(self.types)
        for fmt, body in [
            (Format("Bool"), b"\x02"),
            (Format("Str"), struct.pack("<Q", 5) + b"ab"),
            (Format("Str"), struct.pack("<Q", 2) + b"\xff\xfe"),
            (Format("Option", Format("U8")), b"\x02\x00"),
            (Format("TypeName", "Tree"), struct.pack("<I", 2)),
            (Format("U32"), b"\x00\x00"),
            (Format("U8"), b"\x00\x00"),
            (Format("Seq", Format("U64")), struct.pack("<Q", 2**60)),
        ]:
            with self.subTest(fmt=str(fmt), body=body), self.assertRaises(ipc.DecodeError):
                codec.decode(codec.decoder(fmt), body)

    def test_a_schema_body_decodes(self) -> None:
        def s(text: str) -> bytes:
            return wire.string(text)

        body = (
            s("calc") + s("Calculator") + struct.pack("<QQ", 7, 1)
            + s("add") + s("add(i64,i64)->i64") + b"\x00\x01"
            + struct.pack("<Q", 2) + s("a") + struct.pack("<I", 5) + s("b") + struct.pack("<I", 5)
            + struct.pack("<II", 0, 5)
            + struct.pack("<Q", 1) + s("E") + struct.pack("<I", 4) + struct.pack("<Q", 1) + s("V") + struct.pack("<I", 0)
        )  # fmt: skip
        schema = decode_schema(body)
        self.assertEqual(schema.methods[0].args, (("a", Format("I64")), ("b", Format("I64"))))
        self.assertEqual(schema.methods[0].output, ("Value", Format("I64")))
        self.assertTrue(schema.methods[0].idempotent)
        self.assertEqual(schema.types, (("E", ContainerFormat("Enum", (("V", VariantFormat("Unit")),))),))
        with self.assertRaises(ipc.DecodeError):
            decode_schema(body + b"\x00")


if __name__ == "__main__":
    unittest.main()
