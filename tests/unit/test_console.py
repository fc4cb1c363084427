"""The console without a broker: its view built from records, the KPIs, the actions its
buttons publish, X12 excerpts and PHI masking, and the web app's access rules (sign-in,
roles, CSRF, expiring sessions, the access log). The browser test on the real pipeline is
tests/e2e/test_console_browser.py."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import InputError
from pipeline.models import Model
from pipeline.serde import registry
from services.console import actions, kpis, x12view
from services.console.access import AccessLog, Users
from services.console.redact import MASK, redact
from services.console.story import chapters
from services.console.view import View
from services.console.web import create_app

GOLDEN = Path(__file__).parent.parent / "contract" / "golden"
REG = registry()
PHI_VALUES = ("GARCIA", "ANA", "1956-07-14", "1EG4TE5MK73", "MRN0042", "42 OAK AVE")


def golden(topic: str, **changes: Any) -> dict[str, Any]:
    value = json.loads((GOLDEN / f"{topic}.json").read_text())
    value.update(changes)
    return value


class Feeder:
    """Encodes records for their topic and applies them to a view, as the console's feed does."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.ts = 1_780_000_000_000

    def __call__(self, topic: str, key: str, value: dict[str, Any] | Model) -> None:
        data = REG.encode(topic, value)
        self.ts += 1000
        self.view.apply(topic, key, REG.decode_dict(topic, data), self.ts, data)


def enc_id(n: int) -> str:
    return f"ehr-a:enc-{n:04d}"


def collected(n: int) -> dict[str, Any]:
    return golden("encounters.collected.v1", encounter_id=enc_id(n), event_id=f"c{n}")


def review(n: int) -> dict[str, Any]:
    value = golden("coding.review.v1", encounter_id=enc_id(n), event_id=f"r{n}")
    value["coded"] = {**value["coded"], "encounter_id": enc_id(n)}
    return value


def verdict(n: int, outcome: str, event: str) -> dict[str, Any]:
    value = golden("encounters.validated.v1", encounter_id=enc_id(n), event_id=event)
    value["outcome"] = outcome
    if outcome == "rejected":
        value["edits"] = [
            {
                "rule_id": "CF-LINE-001",
                "severity": "error",
                "line": 1,
                "field": "lines[0].charge",
                "message": "Line 1 (99213): charge 0.00",
                "category": "general",
                "fix_hint": "Enter the line's charge.",
            }
        ]
    return value


def claim(n: int, frequency: str = "1", event: str | None = None) -> dict[str, Any]:
    return golden(
        "claims.submitted.v1",
        claim_id=f"CF{n:04d}",
        encounter_id=enc_id(n),
        frequency=frequency,
        event_id=event or f"s{n}{frequency}",
    )


def posting(n: int, status: str) -> dict[str, Any]:
    return golden(
        "remittance.posted.v1",
        claim_id=f"CF{n:04d}",
        encounter_id=enc_id(n),
        status=status,
        event_id=f"p{n}",
    )


def denial(n: int) -> dict[str, Any]:
    return golden(
        "remittance.denials.v1", claim_id=f"CF{n:04d}", encounter_id=enc_id(n), event_id=f"d{n}"
    )


@pytest.fixture
def world() -> tuple[View, Feeder]:
    """Five encounters: 1 clean and paid, 2 held for a coder, 3 rejected by the scrubber,
    4 denied, 5 refused by the payer's front end; and one unmatched payment."""
    view = View()
    feed = Feeder(view)
    for n in range(1, 6):
        feed("encounters.collected.v1", enc_id(n), collected(n))
    feed("coding.review.v1", enc_id(2), review(2))
    for n in (1, 3, 4, 5):
        feed(
            "encounters.validated.v1",
            enc_id(n),
            verdict(n, "rejected" if n == 3 else "clean", f"v{n}"),
        )
    for n in (1, 4, 5):
        feed("claims.submitted.v1", f"CF{n:04d}", claim(n))
    feed("remittance.posted.v1", "CF0001", posting(1, "paid"))
    feed("remittance.posted.v1", "CF0004", posting(4, "partially_paid"))
    feed("remittance.denials.v1", "CF0004", denial(4))
    feed(
        "claims.rejections.v1",
        "CF0005",
        golden("claims.rejections.v1", claim_id="CF0005", encounter_id=enc_id(5), event_id="x5"),
    )
    feed("remittance.exceptions.v1", "F0002", golden("remittance.exceptions.v1"))
    audit = golden("coding.audits.v1", encounter_id=enc_id(1), event_id="a1", status="queued")
    audit["codes"] = [{**c, "outcome": None} for c in audit["codes"][:2]]
    audit.update(corrected_codes=[], auditor_id=None, audited_at=None)
    feed("coding.audits.v1", enc_id(1), audit)
    return view, feed


