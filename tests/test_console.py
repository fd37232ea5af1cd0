"""The operator console in a real browser: Debian's chromium through its chromedriver (Selenium).

The console is served by a real ``kgrec up`` (its own graph server, the API under
gunicorn, a Celery worker and beat) on 60 Amazon Beauty users with two quickly
trained model versions; the Models page's "train" runs on that worker. Each
page's load time (from navigation to its first data on screen) is printed at the
end of the module, and every page is saved as a screenshot, at 1280×800 and at
phone width, under ``$KGREC_TEST_ARTIFACTS/console`` (default: the system temp folder).
"""

from __future__ import annotations

import base64
import email.utils
import http.server
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.errors import RETRY_AFTER_S
from kgrec.browse import SEARCH_KINDS
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer, ServerInfo
from kgrec.experiments import ExperimentStore
from kgrec.gateway import open_gateway
from kgrec.impressions import ImpressionStore
from kgrec.limits import MAX_EPOCHS
from kgrec.migrations import migrate
from tests.conftest import ON_NEO4J, embedded_only
from tests.processes import ApiProcess, free_port
from tests.stack_process import UpProcess, kgrec_up_on_subset

KEY = "console-test-key"
FIRST, SECOND = "console-a", "console-b"  # SECOND is trained last, so it starts active
DESKTOP, PHONE = (1280, 800), (390, 844)
WAIT_S = 20

ARTIFACTS = Path(os.environ.get("KGREC_TEST_ARTIFACTS") or tempfile.gettempdir()) / "console"
LOAD_TIMES: dict[str, float] = {}


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: `make browser-deps` installs Debian's chromium and chromium-driver"
        )
    return found


@pytest.fixture(scope="module")
def console(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    """``kgrec up`` on 60 Amazon Beauty users, with two model versions."""
    if ON_NEO4J:
        pytest.skip("kgrec up runs its own embedded graph server")
    tmp = tmp_path_factory.mktemp("console")
    with kgrec_up_on_subset(shared_data, tmp, users=60, key=KEY, versions=(FIRST, SECOND)) as up:
        yield up


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[WebDriver]:
    """Headless chromium at 1280×800 that keeps the pages' console messages."""
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        report_load_times(request.config)


def report_load_times(config: pytest.Config) -> None:
    """Print the pages' load times past pytest's capture, and keep them next to the screenshots."""
    if not LOAD_TIMES:
        return
    (ARTIFACTS / "load-times.json").write_text(json.dumps(LOAD_TIMES, indent=2, sort_keys=True))
    lines = [f"console page load times (navigation to first data, chromium; screenshots in {ARTIFACTS}):"]
    lines += [f"  {page:<24} {ms:7.0f} ms" for page, ms in sorted(LOAD_TIMES.items())]
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))


