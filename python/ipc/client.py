"""The synchronous client: :func:`connect`, :class:`Client`, :class:`Proxy`,
:class:`Stream`.

Threads may share a client: calls from several threads go out on its one
connection at once. Whichever waiting thread is free reads from the socket
and hands each answer to the thread that waits for it, so a thread alone
reads its own answers with no hand-off.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

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

_now = time.monotonic
#: A write that makes no progress for this long fails, closing the connection.
_SEND_STALL = 120.0
_READ_SIZE = 256 * 1024


def _remaining(deadline: float) -> float:
    left = deadline - _now()
    if left <= 0:
        raise Expired()
    return left


def open_socket(addr: Address, timeout: float) -> socket.socket:
    """A connected socket to ``addr``; :class:`ConnectError` if it cannot be made."""
    try:
        if addr.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(addr.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((addr.host, addr.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except socket.timeout:
        raise ConnectError(str(addr), "connect timed out") from None
    except OSError as e:
        raise ConnectError(str(addr), e.strerror or str(e)) from None
    return sock


class _Pending(Waiter):
    """A call waiting for its response (the reader fills it in under the lock)."""

    __slots__ = ("done", "status", "body", "error")

    def __init__(self) -> None:
        self.done = False
        self.status = 0
        self.body = b""
        self.error: Optional[Error] = None

    def resolve(self, status: int, body: bytes) -> None:
        self.status, self.body, self.done = status, body, True

    def reject(self, error: Error) -> None:
        self.error, self.done = error, True


def _no_op() -> None:
    pass


class _Conn:
    """One open connection and the threads that use it."""

    def __init__(self, sock: socket.socket, session: Session, generation: int, leftover: bytes) -> None:
        self.session = session
        self.generation = generation
        # Reading: non-blocking, waited for with poll(). Sending: a second
        # descriptor of the socket, with a timeout of its own.
        self._rsock = sock
        self._rsock.setblocking(False)
        self._wsock = sock.dup()
        self._wsock.settimeout(_SEND_STALL)
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._reading = False
        self._buf = bytearray(_READ_SIZE)
        self._view = memoryview(self._buf)
        if leftover:
            self._received(leftover)

    @classmethod
    def open(cls, config: Settings, generation: int, deadline: float) -> "_Conn":
        """Connects and handshakes before ``deadline`` (and the connect timeout)."""
        addr = str(config.addr)
        limit = min(deadline, _now() + config.connect_timeout)
        sock = open_socket(config.addr, max(0.001, limit - _now()))
        try:
            hs = Handshake(config.max_frame_size, config.key)
            sock.sendall(hs.hello())
            buf = bytearray()
            done = False
            while not done:
                left = limit - _now()
                if left <= 0:
                    raise ConnectError(addr, "the handshake timed out")
                sock.settimeout(left)
                try:
                    data = sock.recv(4096)
                except socket.timeout:
                    raise ConnectError(addr, "the handshake timed out") from None
                if not data:
                    raise hs.on_eof()
                buf += data
                frames = split_frames(buf, wire.HANDSHAKE_FRAME_MAX)
                for i, (kind, id, payload) in enumerate(frames):
                    done, reply = hs.on_frame(kind, id, payload)
                    if reply:
                        sock.sendall(reply)
                    if done:
                        # Frames after the handshake are the session's.
                        buf[:0] = b"".join(wire.frame(*f) for f in frames[i + 1 :])
                        break
            session = Session(config.max_frame_size, hs.peer_max_frame, config.stream_window)
            return cls(sock, session, generation, bytes(buf))
        except OSError as e:
            sock.close()
            raise ConnectError(addr, e.strerror or str(e)) from None
        except BaseException:
            sock.close()
            raise

    # --- state ------------------------------------------------------------

    def takes_calls(self) -> bool:
        """Whether new calls may start here. Reads what has arrived first
        (nothing reads in the background): a go-away or the server's end."""
        with self._cond:
            probe = (
                not self._reading
                and self.session.closed is None
                and bool(self._poller.poll(0))
            )
            if probe:
                self._reading = True
        if probe:
            self._read(_now())
        with self._cond:
            return self.session.takes_calls()

    def refusal(self) -> Error:
        with self._cond:
            return self.session.refusal()

    @property
    def going_away(self) -> bool:
        return self.session.going_away

    # --- sending ----------------------------------------------------------

    def send(
        self,
        handle: int,
        method: int,
        deadline: Optional[float],
        args: bytes,
        *,
        oneway: bool = False,
        stream: bool = False,
    ) -> Tuple[int, Optional[_Pending], Optional[StreamState]]:
        """Sends a request; its id, what its response will fill in, and the
        stream it opens. Raises :class:`FrameTooLarge` (nothing sent) or the
        connection's error."""
        length = wire.request_length(len(args))
        limit = self.session.peer_max_frame
        if length > limit:
            raise FrameTooLarge(length, limit)
        waiter = None if oneway else _Pending()
        deadline_ms = 0 if oneway or deadline is None else wire.deadline_ms(deadline - _now())
        with self._send_lock:
            with self._cond:
                id, frames, state = self.session.request(
                    handle, method, deadline_ms, args, waiter, _no_op if stream else None
                )
            self._send_frames(frames, deadline)
        return id, waiter, state

    def _send_frames(self, frames: List[bytes], deadline: Optional[float]) -> None:
        """Writes ``frames`` (the send lock held); a failure closes the
        connection. A write is not cut short at the call's deadline (that
        would leave half a frame on the wire): it fails only when the socket
        has taken nothing for ``_SEND_STALL`` seconds."""
        try:
            if len(frames) > 1 and sum(map(len, frames)) < 65536:
                frames = [b"".join(frames)]
            for f in frames:
                # Most frames fit the socket's buffer: one non-blocking send.
                # The rest waits for room (the sending descriptor has a timeout).
                try:
                    sent = self._rsock.send(f)
                except BlockingIOError:
                    sent = 0
                if sent < len(f):
                    self._wsock.sendall(memoryview(f)[sent:])
        except OSError as e:
            # Part of a frame may have gone: the connection cannot go on.
            error = ConnectionLost(f"sending failed: {e}")
            self.close(error)
            raise error from None

    def _flush(self, frames: List[bytes]) -> None:
        """Sends what the session queued (credits, cancels); errors surface to readers."""
        if frames:
            with self._send_lock:
                try:
                    self._send_frames(frames, None)
                except ConnectionLost:
                    pass

    # --- receiving --------------------------------------------------------

    def wait(self, ready: Callable[[], bool], deadline: Optional[float]) -> None:
        """Returns once ``ready()`` (checked under the lock) or the connection
        has closed; raises :class:`Expired` if ``deadline`` passes first.
        Reads from the socket while no other thread does."""
        cond = self._cond
        while True:
            with cond:
                while True:
                    if ready() or self.session.closed is not None:
                        return
                    left = None if deadline is None else deadline - _now()
                    if left is not None and left <= 0:
                        raise Expired()
                    if not self._reading:
                        self._reading = True
                        break
                    cond.wait(left)
            self._read(deadline)

    def _read(self, deadline: Optional[float]) -> None:
        """Waits for bytes until ``deadline`` (this thread holds the reading
        role) and hands what arrived to the session."""
        n = 0
        closure: Optional[Error] = None
        wait_ms = -1 if deadline is None else max(0, int((deadline - _now()) * 1000) + 1)
        try:
            if self._poller.poll(wait_ms):
                n = self._rsock.recv_into(self._buf)
                if n == 0:
                    closure = (
                        ShuttingDown()
                        if self.session.going_away
                        else ConnectionLost("the peer closed the connection")
                    )
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            closure = ConnectionLost(str(e))
        with self._cond:
            self._reading = False
            try:
                if n:
                    self.session.feed(self._view[:n])
                elif closure is not None:
                    self.session.close(closure)
            except ProtocolError as e:
                self.session.close(ConnectionLost(str(e)))
            out = self.session.output()
            closed = self.session.closed is not None
            self._cond.notify_all()
        if closed:
            self._shut()
        else:
            self._flush(out)

    def _received(self, data: bytes) -> None:
        with self._cond:
            try:
                self.session.feed(data)
            except ProtocolError as e:
                self.session.close(ConnectionLost(str(e)))

    def response(self, id: int, pending: _Pending, deadline: float) -> Tuple[int, bytes]:
        """Waits for the response to request ``id``; on expiry the call is
        abandoned (the server is told) and :class:`Expired` raised."""
        try:
            self.wait(lambda: pending.done, deadline)
        except Expired:
            self.abandon(id)
            raise
        if pending.done and pending.error is None:
            return pending.status, pending.body
        raise pending.error if pending.error is not None else self.refusal()

    def abandon(self, id: int) -> None:
        """Stops waiting for request ``id``."""
        with self._cond:
            self.session.abandon(id)
            out = self.session.output()
        self._flush(out)

    # --- streams ----------------------------------------------------------

    def next_item(self, state: StreamState, deadline: Optional[float]) -> Optional[bytes]:
        """The next item of a stream, or ``None`` at its end."""
        self.wait(state.ready, deadline)
        with self._cond:
            item = self.session.take(state) if state.items else None
            out = self.session.output()
        self._flush(out)
        return item

    def close_stream(self, state: StreamState) -> None:
        with self._cond:
            self.session.close_stream(state)
            out = self.session.output()
        self._flush(out)

    # --- the end ----------------------------------------------------------

    def close(self, error: Optional[Error] = None) -> None:
        """Closes the connection; pending calls fail with ``error``."""
        with self._cond:
            self.session.close(error or ConnectionLost("the client closed the connection"))
            self._cond.notify_all()
        self._shut()

    def _shut(self) -> None:
        for s in (self._wsock, self._rsock):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class _Links:
    """The client's current connection and how it gets a new one (Rust's
    ``client::reconnect``): one round of attempts at a time, following the
    reconnect policy; after a failed round, calls fail at once until the next
    attempt is due, unless the client waits for the server."""

    def __init__(self, config: Settings, conn: _Conn) -> None:
        self.config = config
        self.current = conn
        self._generation = conn.generation
        self._round = threading.Lock()
        self._lock = threading.Lock()
        self._failed: Optional[Tuple[ConnectError, float]] = None
        self._rounds = 0
        self.closed = False

    def live(self, deadline: float) -> _Conn:
        conn = self.current
        if conn.takes_calls():
            return conn
        return self._reconnect(conn, deadline)

    def _recent_failure(self) -> Optional[Tuple[ConnectError, float]]:
        with self._lock:
            failed = self._failed
        if failed is not None and failed[1] > _now():
            return failed
        return None

    def _reconnect(self, conn: _Conn, deadline: float) -> _Conn:
        policy = self.config.reconnect
        if self.closed or policy.max_attempts <= 0:
            raise conn.refusal()
        while True:
            failure = self._recent_failure()
            if failure is not None:
                if not self.config.wait_for_server:
                    raise ConnectError(failure[0].addr, failure[0].reason)
                _sleep_until(failure[1], deadline)
            seen = self._rounds
            if not self._round.acquire(timeout=_remaining(deadline)):
                raise Expired()
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
                    return self._round_of_attempts(deadline)
                except ConnectError:
                    if not self.config.wait_for_server:
                        raise
            finally:
                self._round.release()

    def _round_of_attempts(self, deadline: float) -> _Conn:
        policy = self.config.reconnect
        last: Optional[Error] = None
        for attempt in range(policy.max_attempts):
            if attempt > 0:
                _sleep_until(_now() + policy.backoff(attempt - 1), deadline)
            try:
                conn = _Conn.open(self.config, self._generation + 1, deadline)
            except Error as e:
                last = e
                continue
            self._generation += 1
            old, self.current = self.current, conn
            old.close()
            with self._lock:
                self._failed = None
            self._rounds += 1
            return conn
        error = last if last is not None else ConnectionLost("no reconnect attempt was made")
        connect_error = (
            error if isinstance(error, ConnectError) else ConnectError(str(self.config.addr), str(error))
        )
        with self._lock:
            retry_at = _now() + policy.backoff(max(0, policy.max_attempts - 1))
            self._failed = (connect_error, retry_at)
        self._rounds += 1
        raise error


