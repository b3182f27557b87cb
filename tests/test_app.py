"""app.py, the web demo: its flags fail in one line before a model loads, and in a real headless Chromium the page
streams the answer's canvas step by step, answers in the chat, compares exact and hybrid attention, shows bad
input as a message, and fetches nothing from the internet.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` (CI installs them) and saves a screenshot:
to ``docs/demo.png`` with ``SAVE_SCREENSHOT=1``, else to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # every test here starts app.py or drives a browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHIPPED_MODEL = REPO / "support_basis" / "checkpoints" / "llada-tiny"
STEPS = 32  # the page's default number of steps (support_basis.demo.stepping.Settings)
ENV = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_app(*args, timeout=300):
    return subprocess.run([sys.executable, str(REPO / "app.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=REPO)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--port", "0"], "--port"),
    (["--port", "http"], "--port"),
    (["--host", "no-such-host.invalid"], "--host"),
    (["--dtype", "float8"], "--dtype"),
    (["--delay", "-1"], "--delay"),
    (["--device", "cuda:97"], "--device cuda:97"),
    (["--device", "tpu"], "--device"),
    (["--model", "/nonexistent/llada"], "--model /nonexistent/llada"),
])
def test_bad_flags_fail_in_one_line_before_loading(args, words):
    r = run_app(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("app.py: error:") and words in lines[0], r.stderr
    assert r.stdout == ""


def test_port_in_use_fails_before_loading(tiny_model_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = run_app("--model", str(tiny_model_dir), "--port", str(busy.getsockname()[1]))
    assert r.returncode == 2 and "another --port" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_default_model_is_the_shipped_tiny_checkpoint():
    import app

    from support_basis.loading import DEFAULT_MODEL

    assert app.DEFAULT_MODEL == str(DEFAULT_MODEL)  # the installed package's own copy: works from any directory
    if not SHIPPED_MODEL.is_dir():
        r = run_app("--port", str(free_port()))
        assert r.returncode == 2 and "shipped trained tiny model" in r.stderr


# ---------------------------------------------------------------------------------------------------------------
# The page in a real browser
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_url(tiny_model_dir):
    """The app on a free port, in a subprocess: the shipped trained tiny model (the default) when present."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"no browser: {CHROMIUM} / {CHROMEDRIVER} missing (apt-get install -y chromium chromium-driver; "
                    "CI installs them)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -r requirements-app.txt)")
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -r requirements-app.txt)")
    port = free_port()
    model = [] if (SHIPPED_MODEL / "config.json").is_file() else ["--model", str(tiny_model_dir)]
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), "--delay", "0.1", *model],
                            stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300  # a loaded machine can take minutes to import torch and gradio
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                pytest.fail(f"app.py did not start (exit {proc.poll()}):\n{log.read()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(app_url):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,1250",
                 # no internet for the page: every host name but the app's address fails to resolve
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# Records every canvas state the page shows: (canvas id, step, masks left), in order.
OBSERVE = """
window.__seen = [];
const record = () => {
  for (const id of ['sb-canvas-main', 'sb-canvas-exact']) {
    const c = document.querySelector('#' + id + ' .sb-canvas[data-step]');
    if (!c) continue;
    const state = [id, Number(c.dataset.step), c.querySelectorAll('.sb-mask').length];
    const last = window.__seen.filter(s => s[0] === id).pop();
    if (!last || last[1] !== state[1] || last[2] !== state[2]) window.__seen.push(state);
  }
};
new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                      attributes: true});
"""


def ask(driver, question):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, "#sb-question textarea")
    box.clear()
    box.send_keys(question)
    box.send_keys(Keys.ENTER)


def seen(driver, canvas):
    return [(step, masks) for c, step, masks in driver.execute_script("return window.__seen") if c == canvas]


def test_page_streams_the_canvas_and_answers(app_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(app_url)
    wait = WebDriverWait(browser, 90, poll_frequency=0.05)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sb-question textarea"))
    browser.execute_script(OBSERVE)

    # one question: the canvas streams step by step (masks going), then the chat shows the answer
    ask(browser, "In the list r=38, a=26, c=32, q=40, what is the value of q?")  # the tiny model's domain
    wait.until(lambda d: "done:" in d.find_element(By.CSS_SELECTOR, "#sb-canvas-main").text)
    states = seen(browser, "sb-canvas-main")
    steps = [s for s, _ in states]
    assert steps == sorted(set(steps)) and len(steps) >= STEPS // 2 and steps[-1] == STEPS, states
    masks = [m for _, m in states]
    assert masks[0] > 0 and masks[-1] == 0 and masks == sorted(masks, reverse=True), states
    stats = browser.find_element(By.CSS_SELECTOR, "#sb-canvas-main .sb-stats").text
    assert f"step {STEPS}/{STEPS}" in stats and "s/step" in stats and f"NFE {STEPS}" in stats
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sb-chat .message")) >= 2)
    answer = browser.find_elements(By.CSS_SELECTOR, "#sb-chat .message")[-1].text.strip()
    assert answer and answer != "\u2026"

    # compare mode: exact and hybrid side by side, with the agreement per step and at the end
    browser.find_element(By.CSS_SELECTOR, "#sb-compare input").click()
    ask(browser, "What is 17 + 25?")
    wait.until(lambda d: any(s >= STEPS // 2 for s, _ in seen(d, "sb-canvas-exact")))
    screenshot = (REPO / "docs" / "demo.png") if os.environ.get("SAVE_SCREENSHOT") == "1" else tmp_path / "demo.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#sb-agreement .sb-agreement").get_attribute("data-final"))
    strip = browser.find_element(By.CSS_SELECTOR, "#sb-agreement")
    assert "final answer:" in strip.text and len(strip.find_elements(By.CSS_SELECTOR, "span[title^='step ']")) == STEPS
    assert "exact attention" in browser.find_element(By.CSS_SELECTOR, "#sb-canvas-exact").text

    # bad input: a message in the page, no decode, no stack trace
    gen_length = browser.find_element(By.CSS_SELECTOR, "#sb-gen-length input[type=number]")
    gen_length.clear()
    gen_length.send_keys("30")
    ask(browser, "Hello")
    wait.until(lambda d: "multiple of block_length" in d.find_element(By.CSS_SELECTOR, "#sb-message").text)
    assert "Traceback" not in browser.page_source

    # offline: the page asked nothing of any host but the app's
    external = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if url.startswith(("http:", "https:", "ws:", "wss:")) and not url.startswith(app_url.rstrip("/")):
                external.add(url)
    assert not external, sorted(external)[:5]
