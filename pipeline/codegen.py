"""What the generated Avro reader (``avro_read.py``) and writer (``avro_write.py``) share:
Python source built per schema, one function per record type and model, each made once
and named by a counter, with the values the source refers to kept in its namespace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Unsupported(TypeError):
    """A schema the generator does not handle (fastavro does)."""


class SourceGen:
    """The functions generated so far and the namespace they run in."""

    def __init__(self, named: dict[str, Any], env: dict[str, Any]) -> None:
        self.named = named
        self.env = env
        self.functions: dict[tuple[str, Any], str] = {}
        self.sources: list[str] = []
        self.active: set[tuple[str, Any]] = set()
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def constant(self, prefix: str, value: Any) -> str:
        name = self.name(prefix)
        self.env[name] = value
        return name

    def function(
        self, schema: dict[str, Any], model: Any, signature: str, body: Callable[[], list[str]]
    ) -> str:
        """The name of the function for a record of ``schema`` (as ``model``): made once,
        ``def <name><signature>:`` over the lines ``body`` gives; a record that contains
        itself is not generated."""
        key = (schema["name"], model)
        if key in self.functions:
            return self.functions[key]
        if key in self.active:
            raise Unsupported(f"the record {schema['name']} contains itself")
        self.active.add(key)
        function = self.functions[key] = self.name("record")
        self.sources.append("\n".join([f"def {function}{signature}:", *body()]))
        self.active.discard(key)
        return function

    def compiled(self, top: str, title: str) -> Any:
        """The function ``top`` of the source generated, compiled as ``title``."""
        source = "\n\n".join(self.sources)
        exec(compile(source, title, "exec"), self.env)  # noqa: S102
        return self.env[top]
