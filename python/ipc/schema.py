"""What the server says about its objects: the directory (system method 1)
and an object's schema (system method 2), decoded from their bincode
layouts (README, "Objects and the system object" and "Method schemas").

These two layouts are fixed by the protocol, so they are decoded by hand
here; everything else is decoded with the formats a schema describes
(:mod:`ipc.codec`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, List, NamedTuple, Optional, Tuple, TypeVar

from .errors import DecodeError

__all__ = [
    "Format",
    "ContainerFormat",
    "VariantFormat",
    "MethodSchema",
    "ObjectSchema",
    "MethodInfo",
    "ObjectInfo",
    "decode_schema",
    "decode_directory",
]

T = TypeVar("T")

#: ``Format`` variants in wire-index order.
FORMAT_KINDS = (
    "Unit", "Bool", "I8", "I16", "I32", "I64", "I128", "U8", "U16", "U32", "U64",
    "U128", "F32", "F64", "Char", "Str", "Bytes", "Option", "Seq", "Map", "Tuple",
    "TupleArray", "TypeName", "Opaque",
)  # fmt: skip

_RUST_NAMES = {
    "Unit": "()", "Bool": "bool", "I8": "i8", "I16": "i16", "I32": "i32", "I64": "i64",
    "I128": "i128", "U8": "u8", "U16": "u16", "U32": "u32", "U64": "u64", "U128": "u128",
    "F32": "f32", "F64": "f64", "Char": "char", "Str": "String", "Bytes": "Bytes",
}  # fmt: skip


class Format:
    """The format of a value (README, "Method schemas"): ``kind`` is the
    variant's name (``"I64"``, ``"Option"``, ``"TypeName"``...), ``args`` its
    payload: an inner :class:`Format` for ``Option`` and ``Seq``, two for
    ``Map``, a tuple of them for ``Tuple``, ``(Format, n)`` for
    ``TupleArray``, a name for ``TypeName``, a reason for ``Opaque``."""

    __slots__ = ("kind", "args")

    def __init__(self, kind: str, *args: Any) -> None:
        self.kind = kind
        self.args = args

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Format) and (self.kind, self.args) == (other.kind, other.args)

    def __hash__(self) -> int:
        return hash((self.kind, self.args))

    def __repr__(self) -> str:
        if not self.args:
            return f"Format.{self.kind}"
        return f"Format.{self.kind}({', '.join(map(repr, self.args))})"

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """The format as a Rust-like type: ``Option<Vec<u8>>``, ``(u8, char)``."""
        k, a = self.kind, self.args
        if k in _RUST_NAMES:
            return _RUST_NAMES[k]
        if k == "Option":
            return f"Option<{a[0].describe()}>"
        if k == "Seq":
            return f"Vec<{a[0].describe()}>"
        if k == "Map":
            return f"Map<{a[0].describe()}, {a[1].describe()}>"
        if k == "Tuple":
            inner = ", ".join(f.describe() for f in a[0])
            return f"({inner},)" if len(a[0]) == 1 else f"({inner})"
        if k == "TupleArray":
            return f"[{a[0].describe()}; {a[1]}]"
        if k == "TypeName":
            return str(a[0])
        return f"<opaque: {a[0]}>"


class VariantFormat(NamedTuple):
    """One enum variant's payload: ``kind`` is ``"Unit"``, ``"NewType"``
    (``value`` a :class:`Format`), ``"Tuple"`` (a tuple of formats) or
    ``"Struct"`` (a tuple of ``(field name, Format)``)."""

    kind: str
    value: Any = None


class ContainerFormat(NamedTuple):
    """A named type: ``kind`` is ``"UnitStruct"``, ``"NewTypeStruct"``
    (``value`` a :class:`Format`), ``"TupleStruct"`` (a tuple of formats),
    ``"Struct"`` (a tuple of ``(field name, Format)``) or ``"Enum"`` (a tuple
    of ``(variant name, VariantFormat)`` in wire-index order)."""

    kind: str
    value: Any = None


@dataclass(frozen=True)
class MethodSchema:
    """One method: its parameters' names and formats and what it returns.
    ``output`` is ``("Value", ok)``, ``("Fallible", ok, err)``, ``("Stream",
    item)`` or ``("FallibleStream", item, err)``."""

    name: str
    signature: str
    oneway: bool
    idempotent: bool
    args: Tuple[Tuple[str, Format], ...]
    output: Tuple[Any, ...]

    @property
    def streaming(self) -> bool:
        """Whether it returns a server-push stream."""
        return self.output[0] in ("Stream", "FallibleStream")


@dataclass(frozen=True)
class ObjectSchema:
    """An exposed object's schema (system method 2)."""

    name: str
    trait_name: str
    fingerprint: int
    methods: Tuple[MethodSchema, ...]
    types: Tuple[Tuple[str, ContainerFormat], ...] = field(default=())

    def method(self, name: str) -> Tuple[int, MethodSchema]:
        """The index and schema of the method called ``name``; ``KeyError`` if none."""
        for i, m in enumerate(self.methods):
            if m.name == name:
                return i, m
        raise KeyError(name)