def test_the_queues_hold_what_the_topics_say(world: tuple[View, Feeder]) -> None:
    view, _ = world
    assert [r["encounter_id"] for r in view.review_queue()] == [enc_id(2)]
    assert {r["encounter_id"]: r["source"] for r in view.correction_queue()} == {
        enc_id(3): "scrubber",
        enc_id(5): "payer",
    }
    assert [r["claim_id"] for r in view.denial_queue()] == ["CF0004"]
    assert len(view.exception_queue()) == 1


def test_a_repeated_event_is_applied_once(world: tuple[View, Feeder]) -> None:
    view, feed = world
    before = view.one("SELECT submissions FROM claims WHERE claim_id = 'CF0001'")[0]
    feed("claims.submitted.v1", "CF0001", claim(1))  # same event id: at-least-once repeat
    assert view.one("SELECT submissions FROM claims WHERE claim_id = 'CF0001'")[0] == before
    assert view.repeats == 1


def test_closing_actions_move_items_and_kpis(world: tuple[View, Feeder]) -> None:
    view, feed = world
    before = kpis.overview(view)
    assert before["queues"] == {
        "review": 1,
        "audits": 1,
        "corrections": 2,
        "denials": 1,
        "exceptions": 1,
    }
    assert before["clean"]["clean_claim_rate"] == pytest.approx(3 / 4)
    assert before["denials"]["denial_rate"] == pytest.approx(1 / 2)

    # The coder's decision releases the held encounter (coding then publishes it as coded).
    decision = actions.decision(enc_id(2), "coder1", "confirm")
    feed("coding.decisions.v1", enc_id(2), decision)
    coded = golden("encounters.coded.v1", encounter_id=enc_id(2), event_id="k2")
    feed("encounters.coded.v1", enc_id(2), coded)
    # The corrected encounter comes back clean and is billed.
    feed("encounters.validated.v1", enc_id(3), verdict(3, "clean", "v3b"))
    feed("claims.submitted.v1", "CF0003", claim(3))
    # A denial is appealed, the exception resolved.
    appeal = actions.work_action(
        "denials", "CF0004", "appeal", "biller1", "biller", claim_id="CF0004", amount="20.00"
    )
    feed("workqueue.actions.v1", "CF0004", appeal)
    exc_id = view.exception_queue()[0]["event_id"]
    feed(
        "workqueue.actions.v1",
        exc_id,
        actions.work_action("exceptions", exc_id, "resolve", "m", "manager"),
    )

    after = kpis.overview(view)
    assert after["queues"] == {
        "review": 0,
        "audits": 1,
        "corrections": 1,
        "denials": 0,
        "exceptions": 0,
    }
    assert after["denials"]["appealed"] == 1
    assert after["billed"] == before["billed"] + 1
    # A rejection corrected later is not a clean claim: it needed a person.
    assert after["clean"]["clean_claim_rate"] == pytest.approx(3 / 4)
    assert view.one("SELECT state, state_by FROM denials WHERE claim_id = 'CF0004'")[:] == (
        "appealed",
        "biller1",
    )


def test_receivables_are_gross_and_aged_from_billing(world: tuple[View, Feeder]) -> None:
    view, feed = world
    now = feed.ts + 45 * kpis.DAY_MS
    ar = kpis.receivables(view, now_ms=now)
    charge = Decimal(claim(1)["total_charge"])
    patient = Decimal(posting(1, "paid")["patient_responsibility"])
    at_stake = Decimal(denial(4)["at_stake"])
    patient4 = Decimal(posting(4, "partially_paid")["patient_responsibility"])
    # CF0001 paid: the patient's share; CF0004: patient share + denied; CF0005: refused, all.
    assert ar["ar_total"] == patient + patient4 + at_stake + charge
    buckets = {b.label: b.value for b in ar["by_bucket"]}
    assert buckets["31-60"] == float(ar["ar_total"]) and buckets["0-30"] == 0
    # Written off, the denied money leaves A/R.
    feed(
        "workqueue.actions.v1",
        "CF0004",
        actions.work_action("denials", "CF0004", "write_off", "m", "manager", amount=at_stake),
    )
    assert kpis.receivables(view, now_ms=now)["ar_total"] == patient + patient4 + charge


