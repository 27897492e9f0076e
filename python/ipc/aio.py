"""The asyncio client: ``async with ipc.aio.connect(addr) as client``.

Any number of calls may be in flight on one connection (``await
asyncio.gather(*(calc.add(i, i) for i in range(1000)))``); answers are
matched to calls by request id as they arrive. Cancelling a task that
awaits a call tells the server to drop it (a Cancel frame). Requests
queued in one turn of the event loop go out in one write.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Any, AsyncIterator, Generator, List, Optional, Tuple, Union

from . import wire
from ._object import Expired, ObjectState, failure, finish, method_doc
from .codec import MethodPlan
from .config import MAX_RETRIES, Address, Settings, settings
from .errors import (
    OK,
    SHUTTING_DOWN,
    ConnectError,
    ConnectionLost,
    Error,
    FrameTooLarge,
    ProtocolError,
    ShuttingDown,
    Timeout,
    from_status,
)
from .protocol import Handshake, Session, StreamState, Waiter, split_frames
from .schema import ObjectInfo, ObjectSchema, decode_directory, decode_schema

__all__ = ["connect", "Client", "Proxy", "Stream"]


def _expire(fut: "asyncio.Future[Any]") -> None:
    if not fut.done():
        fut.set_exception(Expired())


async def _until(fut: "asyncio.Future[Any]", deadline: Optional[float]) -> Any:
    """Awaits ``fut``, which fails with :class:`Expired` at ``deadline``."""
    if deadline is None:
        return await fut
    timer = asyncio.get_running_loop().call_at(deadline, _expire, fut)
    try:
        return await fut
    finally:
        timer.cancel()


class _Deadlines:
    """The deadlines of a connection's calls in one heap of plain tuples (one
    asyncio timer, for the earliest), cheaper than a loop timer per call. A
    call's entry stays until its deadline or a sweep; a sweep drops answered
    calls once they outnumber the pending ones."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: List[Tuple[float, int, "asyncio.Future[Any]"]] = []
        self._seq = 0
        self._timer: Optional[asyncio.TimerHandle] = None
        self._armed = float("inf")

    def add(self, deadline: float, fut: "asyncio.Future[Any]", pending: int) -> None:
        """``fut`` fails with :class:`Expired` at ``deadline`` unless done by then."""
        heap = self._heap
        if len(heap) > 1024 and len(heap) > 2 * pending:
            heap[:] = [e for e in heap if not e[2].done()]
            heapq.heapify(heap)
        self._seq += 1
        heapq.heappush(heap, (deadline, self._seq, fut))
        if deadline < self._armed:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed = float("inf")
        heap = self._heap
        now = self._loop.time()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_exception(Expired())
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._heap.clear()


class _Reply(Waiter):
    """A call's future, filled in by the connection."""

    __slots__ = ("fut",)

    def __init__(self, fut: "asyncio.Future[Tuple[int, bytes]]") -> None:
        self.fut = fut

    def resolve(self, status: int, body: bytes) -> None:
        if not self.fut.done():
            self.fut.set_result((status, body))

    def reject(self, error: Error) -> None:
        if not self.fut.done():
            self.fut.set_exception(error)


class _Wake:
    """Wakes the task waiting for a stream's next item."""

    __slots__ = ("fut",)

    def __init__(self) -> None:
        self.fut: Optional["asyncio.Future[None]"] = None

    def __call__(self) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(None)


