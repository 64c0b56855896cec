from __future__ import annotations

import json
import random

import pytest

from airflow_provider_tokentier.core.chunking import (
    ANTHROPIC_CAPS,
    ANTHROPIC_FRAMING,
    OPENAI_CAPS,
    OPENAI_FRAMING,
    Chunker,
    ChunkStats,
    Framing,
    ProviderCaps,
    estimate_tokens,
    provider_caps,
)
from airflow_provider_tokentier.core.requests import RequestValidationError


def split(chunker: Chunker, items: list[tuple[str, bytes, int]]) -> list[list[bytes]]:
    """Drive a chunker the way a caller writing files would; return the lines of each chunk."""
    chunks: list[list[bytes]] = []
    for custom_id, line, inputs in items:
        if chunker.add(custom_id, line, inputs):
            chunks.append([])
        chunks[-1].append(line)
    return chunks


def lines(count: int, size: int) -> list[tuple[str, bytes, int]]:
    return [(f"r{i}", b"x" * size, 0) for i in range(count)]


def test_default_caps():
    assert (ANTHROPIC_CAPS.max_requests, ANTHROPIC_CAPS.max_bytes) == (100_000, 256 * 1024 * 1024)
    assert ANTHROPIC_CAPS.max_embedding_inputs is None
    assert (OPENAI_CAPS.max_requests, OPENAI_CAPS.max_bytes) == (50_000, 200 * 1024 * 1024)
    assert OPENAI_CAPS.max_embedding_inputs == 50_000
    assert provider_caps("openai", max_requests=3) == ProviderCaps(3, 200 * 1024 * 1024, 50_000)
    with pytest.raises(ValueError, match="unknown provider 'cohere'"):
        provider_caps("cohere")
    with pytest.raises(ValueError, match="caps must be positive"):
        ProviderCaps(0, 10)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_chunks_by_request_count_exactly(provider):
    chunker = Chunker.for_provider(provider, max_requests=4)
    chunks = split(chunker, lines(10, 10))
    assert [len(chunk) for chunk in chunks] == [4, 4, 2]
    stats = chunker.chunks()
    assert [(s.index, s.requests, s.first_custom_id, s.last_custom_id) for s in stats] == [
        (0, 4, "r0", "r3"),
        (1, 4, "r4", "r7"),
        (2, 2, "r8", "r9"),
    ]


def test_first_line_always_opens_a_chunk():
    chunker = Chunker.for_provider("anthropic")
    assert chunker.chunks() == ()
    assert chunker.add("a", b"{}") is True
    assert chunker.add("b", b"{}") is False


def test_anthropic_envelope_math_is_exact():
    # Two 10-byte items: {"requests":[ (13) + 10 + "," + 10 + ]} (2) = 36 bytes.
    assert ANTHROPIC_FRAMING.size(2, 20) == 36 == len(ANTHROPIC_FRAMING.assemble([b"x" * 10] * 2))
    chunker = Chunker.for_provider("anthropic", max_bytes=36, safety_margin=1.0)
    assert [len(chunk) for chunk in split(chunker, lines(5, 10))] == [2, 2, 1]
    chunker = Chunker.for_provider("anthropic", max_bytes=35, safety_margin=1.0)
    assert [len(chunk) for chunk in split(chunker, lines(3, 10))] == [1, 1, 1]


def test_openai_file_math_counts_newlines():
    assert OPENAI_FRAMING.assemble([b"ab", b"c"]) == b"ab\nc\n"
    assert OPENAI_FRAMING.size(2, 3) == 5
    chunker = Chunker.for_provider("openai", max_bytes=22, safety_margin=1.0)
    assert [len(chunk) for chunk in split(chunker, lines(5, 10))] == [2, 2, 1]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("margin", [1.0, 0.95, 0.5])
def test_assembled_chunks_stay_under_the_byte_budget(provider, margin):
    rng = random.Random(11)
    items = []
    for i in range(400):
        body = {"custom_id": f"r{i}", "params": {"text": "y" * rng.randrange(0, 300)}}
        items.append((f"r{i}", json.dumps(body, separators=(",", ":")).encode(), 0))
    chunker = Chunker.for_provider(provider, max_bytes=5000, safety_margin=margin)
    chunks = split(chunker, items)
    framing = chunker.framing
    stats = chunker.chunks()
    assert len(chunks) == len(stats) > 1
    assert sum(len(chunk) for chunk in chunks) == 400
    for chunk, stat, following in zip(chunks, stats, [*chunks[1:], None], strict=True):
        assembled = framing.assemble(chunk)
        assert len(assembled) == stat.bytes <= chunker.byte_budget == int(5000 * margin)
        if provider == "anthropic":
            requests = json.loads(assembled)["requests"]
            assert (requests[0]["custom_id"], requests[-1]["custom_id"]) == (
                stat.first_custom_id,
                stat.last_custom_id,
            )
        # Chunks are closed only when the next line would not fit.
        if following is not None:
            assert len(framing.assemble([*chunk, following[0]])) > chunker.byte_budget


def test_chunks_by_embedding_inputs():
    chunker = Chunker.for_provider("openai", max_embedding_inputs=100)
    items = [(f"e{i}", b"{}", inputs) for i, inputs in enumerate([60, 40, 1, 99, 50, 50, 100])]
    chunks = split(chunker, items)
    assert [len(chunk) for chunk in chunks] == [2, 2, 2, 1]
    assert [stat.embedding_inputs for stat in chunker.chunks()] == [100, 100, 100, 100]


def test_anthropic_has_no_embedding_cap():
    chunker = Chunker.for_provider("anthropic")
    assert len(split(chunker, [(f"e{i}", b"{}", 10**6) for i in range(3)])) == 1


def test_oversize_single_line_names_the_row():
    chunker = Chunker.for_provider("anthropic", max_bytes=100, safety_margin=1.0)
    chunker.add("ok-0", b"x" * 85)  # 85 + 15 envelope bytes = exactly the cap
    with pytest.raises(RequestValidationError) as excinfo:
        chunker.add("big-1", b"x" * 86)
    assert (excinfo.value.index, excinfo.value.custom_id) == (1, "big-1")
    assert str(excinfo.value).startswith("request #1 (custom_id='big-1'): serialized request is 86 bytes")


def test_too_many_embedding_inputs_in_one_line():
    chunker = Chunker.for_provider("openai", max_embedding_inputs=10)
    with pytest.raises(RequestValidationError, match="11 embedding inputs"):
        chunker.add("e0", b"{}", 11)


def test_chunk_stats_bytes_match_framing():
    chunker = Chunker.for_provider("openai")
    split(chunker, lines(3, 7))
    assert chunker.chunks() == (ChunkStats(0, 3, 24, 0, "r0", "r2"),)


@pytest.mark.parametrize("margin", [0, -0.1, 1.01])
def test_invalid_safety_margin(margin):
    with pytest.raises(ValueError, match="safety_margin must be in"):
        Chunker(ANTHROPIC_CAPS, ANTHROPIC_FRAMING, margin)


def test_framing_of_empty_chunk():
    assert Framing(b"[", b",", b"", b"]").size(0, 0) == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", 0), ("abcd", 1), ("abcde", 2), (b"12345678", 2), ({"a": "bcd"}, 3), (["x"] * 10, 11)],
)
def test_estimate_tokens(value, expected):
    assert estimate_tokens(value) == expected
