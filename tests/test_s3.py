"""S3 everywhere, against a real local S3 server (moto's standalone server over HTTP).

SRC and DEST in any mix of s3:// and local paths; the source bucket is never modified; dry
runs write nothing; resume after SIGKILL; connections cut mid-run; anonymous access to public
buckets; no secret in any output or written object.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from migrate.api import _normalize, default_dest
from migrate.cli import cli
from migrate.errors import StoreError
from migrate.example.fixture import ImageSpec, example_images, write_dataset
from migrate.storage import S3Options, S3Store, open_store, resolve_s3, retries
from tests.helpers import end, freeze_when, kill_frozen, start_cli, thaw
from tests.n5_reader import read_n5_array
from tests.s3server import (
    REGION,
    SECRETS,
    MotoServer,
    TcpProxy,
    download_prefix,
    free_port,
    keys,
    s3_client,
    snapshot,
    upload_tree,
)

REPO = Path(__file__).resolve().parents[1]
DATASET = "jrc_s3-1"
N5 = f"{DATASET}/{DATASET}.n5"
ZARR = f"{DATASET}/{DATASET}.zarr"
ABSL_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d", re.MULTILINE)
"""A line logged by TensorStore's C++ side (absl format), e.g. AWS config-file complaints."""


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture
def client(aws: MotoServer) -> Any:
    return s3_client(aws.url)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Cellmap dataset directory (``<root>/jrc_s3-1/``): an EM image with truncated
    edge blocks and a uint64 label image (so the labels listing is exercised too)."""
    root = tmp_path_factory.mktemp("s3-data")
    wanted = {"em/fibsem-uint16", "labels/mito_seg"}
    write_dataset(root, DATASET, [s for s in example_images("tiny") if s.path in wanted])
    return root


def new_bucket(client: Any, kind: str) -> str:
    name = f"{kind}-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def source_bucket(client: Any, dataset: Path) -> str:
    """A bucket holding the dataset (``<dataset>/thumbnail.jpg`` and ``<dataset>/<dataset>.n5``)."""
    bucket = new_bucket(client, "src")
    upload_tree(client, dataset, bucket, "")
    return bucket


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def cli_run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def subprocess_run(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "migrate", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def assert_no_secrets(*texts: str | bytes) -> None:
    for text in texts:
        raw = text if isinstance(text, bytes) else text.encode()
        for secret in SECRETS:
            assert secret.encode() not in raw, f"a secret leaked: {raw[:300]!r}"


def assert_source_untouched(
    before: dict[tuple[str, str], str], after: dict[tuple[str, str], str], *allowed: str
) -> None:
    """Every object present before is unchanged (key and ETag); new objects only appear
    under the ``allowed`` ``bucket/prefix/`` locations."""
    assert {k: v for k, v in after.items() if k in before} == before
    missing = set(before) - set(after)
    assert not missing
    for bucket, key in set(after) - set(before):
        assert any(f"{bucket}/{key}".startswith(prefix) for prefix in allowed), (bucket, key)


def level_arrays(n5_root: Path, zarr_root: Path) -> Iterator[tuple[str, Any, Any]]:
    """(name, source array, output array) of every level, both read independently: the N5
    tree by tests.n5_reader, the Zarr tree by zarr-python."""
    for attributes in sorted(n5_root.rglob("attributes.json")):
        array_dir = attributes.parent
        if not re.fullmatch(r"s\d+", array_dir.name):
            continue
        rel = array_dir.relative_to(n5_root).as_posix()
        expected = read_n5_array(array_dir)
        output = np.asarray(zarr.open_array(str(zarr_root / rel), mode="r")[...])
        yield rel, expected, output


def assert_same_data(n5_root: Path, zarr_root: Path, levels: int = 5) -> None:
    compared = 0
    for rel, expected, output in level_arrays(n5_root, zarr_root):
        assert output.shape == expected.shape, rel
        assert output.dtype.newbyteorder("=") == expected.dtype.newbyteorder("="), rel
        np.testing.assert_array_equal(output, expected, err_msg=rel)
        compared += 1
    assert compared == levels


def download(client: Any, bucket: str, prefix: str, root: Path) -> Path:
    assert download_prefix(client, bucket, prefix, root) > 0
    return root


# --------------------------------------------------------------------------------------
# Configuration (no server needed for most): one resolution shared by boto3 and TensorStore
# --------------------------------------------------------------------------------------


def test_kvstore_spec_matches_the_boto3_configuration(aws: MotoServer) -> None:
    store = open_store("s3://some-bucket/a/b.n5/", read_only=True)
    assert isinstance(store, S3Store)
    assert store.url == "s3://some-bucket/a/b.n5"
    assert store.kvstore_spec("em/s0") == {
        "driver": "s3",
        "bucket": "some-bucket",
        "path": "a/b.n5/em/s0/",
        "endpoint": aws.url,
        "aws_region": REGION,
        "aws_credentials": {"type": "environment"},
        "s3_request_retries": {"max_retries": 10, "initial_delay": "0.5s", "max_delay": "10s"},
    }
    assert store.client.meta.endpoint_url == aws.url
    assert store.client.meta.region_name == REGION
    assert_no_secrets(json.dumps(store.kvstore_spec()), repr(store.settings))


def test_explicit_options_override_the_environment(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    options = S3Options(endpoint_url="http://127.0.0.1:1/", region="eu-west-2", anon=True)
    store = open_store("s3://other-bucket", read_only=True, s3=options)
    spec = store.kvstore_spec()
    assert spec["endpoint"] == "http://127.0.0.1:1"
    assert spec["aws_region"] == "eu-west-2"
    assert spec["aws_credentials"] == {"type": "anonymous"}
    assert spec["s3_request_retries"]["max_retries"] == 3
    assert spec["path"] == ""
    # a location that is written never uses --anon
    assert options.for_writing().anon is None
    assert resolve_s3(options.for_writing()).credentials == (("type", "environment"),)


def test_credentials_from_a_profile_or_none(
    aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    settings = resolve_s3(S3Options())
    assert settings.anonymous
    assert "no AWS credentials" in settings.credential_source
    with pytest.raises(StoreError, match="no AWS credentials found"):
        resolve_s3(S3Options(anon=False))
    credentials = tmp_path / "credentials"
    credentials.write_text("[lab]\naws_access_key_id = AKIAFAKE\naws_secret_access_key = x\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "lab")
    settings = resolve_s3(S3Options())
    assert not settings.anonymous
    assert dict(settings.credentials) == {
        "type": "profile",
        "profile": "lab",
        "credentials_file": str(credentials),
        "config_file": os.devnull,  # there is none: an empty one keeps TensorStore quiet
    }


def test_s3_locations_in_paths_and_errors(aws: MotoServer) -> None:
    assert _normalize("s3://bucket/a/jrc_x.n5/") == "s3://bucket/a/jrc_x.n5"
    assert default_dest("s3://bucket/jrc_x/jrc_x.n5") == "s3://bucket/jrc_x/jrc_x.zarr"
    with pytest.raises(StoreError, match="unsupported location"):
        open_store("gs://bucket/x", read_only=True)
    with pytest.raises(StoreError, match="expected s3://bucket/prefix"):
        open_store("s3://", read_only=True)
    with pytest.raises(StoreError, match="http:// or https://"):
        open_store("s3://bucket/x", read_only=True, s3=S3Options(endpoint_url="localhost:9"))
    source = open_store("s3://bucket/x.n5", read_only=True)
    with pytest.raises(StoreError, match="read-only"):
        source.write("k", b"")
    with pytest.raises(StoreError, match="read-only"):
        source.delete_prefix("k")
    clone = pickle.loads(pickle.dumps(source))
    assert clone.kvstore_spec("a") == source.kvstore_spec("a")


def test_store_operations_on_the_server(client: Any) -> None:
    bucket = new_bucket(client, "ops")
    store = open_store(f"s3://{bucket}/root", read_only=False)
    for key in ("a/b/c.json", "a/d", "a/e/f/g", "top"):
        store.write(key, key.encode())
    client.put_object(Bucket=bucket, Key="root-sibling/x", Body=b"not under root/")
    assert store.list_dir("") == (["a"], ["top"])
    assert store.list_dir("a") == (["b", "e"], ["d"])
    assert sorted(store.list_keys("a")) == ["b/c.json", "d", "e/f/g"]
    assert store.read("a/d") == b"a/d"
    assert store.read("a/missing") is None
    assert store.exists_prefix("a/e")
    assert not store.exists_prefix("a/x")
    store.delete_prefix("a/b")
    store.delete_prefix("top")
    assert sorted(store.list_keys("")) == ["a/d", "a/e/f/g"]
    store.delete_prefix("")
    assert [item["Key"] for item in keys(client, bucket)] == ["root-sibling/x"]
    missing = open_store(f"s3://{bucket}-gone/x", read_only=True)
    with pytest.raises(StoreError, match=r"s3://.*-gone/x/k: cannot read: NoSuchBucket"):
        missing.read("k")


def test_store_requests_retry_with_backoff(
    aws: MotoServer, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket(client, "retry")
    client.put_object(Bucket=bucket, Key="p/k", Body=b"value")
    proxy = TcpProxy(aws.port)
    try:
        store = open_store(f"s3://{bucket}/p", read_only=True, s3=S3Options(endpoint_url=proxy.url))
        assert store.read("k") == b"value"
        proxy.cut()
        heard: list[retries.Retry] = []

        def come_back(retry: retries.Retry) -> None:  # the server returns once a retry is under way
            heard.append(retry)
            if len(heard) == 1:
                proxy.restore()

        with retries.listening(come_back):
            assert store.read("k") == b"value"  # waited for the server to come back
        assert [retry.attempt for retry in heard] == [1]  # one failed attempt, then success
        proxy.cut()
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        impatient = open_store(
            f"s3://{bucket}/p", read_only=True, s3=S3Options(endpoint_url=proxy.url)
        )
        with pytest.raises(StoreError, match=r"/p/k: cannot read: .*gave up after 2 attempts"):
            impatient.read("k")
    finally:
        proxy.cut()


def test_an_endpoint_that_never_answered_gets_a_few_quiet_attempts(
    aws: MotoServer, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port that accepts connections and closes them before any response: the request is
    tried 3 times (counted at the port), no retry is announced, and the error says that
    the endpoint never answered. The same failures from an endpoint that has answered (the
    proxy cut mid-run) are retried on the whole schedule, each retry announced."""
    bucket = new_bucket(client, "never")
    client.put_object(Bucket=bucket, Key="p/k", Body=b"value")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[int] = []

    def close_every_connection() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # the listener was closed: the test is over
                return
            accepted.append(1)
            connection.close()

    threading.Thread(target=close_every_connection, daemon=True).start()
    heard: list[retries.Retry] = []
    proxy = TcpProxy(aws.port)
    try:
        with retries.listening(heard.append):
            port = listener.getsockname()[1]
            silent = open_store(
                f"s3://{bucket}/p", read_only=True,
                s3=S3Options(endpoint_url=f"http://127.0.0.1:{port}"),
            )  # fmt: skip
            with pytest.raises(
                StoreError,
                match=rf"/p/k: cannot read: no answer from the S3 endpoint "
                rf"http://127\.0\.0\.1:{port} \(connection closed before any response; "
                r"3 attempts in \d+ s\)",
            ):
                silent.read("k")
            assert len(accepted) == 3
            assert heard == []
            monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
            store = open_store(
                f"s3://{bucket}/p", read_only=True, s3=S3Options(endpoint_url=proxy.url)
            )
            assert store.read("k") == b"value"  # it answered
            proxy.cut()  # and went away
            with pytest.raises(StoreError, match=r"/p/k: cannot read: .*gave up after 4 attempts"):
                store.read("k")
    finally:
        proxy.cut()
        listener.close()
    assert [(r.attempt, r.max_attempts) for r in heard] == [(1, 4), (2, 4), (3, 4)]