def _sleep_until(when: float, deadline: float) -> None:
    """Sleeps until ``when``, or raises :class:`Expired` if ``deadline`` comes first."""
    if when > deadline:
        time.sleep(max(0.0, deadline - _now()))
        raise Expired()
    time.sleep(max(0.0, when - _now()))


class Client:
    """A connection to an ``ipc`` server, from which proxies are made.

    Cheap to share between threads; every proxy made from it uses its one
    connection. If the connection is lost (server restart, idle timeout,
    network), the next call reconnects following the ``reconnect`` policy;
    calls in flight fail with :class:`~ipc.ConnectionLost` and are not sent
    again, except for ``#[idempotent]`` methods. Use :func:`connect` to make one.
    """

    def __init__(self, config: Settings) -> None:
        self._settings = config
        conn = _Conn.open(config, 1, _now() + config.connect_timeout)
        self._links = _Links(config, conn)

    @property
    def addr(self) -> str:
        """The address this client connects to."""
        return str(self._settings.addr)

    @property
    def timeout(self) -> float:
        """The default deadline of each call, in seconds."""
        return self._settings.timeout

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ipc.Client {self.addr}>"

    def close(self) -> None:
        """Closes the connection; calls waiting for an answer fail with
        :class:`~ipc.ConnectionLost`. Later calls fail too."""
        self._links.closed = True
        self._links.current.close()

    def is_closed(self) -> bool:
        """Whether the current connection has ended."""
        return not self._links.current.takes_calls()

    # --- the system object --------------------------------------------------

    def _system(self, method: int, args: bytes, deadline: float) -> Tuple[_Conn, int, bytes]:
        conn = self._links.live(deadline)
        id, pending, _ = conn.send(wire.SYSTEM_OBJECT, method, deadline, args)
        assert pending is not None
        status, body = conn.response(id, pending, deadline)
        return conn, status, body

    def objects(self) -> List[ObjectInfo]:
        """The server's directory: every object it exposes (that this client
        may see), with its trait, fingerprint and methods."""
        deadline = _now() + self.timeout
        try:
            _, status, body = self._system(wire.SYSTEM_LIST, b"", deadline)
        except Expired:
            raise Timeout(self.timeout) from None
        if status != OK:
            raise ProtocolError(f"the directory answered with status {status}")
        return decode_directory(body)

    def schema(self, name: str) -> ObjectSchema:
        """The schema of the object exposed as ``name``: its methods'
        argument and return formats. :class:`~ipc.UnknownObject` if there is
        none (or it is hidden from this client)."""
        deadline = _now() + self.timeout
        try:
            _, status, body = self._system(wire.SYSTEM_SCHEMA, wire.string(name), deadline)
        except Expired:
            raise Timeout(self.timeout) from None
        if status != OK:
            raise from_status(status, body, name)
        return decode_schema(body)

    def get_exposed_object(self, name: str, *, timeout: Optional[float] = None) -> "Proxy":
        """A proxy for the object exposed as ``name``. Its schema is fetched
        and the object looked up now, so a wrong name fails here
        (:class:`~ipc.UnknownObject`), not at the first call. The proxy keeps
        the schema: if the server's trait changes later (a restart with
        another version), its calls fail with :class:`~ipc.TraitMismatch`
        instead of sending values the server would misread; get a new proxy
        then."""
        state = ObjectState(name, self.schema(name))
        proxy = Proxy(self, state, self.timeout if timeout is None else timeout)
        deadline = _now() + proxy.timeout
        try:
            proxy._handle_on(self._links.live(deadline), deadline)
        except Expired:
            raise Timeout(proxy.timeout) from None
        return proxy


