"""``claimflow run``, ``demo``, ``bench`` and ``simulate``: the whole pipeline with its simulators.

These start the EHR simulator (and, through the supervisor, the payer simulator), so they
live with the simulators, not in ``pipeline/``: the plumbing never imports a simulator.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import logs, plugins
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.supervisor import Child


def publish_encounters(
    bootstrap: str,
    settings: Settings,
    count: int,
    fmt: str,
    seed: int,
    rate: float = 0.0,
    on_sent: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
    mix: str = "office",
) -> int:
    """Publish simulated EHR messages to intake.raw.v1 (bare bytes + content-type header).

    ``mix="all"`` adds ED visits and inpatient stays (institutional claims) to office visits.
    """
    from pipeline.kafka import make_producer
    from sim.ehr import generate

    producer = make_producer(bootstrap, settings)
    topic = settings.topic("intake.raw.v1")
    sent = 0
    started = time.monotonic()
    messages = generate(count, seed=seed, fmt=fmt, mix=mix)  # type: ignore[arg-type]
    for source_id, content_type, body in messages:
        if stop and stop():
            break
        producer.produce(
            topic,
            key=source_id.encode(),
            value=body,
            headers=[("content-type", content_type.encode())],
        )
        producer.poll(0)
        sent += 1
        if on_sent:
            on_sent(source_id)
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    if producer.flush(30):
        raise RuntimeError("simulator: the broker did not acknowledge every message")
    return sent


def _progress(summary: dict[str, int], elapsed: float, repeats: int) -> str:
    s = summary
    dropped = f" | repeats dropped {repeats}" if repeats else ""
    return (
        f"\r[{elapsed:6.1f}s] sent {s['encounters_sent']} | collected {s['collected']} | "
        f"coded {s['coded']} | review {s['review']} | "
        f"clean {s['clean']} rejected {s['rejected']} | "
        f"submitted {s['submitted']} | posted {s['posted']} "
        f"payer-rejected {s['payer_rejected']} | dlq {s['dlq']}{dropped} | "
        f"in flight {s['lost']}   "
    )


class _Publisher(threading.Thread):
    """The EHR simulator on its own thread; it hands what it sent to the ledger's queue and
    keeps its error for the main thread (a dead publisher must not look like a quiet EHR)."""

    def __init__(self, stop: threading.Event, **kwargs: Any) -> None:
        super().__init__(name="ehr-simulator", daemon=True)
        self.kwargs = {**kwargs, "stop": stop.is_set}
        self.error: BaseException | None = None
        self.sent = 0

    def run(self) -> None:
        try:
            self.sent = publish_encounters(**self.kwargs)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc


class _RepeatCount:
    """Source messages intake dropped as repeats, read from its /metrics (``repeat_dropped``).

    Intake sends nothing downstream for a repeat, so the topics cannot show it; a restart
    resets the counter, so the count carries over what the previous process had shown. The
    port is read from the supervisor's child each time: a restart can move it.
    """

    def __init__(self, child: Child) -> None:
        self.child = child
        self.carried = 0.0
        self.last = 0.0

    def read(self) -> int:
        from pipeline import metrics

        value = metrics.read_counter(
            self.child.metrics_port,
            "claimflow_outcomes_total",
            {"service": "intake", "outcome": "repeat_dropped"},
        )
        if value is not None:
            if value < self.last:
                self.carried += self.last
            self.last = value
        return self.total

    @property
    def total(self) -> int:
        return int(self.carried + self.last)


def _pipeline(args: argparse.Namespace, bounded: bool) -> int:
    # Ctrl-C and SIGTERM end the run the same way, from here on: stop the publisher, the
    # services, the tracker, then the broker, in that order, and print the summary.
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    from pipeline.broker import EMBEDDED_PARTITIONS, EMBEDDED_RUN_PACING, cluster
    from pipeline.kafka import ensure_topics
    from pipeline.serde import registry
    from pipeline.supervisor import Supervisor, prune_runs
    from pipeline.tracker import Tracker

    settings = Settings()
    logs.setup("WARNING")
    runs = Path(".claimflow/runs")
    prune_runs(runs, settings.keep_runs - 1)  # and this run makes keep_runs
    run_dir = runs / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    seed = _seed(args)
    env = _simulator_env()
    if settings.bootstrap_servers is None and not settings.partitions:
        # The embedded broker, one instance of each service: a second partition per topic
        # would only add fetch and produce requests (measured in bench pipeline).
        settings = settings.model_copy(update={"partitions": EMBEDDED_PARTITIONS})
        env["CLAIMFLOW_PARTITIONS"] = str(EMBEDDED_PARTITIONS)
    if settings.bootstrap_servers is None and not bounded:
        settings = paced(settings, env, EMBEDDED_RUN_PACING)
    with cluster(settings.bootstrap_servers, log_file=_broker_log(run_dir)) as bootstrap:
        ensure_topics(bootstrap, settings, registry())
        if bounded:
            # A bounded demo promises every submitted claim is adjudicated (posted ==
            # submitted), so its payer simulator's front end accepts every claim unless the
            # user sets a rejection rate; `claimflow run` keeps the 2% default.
            env.setdefault(
                "CLAIMFLOW_PAYER_SIM__FRONT_END_REJECTION_RATE",
                os.environ.get("CLAIMFLOW_PAYER_SIM__FRONT_END_REJECTION_RATE", "0"),
            )
        else:
            # The payer simulator is not claimflow: checking every interchange with pyx12
            # costs it more CPU than the five stages together, and an open-ended run on a
            # laptop would fall behind on 835s for that alone (bench_pipeline does the same).
            env.setdefault(
                "CLAIMFLOW_PAYER_SIM__VALIDATE_EVERY",
                os.environ.get("CLAIMFLOW_PAYER_SIM__VALIDATE_EVERY", "10"),
            )
        # `claimflow run` is where people work the queues: it starts the apps (the console)
        # too; the bounded demo runs the pipeline alone.
        apps = () if bounded else tuple(plugins.app_names())
        sup = Supervisor(bootstrap, run_dir, env=env, services=(*plugins.service_names(), *apps))
        sup.start()
        print(
            f"claimflow: broker {bootstrap}; logs in {run_dir}/; simulator seed {seed}",
            file=sys.stderr,
        )
        for name, child in sup.children.items():
            print(f"  {name:<11} http://127.0.0.1:{child.metrics_port}/metrics", file=sys.stderr)
        _print_gateway(run_dir / "state" / "intake-gateway", stop)
        if "console" in apps:
            _print_console(run_dir / "state" / "console", stop)
        report_dir = getattr(args, "report", None)
        tracker = Tracker(bootstrap, settings, keep_times=report_dir is not None)
        repeats = _RepeatCount(sup.children["intake"])
        sender = _Publisher(
            stop,
            bootstrap=bootstrap,
            settings=settings,
            count=args.encounters if bounded else 10**9,
            fmt=args.format,
            seed=seed,
            rate=args.rate,
            mix=args.mix,
            on_sent=tracker.ledger.mark_sent,
        )
        started = time.monotonic()
        timed_out = False
        try:
            sender.start()
            last_print = 0.0
            tty = sys.stderr.isatty()
            while not stop.is_set():
                tracker.poll()
                sup.check()
                if sender.error is not None:
                    break
                now = time.monotonic()
                if now - last_print > (0.5 if tty else 5.0):
                    line = _progress(tracker.ledger.summary(), now - started, repeats.read())
                    print(
                        line if tty else line.strip(),
                        end="" if tty else "\n",
                        file=sys.stderr,
                        flush=True,
                    )
                    last_print = now
                if bounded and not sender.is_alive():
                    summary = tracker.ledger.summary()
                    if summary["encounters_sent"] >= args.encounters and summary["lost"] == 0:
                        break
                    if now - started > args.timeout:
                        timed_out = True
                        break
        finally:
            stop.set()
            sender.join(60)
            print(file=sys.stderr)
            if not sender.error:
                for _ in range(5):  # pick up repeats that are still arriving
                    tracker.poll(timeout=0.1)
            repeats.read()  # the last count, while intake still answers
            sup.stop()
            tracker.close()
        if timed_out:
            print("claimflow: timed out waiting for the pipeline", file=sys.stderr)
        if sender.error is not None:
            print(f"claimflow: the EHR simulator stopped: {sender.error}", file=sys.stderr)
        ledger = tracker.ledger
        summary = {**ledger.summary(), "repeats_dropped": repeats.total}
        statuses: dict[str, int] = {}
        for status in ledger.posted.values():
            statuses[status] = statuses.get(status, 0) + 1
        print(
            f"elapsed {time.monotonic() - started:.1f}s; remittance statuses {statuses}; "
            f"coder review {len(ledger.review)}; repeated claim events "
            f"{ledger.duplicates('claims.submitted.v1')}; restarts "
            f"{ {n: c.restarts for n, c in sup.children.items() if c.restarts} }"
        )
        if summary["repeats_dropped"]:
            print(
                f"intake dropped {summary['repeats_dropped']} repeated source message(s): "
                "sent before under the same source id and body (a simulator seed used "
                "again?); they produce nothing downstream"
            )
        for stage, letters in ledger.dead.items():
            for letter in letters[:5]:
                print(f"dead letter [{stage}] {letter['reason'][:200]}")
        interrupted = bool(received) and (not bounded or summary["lost"] > 0)
        if summary["lost"]:
            what = "in flight when stopped" if interrupted else "lost"
            print(f"{what}: {summary['lost']} source id(s), first 10: {ledger.lost()[:10]}")
        if report_dir is not None:
            # From the ledger read before the broker stops (the embedded one keeps nothing).
            from pipeline.report import write_report

            written = write_report(ledger, Path(report_dir), plugins.rule_titles())
            print(f"report: {', '.join(str(p) for p in written)}", file=sys.stderr)
        print(json.dumps(_as_printed(summary, interrupted)))
        if sender.error is not None:
            return 1
        if not bounded:
            return 0  # `run` ends when it is told to: what is in flight goes with the broker
        if interrupted:
            return 128 + received[0]
        # Held payments and front-end rejections wait for a person; neither gets posted.
        settled = summary["posted"] + summary["exceptions"] + summary["payer_rejected"]
        return 0 if summary["lost"] == 0 and settled == summary["submitted"] else 1


def paced(settings: Settings, env: dict[str, str], pacing: dict[str, float]) -> Settings:
    """``settings`` with each option of ``pacing`` the environment does not set, which the
    services get through ``env`` too (``CLAIMFLOW_<OPTION>``); what the user set stands."""
    chosen: dict[str, float] = {}
    for option, value in pacing.items():
        name = f"CLAIMFLOW_{option.upper()}"
        if name not in os.environ:
            env[name] = str(value)
            chosen[option] = value
    return settings.model_copy(update=chosen) if chosen else settings


def _as_printed(summary: dict[str, int], interrupted: bool) -> dict[str, int | None]:
    """The summary's JSON line. Once the run is stopped by a signal, what the ledger has not
    seen settle may be a loss or only in flight (the embedded broker goes with the run, so
    nobody can wait to tell which): ``lost`` is then null, and ``in_flight_when_stopped``
    counts them, so a script reading the line does not take a stop for a loss."""
    if not interrupted:
        return dict(summary)
    return {**summary, "lost": None, "in_flight_when_stopped": summary["lost"]}


def _seed(args: argparse.Namespace) -> int:
    """The simulator's seed: the one given, or a new one, so each run sends new encounters
    (intake drops a source message it has already read: same source id, same body)."""
    if args.seed is not None:
        return int(args.seed)
    import secrets

    return secrets.randbelow(10**9)


def _broker_log(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir / "broker.log"


EXAMPLE_MASTER_DATA = Path(__file__).resolve().parents[1] / "examples" / "masterdata"
"""The example master data `run` and `demo` bill through: the simulator's practices and
hospitals (provider profiles), its payers (registry) and a chargemaster with contracts."""


def _simulator_env() -> dict[str, str]:
    """The services read the example master data, unless the environment names other files."""
    import os

    files = {
        "CLAIMFLOW_PROVIDER_DIRECTORY": "providers.json",
        "CLAIMFLOW_PAYER_REGISTRY": "payers.json",
        "CLAIMFLOW_CHARGEMASTER": "chargemaster.csv",
    }
    return {
        name: str(EXAMPLE_MASTER_DATA / file)
        for name, file in files.items()
        if not os.environ.get(name)
    }


def _await_endpoints(
    read: Callable[..., Any], state_dir: Path, stop: threading.Event, seconds: float
) -> Any:
    """What a process wrote about where it listens, once it has bound (None: not yet)."""
    found = None
    deadline = time.monotonic() + seconds
    while found is None and not stop.is_set() and time.monotonic() < deadline:
        found = read(state_dir, timeout=0.5)
    return found


def _print_console(state_dir: Path, stop: threading.Event) -> None:
    """Where the console listens, and where its first users' passwords are."""
    from services.console.app import INITIAL_PASSWORDS, read_endpoints

    found = _await_endpoints(read_endpoints, state_dir, stop, 20)  # it replays topics first
    if not found:
        print("  console: not listening yet (see its log)", file=sys.stderr)
        return
    print(
        f"  console     {found['url']}  sign in as coder, biller, manager or viewer; "
        f"passwords in {state_dir / INITIAL_PASSWORDS}",
        file=sys.stderr,
    )


