"""The review page educators use (`GET /`), driven in the real Chromium at a phone's width with the keyboard where
an educator would use it: a wrong token refused, a note classified, a suggestion accepted, another note corrected
to an ELG picked from the taxonomy, and both notes in the landing area. And the label space the page reads,
`GET /v1/taxonomy`: behind the token, every attribute with its levels, 501 without a taxonomy."""

import datetime as dt
import json
from dataclasses import replace

import httpx
import pytest

from obs_platform.predictions import Instance, Prediction
from obs_platform.serving.app import create_app
from obs_platform.serving.feedback import FeedbackStore
from obs_platform.serving.prediction_log import PredictionLog

from .browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS
from .endpoint_harness import served
from .test_feedback import TOKEN, SuggestingPredictor, exported_rows

AUTHORISED = {"Authorization": f"Bearer {TOKEN}"}
NOTES = [
    "Listened to the whole Gruffalo story and said why the mouse was clever.",
    "Ran, jumped and balanced along the low beam without a hand to hold.",
    "Played in the sand tray.",
]


class ConfidentPredictor(SuggestingPredictor):
    """`SuggestingPredictor`, its first suggestion reaching its domain's threshold."""

    def predict(self, instances: list[Instance]) -> list[Prediction]:
        return [
            Prediction.ranked([replace(p.top_k[0], confident=True), *p.top_k[1:]], p.level, p.level_confidence)
            for p in super().predict(instances)
        ]


@pytest.fixture
def review_endpoint(tmp_path, eyfs):
    store = FeedbackStore(tmp_path, eyfs, records_per_file=2)
    log = PredictionLog(tmp_path / "serving" / "predictions")
    app = create_app(
        ConfidentPredictor(eyfs),
        {"model_version": "m/v1"},
        TOKEN,
        prediction_log=log,
        feedback_store=store,
        taxonomy=eyfs,
    )
    with served(app) as url:
        yield url, store


