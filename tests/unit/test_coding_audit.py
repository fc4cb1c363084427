"""Coding audits: sampling, scoring by category and source, failing categories, corrections."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from factories import RECEIVED_AT, codesets_bare, dx, encounter, service

from pipeline.errors import InputError
from pipeline.models import (
    AuditDiagnosis,
    AuditResult,
    ClaimSettled,
    CodedEncounter,
    CoderDecision,
    CodingAudit,
)
from pipeline.settled import DAY_S, RetentionPolicy
from services.coding.audit import AuditPolicy, AuditPruned, AuditStore
from services.coding.domain import Coder
from services.coding.review import ReviewFlow, ReviewStore
from services.coding.terms import default_index

AUDITED_AT = datetime(2026, 3, 5, 14, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def coder() -> Coder:
    return Coder(codesets_bare(), index=default_index())


def make_flow(coder: Coder, **policy: float) -> ReviewFlow:
    return ReviewFlow(coder, ReviewStore(":memory:"), AuditStore(":memory:", AuditPolicy(**policy)))  # type: ignore[arg-type]


def problem_visit(n: int, *problems: str) -> object:
    """An office visit whose diagnoses are a problem list (text), coded automatically."""
    return encounter(
        encounter_id=f"ENC-A-{n:04d}",
        diagnoses=[
            dx("", system="text", display=p, primary=(i == 0)) for i, p in enumerate(problems)
        ],
        services=[service("99213", "150.00")],
    )


def result(n: int, outcome: str = "agree", *codes: str, eid: str | None = None) -> AuditResult:
    return AuditResult(
        event_id=eid or f"r{n}-{outcome}-{'-'.join(codes)}",
        encounter_id=f"ENC-A-{n:04d}",
        auditor_id="mlee-ccs",
        outcome=outcome,  # type: ignore[arg-type]
        diagnoses=[AuditDiagnosis(code=c) for c in codes],
        audited_at=AUDITED_AT,
    )


def topics(outs: list) -> list[str]:
    return [t for t, _, _ in outs]


def test_the_sample_is_the_configured_share_and_the_same_on_replay() -> None:
    policy = AuditPolicy(share=0.1)
    drawn = [policy.sampled(f"ENC-{i}") for i in range(4000)]
    assert 0.08 < sum(drawn) / len(drawn) < 0.12
    assert drawn == [policy.sampled(f"ENC-{i}") for i in range(4000)]
    assert not any(AuditPolicy(share=0).sampled(f"ENC-{i}") for i in range(100))


def test_a_sampled_encounter_is_billed_and_queued_with_each_codes_reason(coder: Coder) -> None:
    flow = make_flow(coder, share=1.0)
    outs = flow.encounter(problem_visit(1, "DM2", "CKD stage 3b"), now=RECEIVED_AT)  # type: ignore[arg-type]
    assert topics(outs) == ["encounters.coded.v1", "coding.audits.v1"]
    audit = outs[1][2]
    assert isinstance(audit, CodingAudit) and audit.status == "queued" and audit.billed
    assert [(c.code, c.category, c.source) for c in audit.codes] == [
        ("E1122", "E11", "mapped"),
        ("N1832", "N18", "mapped"),
    ]
    assert all(c.rationale for c in audit.codes) and audit.codes[0].outcome is None
    assert flow.audits is not None and flow.audits.queued_count() == 1


def test_agree_counts_every_code_right(coder: Coder) -> None:
    flow = make_flow(coder, share=1.0)
    flow.encounter(problem_visit(1, "DM2", "CKD stage 3b"), now=RECEIVED_AT)  # type: ignore[arg-type]
    outs = flow.audit_result(result(1))
    assert topics(outs) == ["coding.audits.v1"]  # nothing to re-bill
    assert outs[0][2].status == "audited"
    assert {c.outcome for c in outs[0][2].codes} == {"agree"}
    assert flow.audits is not None
    assert {(a.key, a.rate) for a in flow.audits.accuracy("category")} == {
        ("E11", 1.0),
        ("N18", 1.0),
    }
    assert flow.audit_result(result(1)) == []  # the same result again: nothing new


def test_a_correction_after_billing_recodes_the_encounter_for_a_replacement(coder: Coder) -> None:
    flow = make_flow(coder, share=1.0)
    first = flow.encounter(problem_visit(2, "DM2", "CKD stage 3b"), now=RECEIVED_AT)  # type: ignore[arg-type]
    billed = first[0][2]
    outs = flow.audit_result(result(2, "corrected", "E11.22", "N18.31"))
    assert topics(outs) == ["coding.audits.v1", "encounters.coded.v1"]
    scored = outs[0][2]
    assert [(c.code, c.source, c.outcome) for c in scored.codes] == [
        ("E1122", "mapped", "agree"),
        ("N1832", "mapped", "corrected"),
        ("N1831", "missed", "corrected"),
    ]
    recoded = outs[1][2]
    assert isinstance(recoded, CodedEncounter) and isinstance(billed, CodedEncounter)
    assert [d.code for d in recoded.diagnoses] == ["E1122", "N1831"]
    assert recoded.event_id != billed.event_id  # a new event: claims answers with a 7
    assert flow.audits is not None
    by_source = {a.key: (a.agreed, a.audited) for a in flow.audits.accuracy("source")}
    assert by_source == {"mapped": (1, 2), "missed": (0, 1)}
    with pytest.raises(InputError) as err:  # a second, different result
        flow.audit_result(result(2, "agree"))
    assert err.value.field == "encounter_id"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (result(9), "encounter_id"),  # nothing queued for it
        (result(3, "agree", "E11.9"), "diagnoses"),
        (result(3, "corrected"), "diagnoses"),
        (result(3, "corrected", "E11.99"), "diagnoses[0].code"),  # not a code
    ],
)
def test_a_bad_audit_result_names_the_field(coder: Coder, bad: AuditResult, field: str) -> None:
    flow = make_flow(coder, share=1.0)
    flow.encounter(problem_visit(3, "DM2"), now=RECEIVED_AT)  # type: ignore[arg-type]
    with pytest.raises(InputError) as err:
        flow.audit_result(bad)
    assert err.value.field == field


def test_a_failing_category_is_held_for_review_until_its_audits_recover(coder: Coder) -> None:
    flow = make_flow(coder, share=1.0, threshold=0.9, min_audits=3, window=4)
    assert flow.audits is not None
    for n in (10, 11):  # two audits correct the CKD stage: four wrong N18 codes
        flow.encounter(problem_visit(n, "CKD stage 3b"), now=RECEIVED_AT)  # type: ignore[arg-type]
        flow.audit_result(result(n, "corrected", "N18.31"))
    assert set(flow.audits.failing()) == {"N18"}
    # The next CKD encounter is not coded automatically: it is held for a coder.
    outs = flow.encounter(problem_visit(12, "CKD stage 4"), now=RECEIVED_AT)  # type: ignore[arg-type]
    assert topics(outs) == ["coding.review.v1"]
    assert any("audit: category N18" in r for r in outs[0][2].reasons)
    # Another category is still coded automatically.
    assert topics(flow.encounter(problem_visit(13, "GERD"), now=RECEIVED_AT))[0] == (  # type: ignore[arg-type]
        "encounters.coded.v1"
    )
    # Coders confirm the held ones: each review decision counts as an agreeing audit.
    for n in (12, 14, 15, 16):
        if n != 12:
            flow.encounter(problem_visit(n, "CKD stage 4"), now=RECEIVED_AT)  # type: ignore[arg-type]
        decided = flow.decision(
            CoderDecision(
                event_id=f"d{n}",
                encounter_id=f"ENC-A-{n:04d}",
                coder_id="jdoe-ccs",
                action="confirm",
                decided_at=AUDITED_AT,
            )
        )
        assert topics(decided) == ["encounters.coded.v1", "coding.audits.v1"]
    assert flow.audits.failing() == {}  # the window holds four agreeing codes: recovered
    outs = flow.encounter(problem_visit(17, "CKD stage 4"), now=RECEIVED_AT)  # type: ignore[arg-type]
    assert topics(outs)[0] == "encounters.coded.v1"


def test_a_correction_after_billing_goes_out_as_a_replacement_claim(
    coder: Coder, tmp_path: Path
) -> None:
    # Coding -> (the scrubber's verdict) -> claims: the corrected codes reach the payer as a
    # frequency-7 claim that replaces the one billed, through claims' corrections path.
    from test_claims_service import incoming, stage, submitted

    from pipeline.models import ValidatedEncounter
    from services.x12.validate import validate_x12

    flow = make_flow(coder, share=1.0)
    billed = flow.encounter(problem_visit(20, "DM2", "CKD stage 3b"), now=RECEIVED_AT)[0][2]
    recoded = flow.audit_result(result(20, "corrected", "E11.22", "N18.31"))[1][2]

    def verdict(coded: CodedEncounter) -> ValidatedEncounter:
        return ValidatedEncounter(
            event_id=f"v-{coded.event_id}",
            encounter_id=coded.encounter_id,
            outcome="clean",
            edits=[],
            rule_pack_version="2026.1",
            coded=coded,
            validated_at=AUDITED_AT,
        )

    claims, _ = stage(tmp_path)
    [original] = submitted(list(claims.handle_batch([incoming(verdict(billed), 0)])))
    claims.on_batch_done()
    [replacement] = submitted(list(claims.handle_batch([incoming(verdict(recoded), 1)])))
    assert original.frequency == "1" and replacement.frequency == "7"
    assert replacement.claim_id == original.claim_id
    assert "N1831" in replacement.x12 and "N1832" not in replacement.x12
    assert validate_x12(replacement.x12) == []


def test_audit_accuracy_over_several_instances_sums_their_windows(
    coder: Coder, tmp_path: Path
) -> None:
    """Two coding instances score the audits of their own partitions. The figure the
    dashboards show (the recording rules over both instances' metrics) is the accuracy
    of every audit, as one instance that scored them all would have it; the lowest or the
    mean of the instances' own rates is not."""
    import shutil
    import subprocess

    import yaml
    from prometheus_client import REGISTRY

    from services.coding.app import export_accuracy

    # (min_audits: no category stops being coded automatically here)
    first, second, alone = (make_flow(coder, share=1.0, min_audits=100) for _ in range(3))
    for n, flow, answer in (
        (20, first, result(20)),  # E1122 and N1832 agreed
        (21, first, result(21)),
        (22, second, result(22, "corrected", "E11.22", "N18.31")),  # N1832 wrong, N1831 missed
        (23, second, result(23, "corrected", "E11.22", "N18.31")),
        (24, second, result(24, "corrected", "E11.22", "N18.31")),
    ):
        for f in (flow, alone):
            f.encounter(problem_visit(n, "DM2", "CKD stage 3b"), now=RECEIVED_AT)  # type: ignore[arg-type]
            f.audit_result(answer)
    series: list[dict[str, str]] = []
    for instance, flow in (("coding-0", first), ("coding-1", second)):
        assert flow.audits is not None
        export_accuracy(flow.audits)  # what the instance's /metrics serves
        for column, metric in (
            ("category", "claimflow_coding_audit_window_codes"),
            ("source", "claimflow_coding_audit_window_codes_by_source"),
        ):
            for a in flow.audits.accuracy(column):
                for outcome in ("agree", "corrected"):
                    labels = {column: a.key, "outcome": outcome}
                    value = REGISTRY.get_sample_value(metric, labels)
                    assert value is not None
                    tags = {**labels, "instance": instance}
                    shown = ",".join(f'{k}="{v}"' for k, v in tags.items())
                    series.append({"series": f"{metric}{{{shown}}}", "values": f"{value:g}x3"})
    assert alone.audits is not None
    truth = {a.key: a.rate for a in alone.audits.accuracy("category")}
    assert truth == {"E11": 1.0, "N18": 0.25}  # 2 of the 8 N18 codes (3 missed) were right
    assert second.audits is not None  # one instance's own figure is 0 / 6 for N18
    assert {a.key: a.rate for a in second.audits.accuracy("category")}["N18"] == 0.0
    if shutil.which("promtool") is None:
        pytest.skip("no promtool on PATH: the recording rules are not evaluated")
    rules = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
    by_source = {a.key: a.rate for a in alone.audits.accuracy("source")}
    spec = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": (recorded := f"claimflow:coding_audit_accuracy:by_{column}"),
                        "eval_time": "2m",
                        "exp_samples": [
                            {
                                "labels": f'{recorded}{{{column}="{key}"}}',
                                "value": rate,
                            }
                            for key, rate in sorted(expected.items())
                        ],
                    }
                    for column, expected in (("category", truth), ("source", by_source))
                ],
            }
        ],
    }
    (tmp_path / "accuracy_test.yml").write_text(yaml.safe_dump(spec))
    run = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / "accuracy_test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def settled(n: int, status: str = "paid", payer: str = "P1") -> ClaimSettled:
    return ClaimSettled(
        event_id=f"s{n}-{status}",
        claim_id=f"CF{n}",
        encounter_id=f"ENC-A-{n:04d}",
        payer_id=payer,
        status=status,  # type: ignore[arg-type]
        posting_event_id=f"p{n}",
        settled_at=AUDITED_AT,
    )