class _Wire(asyncio.Protocol):
    """The asyncio side of one connection: bytes in to the session, frames out."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: Optional[asyncio.Transport] = None
        self.session: Optional[Session] = None
        # During the handshake: what arrived, and who waits for it.
        self.early = bytearray()
        self.early_eof = False
        self.early_waiter: Optional["asyncio.Future[None]"] = None
        self._out: List[bytes] = []
        self._flush_soon = False
        self._paused = False
        self._resumed: List["asyncio.Future[None]"] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            self.early += data
            self._wake_early()
            return
        try:
            session.feed(data)
        except ProtocolError as e:
            self.close(ConnectionLost(str(e)))
            return
        out = session.output()
        if out:
            self.send(out)

    def eof_received(self) -> Optional[bool]:
        return False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        session = self.session
        if session is None:
            self.early_eof = True
            self._wake_early()
        elif exc is not None:
            session.close(ConnectionLost(str(exc)))
        elif session.going_away:
            session.close(ShuttingDown())
        else:
            session.close(ConnectionLost("the peer closed the connection"))
        for fut in self._resumed:
            if not fut.done():
                fut.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        resumed, self._resumed = self._resumed, []
        for fut in resumed:
            if not fut.done():
                fut.set_result(None)

    def _wake_early(self) -> None:
        if self.early_waiter is not None and not self.early_waiter.done():
            self.early_waiter.set_result(None)

    async def handshake_frames(self, deadline: float) -> List[Tuple[int, int, bytes]]:
        """The next frames of the handshake (at least one)."""
        while True:
            frames = split_frames(self.early, wire.HANDSHAKE_FRAME_MAX)
            if frames:
                return frames
            if self.early_eof:
                return []
            self.early_waiter = self.loop.create_future()
            await _until(self.early_waiter, deadline)

    def send(self, frames: List[bytes]) -> None:
        """Queues frames; everything queued in one turn of the loop goes out
        in one write."""
        self._out.extend(frames)
        if not self._flush_soon:
            self._flush_soon = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        out, self._out = self._out, []
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def drain(self, deadline: Optional[float]) -> None:
        """Waits while the transport's write buffer is over its high-water mark."""
        while self._paused and self.transport is not None and not self.transport.is_closing():
            fut = self.loop.create_future()
            self._resumed.append(fut)
            await _until(fut, deadline)

    def close(self, error: Error) -> None:
        if self.session is not None:
            self.session.close(error)
        if self.transport is not None:
            self.transport.close()


