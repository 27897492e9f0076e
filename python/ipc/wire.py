"""The frame format and the handshake messages (README, "Wire protocol"),
as pure functions: no sockets here.

A frame is ``length u32 | kind u8 | id u64 | payload``, little-endian, where
``length`` counts the bytes after itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from typing import NamedTuple, Optional

from .errors import AuthFailed, ProtocolError, ProtocolMismatch

MAGIC = b"IPCR"
VERSION = 2

# Message kinds.
HELLO = 0
REQUEST = 1
RESPONSE = 2
CANCEL = 3
GO_AWAY = 4
ONEWAY = 5
STREAM_ITEM = 6
STREAM_END = 7
CREDIT = 8
RELEASE = 9
AUTH_PROOF = 10
AUTH_OK = 11

# GoAway reasons.
GOAWAY_SHUTDOWN = 0
GOAWAY_CONNECTION_LIMIT = 1
GOAWAY_AUTH_FAILED = 2
GOAWAY_PERMISSION_DENIED = 3

#: Bytes of the length prefix.
PREFIX = 4
#: Bytes of kind and id: the least a frame's ``length`` can be.
HEADER = 9
#: The smallest and largest effective frame limits (1 KiB ..= 1 GiB).
MIN_FRAME_SIZE = 1 << 10
MAX_FRAME_SIZE = 1 << 30
#: Default frame limit of both sides: 16 MiB.
DEFAULT_MAX_FRAME_SIZE = 16 << 20
#: Until the handshake is done, no frame may be longer than this.
HANDSHAKE_FRAME_MAX = 256
#: The system object's handle and methods.
SYSTEM_OBJECT = 0
SYSTEM_RESOLVE = 0
SYSTEM_LIST = 1
SYSTEM_SCHEMA = 2
#: Handles from here up name objects exported on one connection.
EXPORT_BASE = 1 << 31
#: Bytes of an authentication nonce and proof.
AUTH_LEN = 32
#: Shortest shared key accepted (as in Rust's ``AuthKey::MIN_LEN``).
MIN_KEY_LEN = 16

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1

FRAME_HEAD = struct.Struct("<IBQ")
REQUEST_HEAD = struct.Struct("<IBQIHI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def clamp_frame_size(n: int) -> int:
    """A frame limit as the protocol enforces it: 1 KiB ..= 1 GiB."""
    return max(MIN_FRAME_SIZE, min(MAX_FRAME_SIZE, n))


def frame(kind: int, id: int, payload: bytes = b"") -> bytes:
    """One whole frame."""
    return FRAME_HEAD.pack(HEADER + len(payload), kind, id) + payload


def request_head(oneway: bool, id: int, handle: int, method: int, deadline_ms: int, args_len: int) -> bytes:
    """The bytes of a Request (or Oneway) frame before its arguments."""
    kind = ONEWAY if oneway else REQUEST
    return REQUEST_HEAD.pack(HEADER + 10 + args_len, kind, id, handle, method, deadline_ms)


def request_length(args_len: int) -> int:
    """The ``length`` field of a request with ``args_len`` bytes of arguments."""
    return HEADER + 10 + args_len


def cancel(id: int) -> bytes:
    """A Cancel frame for request ``id``."""
    return FRAME_HEAD.pack(HEADER, CANCEL, id)


def credit(id: int, n: int) -> bytes:
    """A Credit frame granting ``n`` more bytes to the stream of request ``id``."""
    return FRAME_HEAD.pack(HEADER + 4, CREDIT, id) + _U32.pack(n)


def response(id: int, status: int, body: bytes = b"") -> bytes:
    """A Response frame."""
    return FRAME_HEAD.pack(HEADER + 1 + len(body), RESPONSE, id) + bytes((status,)) + body


def string(s: str) -> bytes:
    """A bincode ``String``: a ``u64`` byte count, then UTF-8."""
    b = s.encode("utf-8")
    return _U64.pack(len(b)) + b


def deadline_ms(seconds: Optional[float]) -> int:
    """A request's deadline field: whole milliseconds rounded up, at least 1,
    at most ``u32::MAX``; 0 for none."""
    if seconds is None:
        return 0
    ms = -(-int(seconds * 1_000_000) // 1000)
    return max(1, min(U32_MAX, ms))


# --- Handshake -------------------------------------------------------------


def hello(max_frame_size: int, nonce: Optional[bytes]) -> bytes:
    """The client's Hello: magic, version, frame limit, and the key offer
    (``01`` and a nonce) when it has a key; nothing otherwise."""
    payload = MAGIC + struct.pack("<HI", VERSION, min(max_frame_size, U32_MAX))
    if nonce is not None:
        payload += b"\x01" + nonce
    return frame(HELLO, 0, payload)


class ServerHello(NamedTuple):
    """What the server's Hello says."""

    version: int
    max_frame_size: int
    #: The server's nonce, if it offers authentication.
    nonce: Optional[bytes]
    #: Its proof of the key, if it answered a client's key offer with one.
    proof: Optional[bytes]


