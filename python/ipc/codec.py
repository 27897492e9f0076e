"""bincode (2, serde, little-endian, fixed-width integers) driven by a schema.

Each :class:`~ipc.schema.Format` is compiled once into an encoder
``enc(value, out: bytearray)`` and a decoder ``dec(buf, pos) -> (value,
pos)``; a method's :class:`MethodPlan` holds the ones it needs. Encoders
check every value against its format (types, integer ranges, fields,
variants) and raise ``TypeError`` or ``ValueError`` naming the argument and
the path inside it, before anything is sent.

Python values (see the README's table): integers ``int``, floats
``float``, ``bool``, ``char`` and strings ``str``, byte buffers and
``Vec<u8>`` ``bytes``, ``Option`` ``None`` or the value, sequences ``list``,
tuples and arrays ``tuple``, maps ``dict``, structs ``dict`` by field name
(any object with those attributes is accepted too), unit structs and ``()``
``None``, newtype structs their inner value, enums the variant's name for a
unit variant and ``{"Variant": payload}`` otherwise.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import DecodeError
from .schema import ContainerFormat, Format, MethodSchema, VariantFormat, first_opaque

__all__ = ["Some", "Codec", "MethodPlan"]

Encoder = Callable[[Any, bytearray], None]
Decoder = Callable[[bytes, int], Tuple[Any, int]]


class Some:
    """An explicit ``Some(value)``, for nested options: ``Option<Option<T>>``
    encodes ``None`` as the outer ``None`` and ``Some(None)`` as
    ``Some(None)``. Decoding gives ``Some(x)`` only where a plain value
    would be ambiguous (an ``Option`` whose value may itself be ``None``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Some) and other.value == self.value

    def __hash__(self) -> int:
        return hash(("Some", self.value))

    def __repr__(self) -> str:
        return f"Some({self.value!r})"


class Invalid(Exception):
    """A value that does not fit its format (internal): ``error`` is
    ``TypeError`` or ``ValueError``; ``path`` grows as it unwinds."""

    def __init__(self, error: type, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.path: List[str] = []

    def at(self, segment: str) -> "Invalid":
        self.path.append(segment)
        return self

    def where(self) -> str:
        return "".join(reversed(self.path))


class Malformed(Exception):
    """Bytes that do not decode with their format (internal)."""


def _what(v: Any) -> str:
    text = repr(v)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(v).__name__} {text}"


_INTS = {
    "I8": ("<b", -(1 << 7), (1 << 7) - 1),
    "I16": ("<h", -(1 << 15), (1 << 15) - 1),
    "I32": ("<i", -(1 << 31), (1 << 31) - 1),
    "I64": ("<q", -(1 << 63), (1 << 63) - 1),
    "U8": ("<B", 0, (1 << 8) - 1),
    "U16": ("<H", 0, (1 << 16) - 1),
    "U32": ("<I", 0, (1 << 32) - 1),
    "U64": ("<Q", 0, (1 << 64) - 1),
}
_WIDE = {"I128": (True, -(1 << 127), (1 << 127) - 1), "U128": (False, 0, (1 << 128) - 1)}
_FLOATS = {"F32": "<f", "F64": "<d"}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_pack_u64 = _U64.pack
_unpack_u64 = _U64.unpack_from
_unpack_u32 = _U32.unpack_from

#: A Rust-like name per primitive kind, for messages.
_NAMES = {
    "Unit": "()", "Bool": "bool", "I8": "i8", "I16": "i16", "I32": "i32", "I64": "i64",
    "I128": "i128", "U8": "u8", "U16": "u16", "U32": "u32", "U64": "u64", "U128": "u128",
    "F32": "f32", "F64": "f64", "Char": "char", "Str": "String", "Bytes": "bytes",
}  # fmt: skip


def _is_int(v: Any) -> bool:
    return v.__class__ is int or (isinstance(v, int) and not isinstance(v, bool))


