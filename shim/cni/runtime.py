"""One attachment's parameters (libcni's ``RuntimeConf``), and how a list's ADD or DEL fails."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CNIError
from .types import Result


@dataclass(frozen=True)
class RuntimeConf:
    """One attachment's parameters (libcni's ``RuntimeConf``)."""

    container_id: str
    netns: str = ""
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()
    capability_args: Mapping[str, Any] = field(default_factory=dict)


class AddFailed(CNIError):
    """ADD failed part-way. ``partial`` is the result of the plugins that did succeed.

    libcni leaves cleanup to the runtime; a runtime that wants DEL to undo exactly what was added
    passes ``partial`` to :meth:`CNI.delete`.
    """

    def __init__(self, cause: CNIError, partial: Result | None, chain: str) -> None:
        super().__init__(
            cause.msg, plugin=cause.plugin, verb=cause.verb, code=cause.code, details=cause.details
        )
        self.cause = cause
        self.partial = partial
        self.chain = chain
        #: what undoing it could not undo (a DEL that failed too); "" when all was undone
        self.undo_failed = ""

    def __str__(self) -> str:
        if not self.undo_failed:
            return super().__str__()
        return (f"{super().__str__()}; undoing it failed too: {self.undo_failed} (kept for "
                "`pycni gc`, which runs DEL again)")


class DelFailed(CNIError):
    """One or more plugins' DEL failed; the others ran all the same. ``failures``: each
    plugin's error, in the order DEL ran."""

    def __init__(self, failures: list[CNIError]) -> None:
        first = failures[0]
        others = "; ".join(str(e) for e in failures[1:])
        super().__init__(
            first.msg + (f" (and {others})" if others else ""), plugin=first.plugin,
            verb="DEL", code=first.code, details=first.details,
        )
        self.failures = failures
