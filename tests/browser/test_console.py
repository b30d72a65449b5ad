"""The console in a real headless browser: Debian's Chromium driven by Selenium through its
ChromeDriver, against ``tdc serve`` and a real worker on the real MariaDB shards, PostgreSQL
warehouse, Redis and a RabbitMQ virtual host of this test's own.

Each page visited is kept as a screenshot under the test's temporary folder (pytest prints
where); ``TDC_SCREENSHOTS`` names another folder to keep them in (the README's images are
made this way).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from chain.steps import give_up
from chain.task_state import load_task
from demo.processes import free_port, running, start_console, start_worker
from flows.registry import ACCEPTED as ORDER_FLOW
from models.sharded import TaskStatus
from models.storage import Storage
from reliability.leases import OrderLeases
from settings import load_settings
from tests.conftest import _rabbitmqctl, env_of, require
from tests.factories import OrderHeaderFactory, OrderItemFactory, PaymentWriteFactory, business, canal
from tests.integration.helpers import claimed_keys, ingest, run_chains
from web.auth import hash_password
from web.metrics import FIGURES_CACHE

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PASSWORD = "browser-test-password"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _installed() -> None:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        raise FileNotFoundError("chromium or chromedriver is not on the PATH")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    require("Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)", _installed)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1360,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    # A click that submits a form returns before the next page is there: look-ups wait for it.
    driver.implicitly_wait(15)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def impatient(service_env, storage) -> Iterator[Storage]:  # type: ignore[no-untyped-def]
    """The session's databases with four attempts: a task fails after four give-ups."""
    store = Storage(load_settings({**service_env, "TDC_MAX_ATTEMPTS": "4", "TDC_RETRY_BASE_SECONDS": "0.02"}))
    yield store
    store.dispose()


def _paid_order(storage: Storage, client) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """A complete paid order, run to DONE in-process; its header."""
    store_id = f"S{uuid.uuid4().hex[:6]}"
    header = OrderHeaderFactory(status=20, store_id=store_id)
    order_id = header["order_id"]
    touched = ingest(storage, client, ORDER_FLOW, "canal", [
        canal("gqsh_order", header), canal("gqsh_order_item", OrderItemFactory(order_id=order_id))]).touched
    payment = business(PaymentWriteFactory(order_id=order_id))
    touched |= ingest(storage, client, ORDER_FLOW, "business", [payment]).touched
    run_chains(storage, client, touched)
    return header


def _failed_submit(storage: Storage, client) -> str:  # type: ignore[no-untyped-def]
    """An order whose data is complete but whose SUBMIT ran out of attempts (its step gave up
    four times, as when the warehouse was down): a retry makes it DONE."""
    header = OrderHeaderFactory()
    order_id = str(header["order_id"])
    ingest(storage, client, ORDER_FLOW, "canal", [canal("gqsh_order", header),
                                                  canal("gqsh_order_item", OrderItemFactory(order_id=order_id))])
    leases = OrderLeases(client, storage.settings)
    for _ in range(storage.settings.max_attempts):
        keys = claimed_keys(storage, leases, [(order_id, "SUBMIT")])
        give_up(storage, leases, storage.settings, keys, "tdc.merge gave up: warehouse unreachable")
    assert _status(storage, order_id) == TaskStatus.FAILED
    return order_id


def _status(storage: Storage, order_id: str, operation: str = "SUBMIT") -> str:
    with storage.engine_for_order(order_id).connect() as connection:
        return str(load_task(connection, storage.shard_of(order_id), order_id, operation).status)


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds:.0f}s for {what}"
        time.sleep(0.5)