@pytest.fixture(scope="module")
def experiment(console: UpProcess) -> str:
    """A running experiment: the active model against the first version."""
    created = requests.post(
        f"{console.url}/v1/experiments",
        json={
            "name": "console test",
            "variants": [
                {"name": "control", "model_version": "active", "traffic": 0.5},
                {"name": "first", "model_version": FIRST, "traffic": 0.5},
            ],
        },
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    if created.status_code == 404:
        pytest.skip("this server has no experiments API")
    assert created.status_code == 200, created.text
    experiment_id = str(created.json()["id"])
    time.sleep(1.2)  # every gunicorn worker re-reads the running experiment within a second
    shop_in(console, experiment_id)
    return experiment_id


def shop_in(console: UpProcess, experiment_id: str) -> None:
    """Impressions and attributed events for the experiment, through the API: up to 50 users get
    recommendations (each in their variant); two in three of the "first" variant click their first
    item, one in three of the control, and one in four buys it."""
    users = [u["id"] for u in api_get(console, "/v1/search?q=A&kind=user&limit=50")["results"]]
    now, events = int(time.time() * 1000), []
    for n, user in enumerate(users):
        page = api_get(console, f"/v1/users/{quote(user, safe='')}/recommendations?k=5")
        if page.get("experiment") != experiment_id or not page["items"]:
            continue
        clicks = n % 3 != 0 if page["variant"] == "first" else n % 3 == 0
        shown = {"user_id": user, "item_id": page["items"][0]["item_id"], "ts": now}
        shown["recommendation_id"] = page["recommendation_id"]
        if clicks:
            events.append({**shown, "event_id": f"console-exp-{n}-click", "type": "click"})
        if n % 4 == 0:
            events.append(
                {**shown, "event_id": f"console-exp-{n}-buy", "type": "purchase", "value": 5 + n % 7}
            )
    posted = requests.post(
        f"{console.url}/v1/events", json=events, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    assert posted.status_code == 200, posted.text


# --- helpers ---------------------------------------------------------------------------------------


def wait(browser: WebDriver) -> WebDriverWait:
    """A wait that looks again when the page replaced an element it was reading (a navigation, a
    re-render). Chromium reports some of those as a plain WebDriverException ("Node with given id
    does not belong to the document"), not as a stale element; a condition that never holds still
    ends in a timeout."""
    return WebDriverWait(
        browser, WAIT_S, ignored_exceptions=(StaleElementReferenceException, WebDriverException)
    )


def ready(browser: WebDriver) -> None:
    """Wait until the current page's data is on screen."""
    wait(browser).until(lambda b: b.execute_script("return document.body.dataset.ready === 'true'"))


def api_get(console: UpProcess, path: str) -> Any:
    response = requests.get(f"{console.url}{path}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def a_user_with_reasons(console: UpProcess) -> tuple[str, str]:
    """A user and one of their recommended items that has an explanation path."""
    users = api_get(console, "/v1/search?q=A&kind=user&limit=50")["results"]
    for user in users:
        recs = api_get(console, f"/v1/users/{quote(user['id'], safe='')}/recommendations?k=10&explain=true")
        for item in recs["items"]:
            if item["reason"] is not None:
                return user["id"], item["item_id"]
    raise AssertionError("no user of the subset has a recommendation with an explanation path")


def open_page(browser: WebDriver, url: str, name: str | None = None) -> float:
    """Navigate and wait until the page's data is on screen; returns (and records) the load time in ms."""
    browser.get(url)
    ready(browser)
    ms = float(browser.execute_script("return window.kgrecReadyMs"))
    if name:
        LOAD_TIMES[name] = ms
    return ms


def screenshot(browser: WebDriver, name: str, element: str | None = None) -> Path:
    """The whole page (its full height, as laid out now), or one element, as a PNG in the artifacts."""
    options: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
    if element is not None:
        options["clip"] = browser.execute_script(
            """const r = document.getElementById(arguments[0]).getBoundingClientRect();
               return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height, scale: 1};""",
            element,
        )
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", options)
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def errors_logged(browser: WebDriver) -> list[str]:
    """Severe console entries since the last call (JavaScript errors, failed loads)."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def sign_in_state(browser: WebDriver) -> str | None:
    """The header's "Signed in" / "Read-only", read in the page (no element handle to go stale mid-navigation)."""
    return browser.execute_script(
        "const s = document.querySelector('.who .state'); return s ? s.textContent.trim() : null"
    )


def sign_in(browser: WebDriver, console: UpProcess, then: str = "/console/models") -> None:
    browser.get(f"{console.url}/console/signin?next={then}")
    browser.find_element(By.ID, "api_key").send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    # The sign-in page is itself "ready": wait for the page the post leads to, not for readiness.
    wait(browser).until(lambda b: sign_in_state(b) == "Signed in")
    ready(browser)


def sign_out(browser: WebDriver) -> None:
    buttons = browser.find_elements(By.CSS_SELECTOR, ".who button[type=submit]")
    if buttons:
        buttons[0].click()
        wait(browser).until(lambda b: sign_in_state(b) == "Read-only")


def active_version(console: UpProcess) -> str:
    return str(api_get(console, "/readyz")["model_version"])


def csrf_of(html: str) -> str:
    found = re.search(r'(?:name="csrf_token" value|data-csrf)="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def signed_in_session(console: UpProcess) -> tuple[requests.Session, str]:
    """A requests session signed in through the form, and its CSRF token."""
    session = requests.Session()
    token = csrf_of(session.get(f"{console.url}/console/signin", timeout=30).text)
    answer = session.post(
        f"{console.url}/console/signin",
        data={"csrf_token": token, "api_key": KEY, "next": "/console/models"},
        headers={"Origin": console.url},
        timeout=30,
    )
    assert answer.status_code == 200 and "Signed in" in answer.text
    return session, csrf_of(answer.text)


def promote_is_served(console: UpProcess) -> bool:
    return "/v1/models/{version}/promote" in api_get(console, "/openapi.json")["paths"]


# --- tests -----------------------------------------------------------------------------------------


def test_search_finds_a_user_and_opens_their_page(browser: WebDriver, console: UpProcess) -> None:
    user_id, _ = a_user_with_reasons(console)
    open_page(browser, f"{console.url}/console/search", "search (empty)")
    browser.find_element(By.ID, "q").send_keys(user_id[:6])
    browser.find_element(By.ID, "kind").send_keys("users")
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    link = wait(browser).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, f'#search-results a[href="/console/users/{user_id}"]')
    )[0]
    screenshot(browser, "search")
    link.click()
    ready(browser)
    assert browser.find_element(By.ID, "user-id").text == user_id
    assert browser.find_elements(By.CSS_SELECTOR, "#recs tbody tr"), "the user's page lists no recommendation"
    assert errors_logged(browser) == []


def test_search_says_when_more_than_it_shows_match(browser: WebDriver, console: UpProcess) -> None:
    """The page asked for 30 and said "30 result(s)" as if that were all; it asks for 31 now."""
    matching = api_get(console, "/v1/search?q=A&kind=user&limit=50")["results"]
    assert len(matching) > 30  # the 60 users' ids begin with A
    open_page(browser, f"{console.url}/console/search?q=A&kind=user")
    wait(browser).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#search-results li")) == 30)
    assert "More than 30 results" in browser.find_element(By.ID, "search-status").text
    one = matching[0]["id"]
    few = api_get(console, f"/v1/search?q={quote(one)}&kind=user&limit=31")["results"]
    assert 0 < len(few) <= 30
    open_page(browser, f"{console.url}/console/search?q={quote(one)}&kind=user")
    wait(browser).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#search-results li")) == len(few))
    assert browser.find_element(By.ID, "search-status").text.startswith(f"{len(few)} result(s)")
    assert errors_logged(browser) == []


def test_search_offers_every_kind_the_api_searches_and_shows_its_refusal(
    browser: WebDriver, console: UpProcess
) -> None:
    open_page(browser, f"{console.url}/console/search", "search (empty)")
    offered = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#kind option")]
    assert offered == ["", *SEARCH_KINDS]
    # a kind the page does not offer is sent as given: the API's refusal shows, not an "any" search
    browser.get(f"{console.url}/console/search?q=x&kind=bogus")
    wait(browser).until(lambda b: "Not searched:" in b.find_element(By.ID, "search-status").text)
    assert "kind" in browser.find_element(By.ID, "search-status").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#search-results li")
    # the refused request is the only failure the browser logged (read here, so no later test sees it)
    logged = errors_logged(browser)
    assert len(logged) == 1 and "/v1/search" in logged[0] and "400" in logged[0], logged


def test_why_draws_the_explanation_paths(browser: WebDriver, console: UpProcess) -> None:
    user_id, item_id = a_user_with_reasons(console)
    open_page(browser, f"{console.url}/console/users/{quote(user_id, safe='')}", "user")
    browser.find_element(By.CSS_SELECTOR, f'button.why[data-item="{item_id}"]').click()
    wait(browser).until(
        lambda b: b.execute_script("return document.getElementById('why').dataset.item") == item_id
    )
    drawn = set(browser.execute_script("return window.kgrecGraphs['why-graph'].nodes().map((n) => n.id())"))
    drawn_edges = browser.execute_script("return window.kgrecGraphs['why-graph'].edges().length")
    explanation = api_get(
        console, f"/v1/users/{quote(user_id, safe='')}/recommendations/{quote(item_id, safe='')}/explanation"
    )
    expected = {f"{node['label']}:{node['id']}" for path in explanation["paths"] for node in path["nodes"]}
    assert expected and drawn == expected
    assert drawn_edges >= max(len(path["relationships"]) for path in explanation["paths"])
    cyphers = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#why-paths pre.cypher")]
    assert cyphers == [path["cypher"] for path in explanation["paths"]]
    assert browser.find_elements(By.XPATH, "//button[normalize-space()='Copy Browser Cypher']")
    LOAD_TIMES["why? (click to drawn)"] = float(browser.execute_script("return window.kgrecLastGraphMs"))
    screenshot(browser, "user-why")
    screenshot(browser, "why", element="why")
    assert errors_logged(browser) == []


def test_opening_a_users_page_records_no_impression(browser: WebDriver, console: UpProcess) -> None:
    """The page read the user's recommendations as a shop would, so an operator's look was recorded as
    an impression: an experiment exposure, an exploration step, a target for attributed clicks."""
    user_id = f"console-look-{os.urandom(8).hex()}"
    open_page(browser, f"{console.url}/console/users/{user_id}")
    assert browser.find_elements(By.CSS_SELECTOR, "#recs tbody tr"), "the user's page lists no recommendation"
    shown = api_get(console, f"/v1/users/{user_id}/recommendations?k=3")  # a shop's read: recorded
    store = ImpressionStore(console.settings)
    try:
        store.settle()  # every impression the stack's API processes recorded so far, in the stream
        recorded = store.recent_entry_ids([user_id])[user_id]
        assert len(recorded) == 1, recorded
        assert store.get(shown["recommendation_id"]) is not None
    finally:
        store.close()


def test_item_page_draws_its_neighbourhood(browser: WebDriver, console: UpProcess) -> None:
    _, item_id = a_user_with_reasons(console)
    open_page(browser, f"{console.url}/console/items/{quote(item_id, safe='')}", "item")
    drawn = set(browser.execute_script("return window.kgrecGraphs['hood-graph'].nodes().map((n) => n.id())"))
    item = api_get(console, f"/v1/items/{quote(item_id, safe='')}")
    assert f"Item:{item_id}" in drawn
    assert {f"Category:{c}" for c in item["categories"]} <= drawn
    assert {f"Brand:{b}" for b in item["brands"]} <= drawn
    assert browser.find_elements(By.CSS_SELECTOR, "#similar li a"), "no similar item listed"
    screenshot(browser, "item")
    assert errors_logged(browser) == []


def test_item_page_lists_exactly_the_rules_serving_applies_to_the_item(
    browser: WebDriver, console: UpProcess
) -> None:
    """A category rule reaches the subcategories (an item stored only under a leaf is listed under a
    rule on the root two levels up); a pin touches only the item it pins, whatever its ``when``."""
    auth = {"Authorization": f"Bearer {KEY}"}
    root, mid, leaf, brand = (
        "console-rules-Root",
        "console-rules-Mid",
        "console-rules-Leaf",
        "console-rules-Brand",
    )
    items = {
        "console-rules-path": {"brand": brand, "categories": [root, mid, leaf]},  # links Leaf → Mid → Root
        "console-rules-leaf": {"brand": brand, "categories": [leaf]},  # only under the leaf
    }
    for item_id, body in items.items():
        put = requests.put(f"{console.url}/v1/items/{item_id}", json=body, headers=auth, timeout=30)
        assert put.status_code == 200, put.text
    rules = [
        {"id": "console-rules-block-root", "action": "block", "target": {"category": root}},
        {"id": "console-rules-boost-brand", "action": "boost", "target": {"brand": brand}, "factor": 1.5},
        {"id": "console-rules-bury-other", "action": "bury", "target": {"category": "console-rules-Other"}, "factor": 0.5},
        {"id": "console-rules-pin-path", "action": "pin", "item": "console-rules-path", "position": 1,
         "when": {"brand": brand}},
        {"id": "console-rules-pin-leaf", "action": "pin", "item": "console-rules-leaf", "position": 2,
         "when": {"category": "console-rules-Other"}},
    ]  # fmt: skip
    try:
        for rule in rules:
            posted = requests.post(f"{console.url}/v1/rules", json=rule, headers=auth, timeout=30)
            assert posted.status_code == 200, posted.text
        open_page(browser, f"{console.url}/console/items/console-rules-leaf")
        listed = {li.text.split()[1] for li in browser.find_elements(By.CSS_SELECTOR, "#rules li")}
        # the root's block (two levels up), the brand's boost and the item's own pin (its `when` is
        # about requests); not the pin of the other item of the brand, not a rule on another category
        assert listed == {"console-rules-block-root", "console-rules-boost-brand", "console-rules-pin-leaf"}
        screenshot(browser, "item-rules")
        # no model version knows the new item yet: its similar items are a 404 the page shows as such
        unknown = "/console-rules-leaf/similar?k=10&record=false - Failed to load resource: the server responded with a status of 404"
        assert [e for e in errors_logged(browser) if unknown not in e] == []
        item = api_get(console, "/v1/items/console-rules-leaf")
        assert (item["categories"], item["categories_above"]) == ([leaf], sorted([root, mid]))
    finally:
        for rule in rules:
            requests.delete(f"{console.url}/v1/rules/{rule['id']}", headers=auth, timeout=30)
        for item_id in items:
            requests.delete(f"{console.url}/v1/items/{item_id}", headers=auth, timeout=30)


def test_sign_in_and_promote_a_model_version(browser: WebDriver, console: UpProcess) -> None:
    if not promote_is_served(console):
        pytest.skip("this server has no POST /v1/models/{version}/promote")
    before = active_version(console)
    target = FIRST if before == SECOND else SECOND
    open_page(browser, f"{console.url}/console/models")
    assert not browser.find_elements(By.CSS_SELECTOR, "button.promote"), "signed out, yet a promote button"
    sign_in(browser, console)
    try:
        browser.find_element(By.CSS_SELECTOR, f'button.promote[data-version="{target}"]').click()
        notice = wait(browser).until(
            lambda b: [e.text for e in b.find_elements(By.CSS_SELECTOR, "p.notice") if "Promote" in e.text]
        )
        assert notice == [f"Promote {target}: done."]
        ready(browser)
        row = browser.find_element(By.CSS_SELECTOR, f'#versions tr[data-version="{target}"]')
        assert "active" in row.find_element(By.CSS_SELECTOR, ".status").text
        assert active_version(console) == target
        screenshot(browser, "models-signed-in")
        assert errors_logged(browser) == []
    finally:
        sign_out(browser)


def watch_job(browser: WebDriver, timeout_s: float = 240.0) -> tuple[str, set[str]]:
    """Read the Models page's job panel as it updates itself, until the job ends: its last state and every
    state shown. Each new progress line it shows replaces the "models-training" screenshot."""
    seen: set[str] = set()
    shown = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        panel = browser.find_element(By.ID, "job")
        state, text = panel.get_attribute("data-state") or "", panel.text
        if state == "PROGRESS" and text != shown and browser.find_elements(By.CSS_SELECTOR, "#job progress"):
            screenshot(browser, "models-training")
            shown = text
        seen.add(state)
        if state in ("SUCCESS", "FAILURE", "REVOKED"):
            return state, seen
        time.sleep(0.1)
    raise AssertionError(f"the job did not end within {timeout_s:.0f}s; the page showed {sorted(seen)}")


def test_signed_in_training_runs_on_the_stacks_worker_with_live_progress(
    browser: WebDriver, console: UpProcess
) -> None:
    before = {v["version"] for v in api_get(console, "/v1/models")["versions"]}
    sign_in(browser, console)
    try:
        epochs = browser.find_element(By.ID, "epochs")
        assert epochs.get_attribute("max") == str(MAX_EPOCHS)  # the form offers what the API accepts
        epochs.clear()
        epochs.send_keys("1")
        Select(browser.find_element(By.ID, "activate")).select_by_value("now")
        browser.find_element(By.CSS_SELECTOR, "#train-form button[type=submit]").click()
        wait(browser).until(lambda b: "job=" in b.current_url)
        job_id = parse_qs(urlsplit(browser.current_url).query)["job"][0]
        notices = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "p.notice")]
        assert notices == [f"Train: queued as job {job_id}; a worker runs it, its progress shows below."]
        state, seen = watch_job(browser)
        job = api_get(console, f"/v1/jobs/{quote(job_id, safe='')}")
        assert state == "SUCCESS", job
        assert "PROGRESS" in seen, f"no progress shown while the job ran: {sorted(seen)}"
        trained = job["result"]["version"]
        assert trained not in before
        assert trained in browser.find_element(By.ID, "job").text
        row = wait(browser).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, f'#versions tr[data-version="{trained}"]')
        )[0]
        assert "active" in row.find_element(By.CSS_SELECTOR, ".status").text
        assert active_version(console) == trained
        assert errors_logged(browser) == []
    finally:
        sign_out(browser)