def test_the_page_asks_no_token_and_the_label_space_does(review_endpoint, eyfs):
    url, _ = review_endpoint
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing loaded from elsewhere
    assert httpx.get(f"{url}/v1/taxonomy").status_code == 401
    assert httpx.get(f"{url}/v1/taxonomy", headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = httpx.get(f"{url}/v1/taxonomy", headers=AUTHORISED).json()
    assert [(d["id"], d["key"], d["name"]) for d in answer["domains"]] == [(d.id, d.key, d.name) for d in eyfs.domains]
    listed = {a["id"]: a for d in answer["domains"] for a in d["attributes"]}
    assert listed == {
        a.id: {"id": a.id, "name": a.name, "levels": [level.title for level in a.label_levels]} for a in eyfs.attributes
    }


def test_without_a_taxonomy_the_label_space_is_501(eyfs):
    app = create_app(SuggestingPredictor(eyfs), {"model_version": "m/v1"}, TOKEN)
    with served(app) as url:
        assert httpx.get(f"{url}/").status_code == 200
        answer = httpx.get(f"{url}/v1/taxonomy", headers=AUTHORISED)
    assert answer.status_code == 501 and "without its taxonomy" in answer.json()["detail"]


def test_an_educator_accepts_and_corrects_on_a_phone(review_endpoint, tmp_path, eyfs):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    expect = sync_api.expect
    url, store = review_endpoint
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    suggested, corrected_to = eyfs.attributes[:3], eyfs.attributes[5]
    predicted_level = suggested[0].label_levels[0].title
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 390, "height": 844},
            is_mobile=True,
            has_touch=True,
        )
        page = browser.new_page()
        page.set_default_timeout(15_000)
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        status, token = page.get_by_role("status"), page.get_by_label("Endpoint token")
        suggestions = page.locator("#suggestions li")
        try:
            page.goto(f"{url}/")
            # A wrong token: the endpoint's refusal shown, and the token asked for again.
            token.fill("wrong")
            token.press("Enter")
            expect(status).to_contain_text("refused the token")
            expect(token).to_be_focused()
            token.fill(TOKEN)
            token.press("Enter")
            expect(page.get_by_role("button", name="Change token")).to_be_visible()
            page.reload()  # kept for the browser session
            expect(page.get_by_role("button", name="Change token")).to_be_visible()

            # The first note, keyboard only: typed, age and name, back to the note, Ctrl+Enter.
            page.get_by_label("Observation note").focus()
            page.keyboard.type(NOTES[0])
            page.keyboard.press("Tab")
            page.keyboard.type("40")
            page.keyboard.press("Tab")
            page.keyboard.type("Amara")
            page.keyboard.press("Shift+Tab")
            page.keyboard.press("Shift+Tab")
            page.keyboard.press("Control+Enter")
            expect(suggestions).to_have_count(3)
            shown = zip(suggestions.all(), suggested, ("60% · confident", "30% · not confident", "10% · not confident"))
            for item, attribute, share in shown:
                domain = eyfs.domain(attribute.domain_id)
                expect(item).to_contain_text(f"{domain.name} → {attribute.name}")
                expect(item).to_contain_text(f"confidence {share}")
                expect(item).to_contain_text(f"level {predicted_level}")
            expect(page.get_by_role("heading", name="Suggestions")).to_be_focused()
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            page.screenshot(path=str(SCREENSHOTS / "review-page.png"), full_page=True)
            suggestions.first.get_by_role("button", name="Accept").click()
            expect(status).to_contain_text(f"Recorded: accepted {eyfs.domain(suggested[0].domain_id).name}")
            expect(page.get_by_label("Observation note")).to_be_focused()
            expect(page.get_by_label("Observation note")).to_have_value("")

            # The second: Tab to Classify and Enter; another ELG picked, its level, sent with the space bar.
            page.keyboard.type(NOTES[1])
            # The age, the name and the date (all kept; Chromium tabs through a date's fields one by one), the button.
            for _ in range(8):
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.id") == "classify":
                    break
            expect(page.get_by_role("button", name="Classify")).to_be_focused()
            page.keyboard.press("Enter")
            expect(suggestions).to_have_count(3)
            page.get_by_label("Early learning goal").select_option(str(corrected_to.id))
            expect(page.get_by_label("Level", exact=True)).to_have_value(predicted_level)  # the predicted, if valid
            page.get_by_label("Level", exact=True).select_option(corrected_to.label_levels[-1].title)
            page.get_by_role("button", name="Send this ELG").press("Space")
            expect(status).to_contain_text(f"Recorded: corrected to {eyfs.domain(corrected_to.domain_id).name}")
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

            # A note with nothing visible: the endpoint's 422 shown as it put it. Then "none of these".
            page.keyboard.type("   ")
            page.keyboard.press("Control+Enter")
            expect(status).to_contain_text("The endpoint answered 422: instances.0.notes: Value error, notes are empty")
            page.get_by_label("Observation note").fill(NOTES[2])
            page.keyboard.press("Control+Enter")
            expect(suggestions).to_have_count(3)
            page.get_by_role("button", name="None of these").click()
            expect(status).to_contain_text("Recorded: none of these")
        except Exception:
            page.screenshot(path=str(SCREENSHOTS / "review-page-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    # The page broke no rule of its Content-Security-Policy and threw nothing (the refused token's 401 aside).
    assert [e for e in errors if "Failed to load resource" not in e] == []

    # Both records, a file's worth, published into the landing area as an export the data assets read.
    [export], result = exported_rows(tmp_path, eyfs)
    assert result.quarantined.empty and len(result.canonical) == 2
    records = [json.loads(line) for line in export.read_text().splitlines()]
    assert [(r["observationNotes"], r["attributeId"], r["progressionTitle"]) for r in records] == [
        (NOTES[0], suggested[0].id, predicted_level),
        (NOTES[1], corrected_to.id, corrected_to.label_levels[-1].title),
    ]
    assert {(r["childAgeMonths"], r["childName"]) for r in records} == {(40, "Amara")}  # as they were sent
    assert {r["observationDate"] for r in records} == {dt.date.today().isoformat()}  # the page's default: today
    assert store.counts() == {"accepted": 1, "corrected": 1, "none_of_these": 1}
