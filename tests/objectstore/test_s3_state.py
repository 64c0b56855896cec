"""State on a real S3 API server (moto_server): the ``s3://<conn_id>@bucket/prefix`` form works,
and a read always sees every write before it, whoever made it."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_tokentier.state.ledger import Ledger, storage_path


def _bucket_and_key(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1].split("@", 1)[-1]
    bucket, _, key = rest.partition("/")
    return bucket, key


@pytest.mark.parametrize("with_conn_id", [True, False], ids=["conn-in-uri", "default-credentials"])
def test_what_open_writes_exists_and_lists_at_once(s3_root: str, with_conn_id: bool) -> None:
    root = storage_path(s3_root if with_conn_id else s3_root.replace("tt_s3@", ""))
    directory = root / "dag" / "run" / "task" / "-1" / "ledger"
    assert not directory.exists()  # a listing the filesystem could cache
    (directory / "a.json").write_text("{}")
    assert [p.name for p in directory.iterdir()] == ["a.json"]  # a listing that could be cached
    with (directory / "b.json").open("wb") as handle:
        handle.write(b"{}")
    assert (directory / "b.json").exists()
    assert sorted(p.name for p in directory.iterdir()) == ["a.json", "b.json"]


def test_a_write_by_another_machine_is_seen_after_a_listing(s3_root: str, moto_s3: Any) -> None:
    ledger = Ledger(storage_path(s3_root) / "dag" / "run" / "submit" / "-1")
    ledger.record_intent(0, 0, {"at": 1})
    assert list(ledger.names("submitted-")) == []  # this process has now listed the ledger
    # Another worker records the batch id (a different client, as on another machine).
    bucket, key = _bucket_and_key(str(ledger.dir))
    moto_s3.client().put_object(Bucket=bucket, Key=f"{key}/submitted-r00-c00000.json", Body=b'{"id": "b1"}')
    assert ledger.submitted(0, 0) == {"id": "b1"}
    assert list(ledger.names("submitted-")) == ["submitted-r00-c00000"]
    assert [b["id"] for b in ledger.batches()] == ["b1"]


def test_conn_id_in_the_uri_reaches_the_bucket_through_the_amazon_provider(
    s3_root: str, moto_s3: Any
) -> None:
    path = storage_path(s3_root) / "hello.txt"
    assert path.conn_id == "tt_s3"
    path.write_text("hi")
    bucket, key = _bucket_and_key(s3_root)
    assert moto_s3.keys(bucket) == [f"{key}/hello.txt"]
    assert path.read_text() == "hi"
