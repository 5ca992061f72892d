"""Store.map: concurrent small requests with sequential semantics."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from migrate.storage import LocalStore


def concurrent_store(tmp_path: Path, concurrency: int) -> LocalStore:
    store = LocalStore(tmp_path, read_only=False)
    store.concurrency = concurrency  # as S3Store has
    return store


def test_results_keep_item_order_and_calls_overlap(tmp_path: Path) -> None:
    store = concurrent_store(tmp_path, 8)
    later_done = threading.Event()

    def call(item: int) -> int:
        if item == 0:  # the first item finishes only after a later one did: they overlap
            assert later_done.wait(60), "item 1 never ran while item 0 did"
        if item == 1:
            later_done.set()
        return item * item

    assert store.map(call, range(24)) == [i * i for i in range(24)]
    assert later_done.is_set()


def test_the_first_failure_in_item_order_is_raised(tmp_path: Path) -> None:
    store = concurrent_store(tmp_path, 8)
    seven_failed = threading.Event()

    def call(item: int) -> int:
        if item == 7:
            try:
                raise ValueError("item 7")
            finally:
                seven_failed.set()
        if item == 3:  # 7 fails first in time, 3 comes first in item order
            assert seven_failed.wait(60), "item 7 never ran while item 3 did"
            raise ValueError("item 3")
        return item

    with pytest.raises(ValueError, match="item 3"):
        store.map(call, range(10))


def test_one_at_a_time_by_default(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, read_only=False)
    threads = store.map(lambda _item: threading.get_ident(), range(5))
    assert set(threads) == {threading.get_ident()}
