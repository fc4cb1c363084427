"""FHIR R4 bundles of hospital encounters billed the way hospitals bill them.

Written from the FHIR R4 Claim resource and the NUBC code systems, not from claimflow's
simulator: an institutional Claim whose items carry UB-04 revenue codes (room and board by
the day, pharmacy, laboratory, no HCPCS on inpatient lines), Claim.diagnosis with
onAdmission (POA) and types (admitting, patient reason for visit), Claim.procedure with
ICD-10-PCS, Claim.careTeam (attending, operating), and supportingInfo with NUBC codes.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
CPT = "http://www.ama-assn.org/go/cpt"
NPI = "http://hl7.org/fhir/sid/us-npi"
REVENUE = "https://www.nubc.org/CodeSystem/RevenueCodes"
POA = "http://terminology.hl7.org/CodeSystem/ex-diagnosis-on-admission"
DXTYPE = "http://terminology.hl7.org/CodeSystem/ex-diagnosistype"
CARE_ROLE = "http://terminology.hl7.org/CodeSystem/claimcareteamrole"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"

HOSPITAL_NPI = "1508624370"
GROUP_NPI = "1245319599"
ATTENDING_NPI = "1663019283"
SURGEON_NPI = "1234567893"
ROOM_RATE = Decimal("1500.00")


def _ref(kind: str, ident: str) -> dict[str, str]:
    return {"reference": f"urn:uuid:{kind}-{ident}"}


def _cc(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _org(ident: str, name: str, npi: str) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": ident,
        "identifier": [
            {"system": NPI, "value": npi},
            {"system": "urn:oid:2.16.840.1.113883.4.4", "value": "631234567"},
        ],
        "name": name,
        "address": [
            {"line": ["701 Princeton Ave SW"], "city": "Birmingham", "state": "AL",
             "postalCode": "35211-2303"}
        ],
    }  # fmt: skip


def _doctor(ident: str, family: str, given: str, npi: str) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "id": ident,
        "identifier": [{"system": NPI, "value": npi}],
        "name": [{"family": family, "given": [given]}],
    }


def item(
    seq: int,
    revenue: str | None,
    charge: str | Decimal,
    *,
    code: str | None = None,
    units: float = 1,
    on: date | None = None,
) -> dict[str, Any]:
    """A Claim.item: a revenue code, and a CPT/HCPCS code only when the service has one."""
    out: dict[str, Any] = {
        "sequence": seq,
        "productOrService": _cc(CPT, code) if code else {"text": "facility charge"},
        "quantity": {"value": units},
        "net": {"value": float(charge), "currency": "USD"},
    }
    if revenue is not None:
        out["revenue"] = _cc(REVENUE, revenue)
    if on is not None:
        out["servicedDate"] = on.isoformat()
    return out


def bundle(
    *,
    ident: str,
    klass: str,
    admitted: date,
    days: int,
    diagnoses: list[tuple[str, str | None]],
    items: list[dict[str, Any]],
    pcs: list[str] = (),  # type: ignore[assignment]
    admitting: str | None = None,
    reason_for_visit: str | None = None,
    status: str = "finished",
    supporting: list[dict[str, Any]] = (),  # type: ignore[assignment]
    professional_items: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> bytes:
    """One hospital encounter: Patient, Encounter, the hospital, physicians, Coverage,
    the facility Claim and, when given, the physician group's professional Claim."""
    discharged = admitted + timedelta(days=days)
    claim_dx: list[dict[str, Any]] = []
    for code, poa in diagnoses:
        entry: dict[str, Any] = {
            "sequence": len(claim_dx) + 1,
            "diagnosisCodeableConcept": _cc(ICD10CM, code),
        }
        if len(claim_dx) == 0:
            entry["type"] = [_cc(DXTYPE, "principal")]
        if poa is not None:
            entry["onAdmission"] = _cc(POA, poa)
        claim_dx.append(entry)
    for code, kind in ((admitting, "admitting"), (reason_for_visit, "patientreasonforvisit")):
        if code:
            claim_dx.append(
                {
                    "sequence": len(claim_dx) + 1,
                    "diagnosisCodeableConcept": _cc(ICD10CM, code),
                    "type": [_cc(DXTYPE, kind)],
                }
            )
    period: dict[str, str] = {"start": f"{admitted.isoformat()}T21:15:00-06:00"}
    if status == "finished":
        period["end"] = f"{discharged.isoformat()}T11:40:00-06:00"
    encounter = {
        "resourceType": "Encounter",
        "id": ident,
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass},
        "subject": _ref("patient", ident),
        "period": period,
        "priority": _cc("http://terminology.hl7.org/CodeSystem/v3-ActPriority", "EM"),
        "hospitalization": {
            "admitSource": _cc("http://terminology.hl7.org/CodeSystem/admit-source", "emd"),
            "dischargeDisposition": _cc(
                "http://terminology.hl7.org/CodeSystem/discharge-disposition", "home"
            ),
        },
        "participant": [
            {
                "type": [_cc("http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "ATND")],
                "individual": _ref("doctor", "attending"),
            }
        ],
        "serviceProvider": _ref("org", "hospital"),
    }  # fmt: skip
    care_team = [
        {
            "sequence": 1,
            "provider": _ref("doctor", "attending"),
            "role": _cc(CARE_ROLE, "attending"),
        }
    ]
    if pcs:
        care_team.append(
            {
                "sequence": 2,
                "provider": _ref("doctor", "surgeon"),
                "role": _cc(CARE_ROLE, "operating"),
            }
        )
    coverage = {
        "resourceType": "Coverage",
        "id": ident,
        "status": "active",
        "beneficiary": _ref("patient", ident),
        "subscriberId": "1EG4TE5MK73",
        "relationship": _cc(
            "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self"
        ),
        "payor": [{"display": "Medicare Part A"}],
        "type": _cc("https://x12.org/codes/claim-filing-indicator-code", "MA"),
        "class": [{"type": _cc("http://terminology.hl7.org/CodeSystem/coverage-class", "plan"),
                   "value": "MEDICARE_A", "name": "Medicare Part A"}],
    }  # fmt: skip

    def claim(kind: str, provider: str, claim_items: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "resourceType": "Claim",
            "id": f"{ident}-{kind}",
            "status": "active",
            "type": _cc(CLAIM_TYPE, kind),
            "use": "claim",
            "patient": _ref("patient", ident),
            "created": discharged.isoformat(),
            "provider": _ref("org", provider),
            "priority": _cc("http://terminology.hl7.org/CodeSystem/processpriority", "normal"),
            "insurance": [{"sequence": 1, "focal": True, "coverage": _ref("coverage", ident)}],
            "diagnosis": claim_dx,
            "item": [{**it, "encounter": [_ref("encounter", ident)]} for it in claim_items],
            "careTeam": care_team,
        }
        if kind == "institutional":
            if pcs:
                out["procedure"] = [
                    {"sequence": k + 1, "date": admitted.isoformat(),
                     "procedureCodeableConcept": _cc(ICD10PCS, code)}
                    for k, code in enumerate(pcs)
                ]  # fmt: skip
            if supporting:
                out["supportingInfo"] = supporting
        return out

    resources: list[tuple[str, dict[str, Any]]] = [
        (f"patient-{ident}", {
            "resourceType": "Patient", "id": ident,
            "identifier": [{"type": _cc("http://terminology.hl7.org/CodeSystem/v2-0203", "MR"),
                            "value": f"MRN{ident}"}],
            "name": [{"family": "Garcia", "given": ["Ana"]}],
            "gender": "female", "birthDate": "1951-07-14",
            "address": [{"line": ["42 Oak Ave"], "city": "Birmingham", "state": "AL",
                         "postalCode": "35211"}],
        }),
        (f"encounter-{ident}", encounter),
        ("org-hospital", _org("hospital", "Princeton Baptist Medical Center", HOSPITAL_NPI)),
        ("org-group", _org("group", "Princeton Baptist Physician Group", GROUP_NPI)),
        ("doctor-attending", _doctor("attending", "Okafor", "Adaeze", ATTENDING_NPI)),
        ("doctor-surgeon", _doctor("surgeon", "Ortega", "Luis", SURGEON_NPI)),
        (f"coverage-{ident}", coverage),
        (f"claim-{ident}", claim("institutional", "hospital", items)),
    ]  # fmt: skip
    if professional_items:
        resources.append((f"pro-{ident}", claim("professional", "group", professional_items)))
    return json.dumps(
        {
            "resourceType": "Bundle",
            "id": f"b-{ident}",
            "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{k}", "resource": r} for k, r in resources],
        }
    ).encode()


def inpatient_items(admitted: date, days: int, *, surgical: bool = False) -> list[dict[str, Any]]:
    """Room and board by the day, pharmacy, laboratory, radiology, the ED visit, and for a
    surgical stay the operating and recovery rooms: revenue codes only, as hospitals bill."""
    out = [
        item(1, "0120", ROOM_RATE * days, units=days, on=admitted),
        item(2, "0250", "842.60", on=admitted),
        item(3, "0300", "1216.00", on=admitted),
        item(4, "0320", "410.00", on=admitted),
        item(5, "0450", "2340.00", code="99285", on=admitted),
    ]
    if surgical:
        out += [item(6, "0360", "9870.00", on=admitted), item(7, "0710", "1450.00", on=admitted)]
    return out
