"""The ``claimflow`` command: run the pipeline, one service, the simulator, or a stage offline."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pipeline import logs
from pipeline.settings import Settings

log = logging.getLogger("claimflow")

SERVICE_MODULES = {
    "intake": "services.intake.app",
    "coding": "services.coding.app",
    "validation": "services.validation.app",
    "claims": "services.claims.app",
    "remittance": "services.remittance.app",
    "payer-sim": "sim.payer_app",
    "intake-gateway": "services.intake.gateway",
}


# --- the pipeline ------------------------------------------------------------------------


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
    resets the counter, so the count carries over what the previous process had shown.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.carried = 0.0
        self.last = 0.0

    def read(self) -> int:
        from pipeline import metrics

        value = metrics.read_counter(
            self.port,
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

    from pipeline.broker import cluster
    from pipeline.kafka import ensure_topics
    from pipeline.serde import registry
    from pipeline.supervisor import Supervisor
    from pipeline.tracker import Tracker

    settings = Settings()
    logs.setup("WARNING")
    run_dir = Path(".claimflow/runs") / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    seed = _seed(args)
    with cluster(settings.bootstrap_servers, log_file=_broker_log(run_dir)) as bootstrap:
        ensure_topics(bootstrap, settings, registry())
        env = _simulator_env(run_dir)
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
        sup = Supervisor(bootstrap, run_dir, env=env)
        sup.start()
        print(
            f"claimflow: broker {bootstrap}; logs in {run_dir}/; simulator seed {seed}",
            file=sys.stderr,
        )
        for name, child in sup.children.items():
            print(f"  {name:<11} http://127.0.0.1:{child.metrics_port}/metrics", file=sys.stderr)
        _print_gateway(run_dir / "state" / "intake-gateway", stop)
        report_dir = getattr(args, "report", None)
        tracker = Tracker(bootstrap, settings, keep_times=report_dir is not None)
        repeats = _RepeatCount(sup.children["intake"].metrics_port)
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

            written = write_report(ledger, Path(report_dir))
            print(f"report: {', '.join(str(p) for p in written)}", file=sys.stderr)
        print(json.dumps(summary))
        if sender.error is not None:
            return 1
        if not bounded:
            return 0  # `run` ends when it is told to: what is in flight goes with the broker
        if interrupted:
            return 128 + received[0]
        # Held payments and front-end rejections wait for a person; neither gets posted.
        settled = summary["posted"] + summary["exceptions"] + summary["payer_rejected"]
        return 0 if summary["lost"] == 0 and settled == summary["submitted"] else 1


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


def _simulator_env(run_dir: Path) -> dict[str, str]:
    """Intake gets the simulator's provider directory, so its HL7 v2 messages bill fully."""
    import os

    from sim.ehr import provider_directory

    if os.environ.get("CLAIMFLOW_PROVIDER_DIRECTORY"):
        return {}
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "provider-directory.json"
    path.write_text(json.dumps(provider_directory().to_json(), indent=1))
    return {"CLAIMFLOW_PROVIDER_DIRECTORY": str(path.resolve())}


def _print_gateway(state_dir: Path, stop: threading.Event) -> None:
    """Where the intake gateway listens (it writes gateway.json once it has bound)."""
    from services.intake.gateway import ENDPOINTS_FILE, read_endpoints

    found = None
    deadline = time.monotonic() + 10
    while found is None and not stop.is_set() and time.monotonic() < deadline:
        found = read_endpoints(state_dir, timeout=0.5)
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


def cmd_service(args: argparse.Namespace) -> int:
    settings = Settings()
    logs.setup(settings.log_level, service=args.name)
    module = importlib.import_module(SERVICE_MODULES[args.name])
    module.main(settings)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """KPIs from the cluster's topics; with --out, PNG charts and a CSV too."""
    from pipeline.report import print_report, write_report
    from pipeline.tracker import Tracker

    settings = Settings()
    tracker = Tracker(settings.require_bootstrap(), settings, keep_times=True)
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < args.wait:
            if tracker.poll():
                quiet_since = time.monotonic()
    finally:
        tracker.close()
    print_report(tracker.ledger)
    if args.out:
        for path in write_report(tracker.ledger, Path(args.out)):
            print(path)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from pipeline.broker import EmbeddedBroker
    from pipeline.kafka import ensure_topics
    from pipeline.serde import registry

    logs.setup("INFO")
    stop = threading.Event()
    # Ctrl-C and SIGTERM (a supervisor, `kill`, a container stop) both stop Tansu with us;
    # it runs in its own session, so nothing else would.
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(port=args.port) as broker:
        ensure_topics(broker.bootstrap, Settings(), registry())
        print(f"CLAIMFLOW_BOOTSTRAP_SERVERS={broker.bootstrap}", flush=True)
        while not stop.wait(0.5):
            if broker.proc is None or broker.proc.poll() is not None:
                code = broker.proc.returncode if broker.proc else None
                print(f"claimflow broker: Tansu exited with {code}", file=sys.stderr)
                return 1
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


