"""Store.map: concurrent small requests with sequential semantics."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from migrate.storage import LocalStore


def concurrent_store(tmp_path: Path, concurrency: int) -> LocalStore:
    store = LocalStore(tmp_path, read_only=False)
    store.concurrency = concurrency  # as S3Store has
    return store


def test_results_keep_item_order_and_calls_overlap(tmp_path: Path) -> None:
    store = concurrent_store(tmp_path, 8)
    running = 0
    most = 0
    lock = threading.Lock()

    def call(item: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02 * (item % 3))  # later items often finish first
        with lock:
            running -= 1
        return item * item

    assert store.map(call, range(24)) == [i * i for i in range(24)]
    assert most > 1


def test_the_first_failure_in_item_order_is_raised(tmp_path: Path) -> None:
    store = concurrent_store(tmp_path, 8)

    def call(item: int) -> int:
        if item in (3, 7):
            time.sleep(0.05 if item == 3 else 0.0)  # 7 fails first in time
            raise ValueError(f"item {item}")
        return item

    with pytest.raises(ValueError, match="item 3"):
        store.map(call, range(10))


def test_one_at_a_time_by_default(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, read_only=False)
    threads = store.map(lambda _item: threading.get_ident(), range(5))
    assert set(threads) == {threading.get_ident()}
