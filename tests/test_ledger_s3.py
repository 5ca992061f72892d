"""The migration ledger and ``verify --listing`` on S3 (moto's server, and the fault proxy).

What S3 holds is read back here with a boto3 client of our own; MD5s are computed here."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from migrate.example.fixture import ImageSpec, write_dataset
from tests.helpers import run_cli
from tests.s3server import MotoServer, TcpProxy, keys, s3_client, upload_tree

SPEC = ImageSpec(
    path="em/fibsem-uint16",
    shape=(40, 48, 56),
    block_size=(16, 16, 16),
    levels=2,
    content="sparse",
    seed=7,
)
DATASET = "jrc_lists3-1"
N5 = f"{DATASET}/{DATASET}.n5"
ZARR = f"{DATASET}/{DATASET}.zarr"
METADATA = (".zarray", ".zattrs", ".zgroup", "zarr.json")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ledger-s3")
    write_dataset(root, DATASET, [SPEC])
    return root


def new_bucket(client: Any) -> str:
    name = f"ledger-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return name


def ledger_of(client: Any, bucket: str) -> dict[str, Any]:
    """The image's ledger read here: chunk key → (size, ETag), block key → (size, ETag)."""
    base = f"{ZARR}/.cellmap-migrate/ledger/{SPEC.path}"
    manifest = json.loads(
        client.get_object(Bucket=bucket, Key=f"{base}/ledger.json")["Body"].read()
    )
    chunks: dict[str, tuple[int, str]] = {}
    blocks: dict[str, tuple[int, str]] = {}
    for level, account in manifest["levels"].items():
        for name in account["parts"]:
            raw = client.get_object(Bucket=bucket, Key=f"{base}/{level}/{name}")["Body"].read()
            for text in gzip.decompress(raw).decode().splitlines():
                line = json.loads(text)
                for key, size, stamp, digest in line["chunks"]:
                    assert digest == ""  # on S3 the ETag is the digest
                    chunks[f"{level}/{key}"] = (size, stamp)
                for key, size, stamp in line["source"]:
                    blocks[f"{level}/{key}"] = (size, stamp)
    return {"manifest": manifest, "chunks": chunks, "blocks": blocks}