def _print_gateway(state_dir: Path, stop: threading.Event) -> None:
    """Where the intake gateway listens (it writes gateway.json once it has bound)."""
    from services.intake.gateway import ENDPOINTS_FILE, read_endpoints

    found = _await_endpoints(read_endpoints, state_dir, stop, 10)
    if not found:
        print("  intake-gateway: not listening yet (see its log)", file=sys.stderr)
        return
    print(
        f"  intake-gateway {found['http']}/fhir and /hl7v2, MLLP {found['mllp']}; "
        f"bearer token in {state_dir / ENDPOINTS_FILE}",
        file=sys.stderr,
    )


def cmd_run(args: argparse.Namespace) -> int:
    return _pipeline(args, bounded=False)


def cmd_demo(args: argparse.Namespace) -> int:
    return _pipeline(args, bounded=True)


def cmd_bench(args: argparse.Namespace) -> int:
    """``bench/bench_pipeline.py`` with the counts and rate given (``make bench`` runs all)."""
    from bench.__main__ import timed
    from bench.bench_pipeline import measure

    if args.encounters < 0 or args.rate_encounters < 0 or args.rate <= 0:
        raise SystemExit("counts must be >= 0 and --rate > 0")
    result = timed(
        "pipeline",
        lambda: measure(n=args.encounters, rate=args.rate, rate_n=args.rate_encounters),
    )
    print(json.dumps(result))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from pipeline.kafka import ensure_topics
    from pipeline.serde import registry

    settings = Settings()
    logs.setup("WARNING")
    bootstrap = settings.require_bootstrap()
    ensure_topics(bootstrap, settings, registry())
    sent = [0]

    def tick(_: str) -> None:
        sent[0] += 1
        if sent[0] % 50 == 0 or sent[0] == args.count:
            bar = "#" * int(30 * sent[0] / args.count)
            print(f"\r[{bar:<30}] {sent[0]}/{args.count}", end="", file=sys.stderr, flush=True)

    if args.format == "hl7v2" and args.provider_directory is None:
        print(
            "claimflow simulate: HL7 v2 carries no billing EIN or address; give intake the "
            "simulator's provider directory (--provider-directory FILE, then "
            "CLAIMFLOW_PROVIDER_DIRECTORY=FILE for intake)",
            file=sys.stderr,
        )
    if args.provider_directory is not None:
        from sim.ehr import provider_directory

        Path(args.provider_directory).write_text(json.dumps(provider_directory().to_json()))
    seed = _seed(args)
    sent_n = publish_encounters(
        bootstrap, settings, args.count, args.format, seed, args.rate, on_sent=tick,
        mix=args.mix,
    )  # fmt: skip
    print(file=sys.stderr)
    print(
        f"claimflow simulate: sent {sent_n} encounter(s), source ids sim-{seed}-000000 on "
        f"(seed {seed}; --seed {seed} sends the same ones again, which intake drops as repeats)",
        file=sys.stderr,
    )
    return 0


