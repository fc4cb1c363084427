"""Simulators for run, demo, bench and the tests: the EHR that publishes encounters and the
payer that answers 837s with 999, 277CA and 835 files.

They stand outside the stages: they may import a stage's public pieces (the X12 package, the
provider directory format), but no service imports them. The payer simulator's route in the
claims service (``simulator``) is registered here through the ``claimflow.payer_adapters``
entry point.
"""
