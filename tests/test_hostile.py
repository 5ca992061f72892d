"""Hostile input: names from a source, options and requests never lead outside their root.

A source's listing entries and metadata paths, ``--prefix``, every key a store is asked for
and every path ``view`` serves are made of plain segments and stay inside their root; what
cannot be read (a JSON document nested 100,000 deep, a directory or FIFO in place of a
block) is one ``error:`` line naming it. Run through the CLI against real storage: local
directories, moto's S3 server, a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migrate.example.fixture import ImageSpec, write_image
from migrate.storage import LocalStore, S3Options, S3Store, UnsafeKeyError
from migrate.view.serve import make_server, serve_in_background
from tests.helpers import popen_convert, run_cli, run_subprocess, snapshot
from tests.s3server import MotoServer, s3_client, upload_tree
from tests.s3server import snapshot as bucket_snapshot

IMAGE = ImageSpec(
    path="em/fibsem-uint8",
    shape=(20, 24, 28),
    dtype="uint8",
    block_size=(8, 8, 8),
    levels=2,
    content="noise",
)
OTHER = ImageSpec(
    path="em/other-uint8",
    shape=(12, 16, 16),
    dtype="uint8",
    block_size=(8, 8, 8),
    levels=1,
    content="noise",
)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture
def n5(tmp_path: Path) -> Path:
    """A fresh ``jrc_host-1.n5`` with two images (each test may change it)."""
    root = tmp_path / "jrc_host-1" / "jrc_host-1.n5"
    write_image(root, IMAGE)
    write_image(root, OTHER)
    return root


# --------------------------------------------------------------------------------------
# 1. Names from a source
# --------------------------------------------------------------------------------------


@pytest.fixture
def evil_bucket(aws: MotoServer, tmp_path: Path) -> tuple[Any, str]:
    """A bucket holding ``jrc_evil-1/jrc_evil-1.n5`` with one real image and, beside it,
    the same image under keys that climb out: ``jrc_evil-1.n5/../../escape-img/…``."""
    client = s3_client(aws.url)
    client.create_bucket(Bucket="evil")
    source = tmp_path / "made" / "jrc_evil-1.n5"
    write_image(source, IMAGE)
    upload_tree(client, source, "evil", "jrc_evil-1/jrc_evil-1.n5")
    upload_tree(client, source / "em", "evil", "jrc_evil-1/jrc_evil-1.n5/../../escape-img")
    assert any(
        "/../../escape-img/" in item["Key"]
        for item in client.list_objects_v2(Bucket="evil")["Contents"]
    )  # S3 keeps the ".." segments as they are
    return client, "s3://evil/jrc_evil-1/jrc_evil-1.n5"


@pytest.mark.parametrize("dry_run", [False, True], ids=["convert", "dry-run"])
def test_listed_names_that_climb_out_are_refused(
    evil_bucket: tuple[Any, str], tmp_path: Path, dry_run: bool
) -> None:
    client, src = evil_bucket
    dest = tmp_path / "x" / "a" / "b" / "out.zarr"
    before = snapshot(tmp_path)
    objects = bucket_snapshot(client)
    run = run_subprocess("convert", src, str(dest), *(["--dry-run"] if dry_run else []))
    assert run.exit_code == 1, run.stdout + run.stderr
    (line,) = error_lines(run.stderr)
    assert "'..'" in line
    assert "s3://evil/jrc_evil-1/jrc_evil-1.n5" in line
    assert "Traceback" not in run.stderr
    assert "escape-img" not in run.stdout
    assert snapshot(tmp_path) == before  # nothing written anywhere, DEST included
    assert not Path("/.zgroup").exists()
    assert bucket_snapshot(client) == objects  # the source is untouched


def test_dataset_paths_that_climb_out_are_refused(aws: MotoServer, tmp_path: Path) -> None:
    """``multiscales[0].datasets[i].path`` names a level of the group, nothing else (already
    so before the listing checks: this guards it)."""
    client = s3_client(aws.url)
    client.create_bucket(Bucket="paths")
    source = tmp_path / "made" / "jrc_path-1.n5"
    write_image(source, IMAGE)
    group = source / IMAGE.path / "attributes.json"
    attrs = json.loads(group.read_text())
    attrs["multiscales"][0]["datasets"][0]["path"] = "../x"
    group.write_text(json.dumps(attrs))
    upload_tree(client, source, "paths", "jrc_path-1/jrc_path-1.n5")
    before = snapshot(tmp_path)
    for dry in ([], ["--dry-run"]):
        dest = tmp_path / "out.zarr"
        run = run_cli("convert", "s3://paths/jrc_path-1/jrc_path-1.n5", str(dest), *dry)
        assert run.exit_code == 1, run.stdout + run.stderr
        (line,) = error_lines(run.stderr)
        assert "multiscales[0].datasets[0].path" in line
        assert "'../x'" in line
        assert snapshot(tmp_path) == before


BAD_KEYS = [
    "..",
    "../x",
    "a/../../x",
    ".",
    "a/./b",
    "a//b",
    "/etc/passwd",
    "a\\b",
    "a\x00b",
    "a\nb",
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
def test_local_store_refuses_keys_that_are_not_plain(
    tmp_path: Path, key: str, read_only: bool
) -> None:
    root = tmp_path / "deep" / "root"
    root.mkdir(parents=True)
    store = LocalStore(root, read_only=read_only)
    before = snapshot(tmp_path)
    calls: list[Callable[[], object]] = [
        lambda: store.read(key),
        lambda: store.list_dir(key),
        lambda: list(store.list_keys(key)),
        lambda: list(store.list_stats(key)),
        lambda: store.exists_prefix(key),
        lambda: store.kvstore_spec(key),
    ]
    if not read_only:
        calls += [
            lambda: store.write(key, b"{}"),
            lambda: store.delete_prefix(key),
            lambda: store.create_if_absent(key, b"{}"),
            lambda: store.remove_dead_temporaries(key),
        ]
    for call in calls:
        with pytest.raises(UnsafeKeyError, match="refusing a key"):
            call()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_s3_store_refuses_keys_that_are_not_plain(aws: MotoServer, key: str) -> None:
    client = s3_client(aws.url)
    bucket = f"keys-{abs(hash(key)) % 10**8}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="root/x", Body=b"kept")
    client.put_object(Bucket=bucket, Key="x", Body=b"kept")
    store = S3Store(f"s3://{bucket}/root/a", read_only=False, options=S3Options())
    calls: list[Callable[[], object]] = [
        lambda: store.read(key),
        lambda: store.write(key, b"{}"),
        lambda: store.delete_prefix(key),
        lambda: store.list_dir(key),
        lambda: list(store.list_keys(key)),
        lambda: store.create_if_absent(key, b"{}"),
        lambda: store.kvstore_spec(key),
    ]
    for call in calls:
        with pytest.raises(UnsafeKeyError, match="refusing a key"):
            call()
    assert sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]) == [
        "root/x",
        "x",
    ]


def test_a_written_store_never_follows_a_link_out_of_its_root(tmp_path: Path) -> None:
    """DEST (written): a key whose path leads out through a symbolic link is refused for
    every write, delete and TensorStore spec. A source (read only) follows the link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "dest"
    root.mkdir()
    (root / "em").symlink_to(outside)
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    inside = root / "inside"
    inside.mkdir()
    (root / "alias").symlink_to(inside)
    dest = LocalStore(root, read_only=False)
    before = snapshot(outside)
    for call in (
        lambda: dest.write("em/x/.zgroup", b"{}"),
        lambda: dest.write("dangling/.zgroup", b"{}"),
        lambda: dest.delete_prefix("em/secret"),
        lambda: dest.kvstore_spec("em/s0"),
        lambda: dest.read("em/secret"),
    ):
        with pytest.raises(UnsafeKeyError, match="outside the destination"):
            call()
    assert snapshot(outside) == before
    assert not (tmp_path / "nowhere").exists()
    dest.write("alias/.zgroup", b"{}")  # a link that stays inside the root is fine
    assert (inside / ".zgroup").read_bytes() == b"{}"
    assert LocalStore(root, read_only=True).read("em/secret") == b"secret"


