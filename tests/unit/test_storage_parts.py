"""Storage.each_part: a batch's shard databases are written at once only when each is its own."""

import threading

from models.storage import Storage
from settings import load_settings


def _threads(urls: str, tmp_path) -> list[tuple[int, bool]]:  # type: ignore[no-untyped-def]
    storage = Storage(load_settings({"TDC_DB_URLS": urls, "TDC_HOME": str(tmp_path)}))
    barrier = threading.Barrier(4, timeout=5)

    def work(database: int) -> tuple[int, bool]:
        on_main = threading.current_thread() is threading.main_thread()
        if not on_main:
            barrier.wait()  # all four parts run at the same time, or this times out
        return database, on_main
    return storage.each_part(work, [3, 0, 2, 1])


def test_four_databases_are_written_at_once_and_answered_in_the_order_asked(tmp_path) -> None:
    urls = ",".join(f"sqlite:///{tmp_path}/s{i}.db" for i in range(4))
    assert _threads(urls, tmp_path) == [(3, False), (0, False), (2, False), (1, False)]


def test_parts_sharing_a_database_are_written_one_after_the_other(tmp_path) -> None:
    assert _threads(f"sqlite:///{tmp_path}/one.db", tmp_path) == [(3, True), (0, True), (2, True), (1, True)]