def test_decision_refuses_what_coding_could_not_read() -> None:
    with pytest.raises(InputError) as info:
        actions.decision(enc_id(1), "c", "amend", "E11.22 1234")
    assert info.value.field == "diagnoses[1]"
    with pytest.raises(InputError) as info:
        actions.decision(enc_id(1), "c", "amend", "E11.22:Q")
    assert info.value.field == "diagnoses[0].poa"
    with pytest.raises(InputError):
        actions.decision(enc_id(1), "c", "amend", "")
    amended = actions.decision(enc_id(1), "c", "amend", "e11.22:y\nN18.31", "0DTJ4ZZ")
    assert [(d.code, d.poa) for d in amended.diagnoses] == [("E11.22", "Y"), ("N18.31", None)]
    assert amended.pcs_procedures == ["0DTJ4ZZ"]


def test_a_correction_changes_only_what_the_user_changed(world: tuple[View, Feeder]) -> None:
    original = REG.decode_dict(
        "encounters.collected.v1", REG.encode("encounters.collected.v1", collected(3))
    )
    assert actions.encounter_path("lines[0].charge") == "services[0].charge"
    assert actions.encounter_path("encounter.coverage.member_id") == "coverage.member_id"
    source_id, body = actions.corrected_encounter(
        original, {"services[0].charge": "125.00", "coverage.member_id": "1EG4TE5MK74"}, attempt="1"
    )
    sent = json.loads(body)
    assert source_id.startswith(f"console:{enc_id(3)}:1:")
    assert sent["services"][0]["charge"] == "125.00"
    assert sent["coverage"]["member_id"] == "1EG4TE5MK74"
    assert "event_id" not in sent and "source_id" not in sent  # intake sets those
    expected = actions.editable(original)
    expected["services"][0]["charge"] = "125.00"
    expected["coverage"]["member_id"] = "1EG4TE5MK74"
    assert sent == expected
    with pytest.raises(InputError) as info:
        actions.corrected_encounter(original, {"patient.birth_date": "1956-13-40"}, attempt="2")
    assert info.value.field == "encounter.patient.birth_date"
    with pytest.raises(InputError) as info:
        actions.corrected_encounter(original, {}, whole="{not json", attempt="3")
    assert info.value.field == "encounter"


def test_work_action_amount_is_checked() -> None:
    with pytest.raises(InputError) as info:
        actions.work_action("denials", "CF1", "write_off", "u", "manager", amount="ten")
    assert info.value.field == "amount"
    assert actions.work_action(
        "denials", "CF1", "appeal", "u", "biller", amount="$1,020.5"
    ).amount == Decimal("1020.50")


TWO_CLAIMS_837 = (
    "ISA*00*          *00*          *ZZ*CLAIMFLOW      *ZZ*CLEARINGHOUSE  "
    "*260302*1405*^*00501*000012345*0*P*:~"
    "GS*HC*CLAIMFLOW*CLEARINGHOUSE*20260302*1405*12345*X*005010X222A1~"
    "ST*837*0001*005010X222A1~BHT*0019*00*1*20260302*1405*CH~"
    "NM1*41*2*CLAIMFLOW*****46*CLAIMFLOW~"
    "HL*1**20*1~NM1*85*2*CLINIC*****XX*1234567893~"
    "HL*2*1*22*0~SBR*P*18*******MB~NM1*IL*1*GARCIA*ANA****MI*1EG4TE5MK73~N3*42 OAK AVE~"
    "N4*DURHAM*NC*27701~DMG*D8*19560714*F~NM1*PR*2*MEDICARE*****PI*MCR~"
    "CLM*CF0001*100***11:B:1*Y*A*Y*Y~HI*ABK:E119~LX*1~SV1*HC:99213*100*UN*1***1~"
    "HL*3*1*22*0~SBR*P*18*******MB~NM1*IL*1*SMITH*JOHN****MI*9XY~DMG*D8*19400101*M~"
    "CLM*CF0002*80***11:B:1*Y*A*Y*Y~HI*ABK:I10~LX*1~SV1*HC:99212*80*UN*1***1~"
    "SE*26*0001~GE*1*12345~IEA*1*000012345~"
)


