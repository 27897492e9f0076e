"""Exceptions: the framework's own (:class:`Error` and its subclasses, one per
variant of Rust's ``ipc_core::Error``) and a method's application error
(:class:`AppError`), which is kept apart from them as in Rust's
``CallError::App``.
"""

from __future__ import annotations

import struct
from typing import Any, Optional

__all__ = [
    "Error",
    "ConnectError",
    "InvalidAddress",
    "ConnectionLost",
    "ShuttingDown",
    "Timeout",
    "Overloaded",
    "ProtocolMismatch",
    "ProtocolError",
    "UnknownObject",
    "UnknownMethod",
    "TraitMismatch",
    "AuthFailed",
    "PermissionDenied",
    "ConfigError",
    "FrameTooLarge",
    "RemotePanic",
    "BadRequest",
    "EncodeError",
    "DecodeError",
    "AppError",
]


class Error(Exception):
    """Anything that went wrong in ``ipc`` itself, as opposed to the method's
    own error (:class:`AppError`). Match on the class, never on the message."""

    #: True for errors that mean the connection is gone or going
    #: (:class:`ConnectError`, :class:`ConnectionLost`, :class:`ShuttingDown`),
    #: as Rust's ``Error::is_connection_error``.
    connection_error = False


class ConnectError(Error):
    """Connecting failed: refused, unreachable, timed out, or the name did not resolve."""

    connection_error = True

    def __init__(self, addr: str, reason: str) -> None:
        super().__init__(f"could not connect to {addr}: {reason}")
        self.addr = addr
        self.reason = reason


class InvalidAddress(Error, ValueError):
    """An address string is not ``HOST:PORT``, ``tcp:HOST:PORT`` or ``unix:PATH``."""

    def __init__(self, addr: str, reason: str) -> None:
        super().__init__(f"invalid address `{addr}`: {reason}")
        self.addr = addr
        self.reason = reason


class ConnectionLost(Error):
    """The connection ended while the call was pending, or before it was sent.
    The call may or may not have run."""

    connection_error = True

    def __init__(self, reason: str) -> None:
        super().__init__(f"connection lost: {reason}")
        self.reason = reason


class ShuttingDown(Error):
    """The server is shutting down and did not run the call."""

    connection_error = True

    def __init__(self) -> None:
        super().__init__("the server is shutting down")


class Timeout(Error, TimeoutError):
    """The call's deadline passed; the server was told to drop it. ``after`` is
    the deadline in seconds."""

    def __init__(self, after: float) -> None:
        super().__init__(f"the call timed out after {after:g} s")
        self.after = after


class Overloaded(Error):
    """A limit of the server (connections, calls in flight, streams, objects) was hit; nothing ran."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the server is overloaded: {detail}")
        self.detail = detail


class ProtocolMismatch(Error):
    """The peer speaks another protocol version, or is not an ``ipc`` peer."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"protocol mismatch: {detail}")
        self.detail = detail


class ProtocolError(Error):
    """The peer broke the protocol (Rust's ``Error::Protocol``); the connection is closed."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"protocol violation: {detail}")
        self.detail = detail


class UnknownObject(Error):
    """The server exposes no object under this name (or hides it from this client)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the server exposes no object named `{name}`")
        self.name = name


class UnknownMethod(Error):
    """The object has no method with this index (the peers disagree about the trait)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"unknown method: {detail}")
        self.detail = detail


class TraitMismatch(Error):
    """The object's trait is not the one the client's schema describes: it
    changed since the schema was fetched (a server restarted with another
    version of the trait, say)."""

    def __init__(
        self, object: str, server_fingerprint: int, proxy_fingerprint: int, detail: str
    ) -> None:
        super().__init__(
            f"trait mismatch for object `{object}`: {detail} (server fingerprint "
            f"{server_fingerprint:016x}, proxy {proxy_fingerprint:016x})"
        )
        self.object = object
        self.server_fingerprint = server_fingerprint
        self.proxy_fingerprint = proxy_fingerprint
        self.detail = detail


class AuthFailed(Error):
    """Shared-key authentication failed: no key, another key, or a server without one."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"authentication failed: {reason}")
        self.reason = reason


