r"""Compact, key-order-stable JSON line encoding for the hot paths (request files, result rows).

msgspec is used when importable (it ships with Airflow and is several times faster than the
stdlib). The stdlib fallback is configured like msgspec and like the providers' SDKs, which send
compact JSON: no spaces, UTF-8 without ``\uXXXX`` escaping, dict insertion order kept. The two
differ only in float exponent spelling (``1e16`` vs ``1e+16``) and in NaN handling.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


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