def test_source_links_are_followed_and_loops_refused(tmp_path: Path) -> None:
    """A source assembled from links elsewhere migrates like a plain one; a directory link
    back to a directory on its own path would loop: one line naming it, in the dry run too."""
    elsewhere = tmp_path / "elsewhere" / "jrc_link-1.n5"
    write_image(elsewhere, IMAGE)
    n5 = tmp_path / "jrc_link-1" / "jrc_link-1.n5"
    n5.mkdir(parents=True)
    (n5 / "attributes.json").write_text('{"n5": "2.5.0"}')
    (n5 / "em").symlink_to(elsewhere / "em")
    run = run_cli("convert", str(n5), str(tmp_path / "out.zarr"))
    assert run.exit_code == 0, run.stderr
    assert (tmp_path / "out.zarr" / IMAGE.path / "s1" / ".zarray").is_file()
    loop = elsewhere / "em" / "loop"
    loop.symlink_to(elsewhere)
    for dry in (["--dry-run"], []):
        run = run_cli("convert", str(n5), str(tmp_path / "out2.zarr"), *dry)
        assert run.exit_code == 1, run.stdout + run.stderr
        (line,) = error_lines(run.stderr)
        assert f"{n5 / 'em' / 'loop'}: a symbolic link to {elsewhere}" in line
        assert "loop" in line
    assert not (tmp_path / "out2.zarr").exists()


