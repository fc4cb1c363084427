"""``claimflow console``: serve the console; ``claimflow console user add``: manage users."""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
from typing import Any

from pipeline import logs
from pipeline.settings import Settings


def cmd_console(args: argparse.Namespace) -> int:
    from services.console.app import ConsoleSettings, main, users_of

    config = ConsoleSettings.from_base(Settings())
    if getattr(args, "console_cmd", None) == "user":
        users = users_of(config)
        password = os.environ.get("CLAIMFLOW_CONSOLE_PASSWORD") or (
            getpass.getpass(f"password for {args.name} (empty: generate one): ")
            if sys.stdin.isatty()
            else ""
        )
        generated = not password
        password = password or secrets.token_urlsafe(12)
        try:
            users.add(args.name, args.role, password)
        except ValueError as exc:
            print(f"claimflow console user add: {exc}", file=sys.stderr)
            return 2
        shown = f" with password {password}" if generated else ""
        print(f"{args.name} ({args.role}) saved in {users.path}{shown}", file=sys.stderr)
        return 0
    logs.setup(config.log_level, service="console")
    main(config)
    return 0


def register(sub: Any) -> None:
    from services.console.access import ROLES

    q = sub.add_parser(
        "console",
        help="the work queues and KPIs in the browser (needs CLAIMFLOW_BOOTSTRAP_SERVERS)",
    )
    q.set_defaults(func=cmd_console)
    users = q.add_subparsers(dest="console_cmd")
    u = users.add_parser("user", help="console users").add_subparsers(
        dest="user_cmd", required=True
    )
    a = u.add_parser(
        "add",
        help="add or change a user (password from $CLAIMFLOW_CONSOLE_PASSWORD, the terminal, "
        "or generated and printed)",
    )
    a.add_argument("name", help="the user name to sign in with")
    a.add_argument("--role", required=True, choices=ROLES, help="what the user may see and do")
