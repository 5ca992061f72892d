"""What a re-run of a finished migration asks of DEST: storage calls locally, HTTP requests
on S3, and how often it reads the root group's metadata.

    python scripts/rerun_requests.py                 # 6 images, local and S3
    python scripts/rerun_requests.py --images 24 --no-s3

A Cellmap-shaped dataset (``em/fibsem-uint16`` plus ``labels/<organelle>_seg`` images, three
levels each, tiny arrays: metadata dominates) is migrated once, then the same ``convert`` is
run again and measured:

- locally, in this process: every call to a :class:`~migrate.storage.LocalStore` method on
  DEST is counted (``read``, ``list_dir``, the lease's conditional writes, …), and the reads
  of the root group's ``.zattrs``;
- on S3 (a moto server on 127.0.0.1 behind a counting proxy): every HTTP request of the
  re-run subprocess, by method, those to DEST, and the GETs of the root group's
  ``.zattrs``; and, apart, the requests of the Neuroglancer link that ``convert`` prints at
  the end for an S3 output (``cellmap-migrate view DEST`` alone), which reads the output.

Nothing else is contacted. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from migrate.example.fixture import ImageSpec, write_dataset  # noqa: E402
from migrate.storage.local import LocalStore  # noqa: E402
from tests.s3server import (  # noqa: E402
    MotoServer,
    TcpProxy,
    _forward_body,
    _read_headers,
    _Reader,
    fake_aws_environment,
    s3_client,
    upload_tree,
)

ORGANELLES = ("mito", "er", "nucleus", "golgi", "ves", "lyso", "ld", "perox", "mt", "cent")
METHODS = (
    "read", "write", "delete_prefix", "list_dir", "list_keys", "list_stats",
    "remove_dead_temporaries", "read_versioned", "create_if_absent", "replace_if_unchanged",
    "delete_if_unchanged", "root_is_object",
)  # fmt: skip


def images(count: int) -> list[ImageSpec]:
    specs = [ImageSpec(path="em/fibsem-uint16", shape=(20, 24, 28), dtype="uint16", levels=3)]
    for i in range(count - 1):
        name = f"{ORGANELLES[i % len(ORGANELLES)]}{i // len(ORGANELLES) or ''}_seg"
        specs.append(
            ImageSpec(path=f"labels/{name}", shape=(20, 24, 28), dtype="uint64", levels=3,
                      content="labels", seed=i)
        )  # fmt: skip
    return specs


def local_rerun(n5: Path, dest: Path) -> dict[str, Any]:
    """Convert, then convert again in this process counting DEST's storage calls."""
    from click.testing import CliRunner

    from migrate.cli import cli

    def convert() -> None:
        result = CliRunner().invoke(cli, ["convert", str(n5), str(dest)], catch_exceptions=False)
        if result.exit_code != 0:
            raise SystemExit(result.stderr)

    convert()
    calls: collections.Counter[str] = collections.Counter()
    root_reads = 0
    originals = {name: getattr(LocalStore, name) for name in METHODS}

    def counted(name: str) -> Any:
        original = originals[name]

        def call(self: LocalStore, *args: Any, **kwargs: Any) -> Any:
            nonlocal root_reads
            if self.root == dest:
                calls[name] += 1
                if name == "read" and args and args[0] in (".zattrs", "zarr.json"):
                    root_reads += 1
            return original(self, *args, **kwargs)

        return call

    for name in METHODS:
        setattr(LocalStore, name, counted(name))
    try:
        convert()
    finally:
        for name, original in originals.items():
            setattr(LocalStore, name, original)
    return {"calls": dict(sorted(calls.items())), "total": sum(calls.values()),
            "root_group_reads": root_reads}  # fmt: skip


class CountingProxy(TcpProxy):
    """A proxy that counts the HTTP requests passing through, by method and by path."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port, truncate=1e-300)  # the parsing pumps; never cuts
        self.methods: collections.Counter[str] = collections.Counter()
        self.paths: collections.Counter[str] = collections.Counter()

    def _pump_requests(self, source: socket.socket, sink: socket.socket, methods: Any) -> None:
        reader = _Reader(source)
        try:
            while line := reader.readline():
                headers = _read_headers(reader)
                method, path = line.decode("latin-1").split(" ")[:2]
                with self._lock:
                    self.methods[method] += 1
                    self.paths[f"{method} {path.split('?')[0]}"] += 1
                methods.append((method.upper(), "client"))
                sink.sendall(line + headers)
                _forward_body(reader, sink, headers, None)
        except (OSError, ValueError):
            pass
        finally:
            self._close_pair(source, sink)


def s3_rerun(root: Path, work: Path) -> dict[str, Any]:
    moto = MotoServer()
    moto.start()
    proxy = CountingProxy(moto.port)
    try:
        client = s3_client(moto.url)
        for bucket in ("source", "dest"):
            client.create_bucket(Bucket=bucket)
        upload_tree(client, root, "source", root.name)
        (work / "home").mkdir()
        env = {**os.environ, **fake_aws_environment(proxy.url, work / "home")}
        argv = [sys.executable, "-m", "migrate", "convert", f"s3://source/{root.name}",
                "s3://dest/out.zarr"]  # fmt: skip
        view = [sys.executable, "-m", "migrate", "view", "s3://dest/out.zarr"]
        for step, command in (("first", argv), ("link", view), ("again", argv)):
            proxy.methods.clear()
            proxy.paths.clear()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{step} run failed:\n{done.stderr[-2000:]}")
            if step == "link":  # what the Neuroglancer link convert prints costs alone
                link = sum(n for path, n in proxy.paths.items() if " /dest" in path)
        root_reads = sum(
            n for path, n in proxy.paths.items() if path.startswith("GET /dest/out.zarr/.zattrs")
        )
        dest = collections.Counter[str]()
        for path, n in proxy.paths.items():
            method, where = path.split(" ", 1)
            if where.startswith("/dest"):
                dest[method] += n
        return {"requests": dict(sorted(proxy.methods.items())),
                "total": sum(proxy.methods.values()),
                "dest_requests": dict(sorted(dest.items())), "dest_total": sum(dest.values()),
                "of_which_the_link": link, "dest_without_the_link": sum(dest.values()) - link,
                "root_group_reads": root_reads}  # fmt: skip
    finally:
        proxy.cut()
        moto.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=6, help="images in the dataset")
    parser.add_argument("--no-s3", action="store_true", help="only the local measurement")
    args = parser.parse_args()
    result: dict[str, Any] = {"images": args.images}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        n5 = write_dataset(work / "data", "jrc_rerun-1", images(args.images))
        result["local"] = local_rerun(n5, work / "out.zarr")
        if not args.no_s3:
            result["s3"] = s3_rerun(n5, work)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
