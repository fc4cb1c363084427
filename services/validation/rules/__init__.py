"""The scrubber's rules, one module per category; importing this package registers them.

Adding a rule is one small module (or one function in a category's module) with an
``@rule`` check, plus its id in a new rule pack (``services/validation/packs.py``).
``validate``, ``RULE_PACK_VERSION`` and ``RULES`` (the default pack's rules) are the
package's public face.
"""

from __future__ import annotations

import importlib
import pkgutil
from datetime import datetime

from pipeline.models import CodedEncounter, ValidatedEncounter
from services.refdata.codesets import CodeSets
from services.refdata.payers import EMPTY_REGISTRY, PayerRegistry
from services.validation.engine import ClaimHistory, Rule, RulePack, run

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")

from services.validation.packs import DEFAULT_PACK, RULE_PACK_VERSION, get_pack  # noqa: E402
from services.validation.rules.identifiers import npi_is_valid  # noqa: E402

RULES: list[Rule] = list(DEFAULT_PACK.rules)
"""The default pack's rules, in the order verdicts list their hits."""


def validate(
    coded: CodedEncounter,
    codesets: CodeSets,
    *,
    validated_at: datetime,
    pack: RulePack | str | None = None,
    history: ClaimHistory | None = None,
    payers: PayerRegistry = EMPTY_REGISTRY,
) -> ValidatedEncounter:
    """Run a rule pack (the default, or one by id) over a coded encounter: the verdict.

    ``payers`` (the payer registry) gives each payer's timely filing and claim types."""
    chosen = pack if isinstance(pack, RulePack) else get_pack(pack)
    return run(coded, codesets, chosen, validated_at=validated_at, history=history, payers=payers)


__all__ = ["RULES", "RULE_PACK_VERSION", "npi_is_valid", "validate"]
