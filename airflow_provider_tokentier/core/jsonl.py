r"""Compact, key-order-stable JSON line encoding for the hot paths (request files, result rows).

msgspec is used when importable (it ships with Airflow and is several times faster than the
stdlib). The stdlib fallback is configured like msgspec and like the providers' SDKs, which send
compact JSON: no spaces, UTF-8 without ``\uXXXX`` escaping, dict insertion order kept. The two
differ only in float exponent spelling (``1e16`` vs ``1e+16``) and in NaN handling.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from airflow_provider_tokentier.core.errors import JsonlFileError


def _stdlib_encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _stdlib_decode(data: bytes | str) -> Any:
    return json.loads(data)


_encode: Callable[[Any], bytes]
_decode: Callable[[bytes | str], Any]
try:
    import msgspec
except ImportError:  # pragma: no cover - msgspec is installed wherever Airflow is
    _encode = _stdlib_encode
    _decode = _stdlib_decode
else:
    _encode = msgspec.json.encode
    _decode = msgspec.json.decode


def dumps_line(obj: Any) -> bytes:
    """Encode ``obj`` as one compact JSON document, UTF-8, WITHOUT a trailing newline.

    Key order follows dict insertion order, so equal inputs built the same way give equal bytes.
    """
    return _encode(obj)


def loads_line(data: bytes | str) -> dict[str, Any]:
    """Decode one JSON line (a trailing newline is allowed) that must hold a JSON object.

    Raises ``ValueError`` for invalid JSON or a JSON value that is not an object.
    """
    # Both msgspec.DecodeError and json.JSONDecodeError are ValueErrors already.
    value = _decode(data)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


#: The UTF-8 encoding of U+FEFF, which Windows tools put at the start of "UTF-8" files.
UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SURROGATE_ESCAPE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})|"
    rb"(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_NON_FINITE_LITERAL = re.compile(rb"(?<![\w\"])-?(?:NaN|Infinity)(?![\w\"])")


def iter_jsonl_objects(blocks: Iterable[bytes], *, source: str) -> Iterator[dict[str, Any]]:
    """Decode a JSONL byte stream (given in blocks of any size) into one dict per non-blank line.

    A UTF-8 byte-order mark at the very start is accepted and dropped (Windows tools write
    one). Anything else that is not one JSON object per line raises :class:`JsonlFileError`
    naming ``source`` and the line, and saying what is wrong: bytes that are not UTF-8, a
    UTF-16 file, a byte-order mark past line 1, a JSON array or a pretty-printed object instead
    of JSONL, a line holding an array, string or number, ``NaN``/``Infinity``, a lone
    surrogate escape, or a last line cut off mid-object.
    """
    for line in iter_jsonl_lines(blocks):
        yield decode_jsonl_line(line, source=source)


class JsonlLine(NamedTuple):
    """One non-blank line of a JSONL stream, as its raw bytes (no newline)."""

    #: 1-based line number in the stream, blank lines counted.
    number: int
    data: bytes
    #: The last line, with no newline after it (it may have been cut off).
    last_unterminated: bool


def iter_jsonl_lines(blocks: Iterable[bytes]) -> Iterator[JsonlLine]:
    """The non-blank lines of a JSONL byte stream given in blocks of any size, undecoded."""
    line_number = 0
    tail = b""
    for block in blocks:
        lines = block.split(b"\n")
        if tail:  # the line cut at the end of the previous block (cheaper than joining the blocks)
            lines[0] = tail + lines[0]
        tail = lines.pop()
        for line in lines:
            line_number += 1
            if line and not line.isspace():
                yield JsonlLine(line_number, line, False)
    if tail and not tail.isspace():
        yield JsonlLine(line_number + 1, tail, True)


def decode_jsonl_line(line: JsonlLine, *, source: str) -> dict[str, Any]:
    """Decode one line of :func:`iter_jsonl_lines` as :func:`iter_jsonl_objects` does (same errors)."""
    return _decode_object(line.data, line.number, source, cut_off=line.last_unterminated)


def _decode_object(line: bytes, number: int, source: str, *, cut_off: bool) -> dict[str, Any]:
    if number == 1 and line.startswith(UTF8_BOM):
        line = line[len(UTF8_BOM) :]
    try:
        value = _decode(line)
    except ValueError as exc:  # msgspec.DecodeError, json.JSONDecodeError, UnicodeDecodeError
        raise JsonlFileError(source, number, _why_undecodable(line, number, cut_off, exc)) from None
    if isinstance(value, dict):
        return value
    if number == 1 and isinstance(value, list):
        raise JsonlFileError(source, number, _ARRAY_NOT_JSONL)
    kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
    raise JsonlFileError(
        source, number, f"expected a JSON object, got {kind}; write one request object per line"
    )


_ARRAY_NOT_JSONL = (
    "the file holds a JSON array, not JSONL; write one request object per line, without the "
    "enclosing [ ] and the commas between objects"
)


def _why_undecodable(line: bytes, number: int, cut_off: bool, exc: ValueError) -> str:
    """Name the reason a line failed to decode, most specific first."""
    if line.startswith(_UTF16_BOMS):
        return "the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8"
    if line.startswith(UTF8_BOM):
        return (
            "the line starts with a UTF-8 byte-order mark, allowed only at the start of the file "
            "(were files concatenated?)"
        )
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return (
            f"not valid UTF-8: byte 0x{line[bad.start]:02x} at column {bad.start + 1}; save the file as UTF-8"
        )
    surrogate = _SURROGATE_ESCAPE.search(line)
    if surrogate is not None:
        return (
            f"lone surrogate escape {surrogate.group().decode()} at column {surrogate.start() + 1}: "
            "half of a UTF-16 pair is not valid Unicode text; fix what produced it"
        )
    if _NON_FINITE_LITERAL.search(line):
        return "NaN or Infinity is not valid JSON (a request must hold finite numbers)"
    stripped = line.strip()
    if number == 1 and stripped.startswith(b"["):
        return _ARRAY_NOT_JSONL
    if cut_off and "truncated" in str(exc):
        return "the last line ends mid-object with no newline after it: the file looks truncated"
    if stripped in (b"{", b"}", b"},", b"]") or "truncated" in str(exc):
        return f"not a complete JSON object ({exc}); JSONL needs each request on one line"
    return f"not valid JSON ({exc})"
