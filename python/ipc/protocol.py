"""One connection's protocol state, without I/O (the sync and the asyncio
clients drive it): the handshake, request ids, the table that matches each
response to its call, streams and their credit, and every check the README
asks a receiver to make. Bytes go in through :meth:`Session.feed`; frames to
send come out of :meth:`Session.output`.
"""

from __future__ import annotations

import collections
import struct
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import wire
from .errors import (
    STATUSES,
    AuthFailed,
    ConnectionLost,
    Error,
    ProtocolError,
    ShuttingDown,
)

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_unpack_u32 = _U32.unpack_from
_unpack_u64 = _U64.unpack_from


def split_frames(buf: bytearray, limit: int) -> List[Tuple[int, int, bytes]]:
    """Takes the complete frames at the start of ``buf`` out of it, as
    ``(kind, id, payload)``. A frame longer than ``limit`` (or shorter than
    its header) is a :class:`ProtocolError`, checked before it is read."""
    frames = []
    pos = 0
    n = len(buf)
    with memoryview(buf) as view:
        while n - pos >= 4:
            (length,) = _unpack_u32(buf, pos)
            if length > limit:
                raise ProtocolError(
                    f"the peer sent a frame of {length} bytes, past the limit of {limit}"
                )
            if length < wire.HEADER:
                raise ProtocolError(f"a frame of {length} bytes is shorter than its header")
            end = pos + 4 + length
            if end > n:
                break
            (id,) = _unpack_u64(buf, pos + 5)
            frames.append((buf[pos + 4], id, view[pos + 13 : end].tobytes()))
            pos = end
    del buf[:pos]
    return frames


class Handshake:
    """The client's side of the handshake (README, "Handshake and frame
    limits" and "Authentication"): :meth:`hello` first, then each frame the
    server sends to :meth:`on_frame` until it says the connection is open."""

    def __init__(self, max_frame_size: int, key: Optional[bytes]) -> None:
        self.max_frame_size = max_frame_size
        self.key = key
        self.nonce = wire.new_nonce() if key is not None else None
        self.peer_max_frame = wire.MIN_FRAME_SIZE
        self._state = "hello"

    def hello(self) -> bytes:
        """Our Hello frame."""
        return wire.hello(self.max_frame_size, self.nonce)

    def on_frame(self, kind: int, id: int, payload: bytes) -> Tuple[bool, bytes]:
        """Handles one frame: ``(open, reply)``, where ``reply`` is to be
        sent (possibly empty) and ``open`` says the handshake is done."""
        if kind == wire.GO_AWAY:
            raise wire.go_away_error(id)
        if self._state == "hello":
            if kind != wire.HELLO:
                raise ProtocolError("expected a hello frame first")
            hello = wire.parse_hello(payload)
            self.peer_max_frame = wire.clamp_frame_size(hello.max_frame_size)
            if self.key is None or self.nonce is None:
                if hello.nonce is not None:
                    raise AuthFailed("the server requires a key: pass key= or key_file= to connect")
                return True, b""
            proof = wire.check_server_proof(self.key, self.nonce, hello)
            self._state = "auth"
            return False, wire.frame(wire.AUTH_PROOF, 0, proof)
        if kind == wire.AUTH_OK and not payload:
            return True, b""
        raise ProtocolError("expected the server to accept or refuse the key")

    def on_eof(self) -> Error:
        """The error for a server that closed the connection mid-handshake."""
        if self._state == "auth":
            return AuthFailed("the server closed the connection during authentication")
        return ConnectionLost("the peer closed the connection during the handshake")


class StreamState:
    """A stream this side consumes: the items received and not yet taken,
    how it ended, and the credit accounting of README "Streams"."""

    __slots__ = ("id", "window", "items", "end", "error", "granted", "received", "untaken", "notify")

    def __init__(self, id: int, window: int, notify: Callable[[], None]) -> None:
        self.id = id
        self.window = window
        self.items: Deque[bytes] = collections.deque()
        #: ``(status, body)`` of its StreamEnd, once it arrived.
        self.end: Optional[Tuple[int, bytes]] = None
        #: The connection's error, if it closed before the end.
        self.error: Optional[Error] = None
        #: Bytes granted so far (the first Credit is the window).
        self.granted = window
        #: Bytes of item frames received (9 + the item, each).
        self.received = 0
        #: Bytes taken by the user and not yet granted again.
        self.untaken = 0
        #: Called when an item, the end or an error arrives.
        self.notify = notify

    def ready(self) -> bool:
        """Whether taking the next item (or the end) would not wait."""
        return bool(self.items) or self.end is not None or self.error is not None


