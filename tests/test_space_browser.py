"""The Space in a real browser: Playwright (PyPI) driving Debian's chromium, headless, against
the local Hub — the scenarios a new visitor goes through, with assertions on what the page
shows (not only that it loaded).

Screenshots land in ``build/screenshots/``; with ``GRADIENCE_UPDATE_SCREENSHOTS=1`` they are
also copied to ``docs/images/`` (light, dark, 390 px), where the README shows them. With
``CI=true`` a missing browser fails the run; elsewhere the tests skip with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers.hub import EXAMPLE_REPOS, LocalHub, free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "build" / "screenshots"
WAIT = 60_000  # ms; generous, since the whole suite may share two cores with other work

pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning",
    "ignore::ResourceWarning",
    "ignore:.*no_silent_downcasting:Warning",
)


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser tests (make test installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def page_url(hub: LocalHub) -> Iterator[str]:
    pytest.importorskip("gradio", reason="the Space needs the space extra")
    sys.path.insert(0, str(ROOT / "space"))
    import app

    demo = app.build()
    _, url, _ = app.launch(demo, server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (dev extra)")
    if not Path(CHROMIUM).exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium, as `make test` does)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def context(browser: Any) -> Iterator[Any]:
    """One desktop context for the light-theme scenarios: its cache keeps the page's scripts."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    ctx.grant_permissions(["clipboard-read", "clipboard-write"])
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    pg = context.new_page()
    pg.set_default_timeout(WAIT)
    try:
        yield pg
    finally:
        pg.close()


def _shot(page: Any, name: str) -> None:
    path = SHOTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("GRADIENCE_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, ROOT / "docs" / "images" / name)


def _box(page: Any, elem_id: str) -> Any:
    return page.locator(f"#{elem_id}").locator("textarea, input").first


def _audited(page: Any) -> str:
    return page.locator("#audited-source").inner_text()


def _wait_audited(page: Any, name: str) -> None:
    try:
        page.locator("#audited-source", has_text=name).wait_for()
    except Exception:
        page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)  # for whoever debugs it
        raise


def _rec(name: str) -> dict[str, Any]:
    import gradience

    return gradience.audit(EXAMPLES / name).recommendation.to_dict()


def _toast(page: Any, title: str) -> str:
    toast = page.locator(".toast-body", has_text=title).first
    toast.wait_for()
    return toast.inner_text()


def test_landing_then_audit_by_link(context: Any, page: Any, page_url: str) -> None:
    page.goto(page_url, wait_until="domcontentloaded")
    page.get_by_role("button", name="r=64, mostly unused").wait_for()
    # No empty results on landing: no table, no plots, no placeholder headers.
    assert not page.locator("#layer-table").is_visible()
    assert not page.locator("#audit-summary").is_visible()
    page.close()

    # A shared link, opened in a new tab, runs the audit it names.
    repo = EXAMPLE_REPOS["overprovisioned-r64"]
    page = context.new_page()
    page.set_default_timeout(WAIT)
    page.goto(f"{page_url}?repo={repo}", wait_until="domcontentloaded")
    _wait_audited(page, repo)
    rec = _rec("overprovisioned-r64")
    summary = page.locator("#audit-summary")
    assert f"r{rec['nominal_r']} → {rec['rank']}" in summary.inner_text()  # the single recommendation
    assert "Over-provisioned" in summary.inner_text()  # the one-sentence answer
    assert page.locator("#layer-table").get_by_text("down_proj").count() >= 1
    page.locator("#spectrum-plot svg[role=img]").wait_for()
    page.locator("#util-heatmap svg[role=img]").wait_for()
    assert "?repo=" + repo in page.url
    assert f"r={rec['rank']}," in page.locator("#rank-code").inner_text()
    page.get_by_role("button", name="Copy link to this audit").click()
    assert page.evaluate("navigator.clipboard.readText()") == page.url
    _shot(page, "space-audit.png")
    page.get_by_text("The audit as Markdown").click()
    assert f"Gradience audit: `{repo}@main`" in page.locator("#report-md").inner_text()


def test_failed_audit_clears_the_page(page: Any, page_url: str) -> None:
    page.goto(page_url, wait_until="domcontentloaded")
    page.get_by_role("button", name="r=8, never trained").click()
    _wait_audited(page, "examples/untrained-r8")
    # An untrained adapter: no invented rank, no spectrum drawn at a made-up floor.
    assert "has not been trained" in page.locator("#audit-summary").inner_text()
    assert "No spectrum to draw" in page.locator("#spectrum-plot").inner_text()
    assert "No rank to recommend" in page.locator("#rank-code").inner_text()
    assert "r=None" not in page.content()
    box = _box(page, "repo-box")
    box.fill("nobody/no-such-adapter")
    box.press("Enter")
    assert "not found" in _toast(page, "Not found").lower()
    page.locator("#audit-summary").wait_for(state="hidden")
    assert not page.locator("#layer-table").is_visible()
    page.get_by_role("tab", name="Badge").click()
    assert _box(page, "badge-repo").input_value() == ""
    assert "untrained" not in page.locator("#badge-code").inner_text()