def _int_encoder(kind: str) -> Encoder:
    code, lo, hi = _INTS[kind]
    pack = struct.Struct(code).pack
    name = _NAMES[kind]

    def enc(v: Any, out: bytearray) -> None:
        if not _is_int(v):
            raise Invalid(TypeError, f"expected an int ({name}), got {_what(v)}")
        if v < lo or v > hi:
            raise Invalid(ValueError, f"{v} is out of range for {name} ({lo} ..= {hi})")
        out += pack(v)

    return enc


def _wide_encoder(kind: str) -> Encoder:
    signed, lo, hi = _WIDE[kind]
    name = _NAMES[kind]

    def enc(v: Any, out: bytearray) -> None:
        if not _is_int(v):
            raise Invalid(TypeError, f"expected an int ({name}), got {_what(v)}")
        if v < lo or v > hi:
            raise Invalid(ValueError, f"{v} is out of range for {name} ({lo} ..= {hi})")
        out += int(v).to_bytes(16, "little", signed=signed)

    return enc


def _float_encoder(kind: str) -> Encoder:
    pack = struct.Struct(_FLOATS[kind]).pack
    name = _NAMES[kind]

    def enc(v: Any, out: bytearray) -> None:
        if v.__class__ is not float and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise Invalid(TypeError, f"expected a float ({name}), got {_what(v)}")
        try:
            out += pack(v)
        except (OverflowError, struct.error):
            raise Invalid(ValueError, f"{v} is out of range for {name}") from None

    return enc


def _enc_unit(v: Any, out: bytearray) -> None:
    if v is not None and v != ():
        raise Invalid(TypeError, f"expected None (()), got {_what(v)}")


def _enc_bool(v: Any, out: bytearray) -> None:
    if v is True:
        out.append(1)
    elif v is False:
        out.append(0)
    else:
        raise Invalid(TypeError, f"expected a bool, got {_what(v)}")


def _enc_char(v: Any, out: bytearray) -> None:
    if not isinstance(v, str) or len(v) != 1:
        raise Invalid(TypeError, f"expected a str of one character (char), got {_what(v)}")
    try:
        out += v.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(ValueError, f"{v!r} is not a Unicode scalar value") from None


def _enc_str(v: Any, out: bytearray) -> None:
    if not isinstance(v, str):
        raise Invalid(TypeError, f"expected a str (String), got {_what(v)}")
    try:
        b = v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise Invalid(ValueError, f"the string cannot be encoded as UTF-8: {e.reason}") from None
    out += _pack_u64(len(b))
    out += b


def _bytes_like(v: Any) -> Optional[bytes]:
    if isinstance(v, (bytes, bytearray)):
        return v  # type: ignore[return-value]
    if isinstance(v, memoryview):
        return v.tobytes()
    return None


def _enc_bytes(v: Any, out: bytearray) -> None:
    b = _bytes_like(v)
    if b is None:
        raise Invalid(TypeError, f"expected bytes, got {_what(v)}")
    out += _pack_u64(len(b))
    out += b


def _items(v: Any, what: str) -> Sequence[Any]:
    """The items of a value given for a sequence or tuple."""
    if isinstance(v, (list, tuple)):
        return v
    if isinstance(v, (str, bytes, bytearray, Mapping)) or not hasattr(v, "__iter__"):
        raise Invalid(TypeError, f"expected a {what}, got {_what(v)}")
    return list(v)


# --- decoders of primitives -------------------------------------------------


def _short(what: str) -> Malformed:
    return Malformed(f"the body ends inside a {what}")


def _fixed_decoder(code: str) -> Decoder:
    s = struct.Struct(code)
    unpack, size = s.unpack_from, s.size

    def dec(buf: bytes, pos: int) -> Tuple[Any, int]:
        return unpack(buf, pos)[0], pos + size

    return dec