class _Conn:
    """One open connection."""

    def __init__(self, wire_: _Wire, generation: int) -> None:
        self.wire = wire_
        self.loop = wire_.loop
        self.session: Session = wire_.session  # type: ignore[assignment]
        self.generation = generation
        self.deadlines = _Deadlines(wire_.loop)

    @classmethod
    async def open(cls, config: Settings, generation: int, deadline: float) -> "_Conn":
        loop = asyncio.get_running_loop()
        addr = str(config.addr)
        limit = min(deadline, loop.time() + config.connect_timeout)

        def make() -> _Wire:
            return _Wire(loop)

        try:
            if config.addr.kind == "unix":
                opening = loop.create_unix_connection(make, config.addr.path)
            else:
                opening = loop.create_connection(make, config.addr.host, config.addr.port)
            _, proto = await asyncio.wait_for(opening, max(0.001, limit - loop.time()))
        except asyncio.TimeoutError:
            raise ConnectError(addr, "connect timed out") from None
        except OSError as e:
            raise ConnectError(addr, e.strerror or str(e)) from None
        try:
            hs = Handshake(config.max_frame_size, config.key)
            assert proto.transport is not None
            proto.transport.write(hs.hello())
            rest: List[bytes] = []
            done = False
            while not done:
                try:
                    frames = await proto.handshake_frames(limit)
                except Expired:
                    raise ConnectError(addr, "the handshake timed out") from None
                if not frames:
                    raise hs.on_eof()
                for i, (kind, id, payload) in enumerate(frames):
                    done, reply = hs.on_frame(kind, id, payload)
                    if reply:
                        proto.transport.write(reply)
                    if done:
                        rest = [wire.frame(*f) for f in frames[i + 1 :]]
                        break
            proto.session = Session(config.max_frame_size, hs.peer_max_frame, config.stream_window)
            leftover = b"".join(rest) + bytes(proto.early)
            proto.early = bytearray()
            if leftover:
                proto.data_received(leftover)
            return cls(proto, generation)
        except BaseException:
            if proto.transport is not None:
                proto.transport.close()
            raise

    def takes_calls(self) -> bool:
        return self.session.takes_calls()

    def refusal(self) -> Error:
        return self.session.refusal()

    def send(
        self,
        handle: int,
        method: int,
        deadline: Optional[float],
        args: bytes,
        *,
        oneway: bool = False,
        stream: Optional[_Wake] = None,
    ) -> Tuple[int, Optional["asyncio.Future[Tuple[int, bytes]]"], Optional[StreamState]]:
        """Queues a request (check :meth:`drain` first); its id, the future
        of its response, and the stream it opens. Raises
        :class:`FrameTooLarge` (nothing sent) or the connection's error."""
        length = wire.request_length(len(args))
        limit = self.session.peer_max_frame
        if length > limit:
            raise FrameTooLarge(length, limit)
        fut = None if oneway else self.loop.create_future()
        deadline_ms = 0 if oneway or deadline is None else wire.deadline_ms(deadline - self.loop.time())
        waiter = None if fut is None else _Reply(fut)
        id, frames, state = self.session.request(handle, method, deadline_ms, args, waiter, stream)
        self.wire.send(frames)
        return id, fut, state

    async def drain(self, deadline: Optional[float]) -> None:
        """Waits while the socket's write buffer is over its high-water mark."""
        if self.wire._paused:
            await self.wire.drain(deadline)

    async def response(self, id: int, fut: "asyncio.Future[Tuple[int, bytes]]", deadline: float) -> Tuple[int, bytes]:
        """The response to request ``id``; abandons the call (a Cancel) if
        the deadline passes or the awaiting task is cancelled."""
        self.deadlines.add(deadline, fut, len(self.session.calls))
        try:
            return await fut
        except (Expired, asyncio.CancelledError):
            self.abandon(id)
            raise

    def abandon(self, id: int) -> None:
        self.session.abandon(id)
        out = self.session.output()
        if out:
            self.wire.send(out)

    def flush(self) -> None:
        out = self.session.output()
        if out:
            self.wire.send(out)

    def close(self, error: Optional[Error] = None) -> None:
        self.wire.close(error or ConnectionLost("the client closed the connection"))
        self.deadlines.close()


class _Links:
    """As the sync client's: the current connection, and rounds of
    reconnect attempts following the policy."""

    def __init__(self, config: Settings, conn: _Conn) -> None:
        self.config = config
        self.current = conn
        self._generation = conn.generation
        self._round = asyncio.Lock()
        self._failed: Optional[Tuple[ConnectError, float]] = None
        self._rounds = 0
        self.closed = False

    async def live(self, deadline: float) -> _Conn:
        conn = self.current
        if conn.takes_calls():
            return conn
        return await self._reconnect(conn, deadline)

    def _recent_failure(self) -> Optional[Tuple[ConnectError, float]]:
        failed = self._failed
        if failed is not None and failed[1] > asyncio.get_running_loop().time():
            return failed
        return None

    async def _reconnect(self, conn: _Conn, deadline: float) -> _Conn:
        policy = self.config.reconnect
        if self.closed or policy.max_attempts <= 0:
            raise conn.refusal()
        while True:
            failure = self._recent_failure()
            if failure is not None:
                if not self.config.wait_for_server:
                    await asyncio.sleep(0)
                    raise ConnectError(failure[0].addr, failure[0].reason)
                await _sleep_until(failure[1], deadline)
            seen = self._rounds
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise Expired()
            try:
                await asyncio.wait_for(self._round.acquire(), left)
            except asyncio.TimeoutError:
                raise Expired() from None
            try:
                conn = self.current
                if conn.takes_calls():
                    return conn
                if self._rounds != seen:
                    failure = self._recent_failure()
                    if failure is not None:
                        if self.config.wait_for_server:
                            continue
                        raise ConnectError(failure[0].addr, failure[0].reason)
                try:
                    return await self._round_of_attempts(deadline)
                except ConnectError:
                    if not self.config.wait_for_server:
                        raise
            finally:
                self._round.release()

    async def _round_of_attempts(self, deadline: float) -> _Conn:
        policy = self.config.reconnect
        loop = asyncio.get_running_loop()
        last: Optional[Error] = None
        for attempt in range(policy.max_attempts):
            if attempt > 0:
                await _sleep_until(loop.time() + policy.backoff(attempt - 1), deadline)
            try:
                conn = await _Conn.open(self.config, self._generation + 1, deadline)
            except Error as e:
                last = e
                continue
            self._generation += 1
            old, self.current = self.current, conn
            old.close()
            self._failed = None
            self._rounds += 1
            return conn
        error = last if last is not None else ConnectionLost("no reconnect attempt was made")
        connect_error = (
            error if isinstance(error, ConnectError) else ConnectError(str(self.config.addr), str(error))
        )
        self._failed = (connect_error, loop.time() + policy.backoff(max(0, policy.max_attempts - 1)))
        self._rounds += 1
        raise error


