"""``taquba dashboard``, driven in a real headless Chromium (Selenium with the system
chromedriver) against a live owner in another process.

A screenshot of the overview is written to ``artifacts/dashboard.png`` (ignored by git;
``TAQUBA_TEST_ARTIFACTS`` moves it). Without Chromium and chromedriver the tests skip
locally and fail when ``CI=true`` (``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import ENV, REPO, Owner

from taquba import OpenOptions, Queue, QueueConfig

CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30.0  # seconds a page may take to come after a click, on a loaded machine
SCRIPT_PAYLOAD = b"<script>document.title='pwned';window.pwned=1</script><b>bold?</b>"
ARTIFACTS = Path(os.environ.get("TAQUBA_TEST_ARTIFACTS", REPO / "artifacts"))


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    binary = _chromium()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        reason = f"selenium is not installed: {exc}"
        binary = None
    else:
        reason = (
            "chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
        )
    if binary is None or not os.path.exists(CHROMEDRIVER):
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    profile = tempfile.mkdtemp(prefix="taquba-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _seed(location: str) -> dict[str, str]:
    cfg = QueueConfig(keep_done=3600.0, retry_backoff_base=0, max_attempts=2)
    ids = {}
    with Queue.open(
        location, options=OpenOptions(default_queue_config=cfg, background_threads=False)
    ) as q:
        for n in range(3):
            q.enqueue("emails", b"mail %d" % n)
        ids["evil"] = q.enqueue("reports", SCRIPT_PAYLOAD, headers={"x-src": "<i>h</i>"})
        ids["plain"] = q.enqueue("reports", b"plain")
        for _ in range(2):
            claim = q.claim("reports")
            assert claim is not None
            q.dead_letter(claim, "<img src=x onerror=alert(1)> failed")
        claim = q.claim("emails")
        assert claim is not None
        q.ack(claim)
        q.add_schedule("<nightly>", "30 2 * * *", "reports", timezone="Europe/Paris")
    return ids


class Server:
    """``taquba dashboard`` in a subprocess, on a free port."""

    def __init__(self, location: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "taquba", "dashboard", location, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = re.search(r"http://\S+", line)
        assert found, (
            f"no address in {line!r}: {self.proc.stderr.read() if self.proc.stderr else ''}"
        )
        self.url = found.group(0)

    def close(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(30) == 0


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Owner, Server, dict[str, str]]]:
    location = str(tmp_path / "q")
    ids = _seed(location)
    owner = Owner(location)
    server = Server(location, "--refresh", "2")
    try:
        yield owner, server, ids
        owner.assert_not_fenced()
    finally:
        server.close()
        owner.close()


def _cells(driver: Any) -> dict[str, list[str]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "tbody tr")
    out = {}
    for row in rows:
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        out[cells[0]] = cells[1:]
    return out


def test_overview_shows_queues_and_counts(browser: Any, live: Any) -> None:
    from selenium.webdriver.common.by import By

    _, server, _ = live
    browser.get(server.url + "/")
    cells = _cells(browser)
    assert cells["<nightly>"][:3] == ["30 2 * * *", "Europe/Paris", "reports"]
    # pending, scheduled, claimed, done, dead
    assert cells["emails"][:5] == ["2", "0", "0", "1", "0"]
    assert cells["reports"][:5] == ["0", "0", "0", "0", "2"]
    assert cells["emails"][5] != "-"  # an oldest pending age
    refresh = browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
    assert refresh.get_attribute("content") == "2"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 1000


def test_requeue_button_works_end_to_end(browser: Any, live: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    owner, server, ids = live
    browser.get(server.url + "/queues/reports/dead")
    rows = _cells(browser)
    assert set(rows) == {ids["evil"], ids["plain"]}
    assert "<img src=x onerror=alert(1)> failed" in rows[ids["plain"]][2]
    row = browser.find_element(By.XPATH, f"//tr[td/a[text()='{ids['plain']}']]")
    row.find_element(By.CSS_SELECTOR, "button[value=requeue]").click()
    # the click posts the form and the browser follows the redirect: wait for the new page
    message = WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".msg"))
    assert "Requeue submitted" in message[0].text
    owner.wait_for_job(ids["plain"], "pending 0")  # the owner took the request in
    browser.get(server.url + f"/jobs/{ids['plain']}")
    status = browser.find_element(By.XPATH, "//tr[td[1]='status']/td[2]").text
    assert status == "pending"
    history = browser.find_elements(
        By.XPATH, "//h2[.='Attempt history']/following::table[1]//tbody/tr"
    )
    assert [r.find_elements(By.TAG_NAME, "td")[3].text for r in history] == ["dead"]


def test_a_script_payload_is_shown_as_text_and_not_run(browser: Any, live: Any) -> None:
    from selenium.webdriver.common.by import By

    _, server, ids = live
    browser.get(server.url + f"/jobs/{ids['evil']}")
    assert browser.title.startswith("job ")
    assert browser.execute_script("return window.pwned === undefined") is True
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.TAG_NAME, "b") == []
    assert browser.find_element(By.TAG_NAME, "pre").text == SCRIPT_PAYLOAD.decode()
    assert "<i>h</i>" in browser.find_element(By.XPATH, "//tr[td[1]='x-src']/td[2]").text


def test_posts_without_the_csrf_token_are_refused(live: Any) -> None:
    owner, server, ids = live
    for body in (b"", b"csrf=wrong"):
        request = urllib.request.Request(
            server.url + f"/jobs/{ids['plain']}/requeue", data=body, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == 403
    owner.ask("intake")
    assert owner.job(ids["plain"]) == "dead 1"


def test_a_token_is_required_when_set(browser: Any, tmp_path: Path) -> None:
    location = str(tmp_path / "q")
    _seed(location)
    server = Server(location, "--token", "s3cret-token")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "taquba_token=no"}):
            request = urllib.request.Request(server.url + "/", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(request, timeout=30)
            assert info.value.code == 401
        ok = urllib.request.Request(
            server.url + "/", headers={"Authorization": "Bearer s3cret-token"}
        )
        with urllib.request.urlopen(ok, timeout=30) as response:
            assert response.status == 200
        browser.delete_all_cookies()
        browser.get(server.url + "/queues/reports/dead")
        assert "401" in browser.page_source and "reports" not in browser.title
        browser.get(server.url + "/?token=s3cret-token")  # sets the cookie, then redirects
        assert urllib.parse.urlsplit(browser.current_url).query == ""
        assert "emails" in _cells(browser)
        browser.get(server.url + "/queues/reports/dead")
        assert len(_cells(browser)) == 2
    finally:
        server.close()


def test_throughput_is_acks_a_minute_over_the_last_minute(tmp_path: Path) -> None:
    from taquba.dashboard import Dashboard

    location = str(tmp_path / "q")
    _seed(location)
    board = Dashboard.open(location, port=0)
    try:
        assert board._rate("work", 1000.0, 10) is None  # one sample: no rate yet
        assert board._rate("work", 1030.0, 40) == 60.0  # 30 acks in 30 s
        assert board._rate("work", 1100.0, 40) == 0.0  # nothing in the last minute
        rows = board.overview_rows()
        assert [(s.queue, s.pending) for s, _, _ in rows] == [("emails", 2), ("reports", 0)]
        assert rows[0][1] is not None and rows[0][1] >= 0  # the oldest pending age
        assert rows[1][1] is None
    finally:
        board.close()


def test_dead_jobs_come_in_pages(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    location = str(tmp_path / "q")
    with Queue.open(location, options=OpenOptions(background_threads=False)) as q:
        ids = q.enqueue_batch("bulk", [b"%d" % n for n in range(53)])
        for _ in ids:
            claim = q.claim("bulk")
            assert claim is not None
            q.dead_letter(claim, f"failed {claim.payload.decode()}")
    server = Server(location)
    try:
        browser.get(server.url + "/queues/bulk/dead")
        first = list(_cells(browser))
        assert first == ids[:50]
        browser.find_element(By.LINK_TEXT, "Next page →").click()
        WebDriverWait(browser, WAIT).until(lambda b: "after=" in b.current_url)
        second = _cells(browser)
        assert list(second) == ids[50:]
        assert second[ids[52]][2] == "failed 52"
        assert browser.find_elements(By.LINK_TEXT, "Next page →") == []
    finally:
        server.close()