WORKER = """
import pickle, sys
from migrate.errors import StoreError
store = pickle.loads(sys.stdin.buffer.read())
try:
    store.read("k")
except StoreError as exc:
    print(exc)
"""


def test_a_worker_process_knows_the_endpoint_answered(aws: MotoServer, client: Any) -> None:
    """A store shipped to another process (a Dask worker) after the endpoint answered the
    coordinator retries an outage on the whole schedule; shipped before any answer, it
    gets the few attempts of an endpoint that never answered."""
    bucket = new_bucket(client, "inherit")
    client.put_object(Bucket=bucket, Key="p/k", Body=b"value")
    proxy = TcpProxy(aws.port)
    try:
        store = open_store(f"s3://{bucket}/p", read_only=True, s3=S3Options(endpoint_url=proxy.url))
        before = pickle.dumps(store)
        assert store.read("k") == b"value"
        after = pickle.dumps(store)
        proxy.cut()
        for shipped, expected in ((before, "no answer from the S3 endpoint"),
                                  (after, "gave up after 2 attempts")):  # fmt: skip
            worker = subprocess.run(
                [sys.executable, "-c", WORKER], input=shipped, capture_output=True, cwd=REPO,
                env={**os.environ, "AWS_MAX_ATTEMPTS": "2"}, timeout=120, check=False,
            )  # fmt: skip
            assert expected in worker.stdout.decode(), worker.stdout + worker.stderr
    finally:
        proxy.cut()


