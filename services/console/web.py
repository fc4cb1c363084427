"""The console's pages (Flask, Jinja templates, no build step) over the view.

No Kafka import: the app gets the view, a ``publish`` function and the user stores from
its caller (``app.py`` wires them to the cluster; tests may wire anything real). Every page
needs a signed-in user; every form carries a CSRF token (Flask-WTF); sessions end after
``idle_minutes`` without a request and ``max_hours`` after sign-in; every page that shows a
patient's record writes a row to the access log; PHI reaches only the roles that need it.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import wraps
from typing import Any

from flask import (
    Flask,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from prometheus_client import Counter

from pipeline.errors import InputError, TransientError
from pipeline.models import Model
from pipeline.serde import Registry
from services.console import actions, kpis
from services.console.access import AccessLog, SignInThrottle, User, Users, may, sees_phi
from services.console.redact import MASK
from services.console.story import chapters
from services.console.view import View

log = logging.getLogger("claimflow.console")
SIGN_INS = Counter("claimflow_console_sign_ins_total", "Sign-in attempts", ["outcome"])
ACTIONS = Counter(
    "claimflow_console_actions_total", "Work-queue actions published", ["queue", "action"]
)

# publish(topic, key, value, headers): a Model is Avro-encoded for its topic; bytes go as they
# are (intake.raw.v1). Returns once the broker acknowledged it, or raises.
Publish = Callable[[str, str, Model | bytes, dict[str, str] | None], None]


def _when(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _age_days(ms: int | None) -> str:
    if not ms:
        return ""
    days = (time.time() * 1000 - ms) / 86_400_000
    return f"{days:.0f}" if days >= 1 else "<1"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _money(value: Any) -> str:
    if value is None or value == "":
        return "–"
    return f"${Decimal(str(value)):,.2f}"


def create_app(
    view: View,
    registry: Registry,
    publish: Publish,
    users: Users,
    access_log: AccessLog,
    *,
    secret_key: str | None = None,
    idle_minutes: float = 15,
    max_hours: float = 8,
    secure_cookies: bool = False,
    wait_for_view_s: float = 5.0,
) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key or secrets.token_hex(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=secure_cookies,
        SESSION_COOKIE_NAME="claimflow_console",
        PERMANENT_SESSION_LIFETIME=int(idle_minutes * 60),
        WTF_CSRF_TIME_LIMIT=int(max_hours * 3600),
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
    )
    CSRFProtect(app)
    throttle = SignInThrottle()
    app.jinja_env.filters.update(when=_when, age=_age_days, pct=_pct, money=_money)
    app.jinja_env.globals.update(MASK=MASK, loads=json.loads)

    def current() -> User | None:
        name, role = session.get("user"), session.get("role")
        if not name or not role:
            return None
        now = time.time()
        if (
            now - session.get("seen", 0) > idle_minutes * 60
            or now - session.get("since", 0) > max_hours * 3600
        ):
            session.clear()
            flash("Your session expired; sign in again.")
            return None
        session["seen"] = now
        return User(name, role)

    @app.before_request
    def guard() -> Any:
        if request.endpoint in ("login", "static", "health"):
            return None
        user = current()
        if user is None:
            return redirect(url_for("login", next=request.full_path.rstrip("?")))
        g.user = user
        g.phi = sees_phi(user.role)
        return None

    @app.after_request
    def headers(resp: Any) -> Any:
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; "
            "form-action 'self'; frame-ancestors 'none'"
        )
        return resp

    @app.context_processor
    def context() -> dict[str, Any]:
        user = getattr(g, "user", None)
        return {
            "user": user,
            "phi": getattr(g, "phi", False),
            "may": (lambda verb: user is not None and may(user.role, verb)),
            "queue_sizes": kpis.queues(view) if user else {},
            "view_stats": (view.records, view.errors),
        }

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> Any:
        log.warning("form refused: CSRF", extra={"reason": exc.description})
        return render_template(
            "error.html",
            message=(
                "This form expired or did not come from this console (CSRF check: "
                f"{exc.description}). Reload the page and try again."
            ),
        ), 400

    @app.errorhandler(TransientError)
    def broker_down(exc: TransientError) -> Any:
        log.error("publish failed", extra={"error": type(exc).__name__})
        return render_template(
            "error.html",
            message=(
                "The cluster did not acknowledge this action, so it may not have been recorded. "
                "Check the item again before repeating it."
            ),
        ), 503

    def need(verb: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(fn)
            def inner(*a: Any, **kw: Any) -> Any:
                if not may(g.user.role, verb):
                    abort(403)
                return fn(*a, **kw)

            return inner

        return wrap

    def send(topic: str, key: str, value: Model | bytes, headers: dict[str, str] | None = None):
        publish(topic, key, value, headers)
        if topic == "workqueue.actions.v1":
            ACTIONS.labels(value.queue, value.action).inc()  # type: ignore[union-attr]
        elif topic == "coding.decisions.v1":
            ACTIONS.labels("review", value.action).inc()  # type: ignore[union-attr]
        elif topic == "coding.audit-results.v1":
            ACTIONS.labels("audits", value.outcome).inc()  # type: ignore[union-attr]
        eid = getattr(value, "event_id", None)
        if eid and topic in (
            "workqueue.actions.v1",
            "coding.decisions.v1",
            "coding.audit-results.v1",
        ):
            view.wait_for(topic, eid, wait_for_view_s)

    @app.get("/health")
    def health() -> Any:
        return {"records": view.records, "errors": view.errors}

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "POST":
            name = request.form.get("username", "").strip()
            password = request.form.get("password", "")
            if throttle.blocked(name):
                SIGN_INS.labels("throttled").inc()
                flash("Too many failed sign-ins for this name; wait 15 minutes.")
                return render_template("login.html"), 429
            user = users.check(name, password)
            if user is None:
                throttle.failed(name)
                SIGN_INS.labels("refused").inc()
                log.info("sign-in refused")
                flash("Wrong name or password.")
                return render_template("login.html"), 401
            throttle.succeeded(name)
            SIGN_INS.labels("ok").inc()
            session.clear()
            session.permanent = True
            session.update(user=user.name, role=user.role, since=time.time(), seen=time.time())
            log.info("signed in", extra={"user": user.name, "role": user.role})
            target = request.args.get("next") or ""
            if not target.startswith("/") or target.startswith("//"):
                target = url_for("overview")
            return redirect(target)
        return render_template("login.html")

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        flash("Signed out.")
        return redirect(url_for("login"))

    @app.get("/")
    def overview() -> Any:
        return render_template("overview.html", k=kpis.overview(view))

    @app.get("/search")
    def search() -> Any:
        text = request.args.get("q", "").strip()
        found = view.find(text) if text else None
        if found:
            return redirect(url_for("encounter", encounter_id=found))
        flash(f"No encounter or claim with the id {text!r}.")
        return redirect(request.referrer or url_for("overview"))

    # --- the encounter's story -------------------------------------------------------

    @app.get("/encounters/<path:encounter_id>")
    def encounter(encounter_id: str) -> Any:
        row = view.encounter(encounter_id)
        if row is None:
            abort(404)
        claims = view.claims_of(encounter_id)
        access_log.record(g.user, "story", encounter_id)
        story = chapters(
            view.story(encounter_id),
            registry,
            {c["claim_id"] for c in claims},
            g.phi,
            view.interchange,
        )
        return render_template("story.html", enc=row, claims=claims, story=story)

    @app.get("/claims/<path:claim_id>")
    def claim(claim_id: str) -> Any:
        found = view.find(claim_id)
        if not found:
            abort(404)
        return redirect(url_for("encounter", encounter_id=found) + "#claims")

    def next_item(queue: list[Any], done: str, page: str) -> Any:
        """After an item is worked, the next one in its queue opens (else the queue)."""
        for row in queue:
            if row["encounter_id"] != done:
                return redirect(url_for(f"{page}_item", encounter_id=row["encounter_id"]))
        return redirect(url_for("review_list" if page == "review" else "audits_list"))

    # --- coder review ---------------------------------------------------------------

    @app.get("/review")
    def review_list() -> Any:
        return render_template("review_list.html", items=view.review_queue())

    @app.route("/review/<path:encounter_id>", methods=["GET", "POST"])
    def review_item(encounter_id: str) -> Any:
        item = view.one("SELECT * FROM reviews WHERE encounter_id = ?", encounter_id)
        if item is None:
            abort(404)
        error = None
        held = view.event(item["seq"])
        review = registry.decode_dict("coding.review.v1", held.data) if held else {}
        if request.method == "POST":
            if not may(g.user.role, "review"):
                abort(403)
            unbillable = [
                d.get("code")
                for d in (review.get("coded") or {}).get("diagnoses") or []
                if not d.get("billable", True)
            ]
            try:
                if request.form.get("action") == "confirm" and unbillable:
                    raise InputError(
                        "action",
                        f"{', '.join(unbillable)} is not billable and coding will not release "
                        "it as it is: amend with the specific code",
                    )
                decision = actions.decision(
                    encounter_id,
                    g.user.name,
                    request.form.get("action", ""),
                    request.form.get("diagnoses", ""),
                    request.form.get("pcs", ""),
                    request.form.get("note"),
                )
            except InputError as exc:
                error = exc
            else:
                send("coding.decisions.v1", encounter_id, decision)
                log.info("coder decision", extra={"user": g.user.name, "action": decision.action})
                flash(f"{decision.action.capitalize()}ed {encounter_id}: sent to coding.")
                return next_item(view.review_queue(), encounter_id, "review")
        access_log.record(g.user, "review", encounter_id)
        return render_template(
            "review_item.html",
            item=item,
            review=review,
            coded=review.get("coded") or {},
            error=error,
            form=request.form,
        ), (400 if error else 200)

    # --- coding audit -----------------------------------------------------------------

    @app.get("/audits")
    def audits_list() -> Any:
        return render_template("audits_list.html", items=view.audit_queue(), k=kpis.audits(view))

    @app.route("/audits/<path:encounter_id>", methods=["GET", "POST"])
    def audit_item(encounter_id: str) -> Any:
        item = view.one("SELECT * FROM audits WHERE encounter_id = ?", encounter_id)
        if item is None:
            abort(404)
        error = None
        if request.method == "POST":
            if not may(g.user.role, "review"):
                abort(403)
            try:
                result = actions.audit_result(
                    encounter_id,
                    g.user.name,
                    request.form.get("outcome", ""),
                    request.form.get("diagnoses", ""),
                    request.form.get("note"),
                )
            except InputError as exc:
                error = exc
            else:
                send("coding.audit-results.v1", encounter_id, result)
                log.info("coding audit", extra={"user": g.user.name, "outcome": result.outcome})
                flash(f"Audit of {encounter_id} sent to coding ({result.outcome}).")
                return next_item(view.audit_queue(), encounter_id, "audit")
        access_log.record(g.user, "audit", encounter_id)
        return render_template(
            "audit_item.html",
            item=item,
            codes=json.loads(item["codes"] or "[]"),
            enc=_collected(encounter_id),
            error=error,
            form=request.form,
        ), (400 if error else 200)

    # --- corrections ------------------------------------------------------------------

    @app.get("/corrections")
    def corrections_list() -> Any:
        return render_template("corrections_list.html", items=view.correction_queue())

    def _collected(encounter_id: str) -> dict[str, Any] | None:
        ev = view.latest_event("encounters.collected.v1", encounter_id)
        return registry.decode_dict("encounters.collected.v1", ev.data) if ev else None

    def _fields(item: Any, collected: dict[str, Any]) -> list[dict[str, Any]]:
        """The fields the edits (or the payer's rejection) point at, with their values."""
        paths: dict[str, str] = {}
        for e in json.loads(item["edits"] or "[]"):
            path = actions.encounter_path(e.get("field"))
            if path:
                paths.setdefault(path, f"{e.get('rule_id')}: {e.get('fix_hint') or ''}")
        if item["source"] == "payer" or not paths:
            for path in (
                "coverage.member_id",
                "coverage.payer_id",
                "patient.last_name",
                "patient.first_name",
                "patient.birth_date",
            ):
                paths.setdefault(path, item["reason"] or "")
        data = actions.editable(collected)
        out = []
        for path, why in paths.items():
            try:
                value = actions.get_path(data, path)
            except (KeyError, TypeError, IndexError):
                continue
            if isinstance(value, dict):
                continue
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            out.append({"path": path, "value": "" if shown is None else shown, "why": why})
        return out

    def _denied(encounter_id: str) -> dict[str, Any] | None:
        """An open denial of the encounter's claim, as an item of the correction form."""
        d = view.one(
            "SELECT * FROM denials WHERE encounter_id = ? AND state = 'open'", encounter_id
        )
        if d is None:
            return None
        codes = ", ".join(f"{r['group']}-{r['carc']}" for r in json.loads(d["reasons"] or "[]"))
        return {
            "encounter_id": encounter_id,
            "source": "denial",
            "claim_id": d["claim_id"],
            "since_ms": d["queued_ms"],
            "edits": "[]",
            "reason": f"{d['kind'].replace('_', ' ')} {codes}: {d['next_action']}",
            "resubmitted_ms": None,
            "resubmitted_by": None,
        }

    @app.route("/corrections/<path:encounter_id>", methods=["GET", "POST"])
    def correction_item(encounter_id: str) -> Any:
        item: Any = view.one(
            "SELECT * FROM corrections WHERE encounter_id = ? AND closed_ms IS NULL",
            encounter_id,
        )
        if item is None:
            item = _denied(encounter_id)  # a denial fixed by a corrected claim
        collected = _collected(encounter_id)
        if item is None or collected is None:
            abort(404)
        error = None
        fields = _fields(item, collected) if g.phi else []
        if request.method == "POST":
            if not may(g.user.role, "correct"):
                abort(403)
            # Only the fields the form sent, and only those the user changed.
            changes = {
                f["path"]: request.form[f"field:{f['path']}"]
                for f in fields
                if request.form.get(f"field:{f['path']}", str(f["value"])) != str(f["value"])
            }
            whole = request.form.get("whole") or ""
            try:
                # The JSON counts as a change only when it differs from what was collected.
                if whole.strip() and json.loads(whole) == json.loads(
                    json.dumps(actions.editable(collected))
                ):
                    whole = ""
            except ValueError:
                pass  # corrected_encounter names the JSON error
            try:
                source_id, body = actions.corrected_encounter(
                    collected,
                    changes,
                    whole,
                    attempt=str(int(time.time() * 1000)),
                )
                act = actions.work_action(
                    "denials" if item["source"] == "denial" else "corrections",
                    item["claim_id"] if item["source"] == "denial" else encounter_id,
                    "resubmit",
                    g.user.name,
                    g.user.role,
                    encounter_id=encounter_id,
                    claim_id=item["claim_id"],
                    note=request.form.get("note"),
                )
            except InputError as exc:
                error = exc
            else:
                if not changes and not whole.strip():
                    error = InputError("encounter", "nothing was changed; correct a field first")
                else:
                    send("intake.raw.v1", source_id, body, {"content-type": "application/json"})
                    send("workqueue.actions.v1", encounter_id, act)
                    log.info("correction resubmitted", extra={"user": g.user.name})
                    flash(f"Resubmitted {encounter_id}: intake has the corrected encounter.")
                    return redirect(url_for("corrections_list"))
        access_log.record(g.user, "correction", encounter_id, item["claim_id"])
        whole = json.dumps(actions.editable(collected), indent=1) if g.phi else ""
        return render_template(
            "correction_item.html",
            item=item,
            edits=json.loads(item["edits"] or "[]"),
            fields=fields,
            whole=request.form.get("whole", whole),
            error=error,
            form=request.form,
        ), (400 if error else 200)

    # --- denials ----------------------------------------------------------------------

    @app.get("/denials")
    def denials_list() -> Any:
        state = request.args.get("state", "open")
        rows = view.denial_queue(None if state == "all" else state)
        return render_template("denials_list.html", items=rows, state=state)

    @app.route("/denials/<path:claim_id>", methods=["GET", "POST"])
    def denial_item(claim_id: str) -> Any:
        item = view.one("SELECT * FROM denials WHERE claim_id = ?", claim_id)
        if item is None:
            abort(404)
        error = None
        if request.method == "POST":
            if not may(g.user.role, "denials"):
                abort(403)
            what = request.form.get("action", "")
            if what not in ("appeal", "write_off"):
                error = InputError("action", "must be appeal or write_off")
            else:
                try:
                    act = actions.work_action(
                        "denials",
                        claim_id,
                        what,  # type: ignore[arg-type]
                        g.user.name,
                        g.user.role,
                        encounter_id=item["encounter_id"],
                        claim_id=claim_id,
                        amount=request.form.get("amount") or item["at_stake"],
                        note=request.form.get("note"),
                    )
                except InputError as exc:
                    error = exc
                else:
                    send("workqueue.actions.v1", claim_id, act)
                    if what == "write_off":  # remittance settles the claim (written_off)
                        payer = item["payer_id"] or ""
                        send("console.writeoffs.v1", claim_id, actions.written_off(act, payer))
                    log.info("denial worked", extra={"user": g.user.name, "action": what})
                    label = "Appeal recorded" if what == "appeal" else "Written off"
                    flash(f"{label} for {claim_id}.")
                    return redirect(url_for("denials_list"))
        access_log.record(g.user, "denial", item["encounter_id"], claim_id)
        return render_template(
            "denial_item.html",
            item=item,
            reasons=json.loads(item["reasons"] or "[]"),
            remarks=json.loads(item["remarks"] or "[]"),
            error=error,
            history=view.rows(
                "SELECT * FROM actions WHERE item_id = ? ORDER BY acted_ms", claim_id
            ),
        ), (400 if error else 200)

    # --- remittance exceptions -------------------------------------------------------------

    @app.get("/exceptions")
    def exceptions_list() -> Any:
        return render_template("exceptions_list.html", items=view.exception_queue())

    @app.post("/exceptions/<path:event_id>")
    def exception_resolve(event_id: str) -> Any:
        if not may(g.user.role, "exceptions"):
            abort(403)
        if view.one("SELECT 1 FROM exceptions WHERE event_id = ?", event_id) is None:
            abort(404)
        try:
            act = actions.work_action(
                "exceptions",
                event_id,
                "resolve",
                g.user.name,
                g.user.role,
                note=request.form.get("note"),
            )
        except InputError as exc:
            flash(str(exc))
            return redirect(url_for("exceptions_list"))
        send("workqueue.actions.v1", event_id, act)
        flash("Exception marked resolved.")
        return redirect(url_for("exceptions_list"))

    @app.get("/access-log")
    @need("access_log")
    def access_log_page() -> Any:
        return render_template(
            "access_log.html",
            rows=access_log.recent(500, request.args.get("encounter") or None),
        )

    return app
