"""A fast OTLP/protobuf encoder for finished spans.

``encode_spans(spans)`` returns the serialized
``opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`` for a
batch of SDK ``ReadableSpan``\\ s, byte for byte what
``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans(spans)
.SerializeToString()`` produces (checked against opentelemetry-exporter-otlp
1.45 with the upb protobuf runtime by ``tests/plugins/test_otlp_wire.py``),
without building protobuf message objects: the official encoder creates one
message per span, attribute, value, event and link, which made span export
the single largest CPU cost of a busy gateway.

The protobuf wire format, as far as this module needs it: every field is a
tag (``field_number << 3 | wire_type``; every tag used here fits in one byte
except ``Span.flags``, field 16) followed by a varint, a fixed 8 or 4 byte
little-endian value, or a varint length and that many bytes (strings, bytes,
nested messages). Fields are written in field-number order and proto3 leaves
out scalar fields holding their default (0, "", empty bytes). Message fields
that are *set* are written even when empty (the official encoder always sets
``Span.status``, ``ResourceSpans.resource`` and ``ScopeSpans.scope``), and so
is whichever ``AnyValue`` oneof member is set (``bool_value=False`` is
``10 00``).

What the official encoder does, and this module repeats:

* spans are grouped by resource, then by instrumentation scope, each group in
  order of first appearance, with the same equality the official dictionaries
  use (``Resource.__eq__``/``__hash__``, ``InstrumentationScope`` likewise); a
  group is encoded from the first object of the batch that opened it;
* ``Span.flags`` carries only ``SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`` plus
  ``..._IS_REMOTE_MASK`` when the parent (for a link: the linked context) is
  remote, not the W3C trace flags;
* the SDK ``SpanKind`` maps to the proto kind (its value + 1); the status is
  always present, with its code when not UNSET and its description when
  non-empty; links carry no trace_state; scopes and resources carry no
  dropped-attribute count;
* attribute values: ``None`` becomes an empty ``AnyValue``; ``bool``, ``str``,
  ``int`` (int64, two's complement), ``float`` and ``bytes`` their oneof
  member; other sequences an ``ArrayValue`` and mappings a ``KeyValueList``
  (tested in that order, as the official encoder does). A value that cannot be
  encoded (an int outside int64, a string with lone surrogates, an unknown
  type) drops that one attribute, with a warning, like the official encoder
  does (it logs the error and skips the key).

The encoded bytes of attribute keys, of short string values that repeat
(per key), of span names and of resource and scope headers are cached. Every
cache is bounded and simply cleared when full, so unbounded churn costs speed,
never memory. Reading ``ReadableSpan`` fields directly (its properties copy
attributes, events and links) is limited to that exact class; anything else
is read through the public properties.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE as _DEFAULT_TRACE_STATE

from interlock.core.telemetry.spans import CONTEXT_IS_TUPLE, GatewaySpan

__all__ = ["encode_spans"]

_logger = logging.getLogger(__name__)

_U64 = 0xFFFFFFFFFFFFFFFF
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1

_pack_fixed64 = struct.Struct("<Q").pack
_pack_double = struct.Struct("<d").pack
_pack_fixed32 = struct.Struct("<I").pack
# Span.start_time_unix_nano (7) and .end_time_unix_nano (8), both fixed64
_pack_times = struct.Struct("<BQBQ").pack

# one-byte varints, 0..127
_V = tuple(bytes((i,)) for i in range(128))


def _varint(n: int) -> bytes:
    """Unsigned base-128 varint of ``n`` (0 <= n < 2**64)."""
    if n < 0x80:
        return _V[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int64(n: int) -> bytes:
    """An int64 varint (negatives in ten bytes of two's complement), ValueError outside int64."""
    if _I64_MIN <= n <= _I64_MAX:
        return _varint(n & _U64)
    raise ValueError(f"Value out of range: {n}")


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


# --------------------------------------------------------------------------- #
# AnyValue / KeyValue
#
# KeyValue = 1:key (string) 2:value (AnyValue)
# AnyValue = 1:string 2:bool 3:int64 4:double 5:ArrayValue 6:KeyValueList 7:bytes
# ArrayValue / KeyValueList = 1:repeated values
# --------------------------------------------------------------------------- #

# the complete KeyValue.value field (tag 0x12, length, AnyValue) for the cheap cases
_VALUE_NONE = b"\x12\x00"
_VALUE_TRUE = b"\x12\x02\x10\x01"
_VALUE_FALSE = b"\x12\x02\x10\x00"
_VALUE_DOUBLE = b"\x12\x09\x21"  # + 8 bytes
# small non-negative ints: 12 02 18 <n>
_VALUE_SMALL_INT = tuple(b"\x12\x02\x18" + _V[i] for i in range(128))
# the value field's header for a string of n < 126 UTF-8 bytes: 12 <n+2> 0a <n>
_STR_HEAD = tuple(b"\x12" + _V[n + 2] + b"\x0a" + _V[n] for n in range(126))
# one ArrayValue.values entry for a string of n < 126 UTF-8 bytes: 0a <n+2> 0a <n>
_ARRAY_STR_HEAD = tuple(b"\x0a" + _V[n + 2] + b"\x0a" + _V[n] for n in range(126))
# the value field's header for an ArrayValue of n < 126 bytes: 12 <n+2> 2a <n>
_ARRAY_HEAD = tuple(b"\x12" + _V[n + 2] + b"\x2a" + _V[n] for n in range(126))

# Per attribute key: [the KeyValue.key field, how many of its values are remembered, or None
# once it stopped]. Per repeated field tag: {(key, value): the whole field (tag, length,
# KeyValue)} for values that repeat: short strings (a model, a route, a method), tuples of them
# (finish reasons, candidates) and ints (a port, a status). Only values of exactly those types
# are remembered and looked up, so a bool or a float never matches an int (1 == True == 1.0).
# A key that shows more than _VALUES_PER_KEY distinct values (a request id) stops adding any.
# Everything is bounded and simply cleared when full.
_KEYS: dict[str, list[Any]] = {}
_KEYS_MAX = 1024
_PAIRS: dict[bytes, dict[tuple[str, Any], bytes]] = {}
_VALUES_PER_KEY = 32
_VALUE_MAX_LEN = 64  # UTF-8 bytes
_cached_values = 0
_CACHED_VALUES_MAX = 8192


def _forget_all() -> None:
    """Start the key and value caches over (the dicts stay the same objects)."""
    global _cached_values
    _KEYS.clear()
    for pairs in _PAIRS.values():
        pairs.clear()
    _cached_values = 0


def _key_entry(key: str) -> list[Any]:
    """The cache entry for ``key``, created on first use; TypeError for a key that is not a str."""
    entry = _KEYS.get(key)
    if entry is None:
        if not isinstance(key, str):
            raise TypeError(f"attribute key must be a str, not {type(key).__name__}")
        raw = str.encode(key, "utf-8")
        field = b"\x0a" + _varint(len(raw)) + raw if raw else b""  # "" is a default: not written
        if len(_KEYS) >= _KEYS_MAX:
            _forget_all()
        entry = [field, 0 if type(key) is str else None]
        _KEYS[key] = entry
    return entry


def _key_field(key: str) -> bytes:
    return _key_entry(key)[0]  # type: ignore[no-any-return]


def _remember_pair(pairs: dict[tuple[str, Any], bytes], entry: list[Any], item: tuple[str, Any], piece: bytes) -> None:
    global _cached_values
    count = entry[1]
    if count >= _VALUES_PER_KEY:
        entry[1] = None  # high cardinality: stop remembering this key's values
    elif _cached_values >= _CACHED_VALUES_MAX:
        _forget_all()  # full: start over (the entry in hand is simply forgotten)
    else:
        pairs[item] = piece
        entry[1] = count + 1
        _cached_values += 1


def _any_value(value: Any) -> bytes:
    """The serialized AnyValue for any supported value (the general, recursive path)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        raw = str.encode(value, "utf-8")
        return b"\x0a" + _varint(len(raw)) + raw
    if isinstance(value, int):
        return b"\x18" + _int64(int(value))
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        raw = bytes(memoryview(value))
        return b"\x3a" + _varint(len(raw)) + raw
    if isinstance(value, Sequence):
        items = b"".join([_field(b"\x0a", _any_value(v)) for v in value])
        return _field(b"\x2a", items)
    if isinstance(value, Mapping):
        kvs = b"".join([_field(b"\x0a", _key_field(str(k)) + _field(b"\x12", _any_value(v)))
                        for k, v in value.items()])
        return _field(b"\x32", kvs)
    raise TypeError(f"Invalid type {type(value)} of value {value!r}")


def _items(attributes: Any) -> Iterable[tuple[Any, Any]]:
    # BoundedAttributes iterates under a lock and looks each key up again;
    # finished spans' attributes are immutable, so read the dict underneath.
    if type(attributes) is BoundedAttributes:
        return attributes._dict.items()
    return attributes.items()  # type: ignore[no-any-return]


def _str_array(items: Any) -> bytes | None:
    """The KeyValue.value field for a sequence of plain strings, None if an item is not one."""
    parts = []
    for item in items:
        if type(item) is not str:
            return None
        raw = item.encode()
        n = len(raw)
        parts.append(_ARRAY_STR_HEAD[n] + raw if n < 126 else _field(b"\x0a", b"\x0a" + _varint(n) + raw))
    array = b"".join(parts)
    n = len(array)
    if n < 126:
        return _ARRAY_HEAD[n] + array
    return _field(b"\x12", b"\x2a" + _varint(n) + array)


def _attributes(attributes: Any, tag: bytes) -> list[bytes]:
    """Pieces of the repeated KeyValue field ``tag`` for a mapping of attributes.

    Returns the pieces rather than joining them, so callers collect a whole
    message in one list and join once. A (key, value) pair seen before is one
    dict lookup; the common value types are encoded inline; everything else
    goes through ``_any_value``.
    """
    out: list[bytes] = []
    if not attributes:
        return out
    pairs = _PAIRS.get(tag)
    if pairs is None:
        pairs = _PAIRS[tag] = {}
    append = out.append
    keys = _KEYS
    V = _V
    for item in _items(attributes):
        key, value = item
        t = type(value)
        if t is str or t is int or t is tuple:  # the only types remembered (so no 1 == True == 1.0)
            try:
                piece = pairs.get(item)
            except TypeError:  # a tuple holding something unhashable
                piece = None
            if piece is not None:
                append(piece)
                continue
        try:
            entry = keys.get(key)
            if entry is None:
                entry = _key_entry(key)
            kf = entry[0]
            remember = False  # whether the whole field goes into the pair cache
            if t is str:
                raw = value.encode()
                n = len(raw)
                if n < 126:
                    vf = _STR_HEAD[n] + raw
                    remember = n <= _VALUE_MAX_LEN
                else:
                    vf = _field(b"\x12", b"\x0a" + _varint(n) + raw)
            elif t is int:
                if 0 <= value < 128:
                    vf = _VALUE_SMALL_INT[value]
                elif 0 < value < 0x4000:
                    vf = b"\x12\x03\x18" + bytes((value & 0x7F | 0x80, value >> 7))
                else:
                    iv = _int64(value)
                    vf = b"\x12" + V[len(iv) + 1] + b"\x18" + iv
                remember = True
            elif t is float:
                vf = _VALUE_DOUBLE + _pack_double(value)
            elif t is bool:
                vf = _VALUE_TRUE if value else _VALUE_FALSE
            elif value is None:
                vf = _VALUE_NONE
            elif t is tuple or t is list:
                strings = _str_array(value)
                vf = strings or _field(b"\x12", _any_value(value))
                remember = strings is not None and t is tuple and len(strings) <= _VALUE_MAX_LEN
            else:
                vf = _field(b"\x12", _any_value(value))
            size = len(kf) + len(vf)
            piece = tag + (V[size] if size < 128 else _varint(size)) + kf + vf
            if remember and entry[1] is not None:
                _remember_pair(pairs, entry, item, piece)
            append(piece)
        except Exception as error:  # noqa: BLE001 - one bad attribute must not lose the span
            _logger.warning("otlp: dropping attribute %r that cannot be encoded: %s", key, error)
    return out


# --------------------------------------------------------------------------- #
# Span
#
# Span = 1:trace_id 2:span_id 3:trace_state 4:parent_span_id 5:name 6:kind
#        7:start (fixed64) 8:end (fixed64) 9:attributes 10:dropped_attributes
#        11:events 12:dropped_events 13:links 14:dropped_links 15:status
#        16:flags (fixed32)
# Event = 1:time (fixed64) 2:name 3:attributes 4:dropped_attributes
# Link = 1:trace_id 2:span_id 3:trace_state 4:attributes 5:dropped 6:flags (fixed32)
# Status = 2:message 3:code
# --------------------------------------------------------------------------- #

_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_SPAN_FLAGS_LOCAL = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)
_SPAN_FLAGS_REMOTE = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
_LINK_FLAGS_LOCAL = b"\x35" + _pack_fixed32(_HAS_IS_REMOTE)
_LINK_FLAGS_REMOTE = b"\x35" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)

# opentelemetry.proto.trace.v1.Span.SpanKind: INTERNAL=1 SERVER=2 CLIENT=3 PRODUCER=4 CONSUMER=5
_KIND = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}

_KIND_BY_ID = {id(kind): field for kind, field in _KIND.items()}

# StatusCode: UNSET=0 OK=1 ERROR=2, the same numbers in the SDK and the proto
_STATUS_CODE_BY_ID = {id(code): code.value for code in StatusCode}
# the Span.status field without a message, by code
_STATUS_NO_MESSAGE = {0: b"\x7a\x00", 1: b"\x7a\x02\x18\x01", 2: b"\x7a\x02\x18\x02"}


# id(status) -> (status, its field) for message-less statuses, which spans share (Status is
# immutable); holding the object keeps the id from being reused
_STATUS_FIELDS: dict[int, tuple[Any, bytes]] = {}


def _status(status: Any) -> bytes:
    """The Span.status field (always written: the official encoder always sets it)."""
    status_code = status.status_code
    code = _STATUS_CODE_BY_ID.get(id(status_code))
    if code is None:
        code = status_code.value
    message = status.description
    if not message:
        field = _STATUS_NO_MESSAGE.get(code)
        if field is not None:
            if len(_STATUS_FIELDS) >= 64:
                _STATUS_FIELDS.clear()
            _STATUS_FIELDS[id(status)] = (status, field)
            return field
    body = _field(b"\x12", str.encode(message, "utf-8")) if message else b""
    if code:
        body += b"\x18" + _int64(code)
    return _field(b"\x7a", body)


def _trace_state(trace_state: Any) -> bytes:
    if not trace_state:  # None or empty: the official encoder's "" is a default
        return b""
    text = ",".join([f"{k}={v}" for k, v in trace_state.items()])
    return _field(b"\x1a", str.encode(text, "utf-8")) if text else b""


def _events(events: Any, out: list[bytes]) -> None:
    for event in events:
        parts = []
        ts = event.timestamp
        if ts:
            parts.append(b"\x09" + _pack_fixed64(ts))
        name = event.name
        if name:
            parts.append(_field(b"\x12", str.encode(name, "utf-8")))
        parts += _attributes(event.attributes, b"\x1a")
        dropped = event.dropped_attributes
        if dropped:
            parts.append(b"\x20" + _varint(dropped))
        out.append(_field(b"\x5a", b"".join(parts)))


def _links(links: Any, out: list[bytes]) -> None:
    for link in links:
        ctx = link.context
        parts = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08", ctx.span_id.to_bytes(8, "big")]
        parts += _attributes(link.attributes, b"\x22")
        dropped = link.dropped_attributes
        if dropped:
            parts.append(b"\x28" + _varint(dropped))
        parts.append(_LINK_FLAGS_REMOTE if ctx and ctx.is_remote else _LINK_FLAGS_LOCAL)
        out.append(_field(b"\x6a", b"".join(parts)))


# span classes whose private fields hold exactly what their properties return (the SDK's
# ReadableSpan, which SDK spans hand to processors, and the gateway's own spans)
_FIELD_TYPES = frozenset({ReadableSpan, GatewaySpan})

_NAMES: dict[str, bytes] = {}  # span name -> the Span.name field
_NAMES_MAX = 1024


def _name_field(name: str) -> bytes:
    field = _NAMES.get(name)
    if field is None:
        raw = str.encode(name, "utf-8")
        field = b"\x2a" + _varint(len(raw)) + raw
        if type(name) is str:
            if len(_NAMES) >= _NAMES_MAX:
                _NAMES.clear()
            _NAMES[name] = field
    return field


def _span(span: Any) -> bytes:
    """The ScopeSpans.spans field (tag, length, Span) for one span."""
    if type(span) in _FIELD_TYPES:
        # The SDK's own class or the gateway's: read its fields directly, skipping the copies its
        # properties make (the properties would return the same values).
        ctx = span._context
        parent = span._parent
        name = span._name
        kind = span._kind
        start, end = span._start_time, span._end_time
        attributes = span._attributes
        events = span._events
        links = span._links
        status = span._status
        # (isinstance against these ABC-based classes costs ~0.3 µs each: plain dicts and lists,
        # what a gateway span holds, are told apart by type first)
        dropped_attributes = (
            attributes.dropped if type(attributes) is not dict and isinstance(attributes, BoundedAttributes) else 0
        )
        dropped_events = events.dropped if type(events) is not list and isinstance(events, BoundedList) else 0
        dropped_links = links.dropped if type(links) is not list and isinstance(links, BoundedList) else 0
    else:
        ctx = span.get_span_context()
        parent = span.parent
        name = span.name
        kind = span.kind
        start, end = span.start_time, span.end_time
        attributes = span.attributes
        events = span.events
        links = span.links
        status = span.status
        dropped_attributes = span.dropped_attributes
        dropped_events = span.dropped_events
        dropped_links = span.dropped_links

    if type(ctx) is SpanContext and CONTEXT_IS_TUPLE:
        # its fields by position: the properties cost a Python call each
        trace_id, span_id, trace_state = ctx[0], ctx[1], ctx[4]
    else:
        trace_id, span_id, trace_state = ctx.trace_id, ctx.span_id, ctx.trace_state
    parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
    if trace_state is not _DEFAULT_TRACE_STATE and trace_state:
        parts.append(_trace_state(trace_state))
    remote_parent = False
    if parent:
        if type(parent) is SpanContext and CONTEXT_IS_TUPLE:
            parent_id, remote_parent = parent[1], parent[2]
        else:
            parent_id, remote_parent = parent.span_id, parent.is_remote
        parts.append(b"\x22\x08")
        parts.append(parent_id.to_bytes(8, "big"))
    if name:
        parts.append(_NAMES.get(name) or _name_field(name))
    parts.append(_KIND_BY_ID.get(id(kind)) or _KIND[kind])
    if start and end:
        parts.append(_pack_times(0x39, start, 0x41, end))
    else:
        if start:
            parts.append(b"\x39" + _pack_fixed64(start))
        if end:
            parts.append(b"\x41" + _pack_fixed64(end))
    if attributes:
        parts += _attributes(attributes, b"\x4a")
    if dropped_attributes:
        parts.append(b"\x50" + _varint(dropped_attributes))
    if events:
        _events(events, parts)
    if dropped_events:
        parts.append(b"\x60" + _varint(dropped_events))
    if links:
        _links(links, parts)
    if dropped_links:
        parts.append(b"\x70" + _varint(dropped_links))
    if status is not None:
        hit = _STATUS_FIELDS.get(id(status))
        parts.append(hit[1] if hit is not None and hit[0] is status else _status(status))
    parts.append(_SPAN_FLAGS_REMOTE if remote_parent else _SPAN_FLAGS_LOCAL)
    body = b"".join(parts)
    n = len(body)
    return (b"\x12" + _V[n] if n < 128 else b"\x12" + _varint(n)) + body


# --------------------------------------------------------------------------- #
# Resource and scope headers
#
# ExportTraceServiceRequest = 1:resource_spans
# ResourceSpans = 1:resource 2:scope_spans 3:schema_url
# ScopeSpans = 1:scope 2:spans 3:schema_url
# Resource = 1:attributes ;  InstrumentationScope = 1:name 2:version 3:attributes
# --------------------------------------------------------------------------- #

# id(obj) -> (obj, head, tail); holding obj keeps the id from being reused
_HEADER_CACHE: dict[int, tuple[Any, bytes, bytes]] = {}
_HEADER_CACHE_MAX = 256


def _resource_header(resource: Any) -> tuple[bytes, bytes]:
    hit = _HEADER_CACHE.get(id(resource))
    if hit is not None and hit[0] is resource:
        return hit[1], hit[2]
    head = _field(b"\x0a", b"".join(_attributes(resource.attributes, b"\x0a")))
    schema_url = resource.schema_url
    tail = _field(b"\x1a", str.encode(schema_url, "utf-8")) if schema_url else b""
    _remember(resource, head, tail)
    return head, tail


def _scope_header(scope: Any) -> tuple[bytes, bytes]:
    hit = _HEADER_CACHE.get(id(scope))
    if hit is not None and hit[0] is scope:
        return hit[1], hit[2]
    if scope is None:
        head, tail = b"\x0a\x00", b""
    else:
        parts = []
        if scope.name:
            parts.append(_field(b"\x0a", str.encode(scope.name, "utf-8")))
        if scope.version:
            parts.append(_field(b"\x12", str.encode(scope.version, "utf-8")))
        parts += _attributes(scope.attributes, b"\x1a")
        head = _field(b"\x0a", b"".join(parts))
        schema_url = scope.schema_url
        tail = _field(b"\x1a", str.encode(schema_url, "utf-8")) if schema_url else b""
    _remember(scope, head, tail)
    return head, tail


def _remember(obj: Any, head: bytes, tail: bytes) -> None:
    if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[id(obj)] = (obj, head, tail)


class _Group:
    """Spans sharing a resource (children: scope groups) or a scope (children: encoded spans)."""

    __slots__ = ("by_id", "by_value", "children", "key")

    def __init__(self, key: Any) -> None:
        self.key = key  # the first object of the batch with this value: what gets encoded
        self.children: list[Any] = []
        self.by_id: dict[int, _Group] = {}
        self.by_value: dict[Any, _Group] | None = None

    def child(self, key: Any) -> _Group:
        """The subgroup for ``key``: by identity first, then by equality (like a dict keyed by value)."""
        group = self.by_id.get(id(key))
        if group is not None:
            return group
        if self.children:
            # a second distinct object: only now pay for hashing, as the official encoder's dict does
            if self.by_value is None:
                self.by_value = {g.key: g for g in self.children}
            group = self.by_value.get(key)
        if group is None:
            group = _Group(key)
            self.children.append(group)
            if self.by_value is not None:
                self.by_value[key] = group
        self.by_id[id(key)] = group
        return group


_MISSING = object()


def encode_span(span: ReadableSpan) -> tuple[Any, Any, bytes]:
    """``(resource, scope, encoded span)``: one span encoded on its own, for :func:`assemble` later.

    Lets a span processor encode each span when it ends (a few microseconds,
    on the thread that ended it) and keep only bytes until the batch is sent.
    """
    if type(span) in _FIELD_TYPES:
        return span._resource, span._instrumentation_scope or None, _span(span)
    return span.resource, span.instrumentation_scope or None, _span(span)


def assemble(items: Iterable[tuple[Any, Any, bytes]]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` for spans already encoded by :func:`encode_span`."""
    if type(items) is list and items:
        # the usual batch: every span from the same resource and scope (the gateway's own)
        resource, scope, _ = items[0]
        resources, scopes, spans = zip(*items, strict=True)
        if resources.count(resource) == len(items) and scopes.count(scope) == len(items):
            resource_head, resource_tail = _resource_header(resource)
            scope_head, scope_tail = _scope_header(scope)
            body = b"".join([scope_head, *spans, scope_tail])
            body = b"".join([resource_head, b"\x12", _varint(len(body)), body, resource_tail])
            return b"\x0a" + _varint(len(body)) + body
    root = _Group(None)
    scope_group: _Group | None = None
    last_resource: Any = _MISSING
    last_scope: Any = _MISSING
    for resource, scope, data in items:
        if resource is not last_resource or scope is not last_scope or scope_group is None:
            scope_group = root.child(resource).child(scope)
            last_resource, last_scope = resource, scope
        scope_group.children.append(data)

    out = []
    for resource_group in root.children:
        resource_head, resource_tail = _resource_header(resource_group.key)
        scope_spans = []
        for group in resource_group.children:
            scope_head, scope_tail = _scope_header(group.key)
            body = b"".join([scope_head, *group.children, scope_tail])
            scope_spans.append(b"\x12" + _varint(len(body)) + body)
        body = b"".join([resource_head, *scope_spans, resource_tail])
        out.append(b"\x0a" + _varint(len(body)) + body)
    return b"".join(out)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` for ``spans`` (see the module docstring)."""
    return assemble([encode_span(span) for span in spans])