class Waiter:
    """What a call waiting for its response is told."""

    def resolve(self, status: int, body: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def reject(self, error: Error) -> None:  # pragma: no cover - interface
        raise NotImplementedError


#: Statuses that end a stream other than cleanly.
_NO_OBJECTS = wire.string("this peer exposes no objects by name")


class Session:
    """The state of one open connection (after the handshake)."""

    def __init__(self, max_frame_size: int, peer_max_frame: int, stream_window: int) -> None:
        #: The largest frame this side accepts (what it announced, clamped).
        self.max_frame = wire.clamp_frame_size(max_frame_size)
        #: The largest frame the server accepts.
        self.peer_max_frame = peer_max_frame
        self.stream_window = max(1, min(stream_window, wire.U32_MAX))
        self.last_id = 0
        #: Calls waiting for a response, by id; ``None`` once abandoned.
        self.calls: Dict[int, Optional[Waiter]] = {}
        #: Streams this side consumes, by the id of the request that opened them.
        self.streams: Dict[int, StreamState] = {}
        self.going_away = False
        #: The highest request id the server said it read (its last GoAway).
        self.peer_last_read = wire.U64_MAX
        #: The highest request id read from the server.
        self.last_peer_request = 0
        #: Why the connection ended, once it has.
        self.closed: Optional[Error] = None
        self._out: List[bytes] = []
        self._inbuf = bytearray()

    # --- calls --------------------------------------------------------------

    def takes_calls(self) -> bool:
        """Whether new calls may start here."""
        return self.closed is None and not self.going_away

    def refusal(self) -> Error:
        """The error a call gets when this connection cannot take it."""
        if self.closed is not None:
            return self.closed
        if self.going_away:
            return ShuttingDown()
        return ConnectionLost("the connection is closed")

    def request(
        self,
        handle: int,
        method: int,
        deadline_ms: int,
        args: bytes,
        waiter: Optional[Waiter],
        stream: Optional[Callable[[], None]] = None,
    ) -> Tuple[int, List[bytes], Optional[StreamState]]:
        """Registers a call and returns its id and the frames that send it:
        the Request (a Oneway when ``waiter`` is ``None``), and for a call
        that opens a stream (``stream`` is its notify function) the first
        Credit, with the new :class:`StreamState`."""
        if not self.takes_calls():
            raise self.refusal()
        self.last_id += 1
        id = self.last_id
        head = wire.request_head(waiter is None, id, handle, method, deadline_ms, len(args))
        frames = [head + args] if len(args) < 65536 else [head, args]
        state = None
        if waiter is not None:
            self.calls[id] = waiter
            if stream is not None:
                state = StreamState(id, self.stream_window, stream)
                self.streams[id] = state
                frames.append(wire.credit(id, self.stream_window))
        return id, frames, state

    def abandon(self, id: int) -> None:
        """The caller of request ``id`` stopped waiting: its late response
        will be discarded, and the server is told to drop the call."""
        if self.calls.get(id) is not None:
            self.calls[id] = None
            self.streams.pop(id, None)
            if self.closed is None:
                self._out.append(wire.cancel(id))

    # --- streams ------------------------------------------------------------

    def take(self, state: StreamState) -> bytes:
        """The next item of ``state`` (which must have one); grants credit
        again once half a window has been taken."""
        item = state.items.popleft()
        if self.streams.get(state.id) is state:
            state.untaken += wire.HEADER + len(item)
            if state.untaken >= max(1, state.window // 2):
                grant = min(state.untaken, wire.U32_MAX)
                state.untaken -= grant
                state.granted += grant
                self._out.append(wire.credit(state.id, grant))
        return item

    def close_stream(self, state: StreamState) -> None:
        """The consumer drops the stream before its end: the server is told
        to stop producing it."""
        if self.calls.get(state.id) is not None:
            self.abandon(state.id)
        elif self.streams.pop(state.id, None) is not None and self.closed is None:
            self._out.append(wire.cancel(state.id))
        state.items.clear()

    # --- incoming -------------------------------------------------------------

    def feed(self, data: Any) -> None:
        """Handles the bytes received. A :class:`ProtocolError` means the
        server broke the protocol: the caller closes the connection."""
        buf = self._inbuf
        buf += data
        for kind, id, payload in split_frames(buf, self.max_frame):
            self._on_frame(kind, id, payload)

    def output(self) -> List[bytes]:
        """Frames queued by the session itself (credits, cancels, answers), to send now."""
        out = self._out
        if out:
            self._out = []
        return out

    def _on_frame(self, kind: int, id: int, payload: bytes) -> None:
        if kind == wire.RESPONSE:
            self._on_response(id, payload)
        elif kind == wire.STREAM_ITEM:
            self._on_item(id, payload)
        elif kind == wire.STREAM_END:
            self._on_end(id, payload)
        elif kind == wire.GO_AWAY:
            if len(payload) not in (0, 8):
                raise ProtocolError(f"a GoAway payload of {len(payload)} bytes")
            self.going_away = True
            if payload:
                (self.peer_last_read,) = _unpack_u64(payload, 0)
        elif kind in (wire.REQUEST, wire.ONEWAY):
            if len(payload) < 10:
                raise ProtocolError("a request shorter than its fixed fields")
            if id <= self.last_peer_request:
                raise ProtocolError(f"request id {id} is not above the previous one")
            self.last_peer_request = id
            if kind == wire.REQUEST:
                self._out.append(wire.response(id, 16, _NO_OBJECTS))
        elif kind == wire.CANCEL:
            if payload:
                raise ProtocolError("a Cancel with a payload")
        elif kind == wire.CREDIT:
            if len(payload) != 4:
                raise ProtocolError("a Credit that is not 4 bytes")
            if id > self.last_peer_request:
                raise ProtocolError(f"a Credit for request {id}, which the server never sent")
        elif kind == wire.RELEASE:
            raise ProtocolError(f"a Release of handle {id}, which this side never exported")
        elif kind in (wire.HELLO, wire.AUTH_PROOF, wire.AUTH_OK):
            raise ProtocolError(f"a handshake frame (kind {kind}) on an open connection")
        else:
            raise ProtocolError(f"unknown message kind {kind}")

    def _on_response(self, id: int, payload: bytes) -> None:
        if not payload:
            raise ProtocolError("a Response without a status")
        status = payload[0]
        if status not in STATUSES:
            raise ProtocolError(f"a Response with unknown status {status}")
        if id not in self.calls:
            raise ProtocolError(f"a response to request {id}, which awaits none")
        waiter = self.calls.pop(id)
        if status != 0:
            # No stream was opened.
            self.streams.pop(id, None)
        if waiter is not None:
            waiter.resolve(status, payload[1:])

    def _on_item(self, id: int, item: bytes) -> None:
        state = self.streams.get(id)
        if state is None:
            if id > self.last_id:
                raise ProtocolError(f"a stream item for request {id}, which was never sent")
            return
        if state.granted - state.received <= 0:
            raise ProtocolError(f"a stream item for request {id} beyond the credit granted")
        state.received += wire.HEADER + len(item)
        state.items.append(item)
        state.notify()

    def _on_end(self, id: int, payload: bytes) -> None:
        if not payload or payload[0] not in STATUSES:
            raise ProtocolError("a StreamEnd without a known status")
        state = self.streams.pop(id, None)
        if state is None:
            if id > self.last_id:
                raise ProtocolError(f"a stream end for request {id}, which was never sent")
            return
        state.end = (payload[0], payload[1:])
        state.notify()

    # --- the end ----------------------------------------------------------------

    def close(self, error: Error) -> None:
        """Ends everything: pending calls fail with ``error`` (or
        :class:`ShuttingDown` for requests past the server's last read id,
        which did not run), open streams end with it."""
        if self.closed is not None:
            return
        self.closed = error
        calls, self.calls = self.calls, {}
        streams, self.streams = self.streams, {}
        self._out = []
        for id, waiter in calls.items():
            if waiter is not None:
                waiter.reject(ShuttingDown() if id > self.peer_last_read else error)
        for state in streams.values():
            state.error = error
            state.notify()
