"""The ``claimflow`` command: the frame every stage plugs its commands into.

The frame owns what is plumbing: ``service NAME`` (run one registered service),
``broker``, ``report`` and ``corrections list`` (which gathers the correction queues the
stages register). Every other command is registered by a stage, or by the simulators'
package, through the entry points in ``pipeline/plugins.py``: this module imports no
stage and no simulator.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from pipeline import logs, plugins

# Settings (pydantic) is imported where it is used: importing it takes seconds, and until a
# command runs, Ctrl-C can only end the process with a traceback.


def cmd_service(args: argparse.Namespace) -> int:
    from pipeline.settings import Settings
    from pipeline.stage import collect_rarely_during_start_up
    from pipeline.supervisor import stop_when_orphaned

    collect_rarely_during_start_up()  # until the service freezes what start-up built
    stop_when_orphaned()
    settings = Settings()
    logs.setup(settings.log_level, service=args.name)
    plugins.service(args.name)(settings)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """KPIs from the cluster's topics; with --out, PNG charts and a CSV too."""
    from pipeline.report import print_report, write_report
    from pipeline.settings import Settings
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
    titles = plugins.rule_titles()
    print_report(tracker.ledger, rule_titles=titles)
    if args.out:
        for path in write_report(tracker.ledger, Path(args.out), titles):
            print(path)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from pipeline.broker import EmbeddedBroker
    from pipeline.kafka import ensure_topics
    from pipeline.serde import registry
    from pipeline.settings import Settings

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


def cmd_corrections_list(args: argparse.Namespace) -> int:
    """The correction work queues: every stage's that registered one."""
    from pipeline.settings import Settings

    settings = Settings()
    logs.setup("WARNING")
    bootstrap = settings.require_bootstrap()
    for ep in plugins.entry_points(plugins.CORRECTIONS):
        for line in ep.load()(bootstrap, settings, as_json=args.json, messages=args.messages):
            print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="claimflow", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("service", help="run one service (needs CLAIMFLOW_BOOTSTRAP_SERVERS)")
    q.add_argument(
        "name", choices=plugins.service_names() + plugins.app_names(), help="which service"
    )
    q.set_defaults(func=cmd_service)
    q = sub.add_parser("report", help="KPIs from the topics (needs CLAIMFLOW_BOOTSTRAP_SERVERS)")
    q.add_argument("--out", metavar="DIR", default=None, help="also write PNG charts and a CSV")
    q.add_argument("--wait", type=float, default=2.0, help="seconds of quiet that end the read")
    q.set_defaults(func=cmd_report)
    q = sub.add_parser("broker", help="run the embedded broker in the foreground")
    q.add_argument(
        "--port", type=int, default=None, help="listen on this port (default: a free one)"
    )
    q.set_defaults(func=cmd_broker)
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
    for ep in plugins.entry_points(plugins.COMMANDS):
        ep.load()(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C before a command installs its own handler (building the parser imports
        # every stage, which takes seconds): stop quietly, as the shell expects, no traceback.
        print(file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