@dataclass(frozen=True)
class MethodInfo:
    """One method in the directory."""

    name: str
    signature: str
    oneway: bool
    idempotent: bool
    streaming: bool
    object_args: bool
    object_return: bool


@dataclass(frozen=True)
class ObjectInfo:
    """One exposed object in the directory (``client.objects()``)."""

    name: str
    trait_name: str
    fingerprint: int
    methods: Tuple[MethodInfo, ...]


class _Reader:
    """Reads the fixed layouts of the directory and the schema."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError(f"{n} bytes wanted at offset {self.pos}, {len(self.data) - self.pos} left")
        out = self.data[self.pos : end]
        self.pos = end
        return bytes(out)

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def boolean(self) -> bool:
        b = self.u8()
        if b > 1:
            raise DecodeError(f"a bool is 0 or 1, not {b}")
        return b == 1

    def string(self) -> str:
        raw = self.take(self.u64())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError(f"a string is not UTF-8: {e}") from None

    def seq(self, item: Callable[[], T]) -> Tuple[T, ...]:
        n = self.u64()
        if n > len(self.data) - self.pos:
            raise DecodeError(f"a count of {n} items in {len(self.data) - self.pos} bytes")
        return tuple(item() for _ in range(n))

    def end(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError(f"{len(self.data) - self.pos} trailing bytes")

    # Schema types ---------------------------------------------------------

    def format(self) -> Format:
        index = self.u32()
        if index >= len(FORMAT_KINDS):
            raise DecodeError(f"no Format variant {index}")
        kind = FORMAT_KINDS[index]
        if kind in ("Option", "Seq"):
            return Format(kind, self.format())
        if kind == "Map":
            return Format(kind, self.format(), self.format())
        if kind == "Tuple":
            return Format(kind, self.seq(self.format))
        if kind == "TupleArray":
            return Format(kind, self.format(), self.u64())
        if kind in ("TypeName", "Opaque"):
            return Format(kind, self.string())
        return Format(kind)

    def named_formats(self) -> Tuple[Tuple[str, Format], ...]:
        return self.seq(lambda: (self.string(), self.format()))

    def variant(self) -> VariantFormat:
        index = self.u32()
        if index == 0:
            return VariantFormat("Unit")
        if index == 1:
            return VariantFormat("NewType", self.format())
        if index == 2:
            return VariantFormat("Tuple", self.seq(self.format))
        if index == 3:
            return VariantFormat("Struct", self.named_formats())
        raise DecodeError(f"no VariantFormat variant {index}")

    def container(self) -> ContainerFormat:
        index = self.u32()
        if index == 0:
            return ContainerFormat("UnitStruct")
        if index == 1:
            return ContainerFormat("NewTypeStruct", self.format())
        if index == 2:
            return ContainerFormat("TupleStruct", self.seq(self.format))
        if index == 3:
            return ContainerFormat("Struct", self.named_formats())
        if index == 4:
            return ContainerFormat("Enum", self.seq(lambda: (self.string(), self.variant())))
        raise DecodeError(f"no ContainerFormat variant {index}")

    def output(self) -> Tuple[Any, ...]:
        index = self.u32()
        if index == 0:
            return ("Value", self.format())
        if index == 1:
            return ("Fallible", self.format(), self.format())
        if index == 2:
            return ("Stream", self.format())
        if index == 3:
            return ("FallibleStream", self.format(), self.format())
        raise DecodeError(f"no Output variant {index}")

    def method_schema(self) -> MethodSchema:
        return MethodSchema(
            name=self.string(),
            signature=self.string(),
            oneway=self.boolean(),
            idempotent=self.boolean(),
            args=self.named_formats(),
            output=self.output(),
        )

    def method_info(self) -> MethodInfo:
        return MethodInfo(
            self.string(),
            self.string(),
            self.boolean(),
            self.boolean(),
            self.boolean(),
            self.boolean(),
            self.boolean(),
        )

    def object_info(self) -> ObjectInfo:
        return ObjectInfo(self.string(), self.string(), self.u64(), self.seq(self.method_info))


def decode_schema(body: bytes) -> ObjectSchema:
    """An ``ObjectSchema`` body (system method 2)."""
    r = _Reader(body)
    schema = ObjectSchema(
        name=r.string(),
        trait_name=r.string(),
        fingerprint=r.u64(),
        methods=r.seq(r.method_schema),
        types=r.seq(lambda: (r.string(), r.container())),
    )
    r.end()
    return schema


def decode_directory(body: bytes) -> List[ObjectInfo]:
    """A ``Vec<ObjectInfo>`` body (system method 1)."""
    r = _Reader(body)
    objects = list(r.seq(r.object_info))
    r.end()
    return objects


def resolve_args(name: str, schema: ObjectSchema) -> bytes:
    """The arguments of ``resolve`` for ``name``, from what ``schema`` says
    the object is: ``(name, trait_name, fingerprint, signatures)``."""
    from .wire import string

    signatures = [m.signature for m in schema.methods]
    return (
        string(name)
        + string(schema.trait_name)
        + struct.pack("<QQ", schema.fingerprint, len(signatures))
        + b"".join(string(s) for s in signatures)
    )


def first_opaque(
    fmt: Format, types: "dict[str, ContainerFormat]", seen: "Optional[set[str]]" = None
) -> Optional[str]:
    """Why ``fmt`` cannot be encoded or decoded (the reason of the first
    opaque format inside it), or ``None`` if it can."""
    seen = set() if seen is None else seen
    k, a = fmt.kind, fmt.args
    if k == "Opaque":
        return str(a[0])
    if k in ("Option", "Seq", "TupleArray"):
        return first_opaque(a[0], types, seen)
    if k == "Map":
        return first_opaque(a[0], types, seen) or first_opaque(a[1], types, seen)
    if k == "Tuple":
        for f in a[0]:
            why = first_opaque(f, types, seen)
            if why:
                return why
        return None
    if k == "TypeName":
        name = a[0]
        if name in seen:
            return None
        seen.add(name)
        container = types.get(name)
        if container is None:
            return f"the schema does not describe the type `{name}`"
        for inner in _container_formats(container):
            why = first_opaque(inner, types, seen)
            if why:
                return why
    return None


def _container_formats(c: ContainerFormat) -> List[Format]:
    """Every format directly inside a named type."""
    if c.kind == "NewTypeStruct":
        return [c.value]
    if c.kind == "TupleStruct":
        return list(c.value)
    if c.kind == "Struct":
        return [f for _, f in c.value]
    if c.kind == "Enum":
        out: List[Format] = []
        for _, v in c.value:
            if v.kind == "NewType":
                out.append(v.value)
            elif v.kind == "Tuple":
                out.extend(v.value)
            elif v.kind == "Struct":
                out.extend(f for _, f in v.value)
        return out
    return []