class _Method:
    """A proxy's method: call it with the method's arguments (positional,
    or by parameter name)."""

    def __init__(self, proxy: "Proxy", plan: MethodPlan) -> None:
        self._proxy = proxy
        self._plan = plan
        self.__name__ = plan.name
        self.__doc__ = method_doc(plan, proxy.object_name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._proxy._invoke(self._plan, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote method {self._plan.signature()}>"


class Proxy:
    """A remote object: each method of its trait is an attribute
    (``calc.add(2, 3)``); :meth:`call` reaches any method by name. Cheap to
    copy with another deadline (:meth:`with_timeout`)."""

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
        """Calls ``method`` by name (for names that clash with this class's own)."""
        return self._invoke(self._state.plan(method), args, kwargs)

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("__"):
            raise AttributeError(name)
        method = _Method(self, self._state.plan(name))
        self.__dict__[name] = method
        return method

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | set(self._state.by_name))

    def __repr__(self) -> str:
        return f"<ipc.Proxy {self._state.name!r} ({self._state.schema.trait_name}) at {self._client.addr}>"

    # --- calls ------------------------------------------------------------

    def _handle_on(self, conn: _Conn, deadline: float) -> int:
        handle = self._state.handle_on(conn.generation)
        if handle is not None:
            return handle
        id, pending, _ = conn.send(wire.SYSTEM_OBJECT, wire.SYSTEM_RESOLVE, deadline, self._state.resolve_args)
        assert pending is not None
        status, body = conn.response(id, pending, deadline)
        return self._state.resolved(conn.generation, status, body)

    def _invoke(self, plan: MethodPlan, args: Any, kwargs: Dict[str, Any]) -> Any:
        body = plan.encode_args(args, kwargs)
        deadline = _now() + self._timeout
        try:
            if plan.oneway:
                conn = self._client._links.live(deadline)
                conn.send(self._handle_on(conn, deadline), plan.index, deadline, body, oneway=True)
                return None
            return self._attempts(plan, body, deadline)
        except Expired:
            raise Timeout(self._timeout) from None

    def _attempts(self, plan: MethodPlan, body: bytes, deadline: float) -> Any:
        links = self._client._links
        attempt = 0
        not_run: Optional[Error] = None
        while True:
            try:
                conn = links.live(deadline)
            except Error as e:
                raise (not_run or e) from None
            handle = self._handle_on(conn, deadline)
            left = False
            status = -1
            response = b""
            error: Optional[Error] = None
            state: Optional[StreamState] = None
            try:
                id, pending, state = conn.send(handle, plan.index, deadline, body, stream=plan.streaming)
                left = True
                assert pending is not None
                status, response = conn.response(id, pending, deadline)
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
                assert state is not None
                return Stream(conn, state, plan, self._state.name)
            return finish(plan, status, response, self._state.name, self._timeout)


class Stream:
    """A server-push stream (a method returning ``Streaming<T>``): iterate
    it for the items as they come. The server sends no more than the
    client's ``stream_window`` ahead of what was read. The iteration ends at
    the stream's clean end; any other end raises (:class:`~ipc.ShuttingDown`,
    :class:`~ipc.RemotePanic`, :class:`~ipc.ConnectionLost`...). Close it
    (or leave a ``with`` block) to stop the server's producer early."""

    def __init__(self, conn: _Conn, state: StreamState, plan: MethodPlan, object_name: str) -> None:
        self._conn = conn
        self._state = state
        self._plan = plan
        self._object_name = object_name
        self._done = False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next item; ``StopIteration`` at the end. With ``timeout``
        (seconds), :class:`~ipc.Timeout` if none arrives in time (the stream
        stays open)."""
        if self._done:
            raise StopIteration
        deadline = None if timeout is None else _now() + timeout
        try:
            item = self._conn.next_item(self._state, deadline)
        except Expired:
            raise Timeout(timeout or 0.0) from None
        if item is not None:
            return self._plan.decode_item(item)
        self._done = True
        state = self._state
        if state.end is not None:
            status, body = state.end
            if status == OK:
                raise StopIteration
            raise from_status(status, body, self._object_name)
        raise state.error if state.error is not None else ConnectionLost("the stream ended")

    def close(self) -> None:
        """Stops reading: the server drops the producer."""
        if not self._done:
            self._done = True
            self._conn.close_stream(self._state)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(addr: Union[str, Address] = "localhost:9099", **options: Any) -> Client:
    """Connects to the server at ``addr`` (``HOST:PORT``, ``tcp:HOST:PORT``
    or ``unix:PATH``; default ``localhost:9099``).

    Options: ``key``/``key_file`` (the shared authentication key), ``timeout``
    (each call's deadline, seconds, default 60), ``connect_timeout`` (10),
    ``max_frame_size`` (largest reply accepted, default 16 MiB),
    ``stream_window`` (256 KiB), ``reconnect`` (a :class:`~ipc.Reconnect`
    policy; :data:`~ipc.NEVER` disables it), ``wait_for_server`` (False).
    Raises :class:`~ipc.ConnectError` (or :class:`~ipc.AuthFailed`...) now if
    the server cannot be reached.
    """
    return Client(settings(addr, **options))