# --------------------------------------------------------------------------------------
# 2. --prefix
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix", ["../../escaped", "..", "/abs", "a//b", "a/./b", "a\\b", "recon\x01"], ids=repr
)
def test_a_prefix_that_is_not_a_relative_path_of_plain_names_is_a_usage_error(
    n5: Path, tmp_path: Path, prefix: str
) -> None:
    before = snapshot(tmp_path)
    dest = tmp_path / "jrc_host-1" / "out" / "x.zarr"
    for dry in ([], ["--dry-run"]):
        run = run_cli("convert", str(n5), str(dest), "--prefix", prefix, *dry)
        assert run.exit_code == 2, run.stdout + run.stderr
        assert "--prefix" in run.stderr
        assert snapshot(tmp_path) == before
    run = run_cli("bulk", "convert", str(tmp_path), "--prefix", prefix)
    assert run.exit_code == 2, run.stdout + run.stderr
    assert "--prefix" in run.stderr
    assert snapshot(tmp_path) == before


def test_a_prefix_cannot_reach_a_sibling_output(n5: Path, tmp_path: Path) -> None:
    """``convert SRC x1.zarr --prefix ../x2.zarr --overwrite`` once deleted and rewrote an
    image of the sibling x2.zarr, without its lease."""
    x1, x2 = tmp_path / "x1.zarr", tmp_path / "x2.zarr"
    assert run_cli("convert", str(n5), str(x2)).exit_code == 0
    kept = snapshot(x2)
    run = run_cli(
        "convert", str(n5), str(x1), "--prefix", "../x2.zarr", "--overwrite", "--codec", "zstd"
    )
    assert run.exit_code == 2, run.stdout + run.stderr
    assert "--prefix" in run.stderr
    assert snapshot(x2) == kept
    assert not x1.exists()


def test_a_prefix_cannot_put_an_image_inside_the_source(n5: Path, tmp_path: Path) -> None:
    """DEST beside the N5 (``--into-existing``) with ``--prefix jrc_host-1.n5/newimg`` once
    wrote a Zarr image inside the N5 source."""
    dataset = n5.parent
    before = snapshot(dataset)
    for dry in (["--dry-run"], []):
        run = run_cli(
            "convert", str(n5), str(dataset), "--into-existing",
            "--prefix", "jrc_host-1.n5/newimg", *dry,
        )  # fmt: skip
        assert run.exit_code == 1, run.stdout + run.stderr
        (line,) = error_lines(run.stderr)
        assert f"inside the source {n5}" in line
        assert snapshot(dataset) == before


