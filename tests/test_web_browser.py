"""The dashboard in a real browser: Debian's Chromium driven by playwright, against a real
``taskiq-abort web`` server, a real ``taskiq worker`` and the suite's Redis.

Skipped where Chromium is missing (``apt-get install -y chromium``); ``.ci/run`` installs it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis

from taskiq_abort import TaskAbortedError
from taskiq_abort._wire.keys import KeySpace
from tests.app import make_broker
from tests.conftest import Events, WorkerProcess
from tests.support.redis_servers import RedisServer
from tests.web_app import HOSTILE_NAME
from tests.web_server import WebServer, new_prefix, web_worker

CHROMIUM = os.environ.get("TASKIQ_ABORT_CHROMIUM", "/usr/bin/chromium")
# The picture of docs/dashboard.png. The suite writes nothing into the working tree: to
# refresh the committed picture, point this at it (TASKIQ_ABORT_SCREENSHOT=docs/dashboard.png).
SCREENSHOT = os.environ.get("TASKIQ_ABORT_SCREENSHOT")
TOKEN = "browser-" + uuid.uuid4().hex
LOAD_TASKS = int(os.environ.get("TASKIQ_ABORT_WEB_LOAD_TASKS", "10000"))

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's with `apt-get install -y chromium` "
        "(playwright drives it as it is and downloads no browser)",
        allow_module_level=True,
    )
expect = sync_api.expect
T = TypeVar("T")


def in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` in a thread of its own: playwright's sync API owns this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def kick(
    url: str,
    prefix: str,
    name: str,
    *args: Any,
    count: int = 1,
    labels: dict[str, Any] | None = None,
) -> list[str]:
    """Send ``count`` tasks from a client broker of the test app; their ids."""

    async def send() -> list[str]:
        broker = make_broker(url, prefix)
        await broker.startup()
        try:
            from taskiq.kicker import AsyncKicker

            # By name: tests.web_app has more tasks.
            task = AsyncKicker(name, broker, labels=dict(labels or {}))
            ids: list[str] = []
            for start in range(0, count, 1000):
                handles = await asyncio.gather(
                    *(task.kiq(*args) for _ in range(min(1000, count - start)))
                )
                ids += [h.task_id for h in handles]
            return ids
        finally:
            await broker.shutdown()

    return in_thread(send())


def stored_error(url: str, prefix: str, task_id: str) -> BaseException | None:
    async def read() -> BaseException | None:
        broker = make_broker(url, prefix)
        await broker.startup()
        try:
            from taskiq.task import AsyncTaskiqTask

            result = await AsyncTaskiqTask(task_id, broker.result_backend).wait_result(timeout=10)
            return result.error
        finally:
            await broker.shutdown()

    return in_thread(read())


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def setup(redis_server: RedisServer) -> Iterator[tuple[str, str, WorkerProcess, WebServer]]:
    prefix = new_prefix()
    worker = web_worker(redis_server.url, prefix)
    worker.args[worker.args.index("--max-async-tasks") + 1] = str(LOAD_TASKS + 100)
    worker.start()
    try:
        with WebServer(redis_server.url, prefix, token=TOKEN) as web:
            yield redis_server.url, prefix, worker, web
    finally:
        worker.stop()


@pytest.mark.timeout(300)
def test_abort_from_the_dashboard(browser: Any, setup: Any, tmp_path: Path) -> None:
    url, prefix, _, web = setup
    client = redis.Redis.from_url(url, decode_responses=True)
    events = Events(client, prefix)
    page = browser.new_page(viewport={"width": 1400, "height": 600})
    blocked: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(web.base) else blocked.append(r.url))

    page.goto(f"{web.base}/")  # sent to the login form; the token goes in a POST body
    assert page.url == f"{web.base}/login"
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{web.base}/")
    expect(page.locator("#live")).to_have_text("live · updated every second")

    (target,) = kick(
        url, prefix, "sleeper", 3600, labels={"soft_time_limit": 1800, "time_limit": 3000}
    )
    (hostile,) = kick(url, prefix, HOSTILE_NAME)
    others = kick(url, prefix, "sleeper", 3600, count=3) + kick(url, prefix, "swallower")
    for task_id in (target, hostile, *others):
        events.wait(task_id, "started")

    row = page.locator(f'#tasks tr[data-task-id="{target}"]')
    expect(row).to_be_visible()  # the running task appears by itself (the page polls)
    for width in (1200, 1400):  # every column of every panel shows, nothing scrolls sideways
        page.set_viewport_size({"width": width, "height": 600})
        clipped = page.evaluate(
            "[...document.querySelectorAll('section')]"
            ".filter(s => s.scrollWidth > s.clientWidth).map(s => s.id)"
        )
        assert clipped == [], (width, clipped)
    expect(row.locator("td.name")).to_have_text("sleeper")
    running = row.locator("td").nth(2)  # how long it runs, and the time left before its limit
    expect(running).to_contain_text("left")
    expect(running).to_have_attribute("title", "soft time limit 1800 s, time limit 3000 s")
    # A task named with HTML is shown as text, and none of it runs.
    hostile_row = page.locator(f'#tasks tr[data-task-id="{hostile}"]')
    expect(hostile_row.locator("td.name")).to_have_text(HOSTILE_NAME)
    assert page.locator("#tasks img, #tasks script").count() == 0
    assert page.title() != "pwned"
    expect(page.locator("#workers td.alive")).to_have_text("live")

    # Indexed labels show in their column; abort-where's rule shows in the rules panel.
    (labelled,) = kick(url, prefix, "sleeper", 3600, labels={"tenant": "acme"})
    events.wait(labelled, "started")
    labels_cell = page.locator(f'#tasks tr[data-task-id="{labelled}"] td.labels')
    expect(labels_cell).to_have_text("tenant=acme")
    where = {"labels": {"tenant": "acme"}, "confirm": True, "reason": "tenant left"}
    made = httpx.post(f"{web.base}/tasks/abort-where", headers=web.headers, json=where)
    assert made.status_code == 200 and made.json()["counts"]["aborted"] == 1, made.text
    rule_id = made.json()["rule"]["rule_id"]
    rule_row = page.locator(f'#rules tr[data-rule-id="{rule_id}"]')
    # The rules are listed every fifth poll: within a few seconds.
    expect(rule_row.locator("td.labels")).to_have_text("tenant=acme", timeout=30_000)
    expect(rule_row.locator("td").nth(3)).to_have_text(f"tenant left (abort rule {rule_id})")
    expect(labels_cell).to_have_count(0)  # the rule aborted it

    # Abort: the dialog asks for a reason and a confirmation.
    row.get_by_role("button", name="Abort").click()
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text(target)
    page.fill("#confirm-reason", "stopped from the dashboard")
    page.click("#confirm-ok")

    outcome = page.locator(f'#outcomes tr[data-task-id="{target}"] td.status')
    expect(outcome).to_have_text("aborted")
    expect(row).to_have_count(0)  # gone from the running tasks
    error = stored_error(url, prefix, target)
    assert isinstance(error, TaskAbortedError)
    assert error.reason == "stopped from the dashboard"
    events.wait(target, "finally")

    # Cancel keeps the task running.
    hostile_row.get_by_role("button", name="Abort").click()
    page.click("#confirm-cancel")
    expect(dialog).to_be_hidden()
    expect(hostile_row).to_be_visible()

    page.mouse.move(0, 0)  # no button hovered in the picture
    page.screenshot(path=SCREENSHOT or str(tmp_path / "dashboard.png"))

    # A rule is cancelled from its panel, after the browser's confirmation.
    page.once("dialog", lambda dialog: dialog.accept())
    rule_row.get_by_role("button", name="Cancel rule").click()
    expect(page.locator("#toast")).to_have_text(f"rule {rule_id} cancelled")
    expect(rule_row).to_have_count(0)

    # Bulk by name, with the count in the confirmation.
    page.fill("#bulk-name", "sleeper")
    page.click("#bulk button[type=submit]")
    expect(page.locator("#confirm-text")).to_have_text('Abort all 3 running tasks named "sleeper"?')
    page.fill("#confirm-reason", "bulk from the dashboard")
    page.press("#confirm-reason", "Enter")  # Enter in the reason field confirms
    expect(page.locator("#toast")).to_have_text('"sleeper": 3 aborted')
    for task_id in others[:3]:
        expect(page.locator(f'#outcomes tr[data-task-id="{task_id}"] td.status')).to_have_text(
            "aborted"
        )
    assert blocked == [], f"the dashboard reached out: {blocked}"
    client.close()


@pytest.mark.timeout(600)
def test_dashboard_with_ten_thousand_running_tasks(
    browser: Any, setup: Any, record_property: Any
) -> None:
    """Load time of the page with 10,000 running tasks (printed; benchmarks are not tests)."""
    url, prefix, worker, web = setup
    client = redis.Redis.from_url(url, decode_responses=True)
    kick(url, prefix, "idle", 3600, count=LOAD_TASKS)
    (worker_id,) = worker.live_workers()
    while client.hlen(KeySpace(prefix).tasks(worker_id)) < LOAD_TASKS:  # the worker's registry
        time.sleep(0.2)  # no event tells that the last of 10,000 tasks started; poll Redis
    client.close()

    # bypass_csp: wait_for_function evaluates its predicate in the page, which the CSP forbids
    page = browser.new_page(viewport={"width": 1400, "height": 820}, bypass_csp=True)
    page.context.add_cookies([{"name": "taskiq_abort_token", "value": TOKEN, "url": web.base}])
    started = time.perf_counter()
    page.goto(f"{web.base}/")
    expect(page.locator("#tasks-summary")).to_have_text(f"{LOAD_TASKS} matching", timeout=60_000)
    loaded = time.perf_counter() - started
    expect(page.locator("#tasks tbody tr:not(.group)")).to_have_count(100)
    dom_ready = page.evaluate(
        "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
    )
    polls_js = "performance.getEntriesByType('resource').filter(e => e.name.includes('/tasks?'))"
    page.wait_for_function(f"{polls_js}.length >= 6", timeout=60_000)  # it keeps polling
    polls = sorted(page.evaluate(f"{polls_js}.map(e => e.duration)")[1:])  # after the first
    page.select_option("#page-size", "500")
    expect(page.locator("#tasks tbody tr:not(.group)")).to_have_count(500)
    page.click("#next")
    expect(page.locator("#page-info")).to_have_text(f"501\u20131000 of {LOAD_TASKS}")
    poll_ms = polls[len(polls) // 2]
    report = (
        f"dashboard with {LOAD_TASKS} running tasks (load average {os.getloadavg()[0]:.1f}): "
        f"first page rendered {loaded * 1000:.0f} ms after navigation (DOMContentLoaded "
        f"{dom_ready:.0f} ms); each poll's GET /tasks (100 rows) median {poll_ms:.0f} ms, "
        f"max {polls[-1]:.0f} ms over {len(polls)} polls"
    )
    print(report)
    record_property("dashboard_load_ms", round(loaded * 1000))
    record_property("tasks_poll_ms", round(poll_ms))
    worker.stop()  # 10,000 tasks: killing the worker is the quick way to end them
