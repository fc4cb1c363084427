"""What a role without PHI access may see of a record: every field the schema marks
``"phi": true`` is replaced, and so is any field whose name says it identifies a person
(a safety net for a schema version that forgets a mark)."""

from __future__ import annotations

from typing import Any

MASK = "•••"
# Fields that identify a person or carry free text about them, whatever the schema says.
PERSON_FIELDS = frozenset(
    {
        "last_name",
        "first_name",
        "middle_name",
        "birth_date",
        "member_id",
        "patient_id",
        "group_number",
        "address",
        "subscriber",
        "note_text",
        "note",
        "x12",
        "body",
        "value",
        "message",
        "error_message",
        "phone",
        "email",
        "ssn",
        "medical_record_number",
    }
)


def redact(schema: Any, value: Any, named: dict[str, Any] | None = None) -> Any:
    """``value`` (a decoded record) with PHI fields masked, following its Avro ``schema``."""
    named = {} if named is None else named
    if isinstance(schema, str):
        schema = named.get(schema, named.get(schema.rsplit(".", 1)[-1], schema))
    if isinstance(schema, list):  # a union: the branch that fits the value
        if value is None:
            return None
        for branch in schema:
            resolved = named.get(branch, branch) if isinstance(branch, str) else branch
            kind = resolved.get("type") if isinstance(resolved, dict) else resolved
            if (kind == "record" and isinstance(value, dict)) or (
                kind in ("array", "map") and isinstance(value, list | dict)
            ):
                return redact(branch, value, named)
        return _fallback(value)
    if not isinstance(schema, dict):
        return _fallback(value)
    kind = schema.get("type")
    if isinstance(kind, dict | list):
        return redact(kind, value, named)
    if kind in ("record", "enum", "fixed") and "name" in schema:
        named[schema["name"]] = schema
    if kind == "record" and isinstance(value, dict):
        fields = {f["name"]: f for f in schema.get("fields", [])}
        out = {}
        for name, item in value.items():
            field = fields.get(name)
            if item is not None and (name in PERSON_FIELDS or (field and field.get("phi"))):
                out[name] = MASK
            elif field is not None:
                out[name] = redact(field["type"], item, named)
            else:
                out[name] = _fallback(item)
        return out
    if kind == "array" and isinstance(value, list):
        return [redact(schema.get("items"), v, named) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: redact(schema.get("values"), v, named) for k, v in value.items()}
    return _fallback(value)


def _fallback(value: Any) -> Any:
    """Without a schema to follow: mask the person fields by name, keep the rest."""
    if isinstance(value, dict):
        return {
            k: MASK if k in PERSON_FIELDS and v is not None else _fallback(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_fallback(v) for v in value]
    return value
