"""State that follows its partition: one changelogged store per assigned input partition.

A stage whose state is keyed like one of its input topics (validation's duplicate history
reads a topic keyed by patient) keeps one SQLite file per partition of that topic
(``<folder>/<name>-p<N>.sqlite3``). The runner opens a partition's store when the
partition is assigned, after restoring it from the store's changelog topic (partition N
of ``<service>.<name>.changelog``, which the runner fills with every write), and closes it
when the partition is revoked, after its writes and the consumed offsets are committed.
The file stays on the volume with the changelog offset it has applied, so a partition
that comes back only reads the changes made elsewhere since. No Kafka import here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from pipeline.state import ChangelogStore, private_dir

S = TypeVar("S", bound=ChangelogStore)


class NotAssigned(LookupError):
    """A record of a partition whose store is not open: the runner opens it on assignment."""


class PartitionedStores(Generic[S]):
    """The stores of one kind, one per assigned partition of ``source_topic``."""

    def __init__(
        self, name: str, source_topic: str, folder: Path | str, open_store: Callable[[Path], S]
    ) -> None:
        self.name = name
        self.source_topic = source_topic
        self.folder = Path(folder)
        self._open_store = open_store
        self._open: dict[int, S] = {}

    def path(self, partition: int) -> Path:
        return private_dir(self.folder) / f"{self.name}-p{partition}.sqlite3"

    def open(self, partition: int) -> S:
        """The partition's store, opened (created empty when new) if it is not open yet."""
        if partition not in self._open:
            self._open[partition] = self._open_store(self.path(partition))
        return self._open[partition]

    def get(self, partition: int) -> S:
        try:
            return self._open[partition]
        except KeyError:
            raise NotAssigned(
                f"{self.name}: partition {partition} of {self.source_topic} is not assigned here"
            ) from None

    def items(self) -> Iterator[tuple[int, S]]:
        return iter(list(self._open.items()))

    def commit(self) -> None:
        for store in self._open.values():
            store.commit()

    def close(self, partition: int) -> None:
        """Close a partition's store without committing (the runner commits a revoked
        partition's writes first); its file stays, with its changelog offset."""
        store = self._open.pop(partition, None)
        if store is not None:
            store.close()

    def close_all(self) -> None:
        for partition in list(self._open):
            self.close(partition)