@pytest.mark.parametrize("command", ["convert", "status"])
def test_a_closed_port_is_one_error_line_within_seconds(
    aws: MotoServer, dataset: Path, command: str
) -> None:
    """``--endpoint-url`` pointing at a closed port on 127.0.0.1: one ``error:`` line that
    names the endpoint and the refused connection, after 3 attempts, not 10 over a minute
    (counted in the message; no bound on the wall time, which depends on the machine)."""
    port = free_port()  # nothing listens there
    dest = "s3://nowhere/out.zarr"
    args = ("convert", str(dataset / N5), dest) if command == "convert" else ("status", dest)
    code, out, err = subprocess_run(*args, "--endpoint-url", f"http://127.0.0.1:{port}")
    assert code == 1, out + err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {dest}")
    assert (
        f": no answer from the S3 endpoint http://127.0.0.1:{port} (connection refused; "
        "3 attempts in "
    ) in err


# --------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------


def test_s3_to_s3_default_dest(client: Any, source_bucket: str, tmp_path: Path) -> None:
    src = f"s3://{source_bucket}/{N5}"
    before = snapshot(client)
    code, out, err = cli_run("convert", src, "--workers", "2")
    assert code == 0, err
    assert f"s3://{source_bucket}/{ZARR}" in out + err
    converted = snapshot(client)
    assert_source_untouched(before, converted, f"{source_bucket}/{ZARR}/")
    code, out, err = cli_run("verify", src, f"s3://{source_bucket}/{ZARR}", "--workers", "2")
    assert code == 0, out + err
    assert "OK" in out
    code, out, err = cli_run("status", f"s3://{source_bucket}/{ZARR}")
    assert code == 0, out + err
    assert "INCOMPLETE" not in out
    # verify wrote its certificate (issue 22), and nothing else; status only read
    certificate = (source_bucket, f"{ZARR}/.cellmap-migrate/certificate.json")
    after = snapshot(client)
    assert certificate in after
    assert {key: etag for key, etag in after.items() if key != certificate} == converted
    # independent read-back: zarr-python on a downloaded copy vs the N5 reader
    assert_same_data(
        download(client, source_bucket, N5, tmp_path / "n5"),
        download(client, source_bucket, ZARR, tmp_path / "zarr"),
    )
    # a finished job run again copies nothing
    code, out, err = cli_run("convert", src, "--json")
    assert code == 0, err
    assert all(image["units_copied"] == 0 for image in json.loads(out)["images"])
    assert snapshot(client) == after


