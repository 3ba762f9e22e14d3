"""Screenshots for the README: docs/demo.png (the demo page at GET /) and docs/errors.png (the
error report), taken in headless Chromium from a trained run directory.

    PYTHONPATH=. python docs/make_screenshots.py [--run-dir bench/runs/pages_model]

The run directory (MiniLM fine-tuned on 1,500 CoNLL-2003 sentences for one epoch)::

    python -m nerkit.train data=conll2003 +data.train.limit=1500 +data.dev.limit=500 trainer.epochs=1 \\
        trainer.batch_size=8 trainer.lr=2e-4 data.test=null hydra.run.dir=bench/runs/pages_model

The error report is made first, as ``python -m nerkit.report errors`` makes it, on the first
200 sentences of CoNLL-2003 valid. Needs chromium + chromium-driver (Debian) and selenium; CJK
glyphs need a CJK font (fonts-wqy-microhei).
"""
from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from nerkit.predict import Predictor
from nerkit.report import main as report_main
from nerkit.serve import create_app

DOCS = Path(__file__).resolve().parent
DEMO_TEXT = (
    "Germany's Angela Merkel met French President Emmanuel Macron in Berlin on Monday to discuss the "
    "European Union budget, a spokesman for the German government said.\n"
    "Shares of Volkswagen and Siemens rose on the Frankfurt stock exchange after the Bundesbank raised its "
    "growth forecast. Bayern Munich beat Borussia Dortmund 2-1 at the Allianz Arena, with Robert Lewandowski "
    "scoring twice."
)


def chromium(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))


def serve(predictor: Predictor) -> tuple[uvicorn.Server, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(predictor), log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def demo_screenshot(run_dir: Path, path: Path) -> None:
    server, url = serve(Predictor.from_run(run_dir, "cpu"))
    browser = chromium(1100, 760)
    try:
        browser.get(url + "/")
        box = browser.find_element(By.ID, "text")
        browser.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))",
                               box, DEMO_TEXT)
        browser.find_element(By.ID, "run").click()
        status = browser.find_element(By.ID, "status")
        WebDriverWait(browser, 120).until(lambda _: status.text and not status.text.startswith("Predicting"))
        marks = browser.find_elements(By.CSS_SELECTOR, "#output mark.ent")
        if not marks:
            raise SystemExit(f"the model found no entities: {status.text}")
        height = browser.execute_script("return document.querySelector('main').scrollHeight")
        browser.set_window_size(1100, height + 140)  # + the window's own bars: the page and nothing below
        marks = browser.find_elements(By.CSS_SELECTOR, "#output mark.ent")
        ActionChains(browser).move_to_element(marks[-1]).perform()  # show one tooltip, below the last line
        browser.save_screenshot(str(path))
    finally:
        browser.quit()
        server.should_exit = True
    print(f"wrote {path} ({len(marks)} entities)")


def errors_screenshot(run_dir: Path, path: Path) -> None:
    report_main(["errors", f"run_dir={run_dir}", "data=conll2003", "split=dev", "limit=200"])
    browser = chromium(1200, 1500)
    try:
        browser.get((run_dir / "errors.html").resolve().as_uri())
        browser.save_screenshot(str(path))
    finally:
        browser.quit()
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=DOCS.parent / "bench" / "runs" / "pages_model")
    args = parser.parse_args()
    demo_screenshot(args.run_dir, DOCS / "demo.png")
    errors_screenshot(args.run_dir, DOCS / "errors.png")


if __name__ == "__main__":
    main()
