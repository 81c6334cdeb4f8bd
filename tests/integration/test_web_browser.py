"""The results page in a real browser: Debian's Chromium, headless, driven by Selenium
through the system's ChromeDriver (nothing downloads a browser).

A pipeline runs with its page (``--web_port``); files are uploaded while the page is
open; their rows must appear without a reload, a result opened must show its plot (an
image the browser decoded: natural width > 0), a result whose fields hold markup must show
it as text, the corrupt file must be in the failures view with its reason, and the
pipelines view must show the run and its lag. A screenshot is saved in the test's
temporary folder.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer

from cluster import create_topic
from cluster.demo import corrupt_upload, make_lab_data
from reproducer.config import KafkaConfig
from reproducer.upload import upload

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.slow]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
EVIL = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
WAIT_S = 120


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium; the test fails (never skips) when it is not installed."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the browser test needs Debian's chromium and "
            "chromium-driver (scripts/test.sh installs them: apt-get install chromium "
            "chromium-driver)"
        )
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # no calls out of this machine
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_js(driver: Any, script: str, what: str, timeout: float = WAIT_S) -> Any:
    """Wait until ``script`` (a JS expression) is truthy; its value."""
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(
        lambda d: d.execute_script(f"return {script}"), message=f"the page never showed {what}"
    )


def row_js(file: str, analysis: str = "") -> str:
    condition = f"r.dataset.file === {json.dumps(file)}"
    if analysis:
        condition += f" && r.dataset.analysis === {json.dumps(analysis)}"
    return f"[...document.querySelectorAll('#entries-body tr.row')].find(r => {condition})"


def test_results_plots_and_failures_appear_live_in_a_real_browser(
    local_ray: None, browser: Any, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    from analyses.runner import AnalysesRun  # noqa: PLC0415

    results_topic, dead_topic = f"{topic}-results", f"{topic}-dead"
    create_topic(kafka_bootstrap, results_topic, partitions=2)
    create_topic(kafka_bootstrap, dead_topic, partitions=1)
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    port = free_port()
    run = AnalysesRun(
        config_file,
        topic,
        results_topic,
        analysis="spectrum-peaks,hdf5-summary",
        consumer_group_id=f"group-{topic}",
        dead_letter_topic=dead_topic,
        file_idle_timeout=2.0,  # the corrupt file fails soon
        output_dir=tmp_path / "out",
        web_port=port,
    )
    handle = run.start()
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:  # the page answers once the run has started it
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert handle.running and time.monotonic() < deadline, "the page never answered"
            time.sleep(0.2)
        browser.get(url)
        browser.execute_script("window.__loaded = 'once'")  # gone if the page reloads
        wait_js(browser, "document.getElementById('live').textContent === 'live'", "'live'")

        # files arrive while the page is open
        source = tmp_path / "upload"
        expected = make_lab_data(source)
        upload([source / "hdf5"], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
        broken = corrupt_upload(kafka_bootstrap, topic)
        evil_path = f"run/{EVIL}.h5"
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(
            results_topic,
            json.dumps(
                {
                    "schema": 1,
                    "analysis": "markup",
                    "file": {"relative_path": evil_path},
                    "result": {"note": EVIL},
                }
            ).encode(),
        )
        assert producer.flush(30) == 0

        # uploaded as a folder of its own: their paths are relative to it
        scans = sorted(p.removeprefix("hdf5/") for p in expected if p.startswith("hdf5/"))
        for scan in scans:
            for analysis in ("spectrum-peaks", "hdf5-summary"):
                wait_js(browser, row_js(scan, analysis), f"the {analysis} row of {scan}")
        evil_row = wait_js(browser, row_js(evil_path), "the row holding markup")
        assert browser.execute_script("return window.__loaded") == "once", "the page reloaded"

        # markup in a result is text on the page, and never ran
        assert EVIL in evil_row.text
        assert browser.execute_script("return window.__pwned") is None
        assert browser.execute_script("return document.querySelectorAll('td img').length") == 0

        # a result opened: its JSON and its plots, loaded from the output folder
        browser.execute_script(f"{row_js(scans[0], 'spectrum-peaks')}.click()")
        wait_js(
            browser,
            "document.querySelectorAll('#detail-attachments img.attachment').length > 0 && "
            "[...document.querySelectorAll('#detail-attachments img.attachment')]"
            ".every(i => i.complete && i.naturalWidth > 0)",
            "the result's plots, loaded",
        )
        shown = json.loads(browser.find_element("id", "detail-json").text)
        assert shown["file"]["relative_path"] == scans[0] and shown["analysis"] == "spectrum-peaks"
        assert not browser.find_elements("css selector", ".attachment-error")
        screenshot = tmp_path / "results-page.png"
        assert browser.save_screenshot(str(screenshot))
        assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 10_000

        # the corrupt file, in the failures view with its reason
        browser.find_element("id", "tab-failures").click()
        failure = wait_js(
            browser,
            f"(r => r && r.dataset.status === 'failed' && r.textContent)({row_js(broken)})",
            f"{broken} in the failures view",
        )
        assert "hash_mismatch" in failure
        browser.save_screenshot(str(tmp_path / "failures.png"))

        # the run, its progress and its lag
        browser.find_element("id", "tab-runs").click()
        wait_js(
            browser,
            f"[...document.querySelectorAll('#runs .run h2')].some(h => h.textContent.includes("
            f"{json.dumps(topic)})) && document.querySelectorAll('#runs table.lag tbody tr')"
            ".length === 3",
            "the run and the lag of its 3 partitions",
        )
        assert browser.execute_script("return window.__loaded") == "once", "the page reloaded"
        print(f"screenshots: {screenshot} and {tmp_path / 'failures.png'}")
    finally:
        summary = handle.stop(120)
    assert summary is not None and summary.n_results_produced == 2 * len(scans)