def objects_under(client: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    return {item["Key"][len(prefix) + 1 :]: item for item in keys(client, bucket, prefix + "/")}


@pytest.mark.parametrize("options", [(), ("--no-transplant",)], ids=["moved", "tensorstore"])
def test_s3_ledger_holds_the_md5_etag_of_every_chunk_put(
    aws: MotoServer, dataset: Path, options: tuple[str, ...]
) -> None:
    """S3 to S3: every chunk at DEST is in the ledger with its size and the ETag of its
    single-part PUT, which is the MD5 of its bytes (computed here from a download); every
    source block with the size and ETag a listing of SRC shows."""
    client = s3_client(aws.url)
    bucket = new_bucket(client)
    upload_tree(client, dataset, bucket, "")
    run = run_cli("convert", f"s3://{bucket}/{N5}", *options)
    assert run.exit_code == 0, run.stderr
    found = ledger_of(client, bucket)
    assert found["manifest"]["stamp"] == "etag"
    assert found["manifest"]["digest"] is None
    stored = {
        key: item
        for key, item in objects_under(client, bucket, f"{ZARR}/{SPEC.path}").items()
        if "/" in key and key.rsplit("/", 1)[1] not in METADATA
    }
    assert stored
    assert set(found["chunks"]) == set(stored)
    for key, item in stored.items():
        body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        md5 = f'"{hashlib.md5(body).hexdigest()}"'
        assert found["chunks"][key] == (len(body), md5), key
        assert item["ETag"] == md5  # single part: the ETag is the MD5
    sources = {
        key: item
        for key, item in objects_under(client, bucket, f"{N5}/{SPEC.path}").items()
        if "/" in key and not key.endswith("attributes.json")
    }
    assert {k: (v["Size"], v["ETag"]) for k, v in sources.items()} == found["blocks"]


@pytest.fixture
def proven_s3(aws: MotoServer, dataset: Path) -> tuple[Any, str, str, str]:
    """A local SRC converted to an S3 DEST and fully verified: (client, bucket, src, dest)."""
    client = s3_client(aws.url)
    bucket = new_bucket(client)
    src = str(dataset / N5)
    dest = f"s3://{bucket}/{ZARR}"
    assert run_cli("convert", src, dest).exit_code == 0
    verified = run_cli("verify", src, dest)
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    return client, bucket, src, dest


def test_s3_listing_names_each_change_at_dest(proven_s3: tuple[Any, str, str, str]) -> None:
    client, bucket, src, dest = proven_s3
    proven = run_cli("verify", "--listing", src, dest)
    assert proven.exit_code == 0, proven.stdout
    chunks = sorted(
        key
        for key in objects_under(client, bucket, f"{ZARR}/{SPEC.path}")
        if key.startswith("s0/") and key.rsplit("/", 1)[1] not in METADATA
    )
    first = f"{ZARR}/{SPEC.path}/{chunks[0]}"
    original = client.get_object(Bucket=bucket, Key=first)["Body"].read()

    def named(words: str, key: str) -> None:
        run = run_cli("verify", "--listing", src, dest)
        assert run.exit_code == 1, run.stdout
        lines = [x for x in run.stdout.splitlines() if x.startswith("MISMATCH ") and key in x]
        assert lines, run.stdout
        assert words in lines[0], lines

    # the same size, other bytes: the ETag a listing shows differs
    changed = bytes([original[0] ^ 0xFF]) + original[1:]
    client.put_object(Bucket=bucket, Key=first, Body=changed)
    named("changed since it was written", f"s3://{bucket}/{first}")
    client.put_object(Bucket=bucket, Key=first, Body=original)  # the same bytes: same ETag
    assert run_cli("verify", "--listing", src, dest).exit_code == 0
    client.delete_object(Bucket=bucket, Key=first)
    named("missing at DEST", f"s3://{bucket}/{first}")
    client.put_object(Bucket=bucket, Key=first, Body=original)
    present = set(chunks)
    extra = next(
        f"s0/{z}/{y}/{x}"
        for z in range(3)
        for y in range(3)
        for x in range(4)
        if f"s0/{z}/{y}/{x}" not in present
    )
    added = f"{ZARR}/{SPEC.path}/{extra}"
    client.put_object(Bucket=bucket, Key=added, Body=original)
    named("not in the ledger", f"s3://{bucket}/{added}")
    client.delete_object(Bucket=bucket, Key=added)
    assert run_cli("verify", "--listing", src, dest).exit_code == 0


def test_s3_listing_reads_no_chunk_and_lists_once(
    aws: MotoServer, proven_s3: tuple[Any, str, str, str]
) -> None:
    """Every request ``verify --listing`` sends to DEST, seen by a proxy: listings, and GETs
    of metadata, ledger and certificate only; the level's objects listed once."""
    _client, bucket, src, dest = proven_s3
    proxy = TcpProxy(aws.port, record=True)
    try:
        run = run_cli("verify", "--listing", src, dest, "--endpoint-url", proxy.url)
    finally:
        proxy.cut()
    assert run.exit_code == 0, run.stdout + run.stderr
    gets = [path for method, path in proxy.requests if method == "GET" and "list-type" not in path]
    allowed = (*METADATA, "ledger.json", ".jsonl.gz", "certificate.json")
    assert gets
    root = f"/{bucket}/{ZARR}"  # is DEST a file? (one GET of its own location)
    chunky = [p for p in gets if not p.split("?")[0].endswith(allowed) and p.split("?")[0] != root]
    assert chunky == []
    assert not [m for m, _ in proxy.requests if m not in ("GET", "HEAD")]
    lists = [path for method, path in proxy.requests if "list-type" in path]
    full = [path for path in lists if "delimiter" not in path and "max-keys" not in path]
    # every object is listed once: no prefix is listed whole twice, and none of them holds
    # another (the folders above are listed with a delimiter, one request each)
    prefixes = sorted(path.split("prefix=")[1].split("&")[0] for path in full)
    assert len(prefixes) == len(set(prefixes)), prefixes
    for a in prefixes:
        assert not [b for b in prefixes if b != a and b.startswith(a)], prefixes
    # about one request per 1,000 objects: an image this small (a few dozen chunks) is not
    # split into folders: the image is listed whole in one request, and its ledger folder
    assert len(full) == 2, "\n".join(full)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_s3_listing_through_faults_is_never_falsely_proven(
    aws: MotoServer, proven_s3: tuple[Any, str, str, str], seed: int
) -> None:
    """Through a proxy that throttles (503) and cuts responses mid-body: a proven DEST is
    proven or one error line; a changed one is never proven."""
    client, bucket, src, dest = proven_s3
    proxy = TcpProxy(aws.port, truncate=0.1, errors=0.1, seed=seed)
    try:
        honest = run_cli("verify", "--listing", src, dest, "--endpoint-url", proxy.url)
        if honest.exit_code != 0:
            assert len(honest.stderr.strip().splitlines()) == 1, honest.stderr
            assert honest.stderr.startswith("error: ")
        else:
            assert honest.stdout.splitlines()[-1].endswith(": OK")
        chunk = next(
            item["Key"]
            for item in keys(client, bucket, f"{ZARR}/{SPEC.path}/s0/")
            if not item["Key"].endswith(METADATA)
        )
        body = client.get_object(Bucket=bucket, Key=chunk)["Body"].read()
        client.put_object(Bucket=bucket, Key=chunk, Body=bytes([body[0] ^ 1]) + body[1:])
        changed = run_cli("verify", "--listing", src, dest, "--endpoint-url", proxy.url)
        assert changed.exit_code == 1, changed.stdout
        assert "proven by listing (no chunk read)" not in changed.stdout
        assert ": OK" not in changed.stdout
        assert "Traceback" not in changed.stderr
    finally:
        proxy.cut()
    assert proxy.failed + sum(proxy.truncated.values()) > 0, "no fault was injected"
