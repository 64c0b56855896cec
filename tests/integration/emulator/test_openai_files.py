"""OpenAI Files endpoints of the emulator, through the official SDK over real HTTP."""

from __future__ import annotations

import io

import openai
import pytest
from openai.types import FileDeleted, FileObject

try:
    from ._openai_helpers import client, upload
except ImportError:
    from _openai_helpers import client, upload  # type: ignore[no-redef,unused-ignore]

DAY = 24 * 3600


def test_upload_retrieve_content_delete(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    data = b'{"a": 1}\n' * 1000
    f = upload(c, data, name="mine.jsonl")
    assert f.id.startswith("file-")
    assert f.object == "file"
    assert f.bytes == len(data)
    assert f.filename == "mine.jsonl"
    assert f.purpose == "batch"
    assert f.status == "processed"
    assert f.expires_at == f.created_at + 30 * DAY
    got = FileObject.model_validate(c.files.retrieve(f.id).model_dump(mode="json"))
    assert got == f
    assert c.files.content(f.id).content == data
    deleted = FileDeleted.model_validate(c.files.delete(f.id).model_dump(mode="json"))
    assert deleted.deleted
    assert deleted.id == f.id
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        c.files.content(f.id)


def test_list_files_pages(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    ids = [upload(c, b"{}\n", name=f"f{i}.jsonl").id for i in range(5)]
    page = c.files.list(limit=2)
    assert [f.id for f in page.data] == ids[::-1][:2]
    assert [f.id for f in c.files.list(limit=2)] == ids[::-1]
    assert [f.id for f in c.files.list(order="asc")] == ids
    assert list(c.files.list(purpose="batch_output")) == []


def test_file_expiry_default_and_custom(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    default = upload(c, b"{}\n")
    short = upload(c, b"{}\n", expires_after={"anchor": "created_at", "seconds": 3600})
    assert short.expires_at == short.created_at + 3600
    tokentier_emulator.advance(3601)
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(short.id)
    assert c.files.retrieve(default.id).id == default.id
    tokentier_emulator.advance(30 * DAY)
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(default.id)
    with pytest.raises(openai.BadRequestError):
        upload(c, b"{}\n", expires_after={"anchor": "created_at", "seconds": 60})


def test_upload_validation(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    with pytest.raises(openai.BadRequestError, match="purpose"):
        c.files.create(file=("x.jsonl", io.BytesIO(b"{}")), purpose="nonsense")  # type: ignore[arg-type]
    other = c.files.create(file=("x.txt", io.BytesIO(b"hi")), purpose="user_data")
    assert other.expires_at is None


def test_content_poll_errors(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    f = upload(c, b"{}\n")
    tokentier_emulator.configure(poll_error_rate=1.0)
    for _ in range(5):
        with pytest.raises(openai.InternalServerError) as info:
            c.files.content(f.id)
        assert info.value.status_code in (500, 502, 503)
    tokentier_emulator.configure(poll_error_rate=0.0)
    assert c.files.content(f.id).content == b"{}\n"