async def _sleep_until(when: float, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    if when > deadline:
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        raise Expired()
    await asyncio.sleep(max(0.0, when - loop.time()))


class Client:
    """The asyncio twin of :class:`ipc.Client`; make one with :func:`connect`."""

    def __init__(self, config: Settings) -> None:
        self._settings = config
        self._links: Optional[_Links] = None

    async def _start(self) -> "Client":
        loop = asyncio.get_running_loop()
        conn = await _Conn.open(self._settings, 1, loop.time() + self._settings.connect_timeout)
        self._links = _Links(self._settings, conn)
        return self

    @property
    def links(self) -> _Links:
        if self._links is None:
            raise ConnectionLost("the client was never connected")
        return self._links

    @property
    def addr(self) -> str:
        """The address this client connects to."""
        return str(self._settings.addr)

    @property
    def timeout(self) -> float:
        """The default deadline of each call, in seconds."""
        return self._settings.timeout

    def __repr__(self) -> str:
        return f"<ipc.aio.Client {self.addr}>"

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; calls waiting for an answer fail with
        :class:`~ipc.ConnectionLost`, and so do later calls."""
        if self._links is not None:
            self._links.closed = True
            self._links.current.close()

    def is_closed(self) -> bool:
        """Whether the current connection has ended."""
        return self._links is None or not self._links.current.takes_calls()

    def _deadline(self, timeout: float) -> float:
        return asyncio.get_running_loop().time() + timeout

    async def _system(self, method: int, args: bytes, deadline: float) -> Tuple[int, bytes]:
        conn = await self.links.live(deadline)
        await conn.drain(deadline)
        id, fut, _ = conn.send(wire.SYSTEM_OBJECT, method, deadline, args)
        assert fut is not None
        return await conn.response(id, fut, deadline)

    async def objects(self) -> List[ObjectInfo]:
        """The server's directory (see :meth:`ipc.Client.objects`)."""
        try:
            status, body = await self._system(wire.SYSTEM_LIST, b"", self._deadline(self.timeout))
        except Expired:
            raise Timeout(self.timeout) from None
        if status != OK:
            raise ProtocolError(f"the directory answered with status {status}")
        return decode_directory(body)

    async def schema(self, name: str) -> ObjectSchema:
        """The schema of the object exposed as ``name`` (see :meth:`ipc.Client.schema`)."""
        try:
            status, body = await self._system(wire.SYSTEM_SCHEMA, wire.string(name), self._deadline(self.timeout))
        except Expired:
            raise Timeout(self.timeout) from None
        if status != OK:
            raise from_status(status, body, name)
        return decode_schema(body)

    async def get_exposed_object(self, name: str, *, timeout: Optional[float] = None) -> "Proxy":
        """A proxy for the object exposed as ``name``, looked up now (see
        :meth:`ipc.Client.get_exposed_object`)."""
        state = ObjectState(name, await self.schema(name))
        proxy = Proxy(self, state, self.timeout if timeout is None else timeout)
        deadline = self._deadline(proxy.timeout)
        try:
            await proxy._handle_on(await self.links.live(deadline), deadline)
        except Expired:
            raise Timeout(proxy.timeout) from None
        return proxy


class _Method:
    """A proxy's method: ``await proxy.method(args...)``."""

    def __init__(self, proxy: "Proxy", plan: MethodPlan) -> None:
        self._proxy = proxy
        self._plan = plan
        self.__name__ = plan.name
        self.__doc__ = method_doc(plan, proxy.object_name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Encoded here, not in the coroutine, so a wrong argument raises at
        # the call, before anything is awaited or sent.
        body = self._plan.encode_args(args, kwargs)
        return self._proxy._invoke(self._plan, body)

    def __repr__(self) -> str:
        return f"<remote method {self._plan.signature()}>"


class Proxy:
    """The asyncio twin of :class:`ipc.Proxy`: ``await calc.add(2, 3)``."""

    def __init__(self, client: Client, state: ObjectState, timeout: float) -> None:
        self._client = client
        self._state = state
        self._timeout = float(timeout)

    @property
    def object_name(self) -> str:
        """The name the object was looked up under."""
        return self._state.name

    @property
    def schema(self) -> ObjectSchema:
        """The object's schema, as fetched when the proxy was made."""
        return self._state.schema

    @property
    def timeout(self) -> float:
        """The deadline of each call, in seconds."""
        return self._timeout

    def with_timeout(self, seconds: float) -> "Proxy":
        """This proxy with another deadline for each call."""
        return Proxy(self._client, self._state, seconds)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Calls ``method`` by name; returns the awaitable."""
        plan = self._state.plan(method)
        return self._invoke(plan, plan.encode_args(args, kwargs))

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("__"):
            raise AttributeError(name)
        method = _Method(self, self._state.plan(name))
        self.__dict__[name] = method
        return method

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | set(self._state.by_name))

    def __repr__(self) -> str:
        return f"<ipc.aio.Proxy {self._state.name!r} ({self._state.schema.trait_name}) at {self._client.addr}>"

    async def _handle_on(self, conn: _Conn, deadline: float) -> int:
        handle = self._state.handle_on(conn.generation)
        if handle is not None:
            return handle
        await conn.drain(deadline)
        id, fut, _ = conn.send(wire.SYSTEM_OBJECT, wire.SYSTEM_RESOLVE, deadline, self._state.resolve_args)
        assert fut is not None
        status, body = await conn.response(id, fut, deadline)
        return self._state.resolved(conn.generation, status, body)

    async def _invoke(self, plan: MethodPlan, body: bytes) -> Any:
        deadline = self._client.links.current.loop.time() + self._timeout
        try:
            if plan.oneway:
                conn = await self._client.links.live(deadline)
                handle = await self._handle_on(conn, deadline)
                await conn.drain(deadline)
                conn.send(handle, plan.index, deadline, body, oneway=True)
                return None
            return await self._attempts(plan, body, deadline)
        except Expired:
            raise Timeout(self._timeout) from None

    async def _attempts(self, plan: MethodPlan, body: bytes, deadline: float) -> Any:
        links = self._client.links
        attempt = 0
        not_run: Optional[Error] = None
        while True:
            # The common case without a coroutine of its own: the connection
            # takes calls, the handle is known, the socket has room.
            conn = links.current
            if not conn.takes_calls():
                try:
                    conn = await links.live(deadline)
                except Error as e:
                    raise (not_run or e) from None
            handle = self._state.handle_on(conn.generation)
            if handle is None:
                handle = await self._handle_on(conn, deadline)
            left = False
            status = -1
            response = b""
            error: Optional[Error] = None
            state: Optional[StreamState] = None
            wake = _Wake() if plan.streaming else None
            try:
                if conn.wire._paused:
                    await conn.drain(deadline)
                id, fut, state = conn.send(handle, plan.index, deadline, body, stream=wake)
                left = True
                assert fut is not None
                status, response = await conn.response(id, fut, deadline)
            except FrameTooLarge:
                raise
            except Error as e:
                error = e
            not_run_now = (
                (not left and error is not None and error.connection_error)
                or status == SHUTTING_DOWN
                or isinstance(error, ShuttingDown)
            )
            retry = not_run_now or (plan.idempotent and error is not None and error.connection_error)
            if retry and attempt < MAX_RETRIES:
                attempt += 1
                not_run = (error or ShuttingDown()) if not_run_now else None
                continue
            if error is not None:
                raise error
            if plan.streaming:
                if status != OK:
                    raise failure(plan, status, response, self._state.name, self._timeout)
                assert state is not None and wake is not None
                return Stream(conn, state, wake, plan, self._state.name)
            return finish(plan, status, response, self._state.name, self._timeout)


class Stream:
    """A server-push stream: ``async for item in stream``. Ends cleanly at
    the stream's end, raises for any other end; :meth:`aclose` (or leaving an
    ``async with`` block) stops the server's producer early."""

    def __init__(self, conn: _Conn, state: StreamState, wake: _Wake, plan: MethodPlan, object_name: str) -> None:
        self._conn = conn
        self._state = state
        self._wake = wake
        self._plan = plan
        self._object_name = object_name
        self._done = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self.next()

    async def next(self, timeout: Optional[float] = None) -> Any:
        """The next item; ``StopAsyncIteration`` at the end. With ``timeout`` (seconds), :class:`~ipc.Timeout` if none
        arrives in time (the stream stays open)."""
        if self._done:
            raise StopAsyncIteration
        state = self._state
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not state.ready():
            self._wake.fut = loop.create_future()
            try:
                await _until(self._wake.fut, deadline)
            except Expired:
                raise Timeout(timeout or 0.0) from None
            finally:
                self._wake.fut = None
        if state.items:
            item = self._conn.session.take(state)
            self._conn.flush()
            return self._plan.decode_item(item)
        self._done = True
        if state.end is not None:
            status, body = state.end
            if status == OK:
                raise StopAsyncIteration
            raise from_status(status, body, self._object_name)
        raise state.error if state.error is not None else ConnectionLost("the stream ended")

    async def aclose(self) -> None:
        """Stops reading: the server drops the producer."""
        self.close()

    def close(self) -> None:
        """As :meth:`aclose`, without awaiting."""
        if not self._done:
            self._done = True
            self._conn.session.close_stream(self._state)
            self._conn.flush()

    async def __aenter__(self) -> "Stream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class _Connecting:
    """What :func:`connect` returns: await it for the client, or use it as
    ``async with``, which closes the client at the end."""

    def __init__(self, config: Settings) -> None:
        self._config = config
        self._client: Optional[Client] = None

    def __await__(self) -> Generator[Any, None, Client]:
        return Client(self._config)._start().__await__()

    async def __aenter__(self) -> Client:
        self._client = await Client(self._config)._start()
        return self._client

    async def __aexit__(self, *exc: Any) -> None:
        if self._client is not None:
            self._client.close()


def connect(addr: Union[str, Address] = "localhost:9099", **options: Any) -> _Connecting:
    """Connects to the server at ``addr``, with the options of
    :func:`ipc.connect`: ``client = await ipc.aio.connect(addr)``, or
    ``async with ipc.aio.connect(addr) as client: ...``."""
    return _Connecting(settings(addr, **options))