def test_an_837_excerpt_holds_only_the_claim_asked_for() -> None:
    segs = x12view.claim_837(TWO_CLAIMS_837, "CF0001")
    text = "\n".join(s.text() for s in segs)
    assert "CLM*CF0001" in text and "GARCIA" in text
    assert "SMITH" not in text and "CF0002" not in text  # another patient's claim
    assert [s.tag for s in segs][:3] == ["ISA", "GS", "ST"] and segs[-1].tag == "IEA"
    masked = "\n".join(s.text() for s in x12view.mask(segs))
    for value in ("GARCIA", "ANA", "19560714", "1EG4TE5MK73", "42 OAK AVE", "DURHAM"):
        assert value not in masked
    assert "CLM*CF0001*100" in masked and "NM1*85*2*CLINIC" in masked  # the provider stays
    with pytest.raises(ValueError):
        x12view.split("not x12")


def test_a_claim_shows_its_loops_of_the_interchange_it_names() -> None:
    """Claim events name their interchange (claims.interchanges.v1) instead of carrying it:
    the story fetches it by control number, whichever of the two was read first."""
    view = View()
    feed = Feeder(view)
    feed("encounters.collected.v1", enc_id(1), collected(1))
    feed(
        "claims.submitted.v1",
        "CF0001",
        claim(1) | {"x12": None, "interchange_control_number": "000012345"},
    )
    story = view.story(enc_id(1))
    assert [e.topic for e in story] == ["encounters.collected.v1", "claims.submitted.v1"]
    before = chapters(story, REG, {"CF0001"}, True, view.interchange)[1]
    assert before.segments == []  # not read yet: no loops, and the page says so
    assert "is not read yet" in before.segments_note and "000012345" in before.segments_note
    record = golden(
        "claims.interchanges.v1",
        x12=TWO_CLAIMS_837,
        claim_ids=["CF0001", "CF0002"],
        interchange_control_number="000012345",
    )
    feed("claims.interchanges.v1", "000012345", record)
    assert [e.topic for e in view.story(enc_id(1))] == [e.topic for e in story]  # not a chapter
    chapter = next(
        c
        for c in chapters(view.story(enc_id(1)), REG, {"CF0001"}, True, view.interchange)
        if c.topic == "claims.submitted.v1"
    )
    text = "\n".join(seg.text() for seg in chapter.segments)
    assert "CLM*CF0001*100" in text and "GARCIA" in text and "CF0002" not in text
    masked = next(
        c
        for c in chapters(view.story(enc_id(1)), REG, {"CF0001"}, False, view.interchange)
        if c.topic == "claims.submitted.v1"
    )
    assert masked.segments and "GARCIA" not in "\n".join(seg.text() for seg in masked.segments)


def test_redaction_follows_the_schema_marks() -> None:
    for topic in ("encounters.collected.v1", "coding.review.v1", "encounters.validated.v1"):
        value = REG.decode_dict(topic, REG.encode(topic, golden(topic)))
        shown = json.dumps(redact(REG.latest(topic).schema, value), default=str, ensure_ascii=False)
        for phi in PHI_VALUES:
            assert phi not in shown, (topic, phi)
        assert MASK in shown
    value = REG.decode_dict(
        "encounters.collected.v1",
        REG.encode("encounters.collected.v1", golden("encounters.collected.v1")),
    )
    shown = redact(REG.latest("encounters.collected.v1").schema, value)
    assert shown["coverage"]["payer_id"] == value["coverage"]["payer_id"]  # not PHI: kept


# --- the web app ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Users:
    """One user per role (made once: a password hash costs a third of a second, on purpose)."""
    made = Users(tmp_path_factory.mktemp("console") / "users.json")
    for role in ("coder", "biller", "manager", "viewer"):
        made.add(role, role, f"{role}-password-1")
    return made


@pytest.fixture
def client_for(world: tuple[View, Feeder], users: Users, tmp_path: Path):
    view, feed = world
    log = AccessLog(tmp_path / "access.sqlite3")
    published: list[tuple[str, str]] = []

    def loopback(
        topic: str, key: str, value: Model | bytes, headers: dict[str, str] | None
    ) -> None:
        """What the broker would do for the console: the record comes back to its view."""
        published.append((topic, key))
        if isinstance(value, Model):
            feed(topic, key, value)

    app = create_app(view, REG, loopback, users, log, wait_for_view_s=0.1)

    def client(role: str | None, csrf: bool = False):
        app.config["WTF_CSRF_ENABLED"] = csrf
        c = app.test_client()
        if role:
            resp = c.post("/login", data={"username": role, "password": f"{role}-password-1"})
            assert resp.status_code == 302, resp.data
        return c

    client.published = published  # type: ignore[attr-defined]
    client.log = log  # type: ignore[attr-defined]
    client.app = app  # type: ignore[attr-defined]
    return client


