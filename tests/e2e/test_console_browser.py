"""The console in a real browser (Debian's chromium driven by playwright) on the real
pipeline: the broker, the five services, the payer simulator and the console as separate
processes. A coder amends a held encounter until it is billed, a biller corrects a rejected
one and resubmits it, a denial is marked for appeal, and the KPIs move; a viewer, who may not
see PHI, finds no name, birth date or member id on any page.

Screenshots of every page go to ``$CLAIMFLOW_CONSOLE_SCREENSHOTS`` (or the test's temp dir).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline import plugins
from pipeline.kafka import ensure_topics, make_producer
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor
from pipeline.tracker import Tracker
from services.console.access import Users
from services.console.app import read_endpoints
from sim.ehr import generate

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

CHROMIUM = os.environ.get("CLAIMFLOW_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROLES = ("coder", "biller", "manager", "viewer")
GOOD = 30


def _browser_or_skip() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run tries)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed: {exc}")
    return sync_playwright


@dataclass
class World:
    bootstrap: str
    url: str
    settings: Settings
    shots: Path
    log_dir: Path
    held: str = ""  # encounter held for a coder
    rejected: str = ""  # encounter the scrubber rejected
    phi: set[str] = field(default_factory=set)  # names, birth dates, member ids sent
    clicks: dict[str, int] = field(default_factory=dict)


def _send(bootstrap: str, settings: Settings, messages: list[tuple[str, str, bytes]]) -> None:
    producer = make_producer(bootstrap, settings)
    for source_id, content_type, body in messages:
        producer.produce(
            settings.topic("intake.raw.v1"),
            key=source_id.encode(),
            value=body,
            headers=[("content-type", content_type.encode())],
        )
    assert producer.flush(10) == 0


def _phi_of(record: dict[str, Any]) -> set[str]:
    patient, coverage = record["patient"], record["coverage"]
    found = {patient["last_name"], patient["first_name"], patient["birth_date"]}
    found |= {coverage["member_id"], patient["birth_date"].replace("-", "")}
    found |= {patient["last_name"].upper(), patient["first_name"].upper()}
    return {v for v in found if len(v) >= 4}  # short names would match ordinary words


def _provider_names(record: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for role in ("billing_provider", "rendering_provider", "attending_provider", "facility"):
        for word in re.split(r"[\s,.]+", (record.get(role) or {}).get("name") or ""):
            names |= {word, word.upper(), word.capitalize()}
    return names


@pytest.fixture(scope="module")
def world(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    _browser_or_skip()
    prefix = f"t{uuid.uuid4().hex[:8]}."
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group)
    ensure_topics(bootstrap, settings, registry())
    run_dir = tmp_path_factory.mktemp("console-e2e")
    users = Users(run_dir / "state" / "console" / "console-users.json")
    for role in ROLES:
        users.add(role, role, f"{role}-password-e2e")
    sup = Supervisor(
        bootstrap,
        run_dir,
        env={
            "CLAIMFLOW_TOPIC_PREFIX": prefix,
            "CLAIMFLOW_GROUP_PREFIX": group,
            # Enough denials among a few claims to work one; every claim past the front end.
            "CLAIMFLOW_PAYER_SIM__CLAIM_DENIAL_RATE": "0.3",
            "CLAIMFLOW_PAYER_SIM__FRONT_END_REJECTION_RATE": "0",
        },
        services=(*plugins.service_names(), *plugins.app_names()),
    )
    sup.start()
    shots = Path(os.environ.get("CLAIMFLOW_CONSOLE_SCREENSHOTS") or run_dir / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    try:
        found = read_endpoints(run_dir / "state" / "console", timeout=60)
        assert found, (
            "the console did not say where it listens:\n"
            + (sup.children["console"].log_path.read_text()[-2000:])
        )
        w = World(bootstrap, found["url"].rstrip("/"), settings, shots, run_dir)
        messages = list(generate(GOOD + 2, seed=int(time.time()) % 100_000, fmt="json"))
        records = [json.loads(body) for _, _, body in messages]
        # One encounter coding must hold (a category header, not a billable code) ...
        held = records[GOOD]
        held["diagnoses"] = [
            {"code": "E11", "system": "icd10cm", "primary": True},
            {"code": "I10", "system": "icd10cm"},
        ]
        for service in held["services"]:
            service["dx_refs"] = ["E11", "I10"]
        # ... and one the scrubber must reject (a line with no charge: CF-LINE-001).
        rejected = records[GOOD + 1]
        rejected["services"][0]["charge"] = 0
        w.held, w.rejected = held["encounter_id"], rejected["encounter_id"]
        for record in records:
            w.phi |= _phi_of(record)
        # A clinician's name on the claim is not PHI, even when a patient shares it.
        w.phi -= {n for r in records for n in _provider_names(r)}
        sent = [
            (sid, ct, json.dumps(r).encode())
            for (sid, ct, _), r in zip(messages, records, strict=True)
        ]
        tracker = Tracker(bootstrap, settings)
        tracker.ledger.sent.update(sid for sid, _, _ in sent)
        _send(bootstrap, settings, sent)
        done = tracker.wait(lambda led: not led.lost(), timeout=180)
        ledger = tracker.ledger
        tracker.close()
        assert done, f"not settled: {ledger.lost()[:5]}"
        assert w.held in ledger.in_review() and ledger.outcome[w.rejected] == "rejected"
        assert ledger.denials, "the payer simulator denied nothing: nothing to appeal"
        yield w
    finally:
        sup.stop()
    for child in sup.children.values():
        log = child.log_path.read_text(errors="replace")
        assert "Traceback" not in log, f"{child.name}:\n{log[-3000:]}"
        if child.name == "console":
            leaked = sorted(v for v in w.phi if v in log)
            assert not leaked, f"the console logged PHI: {leaked[:3]}"


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    with _browser_or_skip()() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Session:
    """One signed-in user in their own browser context; counts the clicks they make."""

    def __init__(self, browser: Any, world: World, role: str) -> None:
        self.w, self.role = world, role
        self.ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(15_000)
        self.clicks = 0
        self.page.goto(world.url + "/login")
        self.page.fill("input[name=username]", role)
        self.page.fill("input[name=password]", f"{role}-password-e2e")
        self.page.click("button[type=submit]")
        self.page.wait_for_url(world.url + "/")

    def click(self, selector: str) -> None:
        self.clicks += 1
        self.page.click(selector)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.w.shots / f"{name}.png"), full_page=True)

    def until(self, path: str, ready: Callable[[Any], bool], timeout: float = 90) -> None:
        """Load ``path`` again until ``ready(page)``: the view follows the topics."""
        deadline = time.monotonic() + timeout
        while True:
            self.page.goto(self.w.url + path)
            if ready(self.page):
                return
            assert time.monotonic() < deadline, f"{path} never got ready for {self.role}"
            time.sleep(1)

    def kpi(self, name: str) -> str:
        return self.page.inner_text(f"[data-kpi={name}]").strip()

    def close(self) -> None:
        self.ctx.close()


def _count(text: str) -> int:
    return int(re.match(r"\d+", text).group(0))  # type: ignore[union-attr]


def test_a_coder_a_biller_and_a_manager_close_items_and_the_kpis_move(
    world: World, browser: Any
) -> None:
    manager = Session(browser, world, "manager")
    manager.until("/", lambda p: _count(p.inner_text("[data-kpi=review_open]")) >= 1)
    before = {
        k: manager.kpi(k)
        for k in (
            "review_open",
            "corrections_open",
            "denials_open",
            "denials_appealed",
            "billed",
            "clean_claim_rate",
        )
    }
    manager.shot("overview-before")
    assert _count(before["denials_open"]) >= 1 and _count(before["denials_appealed"]) == 0

    # The coder: the review queue, the held encounter, amend to billable codes.
    coder = Session(browser, world, "coder")
    coder.click("nav >> text=Coder review")
    coder.shot("review-queue")
    coder.click(f"a:text-is('{world.held}')")
    assert "header" in coder.page.inner_text("main")  # why it is held
    coder.shot("review-item")
    coder.page.fill("textarea[name=diagnoses]", "E11.9\nI10")
    coder.click("button[value=amend]")
    assert world.held in coder.page.inner_text(".flash")
    world.clicks["coder round trip"] = coder.clicks
    coder.until(
        f"/encounters/{world.held}",
        lambda p: p.locator("[data-topic='claims.submitted.v1']").count() >= 1,
    )
    assert "Coder decision" in coder.page.inner_text("main")
    coder.shot("story-released-coder")
    coder.page.goto(world.url + "/audits")
    coder.shot("audit-queue")
    sampled = coder.page.locator("#audit-queue tbody a")
    if sampled.count():
        sampled.first.click()
        coder.shot("audit-item")
    coder.close()

    # The biller: the correction queue, the rejected encounter, the charge, resubmit.
    biller = Session(browser, world, "biller")
    biller.click("nav >> text=Corrections")
    biller.shot("corrections-queue")
    biller.click(f"a:text-is('{world.rejected}')")
    assert "CF-LINE-001" in biller.page.inner_text("#edits")
    biller.shot("correction-item")
    biller.page.fill("input[name='field:services[0].charge']", "185.00")
    biller.click("text=Resubmit corrected encounter")
    assert "Resubmitted" in biller.page.inner_text(".flash")
    world.clicks["biller correction"] = biller.clicks
    biller.until(  # the claim event and its interchange come on two topics, in either order
        f"/encounters/{world.rejected}",
        lambda p: p.locator("[data-topic='claims.submitted.v1'] ol.x12").count() >= 1,
    )
    assert "CLM*" in biller.page.inner_text("main") and "*185*" in biller.page.inner_text("main")
    biller.shot("story-corrected-biller")

    # A denial: open the first one, mark it for appeal.
    start = biller.clicks
    biller.click("nav >> text=Denials")
    biller.shot("denials-queue")
    first = biller.page.locator("#denials-queue tbody a").first
    claim_id = first.inner_text()
    biller.click(f"a:text-is('{claim_id}')")
    assert "CARC" in biller.page.inner_text("main") or biller.page.locator("#reasons").count()
    biller.shot("denial-item")
    biller.page.fill("form:has(button[value=appeal]) input[name=note]", "records sent")
    biller.click("button[value=appeal]")
    assert "Appeal recorded" in biller.page.inner_text(".flash")
    world.clicks["denial appeal"] = biller.clicks - start
    biller.page.goto(world.url + f"/denials/{claim_id}")
    assert biller.page.inner_text("#denial-state") == "appealed"
    biller.page.goto(world.url + "/exceptions")
    biller.shot("exceptions-queue")
    biller.close()

    # The two encounters the people fixed are billed and answered by the payer (which may
    # deny them too: the simulator denies three claims in ten here).
    tracker = Tracker(world.bootstrap, world.settings)
    fixed = (world.held, world.rejected)

    def answered(led: Any) -> bool:
        return all(led.encounter_claim.get(e) in led.posted for e in fixed)

    assert tracker.wait(answered, timeout=90), "the fixed encounters were not remitted"

    # The manager sees the KPIs move. A denial of a fixed encounter may reach the tracker
    # after its posting (another topic): it is counted again at each look, not once before.
    seen: dict[str, object] = {}

    def moved(p: Any) -> bool:
        tracker.poll()
        led = tracker.ledger
        new_denials = sum(led.encounter_claim[e] in led.denials for e in fixed)
        seen.update(
            billed=(_count(p.inner_text("[data-kpi=billed]")), _count(before["billed"]) + 2),
            appealed=(_count(p.inner_text("[data-kpi=denials_appealed]")), 1),
            denials_open=(
                _count(p.inner_text("[data-kpi=denials_open]")),
                _count(before["denials_open"]) - 1 + new_denials,
            ),
        )
        return all(shown == wanted for shown, wanted in seen.values())  # type: ignore[misc]

    try:
        manager.until("/", moved)
    except AssertionError as exc:
        raise AssertionError(f"KPIs (shown, wanted): {seen}") from exc
    finally:
        tracker.close()
    after = {k: manager.kpi(k) for k in before}
    manager.shot("overview-after")
    assert _count(after["review_open"]) == _count(before["review_open"]) - 1
    assert _count(after["corrections_open"]) == _count(before["corrections_open"]) - 1
    # Both fixed encounters needed a person: the clean claim rate does not improve by them.
    manager.page.goto(world.url + "/access-log")
    log_text = manager.page.inner_text("#access-log")
    assert re.search(rf"coder\s+coder\s+review\s+{re.escape(world.held)}", log_text)
    assert re.search(rf"biller\s+biller\s+story\s+{re.escape(world.rejected)}.*yes", log_text)
    manager.shot("access-log")
    manager.close()
    (world.shots / "clicks.json").write_text(json.dumps(world.clicks))


def test_a_viewer_sees_no_name_birth_date_or_member_id_anywhere(world: World, browser: Any) -> None:
    viewer = Session(browser, world, "viewer")
    pages = ["/", "/review", "/corrections", "/denials?state=all", "/exceptions"]
    viewer.page.goto(world.url + "/denials?state=all")
    claims = viewer.page.locator("#denials-queue tbody a").all_inner_texts()
    pages += [f"/denials/{c}" for c in claims[:3]]
    pages += [f"/encounters/{e}" for e in (world.held, world.rejected)]
    pages += [f"/claims/{c}" for c in claims[:3]]
    pages += [f"/corrections/{world.rejected}", f"/review/{world.held}"]
    seen_masked = False
    for path in pages:
        viewer.page.goto(world.url + path)
        html = viewer.page.content()
        leaked = sorted(v for v in world.phi if re.search(rf"\b{re.escape(v)}\b", html))
        assert not leaked, f"{path} shows PHI to a viewer: {leaked[:3]}"
        seen_masked |= "•••" in html
    assert seen_masked  # the pages did carry patient fields, masked
    viewer.page.goto(world.url + f"/encounters/{world.held}")
    viewer.page.locator("details").first.evaluate("d => d.open = true")
    viewer.shot("story-viewer")
    assert viewer.page.goto(world.url + "/access-log").status == 403
    viewer.close()
