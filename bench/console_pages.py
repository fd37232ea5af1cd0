"""Benchmark: how long each console page takes to show its data, in headless chromium, on a running API.

For each page (search, user, item, audiences, models, health) it navigates ``--runs``
times and reads the page's own mark (``window.kgrecReadyMs``: navigation start to the
page's first data on screen), and it times "why?" on the user's first explained
recommendation (click to graph drawn). The user is the first one ``/v1/search`` finds
with an explained recommendation (or ``--user``).

    .venv/bin/python -m bench.console_pages --url http://127.0.0.1:8000 [--runs 5] [--user ID]

Needs Debian's chromium and chromium-driver (``make browser-deps``). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from typing import Any
from urllib.parse import quote

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

READY = "return document.body.dataset.ready === 'true'"


def explained(url: str, user: str | None) -> tuple[str, str, str]:
    """(user, an explained recommended item, a category of that item)."""
    found = requests.get(f"{url}/v1/search", params={"q": "A", "kind": "user", "limit": 50}).json()
    users = [user] if user else [r["id"] for r in found["results"]]
    for candidate in users:
        path = f"/v1/users/{quote(candidate, safe='')}/recommendations"
        recs = requests.get(url + path, params={"k": 10, "explain": "true"}).json()
        for item in recs["items"]:
            if item["reason"] is not None:
                fields = requests.get(f"{url}/v1/items/{quote(item['item_id'], safe='')}").json()
                return candidate, item["item_id"], (fields["categories"] or ["Beauty"])[0]
    raise SystemExit("no user with an explained recommendation")


def browser() -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


def load_ms(driver: WebDriver, url: str) -> float:
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(READY))
    return float(driver.execute_script("return window.kgrecReadyMs"))


def summary(name: str, times: list[float]) -> dict[str, int]:
    """Median and max, printed and returned."""
    median, worst = statistics.median(times), max(times)
    print(f"{name:<10} median {median:6.0f} ms   max {worst:6.0f} ms")
    return {"median_ms": round(median), "max_ms": round(worst)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--user")
    args = parser.parse_args()
    user, item, category = explained(args.url, args.user)
    pages = {
        "search": f"/console/search?q={quote(user[:4])}",
        "user": f"/console/users/{quote(user, safe='')}",
        "item": f"/console/items/{quote(item, safe='')}",
        "audiences": f"/console/audiences?kind=category&target={quote(category)}",
        "models": "/console/models",
        "experiments": "/console/experiments",
        "health": "/console/health",
    }
    driver = browser()
    report: dict[str, Any] = {"url": args.url, "user": user, "item": item, "runs": args.runs, "pages": {}}
    try:
        for name, path in pages.items():
            times = [load_ms(driver, args.url + path) for _ in range(args.runs)]
            report["pages"][name] = summary(name, times)
        clicks = []
        for _ in range(args.runs):
            load_ms(driver, args.url + pages["user"])
            driver.find_element(By.CSS_SELECTOR, f'button.why[data-item="{item}"]').click()
            WebDriverWait(driver, 60).until(
                lambda d: d.execute_script("return document.getElementById('why').dataset.item") == item
            )
            clicks.append(float(driver.execute_script("return window.kgrecLastGraphMs")))
        report["why_click_to_drawn"] = summary("why?", clicks)
    finally:
        driver.quit()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