def test_every_page_needs_a_signed_in_user(client_for) -> None:
    c = client_for(None)
    for path in ("/", "/review", "/denials", f"/encounters/{enc_id(1)}"):
        resp = c.get(path)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert c.post("/login", data={"username": "coder", "password": "wrong"}).status_code == 401


def test_a_form_without_its_csrf_token_is_refused(client_for) -> None:
    c = client_for(None, csrf=True)
    assert (
        c.post("/login", data={"username": "coder", "password": "coder-password-1"}).status_code
        == 400
    )
    page = c.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = c.post(
        "/login", data={"username": "coder", "password": "coder-password-1", "csrf_token": token}
    )
    assert resp.status_code == 302
    resp = c.post(f"/review/{enc_id(2)}", data={"action": "confirm"})
    assert resp.status_code == 400 and b"CSRF" in resp.data
    assert client_for.published == []


def test_a_session_expires_when_idle(client_for) -> None:
    c = client_for("manager")
    assert c.get("/").status_code == 200
    with c.session_transaction() as s:
        s["seen"] -= 16 * 60
    resp = c.get("/")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_roles_decide_who_acts(client_for) -> None:
    viewer = client_for("viewer")
    assert viewer.post(f"/review/{enc_id(2)}", data={"action": "confirm"}).status_code == 403
    assert viewer.post("/denials/CF0004", data={"action": "appeal"}).status_code == 403
    assert viewer.get("/access-log").status_code == 403
    assert (
        client_for("biller").post(f"/review/{enc_id(2)}", data={"action": "confirm"}).status_code
        == 403
    )
    assert client_for.published == []
    coder = client_for("coder")
    resp = coder.post(f"/review/{enc_id(2)}", data={"action": "amend", "diagnoses": "E11.22 Q"})
    assert resp.status_code == 400 and b"diagnoses[1]" in resp.data
    assert coder.post(f"/review/{enc_id(2)}", data={"action": "confirm"}).status_code == 302
    assert client_for.published == [("coding.decisions.v1", enc_id(2))]


def test_a_role_without_phi_sees_none_and_every_view_is_logged(client_for) -> None:
    pages = [
        "/",
        "/review",
        "/corrections",
        "/denials",
        "/exceptions",
        f"/review/{enc_id(2)}",
        f"/corrections/{enc_id(3)}",
        "/denials/CF0004",
    ]
    pages += [f"/encounters/{enc_id(n)}" for n in range(1, 6)] + ["/audits", f"/audits/{enc_id(1)}"]
    for role in ("viewer", "manager"):
        c = client_for(role)
        for path in pages:
            resp = c.get(path)
            assert resp.status_code == 200, (role, path)
            html = resp.get_data(as_text=True)
            for phi in PHI_VALUES:
                assert phi not in html, (role, path, phi)
    biller = client_for("biller").get(f"/encounters/{enc_id(1)}").get_data(as_text=True)
    assert "GARCIA" in biller and "1956-07-14" in biller
    rows = client_for.log.recent(1000)
    assert {(r["role"], r["page"]) for r in rows} >= {("viewer", "story"), ("biller", "story")}
    assert all(r["phi_shown"] == (r["role"] == "biller") for r in rows)
    log_page = client_for("manager").get("/access-log").get_data(as_text=True)
    assert enc_id(1) in log_page and "GARCIA" not in log_page


def test_a_write_off_also_goes_to_remittance_to_settle_the_claim(client_for) -> None:
    c = client_for("biller")
    assert c.post("/denials/CF0004", data={"action": "write_off"}).status_code == 302
    assert client_for.published == [
        ("workqueue.actions.v1", "CF0004"),
        ("console.writeoffs.v1", "CF0004"),
    ]
    c.post("/denials/CF0004", data={"action": "appeal"})
    assert client_for.published[-1] == ("workqueue.actions.v1", "CF0004")  # only write-offs


def test_a_denial_marked_for_appeal_leaves_the_open_queue(client_for) -> None:
    c = client_for("biller")
    resp = c.post("/denials/CF0004", data={"action": "appeal", "amount": "bad"})
    assert resp.status_code == 400 and b"amount" in resp.data
    assert (
        c.post("/denials/CF0004", data={"action": "appeal", "note": "records sent"}).status_code
        == 302
    )
    page = c.get("/").get_data(as_text=True)
    assert re.search(r'data-kpi="denials_appealed">1<', page)
    assert "CF0004" not in c.get("/denials").get_data(as_text=True)


