"""``bench pipeline`` counts a phase's CPU from a quiet pipeline to a quiet pipeline: the
reading taken is the first that saw the stages' final counts, whatever idling follows."""

from __future__ import annotations

from bench.bench_pipeline import Quiet, quiet_reading


class Script:
    """Readings in turn (records handled by claims, claims' CPU seconds), on a fake clock
    that each sleep moves on."""

    def __init__(self, steps: list[tuple[float, float]]) -> None:
        self.steps = steps
        self.at = 0
        self.t = 0.0

    def read(self) -> Quiet:
        records, cpu = self.steps[min(self.at, len(self.steps) - 1)]
        self.at += 1
        return Quiet({"claims": cpu}, {"claims": cpu}, {"claims": {"records": records}})

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def reading(script: Script, **kw: float) -> Quiet | None:
    return quiet_reading(script.read, clock=script.clock, sleep=script.sleep, **kw)


def test_the_reading_kept_is_the_first_with_the_final_counts() -> None:
    # a tail still handled (100 -> 160 -> 200 records), then idle: the CPU read goes on
    # growing by what idling costs, which is not the phase's
    script = Script(
        [(100, 1.0), (160, 1.5), (200, 2.0), (200, 2.01), (200, 2.02)] + [(200, 2.1)] * 20
    )
    found = reading(script, quiet_s=1.0, poll_s=0.2)
    assert found is not None
    assert found.handled() == {"claims": 200}
    assert found.cpu == {"claims": 2.0}
    # it waited for the counts to stay the same for a whole second after they last moved
    assert script.t >= 0.4 + 1.0


def test_a_record_handled_late_restarts_the_wait() -> None:
    # the same count for 0.6 s, less than the quiet second: one more record, then quiet
    steps = [(10, 0.1)] * 4 + [(11, 0.2)] + [(11, 0.3)] * 20
    script = Script(steps)
    found = reading(script, quiet_s=1.0, poll_s=0.2)
    assert found is not None and found.handled() == {"claims": 11}
    assert found.cpu == {"claims": 0.2}


def test_a_pipeline_that_never_goes_quiet_gives_none() -> None:
    script = Script([(n, n / 10) for n in range(1000)])
    assert reading(script, quiet_s=1.0, poll_s=0.2, timeout=5.0) is None
