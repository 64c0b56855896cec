"""Task-scoped custom_ids on the wire, so a batch can be tied to the task that sent it.

Anthropic Message Batches carry no metadata: after a lost submission the only way to find the
batch again is its creation time and size, which another task's batch can match too. So each
request goes out with a custom_id that names its task, chunk and workload: ``{scope}-{custom_id}``
where the user's id fits the 64-character limit, else ``{scope}_{line}`` (the request's 0-based
line in its chunk file). ``scope`` is ``t`` + 10 hex digits of a hash of the task key, the
workload fingerprint and the chunk, so a result line from any other batch is recognisably
foreign, and the user's own id is recovered from the wire id (or the chunk file) when landing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

#: Characters of a scope: ``t`` and 10 hex digits (40 bits: accidental matches are negligible).
SCOPE_LENGTH = 11
#: The provider's custom_id limit.
MAX_CUSTOM_ID = 64
#: The longest user id sent verbatim after ``{scope}-``; longer ids go by line number.
MAX_VERBATIM_ID = MAX_CUSTOM_ID - SCOPE_LENGTH - 1

_SCOPE = re.compile(r"^t[0-9a-f]{10}$")
#: The head of a canonical request line (what tokentier writes): the custom_id comes first.
_LINE_HEAD = b'{"custom_id":"'


def id_scope(parts: Iterable[str]) -> str:
    """The scope for one chunk of one task's workload: ``t`` + 10 hex digits of their hash."""
    digest = hashlib.blake2b(digest_size=5)
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return "t" + digest.hexdigest()


def is_scope(value: object) -> bool:
    """True for a string shaped like :func:`id_scope` output."""
    return isinstance(value, str) and bool(_SCOPE.match(value))


def to_wire(scope: str, custom_id: str, line: int) -> str:
    """The custom_id sent for the user's ``custom_id`` on ``line`` of its chunk file."""
    if len(custom_id) <= MAX_VERBATIM_ID:
        return f"{scope}-{custom_id}"
    return f"{scope}_{line}"


def from_wire(scope: str, wire_id: str) -> str | int | None:
    """What a result's custom_id says: the user's id (str), a chunk line (int), or None if foreign.

    None means the id was not sent under ``scope``: the line belongs to another batch.
    """
    if len(wire_id) <= SCOPE_LENGTH + 1 or not wire_id.startswith(scope):
        return None
    marker, rest = wire_id[SCOPE_LENGTH], wire_id[SCOPE_LENGTH + 1 :]
    if marker == "-":
        return rest
    if marker == "_" and rest.isdigit() and rest == str(int(rest)):
        return int(rest)
    return None


def rewrite_line(line: bytes, scope: str, index: int) -> bytes:
    """Replace the custom_id of one canonical request line with its wire id.

    Canonical lines (``serialize_request`` output) start with ``{"custom_id":"<id>",``; any
    other line is refused rather than guessed at.
    """
    if not line.startswith(_LINE_HEAD):
        raise ValueError(f"request line {index} does not start with its custom_id: {line[:80]!r}")
    end = line.find(b'"', len(_LINE_HEAD))
    if end < 0:
        raise ValueError(f"request line {index} has an unterminated custom_id: {line[:80]!r}")
    custom_id = line[len(_LINE_HEAD) : end].decode("ascii")
    wire = to_wire(scope, custom_id, index).encode("ascii")
    return _LINE_HEAD + wire + line[end:]