def parse_hello(payload: bytes) -> ServerHello:
    """Reads the server's Hello payload.

    Raises :class:`ProtocolMismatch` for a wrong magic or version (the version
    is read before anything else can be wrong), :class:`ProtocolError` for
    malformed authentication fields.
    """
    if len(payload) < 10:
        raise ProtocolError("a hello shorter than 10 bytes")
    if payload[:4] != MAGIC:
        raise ProtocolMismatch(
            f"the peer sent {payload[:4]!r} instead of the magic bytes; it is not an ipc peer"
        )
    version, limit = struct.unpack_from("<HI", payload, 4)
    if version != VERSION:
        raise ProtocolMismatch(
            f"this side speaks protocol version {VERSION}, the peer speaks {version}"
        )
    rest = payload[10:]
    if not rest or rest == b"\x00":
        return ServerHello(version, limit, None, None)
    if rest[0] == 1 and len(rest) in (1 + AUTH_LEN, 1 + 2 * AUTH_LEN):
        nonce = bytes(rest[1 : 1 + AUTH_LEN])
        proof = bytes(rest[1 + AUTH_LEN :]) or None
        return ServerHello(version, limit, nonce, proof)
    raise ProtocolError("malformed authentication fields in the hello")


def go_away_error(reason: int) -> Exception:
    """The error a GoAway received in place of the handshake stands for."""
    from .errors import Overloaded, PermissionDenied, ShuttingDown

    if reason == GOAWAY_CONNECTION_LIMIT:
        return Overloaded("the server is at its connection limit")
    if reason == GOAWAY_AUTH_FAILED:
        return AuthFailed("the server refused the key: it does not match")
    if reason == GOAWAY_PERMISSION_DENIED:
        return PermissionDenied("the server does not accept connections from this client")
    return ShuttingDown()


def new_nonce() -> bytes:
    """A fresh random nonce from the OS."""
    return secrets.token_bytes(AUTH_LEN)


def proof(key: bytes, role: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """``HMAC-SHA256(key, "ipc-auth" ‖ version u16 LE ‖ role ‖ client nonce ‖
    server nonce)``; ``role`` is ``b"S"`` for the server's proof, ``b"C"``
    for the client's."""
    message = b"ipc-auth" + struct.pack("<H", VERSION) + role + client_nonce + server_nonce
    return hmac.new(key, message, hashlib.sha256).digest()


def check_server_proof(key: bytes, client_nonce: bytes, hello: ServerHello) -> bytes:
    """Checks the server's answer to our key offer and returns our own proof
    to send. Raises :class:`AuthFailed` when the server does not use a key or
    cannot prove it holds ours."""
    if hello.nonce is None:
        raise AuthFailed("the server does not use a key; refusing to go on without authentication")
    expected = proof(key, b"S", client_nonce, hello.nonce)
    if hello.proof is None or not hmac.compare_digest(expected, hello.proof):
        raise AuthFailed(
            "the key does not match: the server could not prove it holds this client's key"
        )
    return proof(key, b"C", client_nonce, hello.nonce)


def fingerprint(trait_name: str, signatures: "list[str]") -> int:
    """A trait's fingerprint: 64-bit FNV-1a over the trait name, then ``|``
    and each method signature in order."""
    h = 0xCBF29CE484222325
    data = trait_name.encode("utf-8") + b"".join(b"|" + s.encode("utf-8") for s in signatures)
    for byte in data:
        h ^= byte
        h = (h * 0x100000001B3) & U64_MAX
    return h