def test_s3_to_local(client: Any, source_bucket: str, dataset: Path, tmp_path: Path) -> None:
    src = f"s3://{source_bucket}/{N5}"
    dest = tmp_path / "mirror" / f"{DATASET}.zarr"
    before = snapshot(client)
    code, _out, err = cli_run("convert", src, str(dest), "--ngff-version", "0.5")
    assert code == 0, err
    assert snapshot(client) == before
    code, out, err = cli_run("verify", src, str(dest))
    assert code == 0, out + err
    assert_same_data(dataset / N5, dest)


def test_local_to_s3_in_a_subprocess_leaks_no_secret(
    client: Any, dataset: Path, tmp_path: Path
) -> None:
    bucket = new_bucket(client, "dst")
    src = str(dataset / N5)
    dest = f"s3://{bucket}/portal/{DATASET}.zarr"
    outputs: list[str] = []
    for args in (
        ("convert", src, dest, "--dry-run", "--json"),
        ("convert", src, dest, "--workers", "2"),
        ("status", dest, "--json"),
        ("verify", src, dest, "--json"),
    ):
        code, out, err = subprocess_run(*args)
        assert code == 0, err
        assert not ABSL_LOG_LINE.search(err), err  # no TensorStore/AWS log noise
        outputs.extend((out, err))
    assert json.loads(outputs[-2])["problems"] == []
    # an error message, too
    code, out, err = cli_run("convert", src, f"s3://{bucket}-missing/x.zarr")
    assert code == 1
    assert "NoSuchBucket" in err
    assert len(err.strip().splitlines()) == 1
    outputs.extend((out, err))
    assert_no_secrets(*outputs)
    written = [
        client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in keys(client, bucket)
    ]
    assert written
    assert_no_secrets(*written)
    assert_same_data(
        dataset / N5, download(client, bucket, f"portal/{DATASET}.zarr", tmp_path / "zarr")
    )


def test_corrupt_block_on_s3_is_a_source_problem_not_a_storage_one(
    client: Any, source_bucket: str, tmp_path: Path
) -> None:
    """A block that cannot be decoded is reported by its key and the other units go on (a
    storage failure would stop the run instead)."""
    key = f"{N5}/em/fibsem-uint16/s0/1/1/1"
    original = client.get_object(Bucket=source_bucket, Key=key)["Body"].read()
    broken = bytes(b ^ 0x5A if 20 <= i < 60 else b for i, b in enumerate(original))
    client.put_object(Bucket=source_bucket, Key=key, Body=broken)
    dest = tmp_path / "out.zarr"
    code, _out, err = cli_run("convert", f"s3://{source_bucket}/{N5}", str(dest))
    assert code == 1
    assert f"s3://{source_bucket}/{key}" in err
    assert "cannot use storage" not in err
    code, out, _err = cli_run("status", str(dest), "--json")
    complete = {image["image"]: image["complete"] for image in json.loads(out)}
    assert complete == {"em/fibsem-uint16": False, "labels/mito_seg": True}