def test_a_correction_is_resubmitted_through_intake(client_for) -> None:
    c = client_for("biller")
    page = c.get(f"/corrections/{enc_id(3)}").get_data(as_text=True)
    assert 'name="field:services[0].charge"' in page
    assert c.post(f"/corrections/{enc_id(3)}", data={}).status_code == 400  # nothing changed
    resp = c.post(f"/corrections/{enc_id(3)}", data={"field:services[0].charge": "125.00"})
    assert resp.status_code == 302
    assert client_for.published[0][0] == "intake.raw.v1"
    assert client_for.published[1] == ("workqueue.actions.v1", enc_id(3))
    assert "resubmitted" in c.get("/corrections").get_data(as_text=True)


def test_confirm_is_refused_while_a_suggested_code_is_not_billable(world, client_for) -> None:
    _, feed = world
    held = review(6)
    held["coded"]["diagnoses"][0] = {
        **held["coded"]["diagnoses"][0],
        "code": "E11",
        "billable": False,
    }
    feed("encounters.collected.v1", enc_id(6), collected(6))
    feed("coding.review.v1", enc_id(6), held)
    coder = client_for("coder")
    page = coder.get(f"/review/{enc_id(6)}").get_data(as_text=True)
    assert re.search(r'value="confirm" disabled', page)
    resp = coder.post(f"/review/{enc_id(6)}", data={"action": "confirm"})
    assert resp.status_code == 400 and b"E11 is not billable" in resp.data
    assert client_for.published == []
    assert (
        coder.post(
            f"/review/{enc_id(6)}", data={"action": "amend", "diagnoses": "E11.9"}
        ).status_code
        == 302
    )


def test_a_coding_audit_is_answered_and_scored(world, client_for) -> None:
    view, feed = world
    coder = client_for("coder")
    page = coder.get(f"/audits/{enc_id(1)}").get_data(as_text=True)
    assert "Diabetes, by type, with, chronic kidney disease" in page  # why the code was chosen
    resp = coder.post(
        f"/audits/{enc_id(1)}", data={"outcome": "corrected", "diagnoses": "E11.22 N18.32 7"}
    )
    assert resp.status_code == 400 and b"diagnoses[2]" in resp.data
    resp = coder.post(
        f"/audits/{enc_id(1)}", data={"outcome": "corrected", "diagnoses": "E11.22 N18.32"}
    )
    assert resp.status_code == 302
    assert client_for.published == [("coding.audit-results.v1", enc_id(1))]
    assert view.audit_queue() == []  # answered; coding scores it
    feed(
        "coding.audits.v1",
        enc_id(1),
        golden("coding.audits.v1", encounter_id=enc_id(1), event_id="a1b"),
    )
    assert kpis.audits(view) == {"audited": 1, "accuracy": pytest.approx(1 / 3)}


def test_a_denial_is_fixed_by_a_corrected_claim_from_its_page(world, client_for) -> None:
    view, _ = world
    c = client_for("biller")
    assert f'/corrections/{enc_id(4)}"' in c.get("/denials/CF0004").get_data(as_text=True)
    page = c.get(f"/corrections/{enc_id(4)}").get_data(as_text=True)
    assert "denied by the payer (claim CF0004)" in page
    resp = c.post(f"/corrections/{enc_id(4)}", data={"field:coverage.member_id": "1EG4TE5MK99"})
    assert resp.status_code == 302, re.findall(
        r'class="error"[^<]*>([^<]*)', resp.get_data(as_text=True)
    )
    assert [t for t, _ in client_for.published] == ["intake.raw.v1", "workqueue.actions.v1"]
    assert view.one("SELECT state FROM denials WHERE claim_id = 'CF0004'")[0] == "resubmitted"
    assert c.get(f"/corrections/{enc_id(4)}").status_code == 404  # nothing left to correct


def test_the_view_and_access_log_are_private_files(tmp_path: Path) -> None:
    """Both hold patient data at rest: owner-only, like every other stage's state."""
    folder = tmp_path / "console"
    View(folder / "view.sqlite3")
    AccessLog(folder / "access.sqlite3")
    assert folder.stat().st_mode & 0o777 == 0o700
    for name in ("view.sqlite3", "access.sqlite3"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600, name
