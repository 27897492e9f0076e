"""A Python client for ``ipc``, the Rust remote-object framework.

No code generation: the server describes each object's methods (system
method 2, a schema traced from the Rust types), and the client encodes
arguments and decodes answers from that description.

>>> import ipc
>>> with ipc.connect("localhost:9099") as client:         # doctest: +SKIP
...     calc = client.get_exposed_object("Calculator")
...     calc.add(2, 3)
5

``ipc.aio`` is the asyncio flavour (``await calc.add(2, 3)``, many calls in
flight on one connection). Standard library only; Python 3.9 or later.
"""

from . import aio
from .client import Client, Proxy, Stream, connect
from .codec import Some
from .config import DEFAULT_ADDR, NEVER, Address, Reconnect, parse_address
from .errors import (
    AppError,
    AuthFailed,
    BadRequest,
    ConfigError,
    ConnectError,
    ConnectionLost,
    DecodeError,
    EncodeError,
    Error,
    FrameTooLarge,
    InvalidAddress,
    Overloaded,
    PermissionDenied,
    ProtocolError,
    ProtocolMismatch,
    RemotePanic,
    ShuttingDown,
    Timeout,
    TraitMismatch,
    UnknownMethod,
    UnknownObject,
)
from .schema import (
    ContainerFormat,
    Format,
    MethodInfo,
    MethodSchema,
    ObjectInfo,
    ObjectSchema,
    VariantFormat,
)

__version__ = "0.1.0"

__all__ = [
    "aio",
    "connect",
    "Client",
    "Proxy",
    "Stream",
    "Some",
    "DEFAULT_ADDR",
    "NEVER",
    "Address",
    "Reconnect",
    "parse_address",
    "AppError",
    "AuthFailed",
    "BadRequest",
    "ConfigError",
    "ConnectError",
    "ConnectionLost",
    "DecodeError",
    "EncodeError",
    "Error",
    "FrameTooLarge",
    "InvalidAddress",
    "Overloaded",
    "PermissionDenied",
    "ProtocolError",
    "ProtocolMismatch",
    "RemotePanic",
    "ShuttingDown",
    "Timeout",
    "TraitMismatch",
    "UnknownMethod",
    "UnknownObject",
    "ContainerFormat",
    "Format",
    "MethodInfo",
    "MethodSchema",
    "ObjectInfo",
    "ObjectSchema",
    "VariantFormat",
]
