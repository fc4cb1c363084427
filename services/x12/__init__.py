"""X12 5010, shared by everyone who speaks it: claims (837P/837I, 999 and 277CA answers),
remittance (835) and the payer simulator.

- ``writer``: the segment model (``seg``, ``comp``, ``render``), value formatting (``text``,
  ``ident``, ``amount``, ``quantity``, dates) and the ISA/GS/ST envelopes;
- ``reader``: one reader that takes the delimiters from the ISA of what it reads;
- ``guides``: the implementation-guide versions and the limits they set (diagnosis
  pointers, diagnoses, lines), which coding, the scrubber and the writers share;
- ``validate``: what pyx12 finds wrong with an interchange (every test that writes X12,
  and the payer simulator's front end).
"""
