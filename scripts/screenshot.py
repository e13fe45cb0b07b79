"""The README's screenshot of the demo page (docs/demo.png), from a running product: ``make
run`` first, then ``make screenshot``. It clicks one recommended item, so the list shows its
change markers, and plays the shop for a while, so the counters have values; the play is
stopped before it ends (its events stay applied)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as scripts/x.py

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from harness.browser import headless_chromium


def set_playing(browser, wait: WebDriverWait, playing: bool) -> None:
    """Press Play or Stop until the page says the play is (or is not) running."""
    button = browser.find_element(By.ID, "play")
    wait.until(lambda _: button.get_attribute("data-playing") is not None)
    if button.get_attribute("data-playing") != str(playing).lower():
        button.click()
    wait.until(lambda _: button.get_attribute("data-playing") == str(playing).lower())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:6066")
    parser.add_argument("--user", default="c15311")
    parser.add_argument("--out", default="docs/demo.png")
    parser.add_argument("--play-seconds", type=float, default=20.0)
    args = parser.parse_args()
    with headless_chromium(1280, 1000) as browser:
        wait = WebDriverWait(browser, 20)
        browser.get(f"{args.url}/?user={args.user}")
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#recs li")) == 10)
        browser.find_element(By.CSS_SELECTOR, "#recs li:nth-child(3) .act-click").click()
        wait.until(lambda b: "list updated" in b.find_element(By.ID, "status").text)
        set_playing(browser, wait, True)
        time.sleep(args.play_seconds)
        browser.save_screenshot(args.out)
        set_playing(browser, wait, False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
