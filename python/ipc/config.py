"""Addresses, defaults and client settings, as in Rust's ``ipc_core::config``."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Union

from . import wire
from .errors import ConfigError, InvalidAddress

#: Default address, as in the original system and the Rust crates.
DEFAULT_ADDR = "localhost:9099"
#: Default deadline of every call, in seconds.
DEFAULT_TIMEOUT = 60.0
#: Default time to connect and handshake, in seconds.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Default bytes of stream items the server may send ahead of what was read, per stream.
DEFAULT_STREAM_WINDOW = 256 * 1024

#: Extra attempts for a call that did not run (any method) or whose
#: connection was lost (``#[idempotent]`` methods only).
MAX_RETRIES = 2


class Reconnect(NamedTuple):
    """How a client re-establishes a lost connection, on the next call that
    needs one: up to ``max_attempts`` attempts, attempt *n* (from 0) waiting
    ``min(initial_backoff * 2**n, max_backoff)`` seconds after a failure.
    ``max_attempts=0`` never reconnects (:data:`NEVER`)."""

    max_attempts: int = 5
    initial_backoff: float = 0.05
    max_backoff: float = 1.0

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt``."""
        return float(min(self.initial_backoff * (1 << min(attempt, 31)), self.max_backoff))


#: Never reconnect: once the connection is lost, calls fail.
NEVER = Reconnect(0, 0.0, 0.0)


class Address(NamedTuple):
    """A parsed address: ``kind`` is ``"tcp"`` (``host``, ``port``) or
    ``"unix"`` (``path``)."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(addr: Union[str, Address]) -> Address:
    """Parses ``HOST:PORT``, ``tcp:HOST:PORT`` or ``unix:PATH`` as strictly
    as Rust's ``Address`` does, before any I/O: a port 0 to 65535, a host
    that is a name (letters, digits, ``.``, ``-``, ``_``) or an IPv4
    address, or an IPv6 address in brackets (``[::1]:9099``). ``tls://``
    addresses are refused: this client does not speak TLS (use a Unix
    socket, or a TLS tunnel)."""
    if isinstance(addr, Address):
        return addr
    if not isinstance(addr, str):
        raise InvalidAddress(repr(addr), "an address is a str, for example localhost:9099")
    if addr.startswith("unix:"):
        path = addr[len("unix:") :]
        if not path:
            raise InvalidAddress(addr, "expected unix:PATH, for example unix:/tmp/ipc.sock")
        return Address("unix", path=path)
    if addr.startswith("tls://"):
        raise ConfigError(
            f"`{addr}` is a TLS address; the Python client speaks plain TCP and Unix "
            "sockets only (use unix:PATH, or tunnel TLS)"
        )
    text = addr[len("tcp:") :] if addr.startswith("tcp:") else addr
    host, sep, port_text = text.rpartition(":")
    expected = "expected HOST:PORT or unix:PATH, for example localhost:9099"
    if not sep or not port_text or not (port_text.isascii() and port_text.isdigit()):
        raise InvalidAddress(addr, expected)
    if int(port_text) > 65535:
        raise InvalidAddress(addr, "the port must be between 0 and 65535")
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise InvalidAddress(addr, "expected an IPv6 address in brackets, for example [::1]:9099") from None
        return Address("tcp", host=inner, port=int(port_text))
    if ":" in host:
        raise InvalidAddress(addr, "write an IPv6 address in brackets, for example [::1]:9099")
    if not host or not all(c.isascii() and (c.isalnum() or c in ".-_") for c in host):
        raise InvalidAddress(addr, expected)
    return Address("tcp", host=host, port=int(port_text))


def load_key(key: Union[bytes, str, None], key_file: Optional[Union[str, "os.PathLike[str]"]]) -> Optional[bytes]:
    """The shared key from ``key`` (bytes, or a str as UTF-8) or the file
    ``key_file`` (its bytes without one final line ending, as Rust's
    ``AuthKey::from_file``); at least 16 bytes."""
    if key is not None and key_file is not None:
        raise ConfigError("give key= or key_file=, not both")
    if key_file is not None:
        try:
            with open(key_file, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read the key file {os.fspath(key_file)!s}: {e.strerror}") from None
        if data.endswith(b"\n"):
            data = data[:-1]
            if data.endswith(b"\r"):
                data = data[:-1]
        key = data
    if key is None:
        return None
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if len(raw) < wire.MIN_KEY_LEN:
        raise ConfigError(
            f"an authentication key needs at least {wire.MIN_KEY_LEN} bytes, this one has {len(raw)}"
        )
    return raw


@dataclass(frozen=True)
class Settings:
    """Everything a client is configured with (see :func:`ipc.connect`)."""

    addr: Address
    #: The shared key; never shown by ``repr``.
    key: Optional[bytes] = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_frame_size: int = wire.DEFAULT_MAX_FRAME_SIZE
    stream_window: int = DEFAULT_STREAM_WINDOW
    reconnect: Reconnect = Reconnect()
    wait_for_server: bool = False


def settings(
    addr: Union[str, Address] = DEFAULT_ADDR,
    *,
    key: Union[bytes, str, None] = None,
    key_file: Optional[Union[str, "os.PathLike[str]"]] = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_frame_size: int = wire.DEFAULT_MAX_FRAME_SIZE,
    stream_window: int = DEFAULT_STREAM_WINDOW,
    reconnect: Reconnect = Reconnect(),
    wait_for_server: bool = False,
) -> Settings:
    """Checks and gathers the options :func:`ipc.connect` takes."""
    if timeout <= 0 or connect_timeout <= 0:
        raise ConfigError("timeouts must be positive (seconds)")
    if stream_window < 1:
        raise ConfigError("stream_window must be at least 1 byte")
    return Settings(
        addr=parse_address(addr),
        key=load_key(key, key_file),
        timeout=float(timeout),
        connect_timeout=float(connect_timeout),
        max_frame_size=wire.clamp_frame_size(int(max_frame_size)),
        stream_window=int(stream_window),
        reconnect=reconnect,
        wait_for_server=bool(wait_for_server),
    )