def test_a_prefix_cannot_put_an_image_in_the_state_folder(n5: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    for dry in (["--dry-run"], []):
        run = run_cli("convert", str(n5), str(dest), "--prefix", ".cellmap-migrate", *dry)
        assert run.exit_code == 1, run.stdout + run.stderr
        (line,) = error_lines(run.stderr)
        assert ".cellmap-migrate" in line
        assert "--prefix" in line
    assert not dest.exists()


def test_a_bulk_datasets_file_names_only_plain_names(tmp_path: Path) -> None:
    names = tmp_path / "todo.txt"
    names.write_text("jrc_a-1\njrc\\b-1\n")
    run = run_cli("bulk", "convert", str(tmp_path), "--datasets", str(names), "--dry-run")
    assert run.exit_code == 1
    (line,) = error_lines(run.stderr)
    assert "line 2" in line
    assert "backslash" in line


# --------------------------------------------------------------------------------------
# 8. view serves only regular files inside its root
# --------------------------------------------------------------------------------------


def get(base: str, path: str) -> tuple[int, bytes]:
    port = int(base.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def test_view_serves_only_regular_files_inside_its_root(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    root = tmp_path / "out.zarr"
    chunk_dir = root / "em" / "s0" / "0" / "0"
    chunk_dir.mkdir(parents=True)
    (chunk_dir / "0").write_bytes(b"chunk")
    (root / "em" / ".zattrs").write_text("{}")
    (chunk_dir / "link-secret").symlink_to(secret)
    (chunk_dir / "link-up").symlink_to(tmp_path)
    (chunk_dir / "link-inside").symlink_to(chunk_dir / "0")
    (chunk_dir / "link-dev").symlink_to("/dev/zero")
    os.mkfifo(chunk_dir / "fifo")
    server = make_server(str(root))
    serve_in_background(server)
    try:
        base = server.base_url
        assert get(base, "/em/s0/0/0/0") == (200, b"chunk")
        assert get(base, "/em/s0/0/0/link-inside") == (200, b"chunk")
        for path in (
            "/em/s0/0/0/link-secret",
            "/em/s0/0/0/link-up/secret.txt",
            "/em/s0/0/0/link-dev",
            "/em/s0/0/0/fifo",  # a FIFO: 404 at once, not a read that waits forever
            "/em/s0/0/0",
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/em/%2e%2e/%2e%2e/secret.txt",
            "//etc/passwd",
            "/em//.zattrs",
            "/em/.zattrs%00",
            "/em\\.zattrs",
        ):
            status, body = get(base, path)
            assert status == 404, path
            assert b"secret" not in body
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------
# 9. Messages
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [100_000, 500])
def test_deeply_nested_attributes_are_one_error_line(n5: Path, depth: int) -> None:
    attributes = n5 / IMAGE.path / "s1" / "attributes.json"
    text = attributes.read_text().rstrip()
    assert text.endswith("}")
    attributes.write_text(text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}")
    for dry in (["--dry-run"], []):
        run = run_subprocess("convert", str(n5), *dry)
        assert run.exit_code == 1, run.stderr[-2000:]
        (line,) = error_lines(run.stderr)
        assert str(attributes) in line
        assert "nested deeper than" in line
        assert "internal error" not in run.stderr


def test_a_level_without_dimensions_names_the_file_and_field(n5: Path) -> None:
    attributes = n5 / IMAGE.path / "s1" / "attributes.json"
    attrs = json.loads(attributes.read_text())
    del attrs["dimensions"]
    attributes.write_text(json.dumps(attrs))
    run = run_cli("convert", str(n5), "--dry-run")
    assert run.exit_code == 1
    (line,) = error_lines(run.stderr)
    assert f"{attributes}: dimensions: required but missing" in line


@pytest.mark.parametrize("kind", ["directory", "fifo"])
@pytest.mark.parametrize(
    "flags",
    [(), ("--no-transplant",), ("--skip-decode-check",)],
    ids=["transplant", "tensorstore", "file-to-file"],
)
def test_a_block_that_is_not_a_file_fails_its_image_only(
    n5: Path, tmp_path: Path, kind: str, flags: tuple[str, ...]
) -> None:
    """A directory or a FIFO in place of a block (unreadable whoever runs the test, root
    included): the block is named, its image fails, the other image is finished."""
    block = n5 / IMAGE.path / "s0" / "1" / "1" / "1"
    block.unlink()
    if kind == "directory":
        block.mkdir()
    else:
        os.mkfifo(block)
    dest = tmp_path / "out.zarr"
    run = run_subprocess("convert", str(n5), str(dest), "--workers", "1", *flags, timeout=120)
    assert run.exit_code == 1, run.stderr
    (line,) = error_lines(run.stderr)
    assert str(block) in line
    assert "in place of a block file" in line
    assert "resume" not in line
    status = run_cli("status", str(dest), "--json")
    complete = {image["image"]: image["complete"] for image in status.json}
    assert complete == {IMAGE.path: False, OTHER.path: True}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_after_the_completion_mark_says_the_run_had_finished(
    n5: Path, tmp_path: Path, signum: int
) -> None:
    """The run is held after it wrote its completion mark (its lease's lock file is held by
    the test, so releasing the lease waits); the signal arrives then: the run says it had
    finished and exits 0."""
    dest = tmp_path / "out.zarr"
    lock_path = dest / ".cellmap-migrate" / "lease.json.lock"
    proc = popen_convert(str(n5), str(dest), "--workers", "1", "--unit-mib", "0.001",
                         "--no-transplant", "--lease-timeout", "10")  # fmt: skip
    lock_fd = -1
    try:
        # event 1: the first unit is recorded; stop the run, take the lease's lock, go on
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if any(p.name.isdigit() for p in (dest / ".cellmap-migrate").rglob("*")):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before its first unit was seen"
        os.kill(proc.pid, signal.SIGSTOP)
        lock_fd = os.open(lock_path, os.O_RDWR)
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:  # stopped while renewing its lease: let it finish
                os.kill(proc.pid, signal.SIGCONT)
                time.sleep(0.05)
                os.kill(proc.pid, signal.SIGSTOP)
        os.kill(proc.pid, signal.SIGCONT)
        # event 2: the completion mark is at DEST (the run cannot release its lease)
        root_attrs = dest / ".zattrs"
        while time.monotonic() < deadline:
            if root_attrs.exists():
                mark = json.loads(root_attrs.read_text()).get("cellmap-migrate", {})
                if set(mark.get("complete", {})) == {IMAGE.path, OTHER.path}:
                    break
            time.sleep(0.01)
        else:
            pytest.fail("no completion mark")
        proc.send_signal(signum)
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        _out, err = proc.communicate(timeout=120)
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert not error_lines(err), err
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
    assert f"note: {name}" in err
    assert "arrived after the run had finished" in err
    assert run_cli("status", str(dest)).exit_code == 0
    assert not (dest / ".cellmap-migrate" / "lease.json").exists()