def job_panel(browser: WebDriver) -> dict[str, str]:
    """The Models page's job panel as shown (read in the page): its text, and its retry line if any."""
    return browser.execute_script(
        """const retry = document.getElementById('job-retry');
           return {text: document.getElementById('job').innerText.trim(),
                   retry: retry ? retry.textContent : ''};"""
    )


def migrated_api_env(
    own_server: tuple[EmbeddedServer, Settings], bound: str
) -> tuple[ServerInfo, dict[str, str]]:
    """The test's own graph server, migrated, and the environment of an API on it whose calls to
    the server wait ``bound`` seconds."""
    server, settings = own_server
    info = server.running()
    assert info is not None
    with open_gateway(settings) as gateway:
        migrate(gateway)
    env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_API_KEYS": KEY, "KGREC_SERVING_TIMEOUT_S": bound}
    return info, env


def follow_a_pending_job(browser: WebDriver, api: str, site: str) -> str:
    """Queue a training on the API at ``api`` (no worker: it stays PENDING), open the Models page
    that follows it at ``site`` (the API, or a proxy in front of it), and wait until it shows the
    job; the line it shows then."""
    queued = requests.post(f"{api}/v1/models/train", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert queued.status_code == 200, queued.text
    job_id = queued.json()["id"]
    pending = f"Job {job_id}: PENDING"
    open_page(browser, f"{site}/console/models?job={quote(job_id, safe='')}")
    browser.execute_script("window.kgrecSamePage = true")  # gone if the page were reloaded
    wait(browser).until(lambda b: job_panel(b)["text"] == pending)
    return pending


@embedded_only
def test_the_job_view_keeps_following_while_the_service_is_away_and_stops_on_an_unknown_job(
    browser: WebDriver, own_server: tuple[EmbeddedServer, Settings], tmp_path: Path
) -> None:
    """A graph server stalled (SIGSTOP: the job endpoint answers 503 queue_unavailable with
    Retry-After), then the API stopped and started again (no answer at all): the page keeps the
    job's last state on screen with a line saying when it reads again, and goes on by itself once
    the job answers. An unknown job (404) ends the following with a message, as before."""
    info, env = migrated_api_env(own_server, "2")
    api = ApiProcess(env, log=tmp_path / "gunicorn.log")
    try:
        api.start()
        pending = follow_a_pending_job(browser, api.url, api.url)
        errors_logged(browser)

        os.kill(info.pid, signal.SIGSTOP)
        try:
            panel = wait(browser).until(lambda b: job_panel(b)["text"] != pending and job_panel(b))
        finally:
            os.kill(info.pid, signal.SIGCONT)
        # the last state stays, with a line that says why and when: after the server's Retry-After
        assert "queue_unavailable" in panel["retry"] and f"next try in {RETRY_AFTER_S} s" in panel["retry"], (
            panel
        )
        assert panel["text"].startswith(pending), panel
        assert not browser.find_elements(By.CSS_SELECTOR, "#job .error, #job [role=alert]")
        screenshot(browser, "models-job-retry")
        wait(browser).until(lambda b: job_panel(b)["text"] == pending)

        api.stop()  # gunicorn restarting: the fetch gets no answer
        panel = wait(browser).until(lambda b: job_panel(b)["text"] != pending and job_panel(b))
        assert "no answer from the server" in panel["retry"] and panel["text"].startswith(pending), panel
        api = ApiProcess(env, port=api.port, log=tmp_path / "gunicorn.log")
        api.start()
        WebDriverWait(browser, 60).until(lambda b: job_panel(b)["text"] == pending)  # backoff: 1, 2, 4, … s
        assert browser.execute_script("return window.kgrecSamePage")
        # only the failed reads themselves were logged: no JavaScript error
        for entry in errors_logged(browser):
            assert "Failed to load resource" in entry and re.search(r"/v1/(jobs|queue)", entry), entry

        browser.get(f"{api.url}/console/models?job=no-such-job")
        stopped = "Job no-such-job: not available (no job 'no-such-job')."
        wait(browser).until(lambda b: job_panel(b)["text"] == stopped)
        time.sleep(2.5)  # and it reads no more
        reads = "return performance.getEntriesByType('resource').filter((e) => e.name.includes('/v1/jobs/')).length"
        assert browser.execute_script(reads) == 1
        unknown = "/v1/jobs/no-such-job - Failed to load resource: the server responded with a status of 404"
        assert [e for e in errors_logged(browser) if unknown not in e] == []
    finally:
        # Off its pages before its API stops: they poll the queue, and the failed read would be
        # logged in the next test's browser log.
        browser.get("about:blank")
        errors_logged(browser)
        api.stop()


class Proxy:
    """A reverse proxy in front of the API, as a deployment puts one (GETs only, which is all a
    page that follows a job sends): 502 when the API does not take the connection, 504 when it
    does not answer within ``timeout_s``, and, while in maintenance, 503 with Retry-After as an
    HTTP date, with bodies that are not the API's JSON."""

    def __init__(self, upstream: str, timeout_s: float) -> None:
        self.upstream, self.timeout_s = upstream, timeout_s
        self.maintenance_until: float | None = None  # epoch seconds
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, headers, body = proxy.answer(self.path, self.headers.get("Accept"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def answer(self, path: str, accept: str | None) -> tuple[int, dict[str, str], bytes]:
        html = {"Content-Type": "text/html"}
        if self.maintenance_until is not None:
            until = email.utils.formatdate(self.maintenance_until, usegmt=True)
            return 503, {**html, "Retry-After": until}, b"<h1>Down for maintenance</h1>"
        try:
            got = requests.get(
                self.upstream + path,
                headers={"Accept": accept or "*/*"},
                timeout=self.timeout_s,
                allow_redirects=False,
            )
        except requests.Timeout:
            return 504, html, b"<h1>504 Gateway Time-out</h1>"
        except requests.ConnectionError:
            return 502, html, b"<h1>502 Bad Gateway</h1>"
        kept = {k: v for k, v in got.headers.items() if k.lower() in ("content-type", "retry-after")}
        return got.status_code, kept, got.content

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@embedded_only
def test_the_job_view_keeps_following_through_a_proxys_502_504_and_dated_retry_after(
    browser: WebDriver, own_server: tuple[EmbeddedServer, Settings], tmp_path: Path
) -> None:
    """The Models page read through a reverse proxy: the API stopped (the proxy's 502), the API
    slower than the proxy's wait (a stalled graph server: its 504), the proxy in maintenance (503
    with Retry-After as an HTTP date, not seconds). Each time the page keeps the job's last state
    with a line saying why and when it reads again (after the date, for the last), and goes on by
    itself once the job answers."""
    info, env = migrated_api_env(own_server, "3")
    api = ApiProcess(env, log=tmp_path / "gunicorn.log")
    proxy: Proxy | None = None
    try:
        api.start()
        proxy = Proxy(api.url, timeout_s=1.0)
        pending = follow_a_pending_job(browser, api.url, proxy.url)

        def away(status: int) -> dict[str, str]:
            """The panel once it says the job's read met ``status``, each read meanwhile retried."""
            shows = f"(status {status})"
            panel = WebDriverWait(browser, 60).until(
                lambda b: shows in job_panel(b)["retry"] and job_panel(b)
            )
            assert panel["text"].startswith(pending), panel
            assert not browser.find_elements(By.CSS_SELECTOR, "#job .error, #job [role=alert]")
            return panel

        api.stop()  # the proxy cannot connect: 502 (504 while gunicorn stops)
        away(502)
        api = ApiProcess(env, port=api.port, log=tmp_path / "gunicorn.log")
        api.start()
        WebDriverWait(browser, 60).until(lambda b: job_panel(b)["text"] == pending)  # backoff: 1, 2, 4, … s

        os.kill(info.pid, signal.SIGSTOP)  # the API waits 3 s for the graph server, the proxy 1 s: 504
        try:
            away(504)
        finally:
            os.kill(info.pid, signal.SIGCONT)
        WebDriverWait(browser, 60).until(lambda b: job_panel(b)["text"] == pending)

        proxy.maintenance_until = time.time() + 9  # an HTTP date has whole seconds: 8 or 9 s from now
        panel = away(503)
        proxy.maintenance_until = None
        assert re.search(r"next try in [7-9] s", panel["retry"]), panel  # not the backoff's 1 s
        WebDriverWait(browser, 60).until(lambda b: job_panel(b)["text"] == pending)
        assert browser.execute_script("return window.kgrecSamePage")
        # only the failed reads themselves were logged: no JavaScript error
        for entry in errors_logged(browser):
            assert "Failed to load resource" in entry and re.search(r"/v1/(jobs|queue)", entry), entry
    finally:
        browser.get("about:blank")  # off its pages before its API stops (see the test above)
        errors_logged(browser)
        if proxy is not None:
            proxy.close()
        api.stop()


def test_signed_out_cannot_train_or_promote(browser: WebDriver, console: UpProcess) -> None:
    open_page(browser, f"{console.url}/console/models", "models")
    assert not browser.find_elements(By.CSS_SELECTOR, "button.promote")
    assert not browser.find_elements(By.ID, "train-form")
    assert browser.find_element(By.ID, "train-signed-out").is_displayed()
    # The forms' endpoints refuse an anonymous session even with its valid CSRF token and origin.
    session = requests.Session()
    token = csrf_of(session.get(f"{console.url}/console/models", timeout=30).text)
    before = active_version(console)
    other = FIRST if before == SECOND else SECOND
    for path in ("/console/models/train", f"/console/models/{other}/promote"):
        answer = session.post(
            f"{console.url}{path}", data={"csrf_token": token}, headers={"Origin": console.url}, timeout=30
        )
        assert answer.status_code == 401, (path, answer.status_code)
        assert "sign in" in answer.text
    assert active_version(console) == before


def test_a_cross_site_form_post_is_refused(browser: WebDriver, console: UpProcess) -> None:
    if not promote_is_served(console):
        pytest.skip("this server has no POST /v1/models/{version}/promote")
    before = active_version(console)
    other = FIRST if before == SECOND else SECOND
    promote_url = f"{console.url}/console/models/{other}/promote"

    # A signed-in session with its right token, sent from another origin, or without the token.
    session, token = signed_in_session(console)
    for data, origin in (({"csrf_token": token}, "http://evil.example"), ({}, console.url)):
        answer = session.post(promote_url, data=data, headers={"Origin": origin}, timeout=30)
        assert answer.status_code == 403, answer.status_code
        assert "refused" in answer.text
    assert active_version(console) == before

    # In the browser: signed in at 127.0.0.1, a page on another site (localhost) posts the form itself.
    attacker_page = (
        f'<!DOCTYPE html><form id="f" method="post" action="{promote_url}">'
        '<input name="csrf_token" value="guessed"></form>'
        "<script>document.getElementById('f').submit()</script>"
    ).encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(attacker_page)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sign_in(browser, console)
    try:
        browser.get(f"http://localhost:{server.server_address[1]}/")
        reason = wait(browser).until(lambda b: b.find_elements(By.ID, "refused-reason"))[0]
        assert "cross-site" in reason.text
        assert active_version(console) == before
        errors_logged(browser)  # the refused post's 403 is expected here
    finally:
        server.shutdown()
        server.server_close()
        browser.get(f"{console.url}/console/models")
        sign_out(browser)


def test_every_page_loads_without_javascript_errors_at_desktop_and_phone_width(
    browser: WebDriver, console: UpProcess, experiment: str
) -> None:
    user_id, item_id = a_user_with_reasons(console)
    pages = {
        "search": f"/console/search?q={quote(user_id[:4])}",
        "user": f"/console/users/{quote(user_id, safe='')}",
        "item": f"/console/items/{quote(item_id, safe='')}",
        "models": "/console/models",
        "audiences": "/console/audiences?kind=category&target=Beauty",
        "experiments": f"/console/experiments?id={experiment}",
        "health": "/console/health",
        "signin": "/console/signin",
    }
    errors_logged(browser)
    try:
        for (width, height), suffix in ((DESKTOP, "desktop"), (PHONE, "phone")):
            # A phone's viewport: headless chromium's window cannot be narrower than 500 px.
            browser.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": suffix == "phone"},
            )
            for name, path in pages.items():
                ms = open_page(browser, f"{console.url}{path}")
                if suffix == "desktop":
                    LOAD_TIMES.setdefault(name, ms)
                state = browser.execute_script(
                    """
                    const origin = location.origin;
                    return {
                      foreign: performance.getEntriesByType('resource').map((e) => e.name)
                                 .filter((u) => !u.startsWith(origin) && !u.startsWith('data:')),
                      overflow: document.documentElement.scrollWidth - window.innerWidth,
                      unlabelled: [...document.querySelectorAll('input:not([type=hidden]), select')]
                                    .filter((e) => !e.labels.length && !e.getAttribute('aria-label')).map((e) => e.id),
                      nameless: [...document.querySelectorAll('button, a')]
                                  .filter((e) => !(e.textContent.trim() || e.getAttribute('aria-label'))).length,
                    };
                    """
                )
                assert state["foreign"] == [], f"{name} loaded from another origin: {state['foreign']}"
                assert state["overflow"] <= 1, f"{name} scrolls sideways at {width}px"
                assert state["unlabelled"] == [] and state["nameless"] == 0, (name, state)
                assert errors_logged(browser) == [], f"{name} ({suffix}) logged an error"
                screenshot(browser, f"{name}-{suffix}")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_signed_in_console_reads_through_its_proxy(console: UpProcess) -> None:
    """Where reads need a key, the pages read /console/api/v1/...: only when signed in, the same answers."""
    path = "/v1/search?q=Lip&limit=5"
    assert requests.get(f"{console.url}/console/api{path}", timeout=30).status_code == 401
    session, _ = signed_in_session(console)
    answer = session.get(f"{console.url}/console/api{path}", timeout=30)
    assert answer.status_code == 200 and answer.json() == api_get(console, path)
    unknown = session.get(f"{console.url}/console/api/v1/items/no%2Fsuch", timeout=30)
    assert unknown.status_code == 404 and unknown.json()["field"] == "item_id"


def test_an_audience_is_counted_listed_and_exported_only_when_signed_in(
    browser: WebDriver, console: UpProcess
) -> None:
    audience = api_get(console, "/v1/audiences?category=Beauty&limit=50")
    assert audience["size"] > 0
    open_page(browser, f"{console.url}/console/audiences?kind=category&target=Beauty", "audiences")
    listed = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#members tbody th")]
    assert listed == [member["user_id"] for member in audience["users"]]
    assert f"{audience['size']} user(s) match" in browser.find_element(By.ID, "audience-status").text
    assert not browser.find_elements(By.ID, "export-form")
    screenshot(browser, "audiences")
    assert errors_logged(browser) == []

    form = {"kind": "category", "target": "Beauty"}
    anonymous = requests.Session()
    token = csrf_of(anonymous.get(f"{console.url}/console/models", timeout=30).text)
    refused = anonymous.post(
        f"{console.url}/console/audiences/export",
        data={**form, "csrf_token": token},
        headers={"Origin": console.url},
        timeout=30,
    )
    assert refused.status_code == 401
    session, token = signed_in_session(console)
    exported = session.post(
        f"{console.url}/console/audiences/export",
        data={**form, "csrf_token": token},
        headers={"Origin": console.url},
        timeout=30,
    )
    assert exported.status_code == 200 and exported.headers["Content-Type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert lines[0] == "user_id,weight,events,last_ts" and len(lines) == 1 + audience["size"]


def test_an_experiment_is_listed_shows_its_variants_and_is_stopped_and_promoted_when_signed_in(
    browser: WebDriver, console: UpProcess, experiment: str
) -> None:
    results = api_get(console, f"/v1/experiments/{experiment}")
    listed = api_get(console, "/v1/experiments")
    assert listed["running"] == experiment
    view = listed["experiments"][0]
    assert (view["id"], view["name"], view["status"]) == (experiment, results["name"], "running")
    assert view["created_at"] == results["created_at"]
    assert view["variants"] == [
        {k: v[k] for k in ("name", "model_version", "traffic")} for v in results["variants"]
    ]
    open_page(browser, f"{console.url}/console/experiments", "experiments (list)")
    row = browser.find_element(By.CSS_SELECTOR, f'#experiments tr[data-experiment="{experiment}"]')
    assert row.find_element(By.CSS_SELECTOR, ".status").text == "running"
    row.find_element(By.CSS_SELECTOR, "th a").click()
    ready(browser)
    LOAD_TIMES["experiments"] = float(browser.execute_script("return window.kgrecReadyMs"))
    assert browser.find_element(By.CSS_SELECTOR, "#experiment-title code").text == experiment
    rows = browser.find_elements(By.CSS_SELECTOR, "#variants tbody tr")
    assert [row.get_attribute("data-variant") for row in rows] == [v["name"] for v in results["variants"]]
    shown = [int(row.find_elements(By.TAG_NAME, "td")[3].text.replace(",", "")) for row in rows]
    assert shown == [v["impressions"] for v in results["variants"]] and min(shown) > 0
    assert len(browser.find_elements(By.CSS_SELECTOR, "#intervals figure svg")) == 4
    ctr = browser.find_element(By.CSS_SELECTOR, '#intervals figure[data-metric="ctr"] figcaption').text
    assert (
        "first vs control: p = " in ctr and results["variants"][1]["vs_control"]["ctr"]["p_value"] is not None
    )
    ratio = browser.find_element(By.ID, "sample-ratio").text
    assert results["sample_ratio_users"] and results["sample_ratio_mismatch"] is False
    for variant, users in zip(results["variants"], results["sample_ratio_users"], strict=True):
        assert f"{variant['name']} {users:,}" in ratio, ratio
    # the page states the API's threshold, not one of its own
    assert "χ² p = " in ratio and "distrust" not in ratio
    assert f"(a split counts as broken at p < {results['sample_ratio_alpha']})" in ratio, ratio
    screenshot(browser, "experiments")
    assert not browser.find_elements(By.XPATH, "//button[normalize-space()='Stop the experiment']")
    sign_in(browser, console, then=f"/console/experiments?id={experiment}")
    try:
        if results["status"] == "running":
            browser.find_element(By.XPATH, "//button[normalize-space()='Stop the experiment']").click()
            notice = wait(browser).until(
                lambda b: [e.text for e in b.find_elements(By.CSS_SELECTOR, "p.notice") if "Stop" in e.text]
            )
            assert notice == [f"Stop {experiment}: done."]
            ready(browser)
        assert api_get(console, f"/v1/experiments/{experiment}")["status"] == "stopped"
        assert "stopped" in browser.find_element(By.ID, "experiment-status").text
        stopped = api_get(console, "/v1/experiments?status=stopped")["experiments"]
        assert experiment in [x["id"] for x in stopped]
        assert api_get(console, "/v1/experiments?status=running") == {
            "experiments": [],
            "running": None,
            "next_cursor": None,
        }
        screenshot(browser, "experiments-signed-in")
        # Promote the "first" variant: its model version becomes the active one.
        browser.find_element(By.XPATH, "//button[normalize-space()='Promote first']").click()
        notice = wait(browser).until(
            lambda b: [e.text for e in b.find_elements(By.CSS_SELECTOR, "p.notice") if "Promote" in e.text]
        )
        assert notice == ["Promote first: done."]
        ready(browser)
        assert active_version(console) == FIRST
        assert "promoted first" in browser.find_element(By.ID, "experiment-status").text
        assert errors_logged(browser) == []
    finally:
        sign_out(browser)


def listed_rows(browser: WebDriver) -> list[str | None]:
    """The experiment ids the Experiments page lists, in order."""
    found = browser.find_elements(By.CSS_SELECTOR, "#experiments tbody tr")
    return [row.get_attribute("data-experiment") for row in found]


def test_the_experiments_page_reaches_every_experiment_a_page_at_a_time(
    browser: WebDriver, console: UpProcess, experiment: str
) -> None:
    """The page read one page of at most 100 (the API's cap, with no cursor), so older experiments
    were unreachable; now the API pages by ``cursor``/``next_cursor`` and the page has a "More"."""
    store = ImpressionStore(console.settings)
    experiments = ExperimentStore(store)
    template = experiments.get(experiment)
    assert template is not None
    older = {f"console-old-{n}-{os.urandom(4).hex()}": 1_000 + n for n in range(3)}
    try:
        for experiment_id, created_at in older.items():  # stopped long ago: listed after the fixture's
            old = replace(
                template, id=experiment_id, status="stopped", created_at=created_at, stopped_at=created_at + 1
            )
            text = json.dumps(old.as_dict())
            store.run(lambda client, i=experiment_id, t=text: client.hset(experiments.definitions, i, t))
        everything: list[str] = []
        cursor = ""
        while True:  # the API's pages, one experiment each: none repeated, none skipped
            page = api_get(console, f"/v1/experiments?limit=1&cursor={quote(cursor)}")
            everything += [x["id"] for x in page["experiments"]]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert everything == [x["id"] for x in api_get(console, "/v1/experiments?limit=100")["experiments"]]
        assert everything[-3:] == sorted(older, key=older.__getitem__, reverse=True)
        refused = requests.get(f"{console.url}/v1/experiments?cursor=bogus", timeout=30)
        assert refused.status_code == 400 and "cursor" in refused.text
        open_page(browser, f"{console.url}/console/experiments?per_page=2")
        assert listed_rows(browser) == everything[:2]
        more = browser.find_element(By.ID, "more-experiments")
        while more.is_displayed():
            before = len(listed_rows(browser))
            more.click()
            wait(browser).until(lambda b, n=before: len(listed_rows(b)) > n)
        assert listed_rows(browser) == everything
        assert "newest first" in browser.find_element(By.ID, "list-status").text
        assert errors_logged(browser) == []
    finally:
        store.run(lambda client: client.hdel(experiments.definitions, *older))
        store.close()


def test_a_user_with_timed_events_gets_a_90_day_chart_per_interest(
    browser: WebDriver, console: UpProcess
) -> None:
    user_id, _ = a_user_with_reasons(console)
    items = [
        e["item_id"] for e in api_get(console, f"/v1/users/{quote(user_id, safe='')}/timeline")["events"]
    ]
    now = int(time.time() * 1000)
    events = [
        {
            "event_id": f"console-timed-{i}",
            "user_id": "console-timed",
            "item_id": item,
            "type": "purchase",
            "ts": now - (5 + 7 * i) * 86_400_000,
        }
        for i, item in enumerate(items[:5])
    ]
    posted = requests.post(
        f"{console.url}/v1/events", json=events, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    assert posted.status_code == 200, posted.text
    interests = api_get(console, "/v1/users/console-timed/interests")
    strongest = sorted(interests["brands"] + interests["categories"], key=lambda t: -t["weight"])[:4]
    open_page(browser, f"{console.url}/console/users/console-timed")
    assert browser.find_elements(By.CSS_SELECTOR, "#activity-chart canvas"), "no chart drawn"
    legend = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#activity-chart .u-legend .u-label")]
    assert legend[1:] == ["all items", *[t["name"] for t in strongest]]
    screenshot(browser, "user-timed")
    assert errors_logged(browser) == []


def test_health_shows_readiness_the_queue_and_counts_the_graph_only_when_asked(
    browser: WebDriver, console: UpProcess
) -> None:
    user = api_get(console, "/v1/search?q=A&kind=user&limit=1")["results"][0]["id"]
    api_get(console, f"/v1/users/{quote(user, safe='')}/recommendations?k=3")
    open_page(browser, f"{console.url}/console/health", "health")
    # an endpoint whose route has an id in braces is counted like the others
    wait(browser).until(
        lambda b: "/v1/users/{user_id}/recommendations" in b.find_element(By.ID, "endpoints").text
    )
    ready_list = browser.find_element(By.ID, "ready").text
    assert active_version(console) in ready_list and "ready" in ready_list
    wait(browser).until(lambda b: "Broker" in b.find_element(By.ID, "queue").text)
    assert api_get(console, "/v1/queue")["broker"] is True
    assert "Broker\nup" in browser.find_element(By.ID, "queue").text
    # kgrec up's two Celery workers answer the page's ping, each under its own node name (asked again
    # every 5 s: a busy one can miss a ping).
    wait(browser).until(
        lambda b: all(n in b.find_element(By.ID, "queue").text for n in ("worker@", "trainer@"))
    )
    assert browser.find_element(By.ID, "counts").text == ""
    browser.find_element(By.ID, "count").click()
    stats = api_get(console, "/v1/graph/stats")
    wait(browser).until(lambda b: "User nodes" in b.find_element(By.ID, "counts").text)
    assert f"{stats['nodes']['User']:,}" in browser.find_element(By.ID, "counts").text
    assert errors_logged(browser) == []


def test_health_skips_a_failed_metrics_read_instead_of_charting_a_spike(
    browser: WebDriver, console: UpProcess
) -> None:
    """A failed /metrics read was a sample with total 0: the next good one charted the whole request
    counter over 5 s as the rate."""
    for _ in range(60):  # a counter well above the rate this test itself causes
        api_get(console, "/v1/search?q=A&kind=user&limit=1")
    open_page(browser, f"{console.url}/console/health")
    browser.execute_script(
        """
        window.kgrecMetricsRefused = 0;
        window.kgrecMetricsAfter = 0;
        const real = window.fetch;
        window.fetch = (url, options) => {
          if (!String(url).includes("/metrics")) return real(url, options);
          if (window.kgrecMetricsRefused === 0) {
            window.kgrecMetricsRefused = 1;  // the next sample's read fails, as when gunicorn restarts
            return Promise.reject(new TypeError("refused by the test"));
          }
          window.kgrecMetricsAfter += 1;
          return real(url, options);
        };
        """
    )
    # two good reads after the failed one: the first of them has been charted
    wait(browser).until(lambda b: b.execute_script("return window.kgrecMetricsAfter") >= 2)
    rates = browser.execute_script("return window.kgrecRates.slice()")
    metrics = requests.get(f"{console.url}/metrics", timeout=30).text
    total = sum(float(v) for v in re.findall(r"^kgrec_http_requests_total\{.*\} (\S+)$", metrics, re.M))
    assert total >= 60 and max(rates) < total / 5 / 4, (rates, total)
    assert errors_logged(browser) == []
