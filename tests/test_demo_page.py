"""The demo page (GET /) and the error report, in a real headless Chromium driven by Selenium.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` (.ci/run installs them);
without them they fail, naming what to install. Screenshots go to tests/artifacts/ (git-ignored).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from nerkit.data.readers import read_conll
from nerkit.error_report import write_error_report
from nerkit.predict import Predictor
from nerkit.serve import Limits, create_app
from tests.helpers import TOY_SENTENCES, require, save_tiny_run, serving, write_conll

ARTIFACTS = Path(__file__).parent / "artifacts"
LIMITS = Limits(max_docs=4, max_chars=400, max_bytes=3000)
TOKEN = "sekret"
# Several of the tiny model's 14-token windows, Chinese, and markup that must stay text.
TEXT = ("John Smith works for Siemens in Berlin <b>and</b> lives in Paris. Maria hired John Smith yesterday, "
        "and the Siemens office in Paris grew.\n张三在北京的华为公司工作。")


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("Chromium is not installed: apt-get install chromium chromium-driver (.ci/run does)")
    webdriver = require("selenium.webdriver", "pip install -e .[test]")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,1000"):
        options.add_argument(arg)
    # The driver path given: Selenium Manager (which would download a driver) stays out of it.
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def predictor(tiny_bert_dir, tmp_path_factory) -> Predictor:
    # The untrained tiny model tags many words with all three types: enough entities and colours.
    return Predictor.from_run(save_tiny_run(tiny_bert_dir, tmp_path_factory.mktemp("run")), "cpu")


@pytest.fixture(scope="module")
def url(predictor):
    """The app on a free port of 127.0.0.1, behind the server's own bearer token (auth_token)."""
    with serving(create_app(predictor, LIMITS, auth_token=TOKEN)) as address:
        yield address


def submit(browser, url: str, text: str, token: str) -> str:
    """Load the page, enter ``text`` and ``token``, click, and return the status line once answered."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url + "/")
    box = browser.find_element(By.ID, "text")
    box.clear()
    # send_keys types character by character; setting the value is quicker for long texts.
    browser.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))",
                           box, text)
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "run").click()
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 60).until(lambda _: status.text and not status.text.startswith("Predicting"))
    return status.text


def test_demo_page_is_one_self_contained_file(url):
    response = httpx.get(url + "/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert ".ent .tag" in page and "/*HIGHLIGHT_CSS*/" not in page  # the shared style is inlined
    # No build step and no CDN: nothing loaded from elsewhere, and the browser is told so.
    assert re.search(r"""\b(src|href)\s*=|@import|url\(|https?://""", page) is None
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert httpx.post(url + "/predict", json={"texts": ["Berlin"]}).status_code == 401  # the server's token guard


# Each entity element's label, offsets and own text (without its label tag).
MARKS_JS = """
return Array.from(document.querySelectorAll('#output mark.ent')).map(m => ({
  label: m.dataset.label, start: +m.dataset.start, end: +m.dataset.end, cls: m.className, tip: m.title,
  text: Array.from(m.childNodes).filter(n => !(n.classList && n.classList.contains('tag')))
                                .map(n => n.textContent).join('')}));
"""


@pytest.mark.slow
def test_page_highlights_the_entities_predict_returns(browser, url):
    status = submit(browser, url, TEXT, TOKEN)
    expected = httpx.post(f"{url}/predict", json={"texts": [TEXT]},
                          headers={"Authorization": f"Bearer {TOKEN}"}).json()["entities"][0]
    assert status.startswith(f"{len(expected)} entities in {len(TEXT)} characters")
    marks = browser.execute_script(MARKS_JS)
    assert [(m["label"], m["start"], m["end"], m["text"]) for m in marks] == \
        [(e["label"], e["start"], e["end"], e["text"]) for e in expected]
    assert len({m["label"] for m in marks}) >= 2
    assert all(m["tip"].startswith(f'{m["label"]} · score ') for m in marks)
    # One colour per type, the same for every entity of that type and its legend chip.
    colour = {m["label"]: m["cls"] for m in marks}
    assert all(m["cls"] == colour[m["label"]] for m in marks) and len(set(colour.values())) == len(colour)
    legend = browser.execute_script("return Array.from(document.querySelectorAll('#legend .chip'))"
                                    ".map(c => [c.dataset.label, c.className])")
    assert [label for label, _ in legend] == httpx.get(f"{url}/health").json()["entity_types"]
    assert all(f"ent {cls.split()[1]}" == colour[label] for label, cls in legend if label in colour)
    # The text is shown verbatim: the markup in it is text, not elements.
    assert browser.execute_script("return document.querySelectorAll('#output b').length") == 0
    shown = browser.execute_script("const out = document.getElementById('output').cloneNode(true);"
                                   "out.querySelectorAll('.tag').forEach(t => t.remove()); return out.textContent")
    assert shown == TEXT
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "demo_page.png"))


@pytest.mark.slow
def test_page_shows_the_servers_errors(browser, url):
    from selenium.webdriver.common.by import By

    status = submit(browser, url, "x" * (LIMITS.max_chars + 1), TOKEN)
    assert browser.find_element(By.ID, "status").get_attribute("class") == "error"
    assert status.startswith("Error 422: The server rejected the text.")
    assert "texts → 0: String should have at most 400 characters" in status
    assert "over" in browser.find_element(By.ID, "counter").get_attribute("class")

    status = submit(browser, url, "John lives in Berlin", token="")
    assert status == "Error 401: Not authorised: fill in the server's bearer token.\nmissing or wrong token: send the header 'Authorization: Bearer <token>'"
    assert browser.execute_script(MARKS_JS) == []


@pytest.mark.slow
def test_error_report_renders_in_the_browser(browser, predictor, tmp_path):
    from selenium.webdriver.common.by import By

    documents = read_conll(write_conll(tmp_path / "toy.conll", TOY_SENTENCES * 3), documents=True)
    documents += read_conll(write_conll(tmp_path / "dev.conll", TOY_SENTENCES))
    path = write_error_report(predictor, documents, tmp_path, "toy")
    browser.get(path.as_uri())
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert headings == ["Per type", "Type confusion", "Errors by class", "Near window edges",
                        "Documents with the most errors"]
    assert all(h.is_displayed() for h in browser.find_elements(By.TAG_NAME, "h2"))
    per_type_rows = browser.find_elements(By.CSS_SELECTOR, "#per-type tr")
    assert [r.find_element(By.TAG_NAME, "td").text for r in per_type_rows[1:]][-1] == "overall"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#confusion table.confusion tr")) == 1 + 4  # 3 types + none
    pair_marks = browser.find_elements(By.CSS_SELECTOR, "#documents .pair mark.ent")
    assert pair_marks and all(m.is_displayed() for m in pair_marks[:5])
    assert "longer than one window" in browser.find_element(By.ID, "window-edges").text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.set_window_size(1200, 1600)
    assert browser.save_screenshot(str(ARTIFACTS / "errors_report.png"))
