"""What the sync and asyncio proxies share: an object's schema compiled
into call plans, its handle per connection, and how an answer becomes a
value or an exception."""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Tuple

from . import wire
from .codec import Codec, MethodPlan
from .errors import (
    APP_ERROR,
    DEADLINE_EXCEEDED,
    OK,
    AppError,
    DecodeError,
    Error,
    ProtocolError,
    Timeout,
    from_status,
)
from .schema import ObjectSchema, resolve_args


class Expired(Exception):
    """A call's deadline passed (internal; the proxy raises :class:`Timeout`)."""


class ObjectState:
    """One named object as a client knows it: the schema fetched once, the
    plans compiled from it, and its handle on the current connection."""

    def __init__(self, name: str, schema: ObjectSchema) -> None:
        computed = wire.fingerprint(schema.trait_name, [m.signature for m in schema.methods])
        if computed != schema.fingerprint:
            raise ProtocolError(
                f"the schema of `{name}` gives fingerprint {schema.fingerprint:016x}, but its "
                f"trait name and signatures give {computed:016x}"
            )
        self.name = name
        self.schema = schema
        self.codec = Codec(dict(schema.types))
        self.plans: List[MethodPlan] = [MethodPlan(i, m, self.codec) for i, m in enumerate(schema.methods)]
        self.by_name: Dict[str, MethodPlan] = {p.name: p for p in self.plans}
        self.resolve_args = resolve_args(name, schema)
        #: ``(connection generation, handle)`` of the last lookup.
        self.handle: Tuple[int, int] = (0, 0)

    def plan(self, method: str) -> MethodPlan:
        """The plan of ``method``; ``AttributeError`` naming the methods there are."""
        plan = self.by_name.get(method)
        if plan is None:
            names = ", ".join(self.by_name) or "none"
            raise AttributeError(
                f"object `{self.name}` (trait {self.schema.trait_name}) has no method {method!r} "
                f"(methods: {names})"
            )
        return plan

    def handle_on(self, generation: int) -> Optional[int]:
        """The handle looked up on connection ``generation``, if it was."""
        gen, handle = self.handle
        return handle if gen == generation else None

    def resolved(self, generation: int, status: int, body: bytes) -> int:
        """Records the answer to ``resolve`` on connection ``generation``: the
        handle, or the error (:class:`~ipc.UnknownObject`,
        :class:`~ipc.TraitMismatch`: the schema is stale)."""
        if status != OK:
            raise from_status(status, body, self.name)
        if len(body) != 4:
            raise DecodeError(f"a handle is 4 bytes, got {len(body)}")
        (handle,) = struct.unpack("<I", body)
        self.handle = (generation, handle)
        return int(handle)


def finish(plan: MethodPlan, status: int, body: bytes, object_name: str, timeout: float) -> Any:
    """The value of a call answered with ``status`` and ``body`` (a method
    that does not stream), or the exception it stands for."""
    if status == OK:
        return plan.decode_ok(body)
    raise failure(plan, status, body, object_name, timeout)


def failure(plan: MethodPlan, status: int, body: bytes, object_name: str, timeout: float) -> Exception:
    """The exception for a call answered with an error status."""
    if status == APP_ERROR:
        if not plan.fallible:
            return ProtocolError(f"an application error for {plan.name}(), which has none")
        try:
            return AppError(plan.decode_err(body), plan.name)
        except Error as e:
            return e
    if status == DEADLINE_EXCEEDED:
        return Timeout(timeout)
    return from_status(status, body, object_name)


def method_doc(plan: MethodPlan, object_name: str) -> str:
    """A docstring for a proxy method."""
    flags = [f for f, on in (("oneway", plan.oneway), ("idempotent", plan.idempotent)) if on]
    extra = f" [{', '.join(flags)}]" if flags else ""
    return f"{plan.signature()}{extra}\n\nCalls `{plan.name}` on the remote object `{object_name}`."