def test_upload_then_typed_id(page: Any, page_url: str) -> None:
    page.goto(page_url, wait_until="domcontentloaded")
    box = _box(page, "repo-box")
    box.fill(EXAMPLE_REPOS["overprovisioned-r64"])
    page.get_by_text("Revision, subfolder, or upload files instead").click()
    page.locator("input[type=file]").first.set_input_files(
        sorted(str(p) for p in (EXAMPLES / "healthy-r8").iterdir())
    )
    page.wait_for_function("() => document.querySelector('#repo-box textarea, #repo-box input').value === ''")
    page.get_by_role("button", name="Audit", exact=True).click()
    _wait_audited(page, "upload:")
    assert "r=8" in page.locator("#audit-summary").inner_text()
    page.get_by_role("tab", name="Badge").click()
    assert _box(page, "badge-repo").input_value() == ""  # an upload has no Hub repo to badge
    assert "not a Hub repo" in page.get_by_text("Badges go on a Hub repo").inner_text()

    page.get_by_role("tab", name="Audit", exact=True).click()
    repo = EXAMPLE_REPOS["overprovisioned-r64"]
    box.fill(repo)
    box.press("Enter")
    _wait_audited(page, repo)
    assert "r=64" in page.locator("#audit-summary").inner_text()
    assert "adapter_model" not in page.locator("#audit-summary").inner_text()
    page.get_by_role("tab", name="Badge").click()
    assert _box(page, "badge-repo").input_value() == repo
    rec = _rec("overprovisioned-r64")
    assert f"r{rec['nominal_r']}→{rec['rank']}" in page.locator("#badge-code").inner_text()


def test_merge_audit_change_pair_then_merge(page: Any, page_url: str) -> None:
    page.goto(page_url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Merge audit").click()
    page.get_by_role("button", name="conflicting pair").click()
    page.locator("#merge-summary", has_text="CONFLICTING").wait_for()
    assert "TIES/DARE" in page.locator("#merge-summary").inner_text()  # what to do next
    page.get_by_role("button", name="Merge", exact=True).click()
    _toast(page, "Confirm the merge")  # a severe pair needs a confirmation
    page.locator("#merge-confirm input").check()
    page.get_by_role("button", name="Merge", exact=True).click()
    page.locator("#merge-result", has_text="Merged 2 adapters").wait_for()

    # A new pair typed: the old verdict, plan and merged file go away at once.
    repos = _box(page, "m-repos")
    repos.fill("")
    repos.press_sequentially(f"{EXAMPLE_REPOS['merge-related-a']}\n{EXAMPLE_REPOS['merge-related-b']}")
    page.locator("#merge-summary").wait_for(state="hidden")
    page.get_by_role("button", name="Merge audit", exact=True).click()
    page.locator("#merge-summary", has_text="merge-related-a × ").wait_for()
    assert "CONFLICTING" not in page.locator("#merge-summary").inner_text()
    assert not page.locator("#merge-confirm").is_visible()
    page.get_by_role("button", name="Merge", exact=True).click()
    page.locator(
        "#merge-result", has_text=re.compile(r"Merged 2 adapters \(the merge audit's plan\)")
    ).wait_for()


def test_dark_mode_and_a_phone(browser: Any, page_url: str) -> None:
    repo = EXAMPLE_REPOS["healthy-r8"]
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, color_scheme="dark")
    try:
        page = ctx.new_page()
        page.set_default_timeout(WAIT)
        page.goto(f"{page_url}?repo={repo}&__theme=dark", wait_until="domcontentloaded")
        _wait_audited(page, repo)
        page.locator("#util-heatmap svg[role=img]").wait_for()
        # The plots' text follows the theme: light ink on the dark page.
        ink = page.evaluate("getComputedStyle(document.querySelector('#util-heatmap figure')).color")
        assert _luminance(ink) > 0.6
        _shot(page, "space-audit-dark.png")
    finally:
        ctx.close()
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = ctx.new_page()
        page.set_default_timeout(WAIT)
        page.goto(f"{page_url}?repo={repo}", wait_until="domcontentloaded")
        _wait_audited(page, repo)
        page.locator("#spectrum-plot svg[role=img]").wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
        assert page.locator("#spectrum-plot svg[role=img]").bounding_box()["width"] <= 390
        assert page.locator("#layer-table").get_by_text("q_proj").first.is_visible()
        _shot(page, "space-audit-390.png")
    finally:
        ctx.close()


def _luminance(css: str) -> float:
    r, g, b = (int(x) for x in re.findall(r"\d+", css)[:3])
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255