def test_dry_runs_write_nothing(client: Any, source_bucket: str, dataset: Path) -> None:
    other = new_bucket(client, "empty")
    src = f"s3://{source_bucket}/{N5}"
    before = snapshot(client)
    for args in (
        (src, "--dry-run"),
        (src, "--dry-run", "--json", "--ngff-version", "0.5", "--shard", "64,64,64"),
        (src, f"s3://{other}/out.zarr", "--dry-run"),
        (str(dataset / N5), f"s3://{other}/out.zarr", "--dry-run", "--json"),
    ):
        code, out, err = cli_run("convert", *args)
        assert code == 0, err
        assert "zarr" in out
    assert snapshot(client) == before


def test_public_bucket_read_anonymously(
    client: Any, source_bucket: str, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{source_bucket}", f"arn:aws:s3:::{source_bucket}/*"],
            }
        ],
    }
    private = new_bucket(client, "private")
    upload_tree(client, dataset, private, "")
    client.put_bucket_policy(Bucket=source_bucket, Policy=json.dumps(policy))
    # --anon with credentials configured: SRC read unsigned, DEST (written) uses credentials
    dest = new_bucket(client, "dst")
    code, _out, err = cli_run(
        "convert", f"s3://{source_bucket}/{N5}", f"s3://{dest}/x.zarr", "--anon"
    )
    assert code == 0, err
    code, out, err = cli_run("verify", f"s3://{source_bucket}/{N5}", f"s3://{dest}/x.zarr")
    assert code == 0, out + err
    code, _out, err = cli_run("convert", f"s3://{private}/{N5}", "--dry-run", "--anon")
    assert code == 1
    assert "anonymous access (--anon)" in err
    assert len(err.strip().splitlines()) == 1
    # no credentials at all: anonymous, like a lab mirroring the public bucket
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    mirror = tmp_path / "mirror.zarr"
    code, _out, err = cli_run("convert", f"s3://{source_bucket}/{N5}", str(mirror))
    assert code == 0, err
    assert_same_data(dataset / N5, mirror)


def test_profile_credentials_and_no_log_noise(
    client: Any,
    source_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Credentials from a profile file; TensorStore's C++ logging (captured at the file
    descriptor) stays silent although ~/.aws/config does not exist."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[lab]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = profileSecret\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "lab")
    dest = tmp_path / "out.zarr"
    code, _out, err = cli_run("convert", f"s3://{source_bucket}/{N5}", str(dest), "--json")
    assert code == 0, err
    captured = capfd.readouterr()
    assert not ABSL_LOG_LINE.search(captured.err), captured.err
    assert "profileSecret" not in captured.out + captured.err + err


# --------------------------------------------------------------------------------------
# Interruptions: SIGKILL, connections cut
# --------------------------------------------------------------------------------------

MANY_UNITS = ImageSpec(
    path="em/fibsem-uint8",
    shape=(48, 64, 64),
    dtype="uint8",
    block_size=(16, 16, 16),
    levels=1,
    content="noise",
    seed=7,
)
ONE_BLOCK_UNITS = ("--unit-mib", "0.004", "--no-transplant")
"""Every 16³ uint8 block its own work unit: 48 units, each a few requests."""


@pytest.fixture(scope="module")
def many_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s3-many")
    write_dataset(root, "jrc_many-1", [MANY_UNITS], thumbnail=False)
    return root


def done_records(client: Any, dest: str) -> int:
    """The number of finished-unit records at the DEST ``s3://bucket/prefix``."""
    bucket, _, prefix = dest.removeprefix("s3://").partition("/")
    state = f"{prefix}/.cellmap-migrate/".lstrip("/")
    return sum(1 for item in keys(client, bucket, state) if "/done/" in item["Key"])


def start_convert(src: str, dest: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return start_cli("convert", src, dest, *args, env={**os.environ, **env})


def freeze_at_records(proc: subprocess.Popen[str], client: Any, dest: str, at_least: int) -> None:
    """Freeze the run (SIGSTOP) once ``at_least`` done records are at DEST."""
    freeze_when(proc, lambda: done_records(client, dest) >= at_least, f"{at_least} done records")


def finish_and_verify(src: str, dest: str) -> None:
    code, out, err = subprocess_run("convert", src, dest, *ONE_BLOCK_UNITS, "--json")
    assert code == 0, err
    assert json.loads(out)["complete"]
    code, out, err = cli_run("verify", src, dest)
    assert code == 0, out + err


@pytest.mark.slow
def test_sigkill_then_resume_on_s3(client: Any, many_units: Path, tmp_path: Path) -> None:
    bucket = new_bucket(client, "kill")
    upload_tree(client, many_units, bucket, "")
    src, dest = f"s3://{bucket}/jrc_many-1/jrc_many-1.n5", f"s3://{bucket}/jrc_many-1/out.zarr"
    source_before = snapshot(client)
    proc = start_convert(src, dest, "--workers", "1", *ONE_BLOCK_UNITS)
    try:
        freeze_at_records(proc, client, dest, 10)
        kill_frozen(proc)
    finally:
        end(proc)
    code, out, _err = cli_run("status", dest)
    assert code == 1
    assert "INCOMPLETE" in out
    code, out, err = subprocess_run("convert", src, dest, *ONE_BLOCK_UNITS, "--json")
    assert code == 0, err
    (image,) = json.loads(out)["images"]
    assert image["units_skipped"] >= 10
    assert image["units_copied"] + image["units_skipped"] == image["units_total"] == 48
    finish_and_verify(src, dest)
    code, out, err = cli_run("convert", src, dest, *ONE_BLOCK_UNITS, "--json")
    assert code == 0, err
    assert [image["units_copied"] for image in json.loads(out)["images"]] == [0]
    assert_source_untouched(source_before, snapshot(client), f"{bucket}/jrc_many-1/out.zarr/")
    assert_same_data(
        many_units / "jrc_many-1" / "jrc_many-1.n5",
        download(client, bucket, "jrc_many-1/out.zarr", tmp_path / "zarr"),
        levels=1,
    )


@pytest.mark.slow
def test_connections_cut_for_a_while(aws: MotoServer, client: Any, many_units: Path) -> None:
    """A two-second outage mid-run: the retries ride it out, or the run stops with one clear
    line; either way the next run completes and verifies."""
    bucket = new_bucket(client, "cut")
    upload_tree(client, many_units, bucket, "")
    src, dest = f"s3://{bucket}/jrc_many-1/jrc_many-1.n5", f"s3://{bucket}/out.zarr"
    proxy = TcpProxy(aws.port)
    try:
        # the proxy given on the command line (which wins over AWS_ENDPOINT_URL)
        proc = start_convert(
            src,
            dest,
            "--workers",
            "2",
            *ONE_BLOCK_UNITS,
            "--endpoint-url",
            proxy.url,
            "--region",
            REGION,
        )
        freeze_at_records(proc, client, dest, 5)
        assert proxy.connections > 0  # the run goes through the proxy
        proxy.cut()
        thaw(proc)
        # the outage lasts until the run has met it: a retry line, or the run's end
        lines: list[str] = []
        met = threading.Event()

        def read_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                if "retrying" in line:
                    met.set()
            met.set()

        reader = threading.Thread(target=read_stderr)
        reader.start()
        assert met.wait(300), "the run met no outage"
        proxy.restore()
        proc.wait(timeout=300)
        reader.join(timeout=60)
        err = "".join(lines)
        errors = [line for line in err.splitlines() if "error" in line.lower()]
        if proc.returncode == 0:
            assert errors == []
        else:
            assert proc.returncode == 1, err
            assert len(errors) == 1, err
            assert errors[0].startswith("error: ")
            assert "run the same command again" in errors[0]
        assert_no_secrets(err)
    finally:
        proxy.cut()
        end(proc)
    finish_and_verify(src, dest)


@pytest.mark.slow
def test_server_gone_stops_with_one_line_then_resumes(
    aws: MotoServer, client: Any, many_units: Path
) -> None:
    bucket = new_bucket(client, "gone")
    upload_tree(client, many_units, bucket, "")
    src, dest = f"s3://{bucket}/jrc_many-1/jrc_many-1.n5", f"s3://{bucket}/out.zarr"
    proxy = TcpProxy(aws.port)
    try:
        proc = start_convert(
            src,
            dest,
            "--workers",
            "2",
            *ONE_BLOCK_UNITS,
            AWS_ENDPOINT_URL=proxy.url,
            AWS_MAX_ATTEMPTS="2",
        )
        freeze_at_records(proc, client, dest, 5)
        assert proxy.connections > 0
        proxy.cut()  # and it stays down
        thaw(proc)
        _out, err = proc.communicate(timeout=120)
    finally:
        proxy.cut()
        end(proc)
    assert proc.returncode == 1, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    assert errors[0].startswith("error: ")
    assert proxy.url.removeprefix("http://") in errors[0] or f"s3://{bucket}" in errors[0]
    assert "run the same command again" in errors[0]
    assert_no_secrets(err)
    finish_and_verify(src, dest)


# --------------------------------------------------------------------------------------
# Responses cut mid-body
# --------------------------------------------------------------------------------------


def test_store_requests_retry_responses_cut_mid_body(aws: MotoServer, client: Any) -> None:
    """Every response cut after half its body (ConnectionResetError mid-read), for a while:
    a read of an object, of a missing key (the cut body is a 404's, which botocore reads
    outside its own error handling) and a listing are each retried until one comes whole."""
    bucket = new_bucket(client, "cutbody")
    client.put_object(Bucket=bucket, Key="p/k", Body=b"value" * 1000)
    proxy = TcpProxy(aws.port, truncate=1.0)
    try:
        store = open_store(f"s3://{bucket}/p", read_only=True, s3=S3Options(endpoint_url=proxy.url))
        for request in (
            lambda: store.read("k"),
            lambda: store.read("gone"),
            lambda: store.list_dir(""),
        ):
            proxy.truncate = 1.0
            before = proxy.truncated["boto3"]
            restore = threading.Thread(target=_restore_after_a_cut, args=(proxy, before))
            restore.start()  # (after the first cut, not after a while: machines differ)
            result = request()
            restore.join()
            assert proxy.truncated["boto3"] > before  # it did meet a cut body
            assert result in (b"value" * 1000, None, ([], ["k"]))
    finally:
        proxy.cut()


def _restore_after_a_cut(proxy: TcpProxy, before: int, timeout: float = 120.0) -> None:
    """Stop cutting responses once boto3 has met one more cut body than ``before``."""
    deadline = time.monotonic() + timeout
    while proxy.truncated["boto3"] <= before and time.monotonic() < deadline:
        time.sleep(0.01)
    proxy.truncate = 0.0


@pytest.mark.slow
def test_convert_status_verify_ride_out_truncated_responses(
    aws: MotoServer, client: Any, source_bucket: str, dataset: Path, tmp_path: Path
) -> None:
    """A proxy cuts 15 % of the responses with a body after half of it: boto3's requests
    (metadata, listings, records) and TensorStore's (chunks) are retried like a 5xx, and
    convert, status and verify all succeed; the output equals the source. (15 %, not the 3 %
    of the report, so that some of the few 404 bodies are cut too: botocore reads those
    outside its own error handling, which is what made the runs fail.)"""
    src, dest = f"s3://{source_bucket}/{N5}", f"s3://{source_bucket}/cut/out.zarr"
    before = snapshot(client)
    proxy = TcpProxy(aws.port, truncate=0.15, seed=12)
    try:
        endpoint = ("--endpoint-url", proxy.url)
        for args in (
            ("convert", src, dest, "--workers", "2", *endpoint),
            ("status", dest, *endpoint),
            ("verify", src, dest, "--workers", "2", *endpoint),
        ):
            code, out, err = subprocess_run(*args)
            assert code == 0, f"{args[0]}: {out}{err}"
            assert not [line for line in err.splitlines() if "error:" in line.lower()], err
            assert "internal error" not in err.lower(), err
            if args[0] == "convert":
                # both clients met cut bodies and retried them
                assert proxy.truncated["boto3"] > 0, proxy.truncated
                # and each boto3 retry was shown as it happened, in a few words
                assert "retrying s3://" in err, err
                assert "response cut short" in err, err
                assert proxy.truncated["tensorstore"] > 0, proxy.truncated
                cut_in_convert = sum(proxy.truncated.values())
        # status and verify met some too (about 30 of the 200 responses they read)
        assert sum(proxy.truncated.values()) > cut_in_convert
    finally:
        proxy.cut()
    assert_source_untouched(before, snapshot(client), f"{source_bucket}/cut/out.zarr/")
    assert_same_data(dataset / N5, download(client, source_bucket, "cut/out.zarr", tmp_path / "z"))


# --------------------------------------------------------------------------------------
# Bodies shortened on the way, with a Content-Length to match
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("path", [(), ("--no-transplant",)], ids=["blocks", "tensorstore"])
def test_convert_and_verify_ride_out_shortened_bodies(
    aws: MotoServer,
    client: Any,
    source_bucket: str,
    dataset: Path,
    tmp_path: Path,
    path: tuple[str, ...],
) -> None:
    """A middlebox shortens 20 % of the response bodies and their Content-Length to match,
    keeping the server's checksum header (the full body's). boto3 meets a checksum mismatch
    on the objects that have a checksum: retried like any transient failure, and shown.
    TensorStore checks no checksum: a block or chunk it read short does not decode, and is
    read again (through boto3, or by TensorStore chunk by chunk) rather than blamed on the
    source. convert and verify succeed, each retry is shown, and the output equals the
    source."""
    src, dest = f"s3://{source_bucket}/{N5}", f"s3://{source_bucket}/short/out.zarr"
    proxy = TcpProxy(aws.port, shorten=0.2, seed=7)
    try:
        endpoint = ("--endpoint-url", proxy.url)
        code, out, err = subprocess_run("convert", src, dest, "--workers", "2", *path, *endpoint)
        assert code == 0, out + err
        # both clients met shortened bodies (the objects the test uploaded have checksums)
        assert proxy.shortened["boto3"] > 0, proxy.shortened
        assert proxy.shortened["tensorstore"] > 0, proxy.shortened
        assert "checksum mismatch (the body was cut or altered on the way)" in err, err
        again = "TensorStore's read does not decode" if not path else "TensorStore's read failed"
        assert again in err, err
        assert re.search(r"on storage: .* [1-9]\d* request\(s\) retried", out), out
        met = sum(proxy.shortened.values())
        code, out, err = subprocess_run("verify", src, dest, "--workers", "2", *endpoint)
        assert code == 0, out + err
        assert out.splitlines()[-1].endswith(": OK"), out
        assert sum(proxy.shortened.values()) > met  # verify met some too
    finally:
        proxy.cut()
    assert_same_data(
        dataset / N5, download(client, source_bucket, "short/out.zarr", tmp_path / "z")
    )


@pytest.mark.slow
def test_a_corrupt_block_is_still_the_sources_fault_through_a_shortening_proxy(
    aws: MotoServer, client: Any, source_bucket: str, tmp_path: Path
) -> None:
    """Bytes stored wrong read the same every time: through the same middlebox, a corrupt
    block (stored in the bucket with a checksum of its corrupt bytes) is still reported by
    its key as the source's, and the other image completes."""
    key = f"{N5}/em/fibsem-uint16/s0/1/1/1"
    original = client.get_object(Bucket=source_bucket, Key=key)["Body"].read()
    broken = bytes(b ^ 0x5A if 20 <= i < 60 else b for i, b in enumerate(original))
    client.put_object(Bucket=source_bucket, Key=key, Body=broken)
    proxy = TcpProxy(aws.port, shorten=0.2, seed=8)
    dest = tmp_path / "out.zarr"
    try:
        code, _out, err = subprocess_run(
            "convert", f"s3://{source_bucket}/{N5}", str(dest), "--endpoint-url", proxy.url
        )
    finally:
        proxy.cut()
    assert code == 1
    (line,) = [line for line in err.splitlines() if line.startswith("error: 1 work unit(s)")]
    assert f"s3://{source_bucket}/{key}: cannot decode the gzip payload" in line
    assert "cannot use storage" not in err
    code, out, _err = cli_run("status", str(dest), "--json")
    complete = {image["image"]: image["complete"] for image in json.loads(out)}
    assert complete == {"em/fibsem-uint16": False, "labels/mito_seg": True}


def _transport_failures() -> list[tuple[str, BaseException, bool]]:
    import http.client

    import urllib3.exceptions
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        FlexibleChecksumError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from botocore.parsers import ResponseParserError

    reset = ConnectionResetError(104, "Connection reset by peer")
    broken = urllib3.exceptions.ProtocolError(f"Connection broken: {reset!r}", reset)
    pool = urllib3.HTTPConnectionPool("127.0.0.1")

    def client_error(code: str, status: int) -> ClientError:
        return ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
        )

    mismatch = FlexibleChecksumError(
        error_msg="Expected checksum O0HJ5g== did not match calculated checksum: AAAAAA=="
    )
    return [
        ("a checksum mismatch", mismatch, True),
        ("urllib3 ProtocolError", broken, True),
        ("urllib3 IncompleteRead", urllib3.exceptions.IncompleteRead(10, 20), True),
        (
            "urllib3 read timeout",
            urllib3.exceptions.ReadTimeoutError(pool, "/k", "timed out"),
            True,
        ),
        ("http.client IncompleteRead", http.client.IncompleteRead(b"abc", 10), True),
        ("http.client RemoteDisconnected", http.client.RemoteDisconnected("closed"), True),
        ("ResponseStreamingError", ResponseStreamingError(error=broken), True),
        ("botocore ReadTimeoutError", ReadTimeoutError(endpoint_url="http://x"), True),
        ("ConnectionClosedError", ConnectionClosedError(endpoint_url="http://x"), True),
        ("IncompleteReadError", IncompleteReadError(actual_bytes=1, expected_bytes=2), True),
        ("a body too short to parse", ResponseParserError("Unable to parse"), True),
        ("ConnectionResetError", reset, True),
        ("HTTP 503", client_error("ServiceUnavailable", 503), True),
        ("HTTP 500", client_error("InternalError", 500), True),
        ("SlowDown", client_error("SlowDown", 503), True),
        ("HTTP 403", client_error("AccessDenied", 403), False),
        ("NoSuchBucket", client_error("NoSuchBucket", 404), False),
        ("a bug", ValueError("not a transport error"), False),
    ]


def test_transport_failures_are_retried_like_server_errors() -> None:
    """Every transient failure of a boto3 request, whichever layer reports it, is caught by
    S3Store's retry loop and judged transient; permanent ones are not."""
    from migrate.storage.s3_settings import _is_transient, request_failures

    for name, exc, transient in _transport_failures():
        assert _is_transient(exc) is transient, name
        if transient:
            assert isinstance(exc, request_failures()), name