# --- offline stage commands ----------------------------------------------------------------


class _Unreadable(Exception):
    """An input file that cannot be read: one line for the user, not a traceback."""


def _inputs(files: list[str]) -> Iterator[tuple[str, bytes | _Unreadable]]:
    """Each input: a file's whole content, or one line of stdin when no file (or -)."""
    if not files or files == ["-"]:
        for n, line in enumerate(sys.stdin.buffer, 1):
            if line.strip():
                yield f"stdin:{n}", line
        return
    for name in files:
        try:
            data = Path(name).read_bytes()
        except FileNotFoundError:
            yield name, _Unreadable("no such file")
            continue
        except IsADirectoryError:
            yield name, _Unreadable("is a folder, not a file")
            continue
        except OSError as exc:
            yield name, _Unreadable(exc.strerror or type(exc).__name__)
            continue
        stripped = data.strip()
        # A file of JSON lines (what the stages print) holds several inputs.
        if stripped.startswith(b"{") and b"\n{" in stripped and _is_json_lines(stripped):
            for n, line in enumerate(stripped.splitlines(), 1):
                if line.strip():
                    yield f"{name}:{n}", line
        else:
            yield name, data


def _is_json_lines(data: bytes) -> bool:
    try:
        json.loads(data)
        return False
    except ValueError:
        return True


def _offline(
    files: list[str],
    handle: Callable[[str, bytes], list[str]],
    stage: str,
    expects: str | None = None,
    finish: Callable[[], list[str]] | None = None,
) -> int:
    """Run ``handle`` on every input, then ``finish`` (for work that needs every input);
    print outputs on stdout and errors on stderr (never stdout: the next stage of a pipe
    reads that); exit 1 on any error.

    ``expects`` names the input a stage reads (what the stage before it prints), so a line
    of the wrong kind is reported as such rather than as its first missing field. A stage
    that reads stdin and gets nothing says so and fails: the stage before it failed.
    """
    from pydantic import ValidationError

    from pipeline.errors import InputError

    failed = inputs = 0
    for name, data in _inputs(files):
        inputs += 1
        if isinstance(data, _Unreadable):
            failed += 1
            print(f"claimflow {stage}: {name}: {data}", file=sys.stderr)
            continue
        try:
            for line in handle(name, data):
                print(line, flush=True)
        except (InputError, ValidationError, ValueError) as exc:
            failed += 1
            print(f"claimflow {stage}: {name}: {_offline_reason(exc, data, expects)}",
                  file=sys.stderr, flush=True)  # fmt: skip
    if finish is not None and inputs:
        try:
            for line in finish():
                print(line, flush=True)
        except (InputError, ValueError) as exc:
            failed += 1
            print(f"claimflow {stage}: {_offline_reason(exc, b'', None)}", file=sys.stderr)
    if not inputs and (not files or files == ["-"]):
        print(
            f"claimflow {stage}: no input on stdin"
            + (" (the stage before printed nothing: see its errors above)" if expects else ""),
            file=sys.stderr,
        )
        return 1
    return 1 if failed else 0


def _offline_reason(exc: Exception, data: bytes, expects: str | None) -> str:
    """One line: the field and the reason, or what the input is instead of what was expected."""
    from pydantic import ValidationError

    from pipeline.errors import InputError
    from pipeline.stage import field_of, reason_of

    if isinstance(exc, ValidationError) and expects:
        try:
            value = json.loads(data)
        except ValueError:
            return f"not JSON: {expects} is one JSON object per line"
        if isinstance(value, dict) and {"input", "error", "reason"} <= value.keys():
            # The stage before printed its error on our stdin (2>&1?): pass its reason on.
            return f"the stage before failed on {value['input']}: {value['reason']}"
        missing = [e for e in exc.errors() if e["type"] == "missing" and len(e["loc"]) == 1]
        if len(missing) > 1:
            fields = ", ".join(str(e["loc"][0]) for e in missing[:4])
            return f"not {expects}: no {fields}" + (" …" if len(missing) > 4 else "")
    where = field_of(exc)
    reason = exc.reason if isinstance(exc, InputError) else reason_of(exc)
    if isinstance(exc, ValidationError):
        return reason  # reason_of starts with the field already
    return f"{where}: {reason}" if where else reason