def test_a_user_logs_in_reads_the_overview_finds_an_order_and_retries_a_failed_task(
        browser, impatient, redis_client, rabbitmq, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    shots = Path(os.environ.get("TDC_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)

    def at_path(path: str) -> None:
        WebDriverWait(driver, 15).until(lambda d: urlsplit(d.current_url).path == path)

    def shoot(name: str) -> None:
        assert driver.save_screenshot(str(shots / f"{name}.png")), name

    paid = _paid_order(impatient, redis_client)
    failed_order = _failed_submit(impatient, redis_client)
    vhost = f"tdc-browser-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, urlsplit(rabbitmq).username or "guest", ".*", ".*", ".*")
    port = free_port()
    env = {**os.environ, **env_of(impatient), "TDC_HOME": str(tmp_path / "home"),
           "TDC_BROKER_URL": urlunsplit(urlsplit(rabbitmq)._replace(path=f"/{vhost}")),
           "TDC_WEB_USERS": f"ops:{hash_password(PASSWORD)}", "TDC_WEB_SECRET": uuid.uuid4().hex}
    base = f"http://127.0.0.1:{port}"
    try:
        with running([start_console(env, tmp_path / "serve.log", port),
                      start_worker(env, tmp_path / "worker.log", concurrency=1)]):
            # A page asked for without a login redirects to the login, and back after it.
            driver.get(f"{base}/failed")
            assert urlsplit(driver.current_url).path == "/login"
            assert "next=%2Ffailed" in driver.current_url
            shoot("login")
            driver.find_element(By.ID, "username").send_keys("ops")
            driver.find_element(By.ID, "password").send_keys("not the password")
            driver.find_element(By.ID, "login-submit").click()
            assert "wrong password" in driver.find_element(By.ID, "login-error").text
            driver.find_element(By.ID, "username").clear()
            driver.find_element(By.ID, "username").send_keys("ops")
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.ID, "login-submit").click()
            at_path("/failed")

            # The overview draws its charts inline (its counts may be 30 s old: count them now).
            redis_client.delete(FIGURES_CACHE)
            driver.get(f"{base}/")
            charts = {svg.get_attribute("data-chart") for svg in driver.find_elements(By.CSS_SELECTOR, "svg.chart")}
            assert {"backlog-states", "done-per-minute"} <= charts, charts
            assert int(driver.find_element(By.ID, "failed-count").text) >= 1
            shoot("overview")

            # Search by the paid order's store, then open its lineage.
            driver.get(f"{base}/search")
            driver.find_element(By.ID, "q-store_id").send_keys(str(paid["store_id"]))
            driver.find_element(By.ID, "search-submit").click()
            links = driver.find_elements(By.CSS_SELECTOR, "a.order-link")
            assert [link.text for link in links] == [paid["order_id"]]
            shoot("search")
            links[0].click()
            assert driver.find_element(By.ID, "order-id").text == paid["order_id"]
            statuses = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#tasks td:nth-child(2)")]
            assert statuses and set(statuses) == {"DONE"}, statuses
            shoot("order")

            # Retry the failed task; the worker runs it to DONE and it leaves the list.
            driver.get(f"{base}/failed")
            box = driver.find_element(By.CSS_SELECTOR, f'input[value="{failed_order}/SUBMIT"]')
            shoot("failed")
            box.click()
            driver.find_element(By.ID, "retry-submit").click()
            assert "1 revived, 1 submitted" in driver.find_element(By.ID, "retry-done").text
            _wait(lambda: _status(impatient, failed_order) == TaskStatus.DONE, 120, "the retried SUBMIT to be DONE")
            driver.get(f"{base}/failed")
            driver.implicitly_wait(0)
            assert not driver.find_elements(By.CSS_SELECTOR, f'input[value="{failed_order}/SUBMIT"]')
            driver.implicitly_wait(15)
            driver.get(f"{base}/orders/{failed_order}")
            assert "DONE" in driver.find_element(By.ID, "tasks").text
            for page in ("quarantine", "reconcile"):
                driver.get(f"{base}/{page}")
                assert driver.find_element(By.TAG_NAME, "h1").text
                shoot(page)

            # After logging out, pages redirect to the login again.
            driver.get(f"{base}/")
            driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
            at_path("/login")
            driver.get(f"{base}/search")
            assert urlsplit(driver.current_url).path == "/login"
    finally:
        _rabbitmqctl("delete_vhost", vhost)
    print(f"screenshots in {shots}")
    assert sorted(p.name for p in shots.glob("*.png")) >= ["failed.png", "login.png", "order.png", "overview.png"]