def _wide_decoder(signed: bool) -> Decoder:
    def dec(buf: bytes, pos: int) -> Tuple[Any, int]:
        end = pos + 16
        if end > len(buf):
            raise _short("128-bit integer")
        return int.from_bytes(buf[pos:end], "little", signed=signed), end

    return dec


def _dec_unit(buf: bytes, pos: int) -> Tuple[Any, int]:
    return None, pos


def _dec_bool(buf: bytes, pos: int) -> Tuple[Any, int]:
    if pos >= len(buf):
        raise _short("bool")
    b = buf[pos]
    if b > 1:
        raise Malformed(f"a bool is 0 or 1, not {b}")
    return b == 1, pos + 1


def _dec_char(buf: bytes, pos: int) -> Tuple[Any, int]:
    if pos >= len(buf):
        raise _short("char")
    lead = buf[pos]
    n = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
    end = pos + n
    if end > len(buf):
        raise _short("char")
    try:
        c = bytes(buf[pos:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("a char is not UTF-8") from None
    if len(c) != 1:
        raise Malformed("a char is not one Unicode scalar value")
    return c, end


def _length(buf: bytes, pos: int, what: str) -> Tuple[int, int]:
    if pos + 8 > len(buf):
        raise _short(what)
    (n,) = _unpack_u64(buf, pos)
    return n, pos + 8


def _dec_str(buf: bytes, pos: int) -> Tuple[Any, int]:
    n, pos = _length(buf, pos, "string")
    end = pos + n
    if end > len(buf):
        raise Malformed(f"a string of {n} bytes runs past the body")
    try:
        return str(buf[pos:end], "utf-8"), end
    except UnicodeDecodeError:
        raise Malformed("a string is not UTF-8") from None


def _dec_bytes(buf: bytes, pos: int) -> Tuple[Any, int]:
    n, pos = _length(buf, pos, "byte buffer")
    end = pos + n
    if end > len(buf):
        raise Malformed(f"{n} bytes run past the body")
    return bytes(buf[pos:end]), end


class Codec:
    """Encoders and decoders for the formats of one schema, whose named
    types are ``types``; compiled on first use and kept."""

    def __init__(self, types: Mapping[str, ContainerFormat]) -> None:
        self.types: Dict[str, ContainerFormat] = dict(types)
        self._enc: Dict[Format, Encoder] = {}
        self._dec: Dict[Format, Decoder] = {}
        self._enc_named: Dict[str, Encoder] = {}
        self._dec_named: Dict[str, Decoder] = {}

    # --- encoders --------------------------------------------------------

    def encoder(self, fmt: Format) -> Encoder:
        """The encoder of ``fmt``."""
        enc = self._enc.get(fmt)
        if enc is None:
            enc = self._compile_encoder(fmt)
            self._enc[fmt] = enc
        return enc

    def _compile_encoder(self, fmt: Format) -> Encoder:
        k, a = fmt.kind, fmt.args
        if k in _INTS:
            return _int_encoder(k)
        if k in _WIDE:
            return _wide_encoder(k)
        if k in _FLOATS:
            return _float_encoder(k)
        simple = {"Unit": _enc_unit, "Bool": _enc_bool, "Char": _enc_char, "Str": _enc_str, "Bytes": _enc_bytes}
        if k in simple:
            return simple[k]
        if k == "Option":
            return self._option_encoder(a[0])
        if k == "Seq":
            return self._seq_encoder(a[0])
        if k == "Map":
            return self._map_encoder(a[0], a[1])
        if k == "Tuple":
            return self._tuple_encoder(list(a[0]), "tuple")
        if k == "TupleArray":
            return self._array_encoder(a[0], a[1])
        if k == "TypeName":
            return self._named_encoder(a[0])
        why = a[0] if a else "unknown format"

        def opaque(v: Any, out: bytearray) -> None:
            raise Invalid(TypeError, f"this type cannot be sent from Python: {why}")

        return opaque

    def _option_encoder(self, inner_format: Format) -> Encoder:
        inner = self.encoder(inner_format)

        def enc(v: Any, out: bytearray) -> None:
            if v is None:
                out.append(0)
                return
            if isinstance(v, Some):
                v = v.value
            out.append(1)
            inner(v, out)

        return enc

    def _seq_encoder(self, item_format: Format) -> Encoder:
        item = self.encoder(item_format)
        byte_items = item_format.kind == "U8"

        def enc(v: Any, out: bytearray) -> None:
            if byte_items:
                b = _bytes_like(v)
                if b is not None:
                    out += _pack_u64(len(b))
                    out += b
                    return
            items = _items(v, "list")
            out += _pack_u64(len(items))
            for i, x in enumerate(items):
                try:
                    item(x, out)
                except Invalid as e:
                    raise e.at(f"[{i}]")

        return enc

    def _map_encoder(self, key_format: Format, value_format: Format) -> Encoder:
        key, value = self.encoder(key_format), self.encoder(value_format)

        def enc(v: Any, out: bytearray) -> None:
            if isinstance(v, Mapping):
                pairs = list(v.items())
            elif isinstance(v, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in v):
                pairs = list(v)
            else:
                raise Invalid(TypeError, f"expected a dict (or a list of (key, value) pairs), got {_what(v)}")
            out += _pack_u64(len(pairs))
            for k, x in pairs:
                try:
                    key(k, out)
                except Invalid as e:
                    raise e.at(f"[key {k!r}]")
                try:
                    value(x, out)
                except Invalid as e:
                    raise e.at(f"[{k!r}]")

        return enc

    def _tuple_encoder(self, formats: List[Format], what: str) -> Encoder:
        encoders = [self.encoder(f) for f in formats]
        n = len(encoders)

        def enc(v: Any, out: bytearray) -> None:
            items = _items(v, f"{what} of {n} items")
            if len(items) != n:
                raise Invalid(ValueError, f"expected {n} items, got {len(items)}")
            for i, (e, x) in enumerate(zip(encoders, items)):
                try:
                    e(x, out)
                except Invalid as err:
                    raise err.at(f"[{i}]")

        return enc

    def _array_encoder(self, item_format: Format, n: int) -> Encoder:
        general = self._tuple_encoder([item_format] * n, "tuple")
        if item_format.kind != "U8":
            return general

        def enc(v: Any, out: bytearray) -> None:
            b = _bytes_like(v)
            if b is None:
                general(v, out)
            elif len(b) != n:
                raise Invalid(ValueError, f"expected {n} bytes, got {len(b)}")
            else:
                out += b

        return enc

    def _named_encoder(self, name: str) -> Encoder:
        known = self._enc_named.get(name)
        if known is not None:
            return known
        cell: List[Encoder] = []

        def forward(v: Any, out: bytearray) -> None:
            cell[0](v, out)

        self._enc_named[name] = forward
        compiled = self._container_encoder(name)
        cell.append(compiled)
        self._enc_named[name] = compiled
        return compiled

    def _container_encoder(self, name: str) -> Encoder:
        c = self.types.get(name)
        if c is None:
            return self._compile_encoder(Format("Opaque", f"the schema does not describe `{name}`"))
        if c.kind == "UnitStruct":
            return _enc_unit
        if c.kind == "NewTypeStruct":
            return self.encoder(c.value)
        if c.kind == "TupleStruct":
            return self._tuple_encoder(list(c.value), name)
        if c.kind == "Struct":
            return self._fields_encoder(name, list(c.value))
        return self._enum_encoder(name, list(c.value))

    def _fields_encoder(self, name: str, fields: List[Tuple[str, Format]]) -> Encoder:
        encoders = [(f, self.encoder(fmt)) for f, fmt in fields]
        names = [f for f, _ in fields]
        known = set(names)

        def enc(v: Any, out: bytearray) -> None:
            if isinstance(v, Mapping):
                for f, e in encoders:
                    try:
                        x = v[f]
                    except KeyError:
                        raise Invalid(ValueError, f"missing field {f!r} of {name}") from None
                    try:
                        e(x, out)
                    except Invalid as err:
                        raise err.at(f".{f}")
                if len(v) != len(encoders):
                    extra = sorted(str(k) for k in v if k not in known)
                    raise Invalid(
                        ValueError,
                        f"unknown field {extra[0]!r} of {name} (fields: {', '.join(names)})",
                    )
                return
            if isinstance(v, (str, bytes, int, float, list, tuple)) or v is None:
                raise Invalid(TypeError, f"expected a dict for struct {name}, got {_what(v)}")
            for f, e in encoders:
                try:
                    x = getattr(v, f)
                except AttributeError:
                    raise Invalid(ValueError, f"missing field {f!r} of {name}") from None
                try:
                    e(x, out)
                except Invalid as err:
                    raise err.at(f".{f}")

        return enc

    def _enum_encoder(self, name: str, variants: List[Tuple[str, VariantFormat]]) -> Encoder:
        table: Dict[str, Tuple[bytes, str, Optional[Encoder]]] = {}
        for i, (vname, v) in enumerate(variants):
            if v.kind == "Unit":
                payload: Optional[Encoder] = None
            elif v.kind == "NewType":
                payload = self.encoder(v.value)
            elif v.kind == "Tuple":
                payload = self._tuple_encoder(list(v.value), f"{name}::{vname}")
            else:
                payload = self._fields_encoder(f"{name}::{vname}", list(v.value))
            table[vname] = (_U32.pack(i), v.kind, payload)
        listed = ", ".join(v for v, _ in variants)

        def enc(v: Any, out: bytearray) -> None:
            if isinstance(v, str):
                vname, data, given = v, None, False
            elif isinstance(v, Mapping) and len(v) == 1:
                ((vname, data),) = v.items()
                given = True
            else:
                raise Invalid(
                    TypeError,
                    f"expected a variant of enum {name}: a name or a one-key dict "
                    f"{{variant: payload}}, got {_what(v)}",
                )
            entry = table.get(vname)
            if entry is None:
                raise Invalid(ValueError, f"{vname!r} is not a variant of {name} (variants: {listed})")
            index, kind, payload = entry
            out += index
            if payload is None:
                if given and data is not None:
                    raise Invalid(ValueError, f"variant {name}::{vname} has no payload, got {_what(data)}")
                return
            if not given:
                raise Invalid(ValueError, f"variant {name}::{vname} needs a payload: {{{vname!r}: ...}}")
            try:
                payload(data, out)
            except Invalid as e:
                raise e.at(f".{vname}")

        return enc

    # --- decoders --------------------------------------------------------

    def decoder(self, fmt: Format) -> Decoder:
        """The decoder of ``fmt``."""
        dec = self._dec.get(fmt)
        if dec is None:
            dec = self._compile_decoder(fmt)
            self._dec[fmt] = dec
        return dec

    def nullable(self, fmt: Format, seen: "Optional[set[str]]" = None) -> bool:
        """Whether a value of ``fmt`` may decode to ``None``."""
        if fmt.kind in ("Unit", "Option"):
            return True
        if fmt.kind == "TypeName":
            seen = set() if seen is None else seen
            name = fmt.args[0]
            if name in seen:
                return False
            seen.add(name)
            c = self.types.get(name)
            if c is not None and c.kind == "UnitStruct":
                return True
            if c is not None and c.kind == "NewTypeStruct":
                return self.nullable(c.value, seen)
        return False

    def zero_sized(self, fmt: Format, seen: "Optional[set[str]]" = None) -> bool:
        """Whether a value of ``fmt`` may take no bytes at all."""
        k, a = fmt.kind, fmt.args
        if k == "Unit":
            return True
        if k == "Tuple":
            return all(self.zero_sized(f, seen) for f in a[0])
        if k == "TupleArray":
            return a[1] == 0 or self.zero_sized(a[0], seen)
        if k != "TypeName":
            return False
        seen = set() if seen is None else seen
        if a[0] in seen:
            return False
        seen.add(a[0])
        c = self.types.get(a[0])
        if c is None or c.kind == "Enum":
            return False
        if c.kind == "UnitStruct":
            return True
        if c.kind == "NewTypeStruct":
            return self.zero_sized(c.value, seen)
        if c.kind == "TupleStruct":
            return all(self.zero_sized(f, seen) for f in c.value)
        return all(self.zero_sized(f, seen) for _, f in c.value)

    def _compile_decoder(self, fmt: Format) -> Decoder:
        k, a = fmt.kind, fmt.args
        if k in _INTS:
            return _fixed_decoder(_INTS[k][0])
        if k in _WIDE:
            return _wide_decoder(_WIDE[k][0])
        if k in _FLOATS:
            return _fixed_decoder(_FLOATS[k])
        simple = {"Unit": _dec_unit, "Bool": _dec_bool, "Char": _dec_char, "Str": _dec_str, "Bytes": _dec_bytes}
        if k in simple:
            return simple[k]
        if k == "Option":
            return self._option_decoder(a[0])
        if k == "Seq":
            return self._seq_decoder(a[0])
        if k == "Map":
            return self._map_decoder(a[0], a[1])
        if k == "Tuple":
            return self._tuple_decoder(list(a[0]))
        if k == "TupleArray":
            return self._tuple_decoder([a[0]] * a[1])
        if k == "TypeName":
            return self._named_decoder(a[0])
        why = a[0] if a else "unknown format"

        def opaque(buf: bytes, pos: int) -> Tuple[Any, int]:
            raise Malformed(f"this type cannot be received in Python: {why}")

        return opaque

    def _option_decoder(self, inner_format: Format) -> Decoder:
        inner = self.decoder(inner_format)
        wrap = self.nullable(inner_format)

        def dec(buf: bytes, pos: int) -> Tuple[Any, int]:
            if pos >= len(buf):
                raise _short("Option")
            tag = buf[pos]
            if tag == 0:
                return None, pos + 1
            if tag != 1:
                raise Malformed(f"an Option tag is 0 or 1, not {tag}")
            v, pos = inner(buf, pos + 1)
            return (Some(v) if wrap else v), pos

        return dec

    def _seq_decoder(self, item_format: Format) -> Decoder:
        if item_format.kind == "U8":
            return _dec_bytes
        item = self.decoder(item_format)
        zero_sized = self.zero_sized(item_format)

        def dec(buf: bytes, pos: int) -> Tuple[Any, int]:
            n, pos = _length(buf, pos, "sequence")
            # Items that take bytes cannot be more than the bytes left: a
            # larger count is a lie, not a reason to loop.
            limit = 1 << 20 if zero_sized else len(buf) - pos
            if n > limit:
                raise Malformed(f"a count of {n} items in {len(buf) - pos} bytes")
            out: List[Any] = []
            append = out.append
            for _ in range(n):
                v, pos = item(buf, pos)
                append(v)
            return out, pos

        return dec

    def _map_decoder(self, key_format: Format, value_format: Format) -> Decoder:
        key, value = self.decoder(key_format), self.decoder(value_format)

        def dec(buf: bytes, pos: int) -> Tuple[Any, int]:
            n, pos = _length(buf, pos, "map")
            if n > len(buf) - pos:
                raise Malformed(f"a count of {n} entries in {len(buf) - pos} bytes")
            pairs = []
            for _ in range(n):
                k, pos = key(buf, pos)
                v, pos = value(buf, pos)
                pairs.append((k, v))
            try:
                return dict(pairs), pos
            except TypeError:
                # Keys Python cannot hash (lists, dicts): the pairs as a list.
                return pairs, pos

        return dec

    def _tuple_decoder(self, formats: List[Format]) -> Decoder:
        decoders = [self.decoder(f) for f in formats]

        def dec(buf: bytes, pos: int) -> Tuple[Any, int]:
            out: List[Any] = []
            for d in decoders:
                v, pos = d(buf, pos)
                out.append(v)
            return tuple(out), pos

        return dec

    def _named_decoder(self, name: str) -> Decoder:
        known = self._dec_named.get(name)
        if known is not None:
            return known
        cell: List[Decoder] = []

        def forward(buf: bytes, pos: int) -> Tuple[Any, int]:
            return cell[0](buf, pos)

        self._dec_named[name] = forward
        compiled = self._container_decoder(name)
        cell.append(compiled)
        self._dec_named[name] = compiled
        return compiled

    def _container_decoder(self, name: str) -> Decoder:
        c = self.types.get(name)
        if c is None:
            return self._compile_decoder(Format("Opaque", f"the schema does not describe `{name}`"))
        if c.kind == "UnitStruct":
            return _dec_unit
        if c.kind == "NewTypeStruct":
            return self.decoder(c.value)
        if c.kind == "TupleStruct":
            return self._tuple_decoder(list(c.value))
        if c.kind == "Struct":
            return self._fields_decoder(list(c.value))
        return self._enum_decoder(name, list(c.value))

    def _fields_decoder(self, fields: List[Tuple[str, Format]]) -> Decoder:
        decoders = [(f, self.decoder(fmt)) for f, fmt in fields]

        def dec(buf: bytes, pos: int) -> Tuple[Any, int]:
            out = {}
            for f, d in decoders:
                out[f], pos = d(buf, pos)
            return out, pos

        return dec

    def _enum_decoder(self, name: str, variants: List[Tuple[str, VariantFormat]]) -> Decoder:
        table: List[Tuple[str, Optional[Decoder]]] = []
        for vname, v in variants:
            if v.kind == "Unit":
                table.append((vname, None))
            elif v.kind == "NewType":
                table.append((vname, self.decoder(v.value)))
            elif v.kind == "Tuple":
                table.append((vname, self._tuple_decoder(list(v.value))))
            else:
                table.append((vname, self._fields_decoder(list(v.value))))
        count = len(table)

        def dec(buf: bytes, pos: int) -> Tuple[Any, int]:
            if pos + 4 > len(buf):
                raise _short(f"enum {name}")
            (index,) = _unpack_u32(buf, pos)
            if index >= count:
                raise Malformed(f"{name} has no variant {index}")
            vname, payload = table[index]
            if payload is None:
                return vname, pos + 4
            v, pos = payload(buf, pos + 4)
            return {vname: v}, pos

        return dec

    def decode(self, dec: Decoder, body: bytes) -> Any:
        """Decodes all of ``body`` with ``dec``; :class:`DecodeError` if it
        does not decode or leaves bytes over."""
        try:
            value, end = dec(body, 0)
        except Malformed as e:
            raise DecodeError(str(e)) from None
        except (struct.error, IndexError):
            raise DecodeError("the body ends inside a value") from None
        except RecursionError:
            raise DecodeError("the value is nested too deeply for Python") from None
        if end != len(body):
            raise DecodeError(f"{len(body) - end} trailing bytes after the value")
        return value


#: Argument kinds the fast path packs with one ``struct`` call.
_FAST = {**{k: v[0][1] for k, v in _INTS.items()}, "F64": "d", "F32": "f"}


class MethodPlan:
    """How to call one method: its arguments' encoders and its answers'
    decoders, compiled from its schema."""

    def __init__(self, index: int, schema: MethodSchema, codec: Codec) -> None:
        self.index = index
        self.schema = schema
        self.name = schema.name
        self.oneway = schema.oneway
        self.idempotent = schema.idempotent
        self.codec = codec
        self.arg_names = [n for n, _ in schema.args]
        self.kind = schema.output[0]
        self.streaming = self.kind in ("Stream", "FallibleStream")
        self.fallible = self.kind in ("Fallible", "FallibleStream")
        formats = [f for _, f in schema.args] + list(schema.output[1:])
        self.unusable: Optional[str] = None
        for f in formats:
            why = first_opaque(f, codec.types)
            if why:
                self.unusable = why
                break
        self._encoders = [codec.encoder(f) for _, f in schema.args]
        self._ok = codec.decoder(schema.output[1])
        self._err = codec.decoder(schema.output[2]) if self.fallible else None
        self._fast = self._fast_path([f for _, f in schema.args])

    def _fast_path(self, formats: List[Format]) -> Optional[Tuple[Any, List[Tuple[int, int]]]]:
        """A ``struct`` packing all arguments at once, when they are all plain
        numbers: ``(Struct, per-argument integer bounds or None)``."""
        if not formats or any(f.kind not in _FAST for f in formats):
            return None
        code = "<" + "".join(_FAST[f.kind] for f in formats)
        bounds = [(_INTS[f.kind][1], _INTS[f.kind][2]) if f.kind in _INTS else None for f in formats]
        return struct.Struct(code), bounds  # type: ignore[return-value]

    def signature(self) -> str:
        """``name(a: i64, b: i64) -> i64``, for messages and docs."""
        args = ", ".join(f"{n}: {f.describe()}" for n, f in self.schema.args)
        out = self.schema.output
        if out[0] == "Value":
            ret = out[1].describe()
        elif out[0] == "Fallible":
            ret = f"Result<{out[1].describe()}, {out[2].describe()}>"
        elif out[0] == "Stream":
            ret = f"Streaming<{out[1].describe()}>"
        else:
            ret = f"Result<Streaming<{out[1].describe()}>, {out[2].describe()}>"
        return f"{self.name}({args}) -> {ret}"

    def encode_args(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
        """The request's argument bytes; ``TypeError``/``ValueError`` (naming
        the argument and the path inside it) for a value that does not fit."""
        if self.unusable is not None:
            raise TypeError(f"{self.name}() cannot be called from Python: {self.unusable}")
        names = self.arg_names
        if kwargs or len(args) != len(names):
            args = self._bind(args, kwargs)
        fast = self._fast
        if fast is not None:
            packer, bounds = fast
            ok = True
            for v, b in zip(args, bounds):
                if b is None:
                    if v.__class__ is not float:
                        ok = False
                        break
                elif v.__class__ is not int or v < b[0] or v > b[1]:
                    ok = False
                    break
            if ok:
                return packer.pack(*args)  # type: ignore[no-any-return]
        out = bytearray()
        for name, enc, v in zip(names, self._encoders, args):
            try:
                enc(v, out)
            except Invalid as e:
                raise e.error(f"{self.name}(): argument {name!r}{e.where()}: {e.message}") from None
        return bytes(out)

    def _bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> List[Any]:
        names = self.arg_names
        if len(args) > len(names):
            raise TypeError(
                f"{self.name}() takes {len(names)} argument{'s' if len(names) != 1 else ''} "
                f"({', '.join(names)}), {len(args)} given"
            )
        bound = list(args)
        for name in names[len(args) :]:
            if name not in kwargs:
                raise TypeError(f"{self.name}() missing argument {name!r} (arguments: {', '.join(names)})")
            bound.append(kwargs[name])
        for name in kwargs:
            if name not in names:
                raise TypeError(f"{self.name}() got an unexpected argument {name!r}")
            if names.index(name) < len(args):
                raise TypeError(f"{self.name}() got argument {name!r} twice")
        return bound

    def decode_ok(self, body: bytes) -> Any:
        """A status-0 body of a method that does not stream."""
        return self.codec.decode(self._ok, body)

    def decode_item(self, body: bytes) -> Any:
        """A stream item."""
        return self.codec.decode(self._ok, body)

    def decode_err(self, body: bytes) -> Any:
        """A status-1 body: the method's own error."""
        if self._err is None:
            raise DecodeError(f"{self.name}() returned an application error but declares none")
        return self.codec.decode(self._err, body)