def _now() -> datetime:
    from pipeline.models import utcnow

    return utcnow()


def cmd_intake_parse(args: argparse.Namespace) -> int:
    from pipeline.errors import InputError
    from services.intake.account import AccountBook, AccountStore, hl7_parser, split_held
    from services.intake.domain import parse_raw
    from services.intake.settings import IntakeSettings
    from services.refdata.masterdata import load_master_data

    settings = IntakeSettings()
    if args.provider_directory:
        settings = settings.model_copy(update={"provider_directory": Path(args.provider_directory)})
    master = load_master_data(settings)
    # The messages of one hospital visit, in one file or several, make one account, billed
    # once every input has been read.
    store = AccountStore(":memory:")
    book = AccountBook(
        store, hl7_parser(master.providers, master.chargemaster), bill_hold_s=math.inf
    )

    def handle(name: str, data: bytes) -> list[str]:
        held, rest = split_held(book, data, args.content_type)
        encounters = []
        if held:
            with store.atomic():
                encounters += book.receive(held, _now())
        if rest is not None:
            result = parse_raw(
                rest,
                args.content_type,
                source_id=Path(name).name,
                received_at=_now(),
                directory=master.providers,
                chargemaster=master.chargemaster,
            )
            encounters += result.encounters
        return [e.model_dump_json() for e in encounters]

    def finish() -> list[str]:
        with store.atomic():
            billed = book.due(_now(), hold_s=0)
        if store.open_visits():
            raise InputError(
                "PV1-45",
                f"{len(store.open_visits())} hospital account(s) not final: no discharge "
                "(ADT^A03 or PV1-45) among the inputs, so their charges were not billed",
            )
        return [e.model_dump_json() for e in billed]

    return _offline(args.files, handle, "intake parse", finish=finish)