def register(sub: Any) -> None:
    """Add run, demo, bench and simulate to the ``claimflow`` parser."""

    def pipeline_args(q: argparse.ArgumentParser, rate: float) -> None:
        q.add_argument(
            "--format",
            choices=["json", "fhir", "hl7v2", "mix"],
            default="mix",
            help="mix: JSON and FHIR, half each",
        )
        q.add_argument(
            "--mix",
            choices=["office", "all"],
            default="office",
            help="office visits only, or all: also ED visits (837I and the ED physician's 837P) "
            "and inpatient stays (837I)",
        )
        q.add_argument(
            "--seed",
            type=int,
            default=None,
            help="the simulator's seed: the same seed sends the same encounters again "
            "(default: a new one each run, printed)",
        )
        q.add_argument("--rate", type=float, default=rate, help="encounters per second (0: max)")

    q = sub.add_parser("run", help="the whole pipeline on the embedded broker, until Ctrl-C")
    pipeline_args(q, rate=20.0)
    q.set_defaults(func=cmd_run)
    q = sub.add_parser("demo", help="N encounters through the pipeline, then a summary")
    q.add_argument("--encounters", type=int, default=200, help="how many to send")
    q.add_argument(
        "--timeout", type=float, default=240.0, help="seconds to wait for them all to settle"
    )
    q.add_argument("--report", metavar="DIR", default=None, help="write charts and a CSV here")
    pipeline_args(q, rate=0.0)
    q.set_defaults(func=cmd_demo)
    q = sub.add_parser(
        "bench",
        help="the end-to-end benchmark on the embedded broker: one JSON object "
        "(throughput, latency by hop, CPU per process, the raw-copy ceiling)",
    )
    q.add_argument("--encounters", type=int, default=2000, help="at maximum rate (0: skip)")
    q.add_argument("--rate", type=float, default=200.0, help="encounters per second, paced")
    q.add_argument(
        "--rate-encounters", type=int, default=1000, help="encounters at --rate (0: skip)"
    )
    q.set_defaults(func=cmd_bench)
    q = sub.add_parser("simulate", help="the EHR simulator: publish encounters to intake.raw.v1")
    q.add_argument("--count", type=int, default=100, help="how many encounters to send")
    q.add_argument(
        "--provider-directory",
        default=None,
        help="write the simulator's provider directory here (intake's HL7 v2 needs it)",
    )
    pipeline_args(q, rate=0.0)
    q.set_defaults(func=cmd_simulate)