def test_a_settled_audit_is_pruned_after_its_window_and_a_late_result_refused(
    coder: Coder,
) -> None:
    audits = AuditStore(":memory:", AuditPolicy(share=1.0), RetentionPolicy(days=30))
    flow = ReviewFlow(coder, ReviewStore(":memory:"), audits)
    for n in (1, 2, 3):
        flow.encounter(problem_visit(n, "DM2", "CKD stage 3b"), now=RECEIVED_AT)  # type: ignore[arg-type]
    flow.audit_result(result(1))
    settled_at = AUDITED_AT.timestamp()
    audits.settle(settled(1))
    audits.settle(settled(2))
    audits.settle(settled(3))
    audits.settle(settled(3, "reopened"))  # a reversal: open again, kept
    assert audits.prune_settled(settled_at + 29 * DAY_S) == 0  # inside the window
    assert audits.prune_settled(settled_at + 31 * DAY_S) == 2
    for n in (1, 2):
        with pytest.raises(AuditPruned, match="pruned after the retention window"):
            audits.get(f"ENC-A-{n:04d}")
    record = audits.db.execute("SELECT record FROM audits WHERE encounter_id = 'ENC-A-0001'")
    assert not any(c.rationale for c in CodingAudit.model_validate_json(record.fetchone()[0]).codes)
    assert audits.get("ENC-A-0003") is not None
    assert audits.queued_count() == 1  # the pruned queued audit left the queue
    assert [a.audited for a in audits.accuracy("category")] == [1, 1]  # outcomes stay