class PermissionDenied(Error):
    """The server's authorization refused the connection or the call; nothing ran."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"permission denied: {detail}")
        self.detail = detail


class ConfigError(Error):
    """An unusable setting: a short key, an unreadable key file, a ``tls://`` address."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid configuration: {detail}")
        self.detail = detail


class FrameTooLarge(Error):
    """A request or reply exceeds the receiver's frame limit; the connection is unaffected."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class RemotePanic(Error):
    """The remote method panicked; the server and the connection keep working."""

    def __init__(self, message: str) -> None:
        super().__init__(f"the remote method panicked: {message}")
        self.message = message


class BadRequest(Error):
    """The server could not decode the call's arguments."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the server rejected the arguments: {detail}")
        self.detail = detail


class EncodeError(Error):
    """The server could not encode the method's answer (its ``Serialize`` impl failed)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"could not encode: {detail}")
        self.detail = detail


class DecodeError(Error):
    """A reply does not decode with the method's schema."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"could not decode the reply: {detail}")
        self.detail = detail


class AppError(Exception):
    """The method ran and returned ``Err(e)``: ``value`` is ``e``, decoded with
    the method's schema (a unit enum variant is its name, ``"DivideByZero"``;
    other values as in the type-mapping table)."""

    def __init__(self, value: Any, method: str = "") -> None:
        where = f"{method}() " if method else "the remote method "
        super().__init__(f"{where}returned an error: {value!r}")
        self.value = value
        self.method = method


# Response statuses (README, "Calls").
OK = 0
APP_ERROR = 1
UNKNOWN_OBJECT = 16
UNKNOWN_METHOD = 17
TRAIT_MISMATCH = 18
BAD_REQUEST = 19
PANIC = 20
SHUTTING_DOWN = 21
FRAME_TOO_LARGE = 22
ENCODE_FAILED = 23
OVERLOADED = 24
CANCELLED = 25
DEADLINE_EXCEEDED = 26
PERMISSION_DENIED = 27

#: Every status a Response or StreamEnd may carry.
STATUSES = frozenset({0, 1, *range(16, 28)})

_U64 = struct.Struct("<Q")


def _detail(body: bytes) -> str:
    """A ``String`` detail body, or ``""`` if it is not one."""
    if len(body) < 8:
        return ""
    (n,) = _U64.unpack_from(body, 0)
    if 8 + n != len(body):
        return ""
    return bytes(body[8:]).decode("utf-8", "replace")


def from_status(status: int, body: bytes, object_name: str, timeout: Optional[float] = None) -> Error:
    """The error a response (or a stream's end) with an error ``status``
    stands for; ``object_name`` names the object called, for messages."""
    if status == UNKNOWN_OBJECT:
        return UnknownObject(object_name)
    if status == UNKNOWN_METHOD:
        return UnknownMethod(_detail(body))
    if status == TRAIT_MISMATCH:
        server = proxy = 0
        detail = ""
        if len(body) >= 24:
            server, proxy = struct.unpack_from("<QQ", body, 0)
            detail = _detail(body[16:])
        return TraitMismatch(object_name, server, proxy, detail)
    if status == BAD_REQUEST:
        return BadRequest(_detail(body))
    if status == PANIC:
        return RemotePanic(_detail(body))
    if status == SHUTTING_DOWN:
        return ShuttingDown()
    if status == FRAME_TOO_LARGE:
        size = limit = 0
        if len(body) == 16:
            size, limit = struct.unpack_from("<QQ", body, 0)
        return FrameTooLarge(size, limit)
    if status == ENCODE_FAILED:
        return EncodeError(_detail(body))
    if status == OVERLOADED:
        return Overloaded(_detail(body))
    if status == CANCELLED:
        return ConnectionLost("the peer cancelled the call")
    if status == DEADLINE_EXCEEDED:
        return Timeout(timeout if timeout is not None else 0.0)
    if status == PERMISSION_DENIED:
        return PermissionDenied(_detail(body))
    return ProtocolError(f"unexpected status {status}")
