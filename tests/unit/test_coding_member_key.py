"""Coding keeps patient keys by the ids they hash (``member_key``): the judge is
``patient_key`` itself, on both simulator mixes, before and after the kept keys start
afresh, and for two members that share a payer or a member id."""

from __future__ import annotations

import pytest
import sim_corpus

from pipeline.models import Coverage, patient_key
from services.coding import review
from services.coding.review import member_key


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_the_kept_key_is_the_hashed_key(mix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(review, "_KEYS", {})
    monkeypatch.setattr(review, "_KEYS_KEPT", 7)  # started afresh many times
    encounters = sim_corpus.encounters(mix)
    for _ in range(2):
        for enc in encounters:
            assert member_key(enc) == patient_key(enc)
    assert len(review._KEYS) <= 7
    enc = encounters[0]
    cov = enc.coverage
    for payer_id, member_id in ((cov.payer_id, "OTHER"), ("OTHER", cov.member_id)):
        other = enc.model_copy(
            update={"coverage": Coverage.model_validate(
                {**cov.model_dump(), "payer_id": payer_id, "member_id": member_id}
            )}
        )  # fmt: skip
        assert member_key(other) == patient_key(other) != patient_key(enc)
