# ruff: noqa: F811 - pytest fixtures imported from serve_fixtures are parameters here
"""The web inspector in a real browser: Playwright drives Debian's Chromium (headless) against
a real uvicorn serving ``create_app`` over a tiny-model memory.

The expected hits, layer counts and matched chunks come from the same ``Memory`` the server
holds. With ``MSA_SCREENSHOTS=1`` the screenshots of docs/server.md are written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium): the inspector "
                "tests need a real browser", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

from serve_fixtures import open_memory, open_url  # noqa: E402, F401 - open_url serves memory

from msa_agent import Memory  # noqa: E402
from msa_agent.errors import UnknownMemoryError  # noqa: E402
from msa_agent.serve.app import create_app  # noqa: E402
from msa_agent.serve.auth import AuthConfig  # noqa: E402
from msa_agent.serve.server import background_server  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.errors.RoutingQualityWarning")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
NOTES = ["Alice works for Acme. Acme is based in Lisbon and sells green tea to Paris.",
         "Paris is the capital of France; Berlin is the capital of Germany.",
         "Bob likes green tea and walks his dog Ada every morning by the river.",
         "The deploy host is called vrai-thorn-7 and restarts on Sundays."]
QUERY = "Where is Acme based?"
KEY = "sk-inspector-0123456789"
HOSTILE = "<img src=x onerror=\"window.pwned=1\"> markup in a memory stays text"
PAGE = 20  # the inspector's page size (app.js)


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Memory]:
    path = tmp_path_factory.mktemp("inspector") / "space"
    with open_memory(path, msa_layers=[0, 1, 2, 3]) as mem:  # every layer: a heatmap of 4 cells
        mem.remember_many(NOTES)
        mem.remember("A note kept in another namespace.", namespace="work")
        mem.remember(HOSTILE, namespace="work")
        mem.remember_many([{"text": f"Log line {i}.", "namespace": "logs"}
                           for i in range(PAGE + 5)])
        yield mem


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def _screenshot(page: sync_api.Page, name: str) -> None:
    if os.environ.get("MSA_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / name), full_page=True)


def _search(page: sync_api.Page, query: str, k: int = 3) -> None:
    page.fill("#query", query)
    page.select_option("#k", str(k))
    page.click("#search")  # enabled once the page knows its namespace
    page.wait_for_selector("#hits .hit")


def test_root_opens_the_inspector_with_namespaces_and_list(page: sync_api.Page, open_url: str,
                                                           memory: Memory) -> None:
    page.goto(open_url + "/")
    assert page.url == f"{open_url}/inspector/"
    page.wait_for_selector("#memories tbody tr")
    shown = page.locator("#namespaces button").all_inner_texts()
    assert shown == memory.namespaces()
    assert page.locator("#memories tbody tr").count() == len(memory.list())
    page.click("#namespaces button[data-namespace=work]")
    page.wait_for_function("document.querySelectorAll('#memories tbody tr').length === 2")
    assert "another namespace" in page.inner_text("#memories tbody")


def test_memory_text_is_never_parsed_as_html(page: sync_api.Page, open_url: str) -> None:
    page.goto(open_url + "/inspector/")
    page.click("#namespaces button[data-namespace=work]")
    page.wait_for_function("document.querySelectorAll('#memories tbody tr').length === 2")
    assert page.locator("#memories tbody img").count() == 0
    assert HOSTILE[:40] in page.text_content("#memories tbody")
    assert page.evaluate("window.pwned") is None


def test_memory_list_pages(page: sync_api.Page, open_url: str, memory: Memory) -> None:
    total = len(memory.list("logs", limit=None))
    page.goto(open_url + "/inspector/")
    page.click("#namespaces button[data-namespace=logs]")
    rows = page.locator("#memories tbody tr")
    page.wait_for_function(f"document.querySelectorAll('#memories tbody tr').length === {PAGE}")
    assert page.is_disabled("#prev") and page.is_enabled("#next")
    page.click("#next")
    page.wait_for_function(f"document.querySelectorAll('#memories tbody tr').length === "
                           f"{total - PAGE}")
    assert page.is_disabled("#next") and rows.first.get_attribute("data-id")
    assert f"{PAGE + 1}–{total}" in page.inner_text("#list-range")


def test_search_shows_hits_heatmap_and_matched_chunk(page: sync_api.Page, open_url: str,
                                                     memory: Memory) -> None:
    expected = memory.recall(QUERY, k=3, explain=True)
    page.goto(open_url + "/inspector/")
    _search(page, QUERY)
    cards = page.locator("#hits .hit")
    assert [cards.nth(i).get_attribute("data-id") for i in range(cards.count())] == \
        [h.id for h in expected]
    first, explained = cards.first, expected[0].explanation
    assert explained is not None and len(explained.layer_scores) > 1
    cells = first.locator(".heatmap .cell")
    assert cells.count() == len(explained.layer_scores)
    assert [int(c.get_attribute("data-layer")) for c in cells.all()] == \
        sorted(explained.layer_scores)
    assert len({c.evaluate("n => n.style.background") for c in cells.all()}) > 1
    assert first.locator("mark").inner_text().strip() == explained.best_chunk_text.strip()
    assert first.locator(".hit-text").text_content() == expected[0].text  # marked in place
    assert first.locator(".channels li").count() >= 1
    _screenshot(page, "inspector-search.png")


def test_forget_asks_then_removes_the_memory(page: sync_api.Page, open_url: str,
                                             memory: Memory) -> None:
    victim = memory.recall("vrai-thorn-7 deploy host Sundays", k=1)[0].id
    page.goto(open_url + "/inspector/")
    page.wait_for_selector(f"#memories tr[data-id='{victim}']")  # listed before
    _search(page, "vrai-thorn-7 deploy host Sundays", k=1)
    card = page.locator(f"#hits .hit[data-id='{victim}']")
    card.locator("button.danger").click()
    assert page.locator("#confirm").is_visible()
    assert page.inner_text("#confirm-id") == victim
    _screenshot(page, "inspector-forget.png")
    page.click("#confirm-cancel")
    assert memory.get(victim).id == victim  # cancelled: still there
    card.locator("button.danger").click()
    page.click("#confirm-forget")
    page.wait_for_selector(f"#hits .hit[data-id='{victim}']", state="detached")
    page.wait_for_selector("#toast:not([hidden])")
    with pytest.raises(UnknownMemoryError):
        memory.get(victim)
    page.wait_for_selector(f"#memories tr[data-id='{victim}']", state="detached")


def test_a_pasted_api_key_is_sent(page: sync_api.Page, memory: Memory) -> None:
    auth = AuthConfig.from_mapping({"keys": {KEY: ["*"]}})
    with background_server(create_app(memory, auth=auth)) as keyed:
        page.goto(keyed + "/inspector/")
        page.wait_for_selector("#error:not([hidden])")
        assert "401" in page.inner_text("#error")
        page.fill("#api-key", KEY)
        page.click("#key-form button")
        page.wait_for_selector("#memories tbody tr")
        assert page.locator("#error").is_hidden()
        assert page.evaluate("sessionStorage.getItem('msa-api-key')") == KEY