def cmd_code(args: argparse.Namespace) -> int:
    from pipeline.models import Encounter
    from services.coding.app import coding_settings
    from services.coding.domain import Coder
    from services.coding.review import ReviewStore, patient_key

    settings = coding_settings(Settings())
    coder = Coder.load(settings.refdata_dir, threshold=settings.coding.review_threshold)
    store = ReviewStore(":memory:")  # a member's HCCs gather over the inputs of this run

    def handle(_: str, data: bytes) -> list[str]:
        enc = Encounter.model_validate_json(data)
        key, year = patient_key(enc), enc.service_end.year
        history = store.history(key, year, enc.encounter_id)
        coded = coder.code(enc, coded_at=_now(), history=history)
        store.record_risk(key, year, enc.encounter_id, coder.risk_codes(coded))
        return [coded.model_dump_json()]

    return _offline(
        args.files, handle, "code", "an encounter (what `claimflow intake parse` prints)"
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.models import CodedEncounter
    from services.refdata.codesets import CodeSets
    from services.validation.duplicates import DuplicateStore
    from services.validation.packs import get_pack
    from services.validation.rules import validate

    pack = get_pack(args.rule_pack)
    codesets = CodeSets.load(Settings().refdata_dir)
    history = DuplicateStore(":memory:")  # duplicate claims among the inputs of this run
    rejected = 0

    def handle(_: str, data: bytes) -> list[str]:
        nonlocal rejected
        coded = CodedEncounter.model_validate_json(data)
        verdict = validate(coded, codesets, validated_at=_now(), pack=pack, history=history)
        history.record(coded, verdict.outcome)
        rejected += verdict.outcome == "rejected"
        return [verdict.model_dump_json()]

    code = _offline(
        args.files, handle, "validate", "a coded encounter (what `claimflow code` prints)"
    )
    return 1 if rejected else code


def cmd_claims_build(args: argparse.Namespace) -> int:
    from pipeline.models import ValidatedEncounter
    from services.claims.app import load_fee_schedule
    from services.claims.domain import build_claim
    from services.claims.settings import ClaimsSettings

    settings = ClaimsSettings()
    fees = load_fee_schedule(settings)

    def handle(_: str, data: bytes) -> list[str]:
        claim = build_claim(
            ValidatedEncounter.model_validate_json(data),
            sender_id=settings.sender_id,
            receiver_id=settings.receiver_id,
            fee_schedule=fees,
            drg_base_rate=settings.claims.drg_base_rate,
            usage=settings.claims.usage,
        )
        return [claim.model_dump_json() if args.json else claim.x12]

    return _offline(
        args.files,
        handle,
        "claims build",
        "a validated encounter (what `claimflow validate` prints)",
    )


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-validate encounters.coded.v1 history with a rule pack; print the diff by rule."""
    from pipeline.replay import parse_from
    from services.validation.app import load_codesets, replay
    from services.validation.duplicates import DuplicateStore
    from services.validation.packs import get_pack

    settings = Settings()
    logs.setup("WARNING")
    try:
        pack = get_pack(args.rule_pack)
        since_ms = parse_from(args.since)
    except ValueError as exc:
        print(f"claimflow replay: {exc}", file=sys.stderr)
        return 2
    bootstrap = settings.require_bootstrap()
    codesets = load_codesets(settings)
    history = DuplicateStore.in_state_dir(settings.state_dir)
    try:
        report = replay(
            bootstrap,
            settings,
            pack,
            codesets,
            since_ms=since_ms,
            history=history,
            dry_run=args.dry_run,
        )
    finally:
        history.close()
    print(report.text())
    print(json.dumps(report.summary()))
    return 0


def cmd_corrections_list(args: argparse.Namespace) -> int:
    """The correction work queue: encounters whose latest verdict is rejected."""
    from pipeline.errors import DecodeError
    from pipeline.models import ValidatedEncounter
    from pipeline.replay import read_history
    from pipeline.serde import registry
    from services.validation.worklist import WorkQueue

    settings = Settings()
    logs.setup("WARNING")
    bootstrap = settings.require_bootstrap()
    reg = registry()
    queue = WorkQueue(messages=args.messages)
    for rec in read_history(bootstrap, settings, "encounters.validated.v1"):
        try:
            verdict = reg.decode("encounters.validated.v1", rec.value)
        except (DecodeError, ValueError):
            continue  # not a verdict this version can read; validation's DLQ has the rest
        assert isinstance(verdict, ValidatedEncounter)
        queue.add(verdict)
    rejections = _payer_rejections(bootstrap, settings)
    if args.json:
        for entry in queue.rejected():
            print(json.dumps(entry.as_dict()))
        for rejection in rejections:
            print(json.dumps({"queue": "payer_rejection", **rejection.model_dump(mode="json")}))
    else:
        from services.claims.acks import rejection_lines

        print(queue.text())
        print(rejection_lines(rejections))
    return 0


def _payer_rejections(bootstrap: str, settings: Settings) -> list[Any]:
    """The last front-end rejection (999/277CA) of each claim, from claims.rejections.v1."""
    from pipeline.errors import DecodeError
    from pipeline.models import ClaimRejection
    from pipeline.replay import read_history
    from pipeline.serde import registry
    from services.claims.acks import latest_rejections

    reg = registry()
    found: list[ClaimRejection] = []
    for rec in read_history(bootstrap, settings, "claims.rejections.v1"):
        try:
            value = reg.decode("claims.rejections.v1", rec.value)
        except (DecodeError, ValueError):
            continue
        if isinstance(value, ClaimRejection):
            found.append(value)
    return latest_rejections(found)


def cmd_claims_rejections(args: argparse.Namespace) -> int:
    """Claims the payer's front end rejected (999/277CA), the last rejection of each."""
    from services.claims.acks import rejection_lines

    settings = Settings()
    logs.setup("WARNING")
    rejections = _payer_rejections(settings.require_bootstrap(), settings)
    if args.json:
        for rejection in rejections:
            print(rejection.model_dump_json())
    else:
        print(rejection_lines(rejections))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return str(value)


def cmd_remit_parse(args: argparse.Namespace) -> int:
    """Each 835 transaction set as JSON: the payment, its balancing, defects and warnings."""
    from services.remittance.era import read_835
    from services.remittance.posting import reconcile

    unbalanced = 0

    def handle(_: str, data: bytes) -> list[str]:
        nonlocal unbalanced
        out = []
        read = read_835(data)
        for transaction in read.transactions:
            remittance = transaction.remittance
            if remittance is None:
                unbalanced += 1
                record = {"transaction_control_number": transaction.control_number}
                record["error"] = transaction.error
                out.append(json.dumps(record))
                continue
            summary = reconcile(remittance)
            unbalanced += not summary.balanced
            record = json.loads(json.dumps(remittance, default=_json_default))
            record["warnings"] = [*read.warnings, *remittance.warnings]
            record["balance_errors"] = list(summary.balance_errors)
            record["balance_warnings"] = remittance.balance_warnings()
            record["summary"] = {
                "claims": summary.claims,
                "claims_paid": summary.claims_paid,
                "provider_adjustment_total": summary.provider_adjustment_total,
                "cash": summary.cash,
                "payment_amount": summary.payment_amount,
                "balanced": summary.balanced,
            }
            out.append(json.dumps(record, default=_json_default))
        return out

    code = _offline(args.files, handle, "remit parse")
    return 1 if unbalanced else code


def cmd_remit_post(args: argparse.Namespace) -> int:
    """Post 835 files offline against claims: postings, denials and exceptions as JSON lines."""
    from pipeline.models import PayerFile, SubmittedClaim, event_id
    from pipeline.stage import Incoming, Out
    from services.remittance.app import (
        RemittanceStage,
        load_codes,
        load_pricing,
        remittance_settings,
    )
    from services.remittance.era import read_835
    from services.remittance.ledger import Ledger
    from services.remittance.posting import payer_of

    settings = remittance_settings(Settings())
    stage = RemittanceStage(
        Ledger(":memory:"),
        options=settings.remittance.model_copy(update={"unmatched_grace_s": 0.0}),
        codes=load_codes(settings),
        pricing=load_pricing(settings),
    )
    exceptions = 0

    def emit(outs: list[Out]) -> list[str]:
        nonlocal exceptions
        exceptions += sum(o.topic == "remittance.exceptions.v1" for o in outs)
        return [
            json.dumps({"topic": o.topic, "key": o.key, "value": o.value.model_dump(mode="json")})
            for o in outs
        ]

    for name, data in _inputs(args.claims) if args.claims else ():
        if isinstance(data, _Unreadable):
            print(f"claimflow remit post: --claims {name}: {data}", file=sys.stderr)
            return 1
        claim = SubmittedClaim.model_validate_json(data)
        stage.handle(Incoming("claims.submitted.v1", claim.claim_id, claim, data, {}, 0, 0, 0))

    def handle(name: str, data: bytes) -> list[str]:
        try:
            payer = args.payer or payer_of(read_835(data).remittances[0])
        except Exception:  # noqa: BLE001 - the stage reports why the file cannot be read
            payer = args.payer or "unknown"
        file_id = Path(name).name
        file = PayerFile(
            event_id=event_id(payer, file_id, "835"),
            payer_id=payer,
            file_id=file_id,
            kind="835",
            body=data,
            received_at=_now(),
        )
        return emit(
            list(stage.handle(Incoming("payer.inbound.v1", file_id, file, data, {}, 0, 0, 0)))
        )

    code = _offline(args.files, handle, "remit post")
    for line in emit(list(stage.on_idle())):  # payments whose claim is not among --claims
        print(line)
    stage.close()
    return 1 if exceptions else code


def _read_topic(topic: str, idle_s: float) -> list[Any]:
    """Every record of a topic from the beginning, until none arrives for ``idle_s``."""
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from pipeline.kafka import client_config
    from pipeline.serde import registry

    settings = Settings()
    reg = registry()
    consumer = Consumer(
        {
            **client_config(settings.require_bootstrap(), settings),
            "group.id": f"claimflow-cli-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    name = settings.topic(topic)
    meta = consumer.list_topics(name, timeout=10)
    if name not in meta.topics or meta.topics[name].error is not None:
        consumer.close()
        return []
    consumer.assign(
        [TopicPartition(name, p, OFFSET_BEGINNING) for p in meta.topics[name].partitions]
    )
    # Tansu's high watermarks read low (pipeline/broker.py): stop when the topic goes quiet.
    values: list[Any] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < idle_s:
        batch = [m for m in consumer.consume(500, 0.2) if not m.error()]
        if batch:
            quiet_since = time.monotonic()
        values += [reg.decode(topic, m.value() or b"") for m in batch]
    consumer.close()
    return values


def cmd_remit_exceptions(args: argparse.Namespace) -> int:
    items = _read_topic("remittance.exceptions.v1", args.wait)
    items = [e for e in items if not args.kind or e.kind == args.kind]
    for item in items:
        if args.json:
            print(item.model_dump_json(exclude={"body"}))
            continue
        claims = ",".join(c.claim_id for c in item.claims[:3])
        claims += f" (+{len(item.claims) - 3})" if len(item.claims) > 3 else ""
        print(
            f"{item.detected_at:%Y-%m-%d %H:%M} {item.kind:<17} {item.payer_id:<12} "
            f"{item.file_id:<14} {claims:<40} {(item.errors or [''])[0][:80]}"
        )
    print(f"{len(items)} exception(s)", file=sys.stderr)
    return 0


def cmd_denials_list(args: argparse.Namespace) -> int:
    items = _read_topic("remittance.denials.v1", args.wait)
    latest: dict[str, Any] = {}
    for item in items:  # the newest item of each claim, in the order they were queued
        latest.pop(item.claim_id, None)
        latest[item.claim_id] = item
    shown = [
        d
        for d in (latest.values() if not args.all else items)
        if (not args.category or d.category == args.category)
        and (not args.payer or d.payer_id == args.payer)
        and (not args.kind or d.kind == args.kind)
    ]
    for d in shown:
        if args.json:
            print(d.model_dump_json())
            continue
        codes = ",".join(dict.fromkeys(f"{r.group}-{r.carc}" for r in d.reasons))
        remarks = ",".join(r.code for r in d.remarks)
        print(
            f"{d.claim_id:<20} {d.payer_id:<12} {d.kind:<16} {d.category:<24} "
            f"{d.at_stake:>10} {codes:<20} {remarks:<12} {d.action}"
        )
    print(f"{len(shown)} denial(s)", file=sys.stderr)
    return 0


# --- coder review ----------------------------------------------------------------------


def _review_records(wait: float) -> tuple[list[Any], set[str]]:
    """coding.review.v1 records and the encounter ids coding.decisions.v1 decided.

    Reads both topics from the beginning with no consumer group, until ``wait`` seconds
    pass without a record (high watermarks are not trusted: see pipeline/broker.py).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from pipeline.kafka import consumer_config
    from pipeline.serde import registry

    settings = Settings()
    reg = registry()
    group = f"claimflow-review-cli-{time.time_ns()}"  # nothing is committed under it
    consumer = Consumer(consumer_config(settings.require_bootstrap(), group, settings))
    topics = {settings.topic(t): t for t in ("coding.review.v1", "coding.decisions.v1")}
    meta = consumer.list_topics(timeout=10)
    consumer.assign(
        [
            TopicPartition(name, p, OFFSET_BEGINNING)
            for name in topics
            if name in meta.topics
            for p in meta.topics[name].partitions
        ]
    )
    reviews: list[Any] = []
    decided: set[str] = set()
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < wait:
            batch = consumer.consume(500, 0.2)
            for m in batch:
                if m.error() or (m.topic() or "") not in topics:
                    continue
                quiet_since = time.monotonic()
                topic = topics[m.topic() or ""]
                value = reg.decode(topic, m.value() or b"")
                if topic == "coding.review.v1":
                    reviews.append(value)
                else:
                    decided.add(value.encounter_id)  # type: ignore[attr-defined]
    finally:
        consumer.close()
    return reviews, decided


def cmd_review_list(args: argparse.Namespace) -> int:
    """Encounters waiting for a coder: the latest review of each, minus those decided."""
    reviews, decided = _review_records(args.wait)
    pending: dict[str, Any] = {}
    for review in reviews:
        pending.pop(review.encounter_id, None)
        pending[review.encounter_id] = review
    shown = [r for e, r in pending.items() if e not in decided]
    for r in shown:
        if args.json:
            print(r.model_dump_json())
            continue
        codes = " ".join(
            f"{d.code}({d.confidence:.2f})" if d.confidence < 1 else d.code
            for d in r.coded.diagnoses
        )
        print(f"{r.queued_at:%Y-%m-%d %H:%M} {r.encounter_id:<24} {codes:<40} {r.reasons[0]}")
        for reason in r.reasons[1:]:
            print(f"{'':<42}{'':<41} {reason}")
    print(f"{len(shown)} encounter(s) waiting for a coder", file=sys.stderr)
    return 0


def cmd_review_decide(args: argparse.Namespace) -> int:
    """Publish a coder's decision (confirm, or amend the codes) to coding.decisions.v1."""
    import getpass
    from typing import Literal

    from pipeline.kafka import make_producer
    from pipeline.models import CoderDecision, DecidedDiagnosis, event_id, utcnow
    from pipeline.serde import registry

    diagnoses = []
    for item in args.amend or []:
        code, _, poa = item.partition(":")
        diagnoses.append(DecidedDiagnosis(code=code.strip().upper(), poa=poa.strip() or None))
    action: Literal["confirm", "amend"] = "confirm" if args.confirm else "amend"
    decided_at = utcnow()
    coder = args.coder or getpass.getuser()
    content = [args.encounter_id, coder, action, decided_at.isoformat()]
    content += [f"{d.code}:{d.poa or ''}" for d in diagnoses] + list(args.pcs or [])
    decision = CoderDecision(
        event_id=event_id(*content),
        encounter_id=args.encounter_id,
        coder_id=coder,
        action=action,
        diagnoses=diagnoses,
        pcs_procedures=[c.strip().upper() for c in args.pcs or []],
        note=args.note,
        decided_at=decided_at,
    )
    settings = Settings()
    producer = make_producer(settings.require_bootstrap(), settings)
    producer.produce(
        settings.topic("coding.decisions.v1"),
        key=decision.encounter_id.encode(),
        value=registry().encode("coding.decisions.v1", decision),
    )
    if producer.flush(30):
        print("claimflow: the broker did not acknowledge the decision", file=sys.stderr)
        return 1
    print(decision.model_dump_json())
    return 0


# --- argument parsing ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="claimflow", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

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
            help="office visits only, or all: also ED visits and inpatient stays (837I)",
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
    q.add_argument("--encounters", type=int, default=200)
    q.add_argument("--timeout", type=float, default=240.0)
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
    q = sub.add_parser("service", help="run one service (needs CLAIMFLOW_BOOTSTRAP_SERVERS)")
    q.add_argument("name", choices=sorted(SERVICE_MODULES))
    q.set_defaults(func=cmd_service)
    q = sub.add_parser("report", help="KPIs from the topics (needs CLAIMFLOW_BOOTSTRAP_SERVERS)")
    q.add_argument("--out", metavar="DIR", default=None, help="also write PNG charts and a CSV")
    q.add_argument("--wait", type=float, default=2.0, help="seconds of quiet that end the read")
    q.set_defaults(func=cmd_report)

    q = sub.add_parser("broker", help="run the embedded broker in the foreground")
    q.add_argument("--port", type=int, default=None)
    q.set_defaults(func=cmd_broker)
    q = sub.add_parser("simulate", help="the EHR simulator: publish encounters to intake.raw.v1")
    q.add_argument("--count", type=int, default=100)
    q.add_argument(
        "--provider-directory",
        default=None,
        help="write the simulator's provider directory here (intake's HL7 v2 needs it)",
    )
    pipeline_args(q, rate=0.0)
    q.set_defaults(func=cmd_simulate)

    group = sub.add_parser("intake", help="offline intake").add_subparsers(
        dest="sub", required=True
    )
    r = group.add_parser(
        "parse", help="FHIR bundle / HL7 v2 / JSON encounter files -> encounters (JSON lines)"
    )
    r.add_argument("files", nargs="*")
    r.add_argument("--content-type", default=None)
    r.add_argument(
        "--provider-directory",
        default=None,
        help="completes HL7 v2 (billing EIN, address); default $CLAIMFLOW_PROVIDER_DIRECTORY",
    )
    r.set_defaults(func=cmd_intake_parse)
    q = sub.add_parser("code", help="encounters (JSON lines) -> coded encounters")
    q.add_argument("files", nargs="*")
    q.set_defaults(func=cmd_code)
    group = sub.add_parser("review", help="coder review").add_subparsers(dest="sub", required=True)
    r = group.add_parser("list", help="encounters held for a coder (coding.review.v1, undecided)")
    r.add_argument("--json", action="store_true", help="the CodingReview records as JSON lines")
    r.add_argument("--wait", type=float, default=2.0, help="seconds of quiet that end the read")
    r.set_defaults(func=cmd_review_list)
    r = group.add_parser("decide", help="confirm or amend a held encounter")
    r.add_argument("encounter_id")
    how = r.add_mutually_exclusive_group(required=True)
    how.add_argument("--confirm", action="store_true", help="publish the codes as they are")
    how.add_argument(
        "--amend", nargs="+", metavar="CODE[:POA]", help="every diagnosis, principal first"
    )
    r.add_argument("--pcs", nargs="*", metavar="CODE", help="amend: every ICD-10-PCS code")
    r.add_argument("--coder", default=None, help="coder id (default: your user name)")
    r.add_argument("--note", default=None)
    r.set_defaults(func=cmd_review_decide)
    q = sub.add_parser("validate", help="coded encounters -> validated encounters")
    q.add_argument("files", nargs="*")
    q.add_argument("--rule-pack", default=None, help="rule pack id (default: the newest)")
    q.set_defaults(func=cmd_validate)
    q = sub.add_parser(
        "replay", help="re-run a stage over its input history with new rules; print the diff"
    )
    q.add_argument("--stage", choices=["validation"], required=True)
    q.add_argument("--rule-pack", required=True, help="id of the rule pack to re-validate with")
    q.add_argument(
        "--from",
        dest="since",
        default="BEGINNING",
        help="BEGINNING, or an ISO-8601 time: encounters last coded at or after it",
    )
    q.add_argument("--dry-run", action="store_true", help="report the diff, publish nothing")
    q.set_defaults(func=cmd_replay)
    group = sub.add_parser("corrections", help="the correction work queue").add_subparsers(
        dest="sub", required=True
    )
    r = group.add_parser(
        "list",
        help="encounters whose latest verdict is rejected, with edits, and claims the payer's "
        "front end rejected (999/277CA)",
    )
    r.add_argument("--json", action="store_true", help="one JSON object per encounter")
    r.add_argument(
        "--messages",
        action="store_true",
        help="include hit messages (they may quote dates of service or birth: PHI)",
    )
    r.set_defaults(func=cmd_corrections_list)
    group = sub.add_parser("claims", help="offline claims").add_subparsers(
        dest="sub", required=True
    )
    r = group.add_parser("build", help="validated encounters -> X12 837P / 837I")
    r.add_argument("files", nargs="*")
    r.add_argument("--json", action="store_true", help="print the claim event, not the X12")
    r.set_defaults(func=cmd_claims_build)
    r = group.add_parser(
        "rejections", help="claims the payer's front end rejected (999/277CA), with the reason"
    )
    r.add_argument("--json", action="store_true", help="one JSON object per claim")
    r.set_defaults(func=cmd_claims_rejections)
    group = sub.add_parser("remit", help="offline remittance").add_subparsers(
        dest="sub", required=True
    )
    r = group.add_parser("parse", help="X12 835 files -> one JSON object per payment")
    r.add_argument("files", nargs="*")
    r.set_defaults(func=cmd_remit_parse)
    r = group.add_parser(
        "post", help="X12 835 files posted against claims -> postings, denials, exceptions"
    )
    r.add_argument("files", nargs="*")
    r.add_argument("--claims", nargs="*", help="claims.submitted JSON lines (claims build --json)")
    r.add_argument("--payer", default=None, help="payer id (default: the 835's own)")
    r.set_defaults(func=cmd_remit_post)
    r = group.add_parser("exceptions", help="remittance.exceptions.v1 from the cluster")
    r.add_argument("--kind", choices=["unmatched_payment", "unbalanced_file", "unreadable_file"])
    r.add_argument("--json", action="store_true", help="JSON lines (without file bodies)")
    r.add_argument("--wait", type=float, default=2.0, help="seconds of quiet that end the read")
    r.set_defaults(func=cmd_remit_exceptions)
    group = sub.add_parser("denials", help="the denial work queue").add_subparsers(
        dest="sub", required=True
    )
    r = group.add_parser("list", help="remittance.denials.v1: the latest item per claim")
    r.add_argument("--category", default=None)
    r.add_argument("--kind", choices=["denied", "partially_denied", "underpaid"])
    r.add_argument("--payer", default=None)
    r.add_argument("--all", action="store_true", help="every item, not only the latest per claim")
    r.add_argument("--json", action="store_true")
    r.add_argument("--wait", type=float, default=2.0, help="seconds of quiet that end the read")
    r.set_defaults(func=cmd_denials_list)
    from services.console.cli import add_parser as add_console

    add_console(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
