"""A finding: one line of a health report, as data (status, what was looked at, what was found,
what to do). Checks return findings; only the CLI prints them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

OK = "ok"
WARN = "warn"
SKIP = "skip"
FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    """One line of a report: ``FAIL endpoint 1234abcd on network mynet: … — what to do``."""

    status: str
    subject: str
    message: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def __str__(self) -> str:
        text = f"{self.status:<4} {self.subject}: {self.message}"
        return f"{text} — {self.hint}" if self.hint else text


def any_failed(findings: Iterable[Finding]) -> bool:
    return any(f.failed for f in findings)


def needs_root(uid: int, command: str, what: str) -> Finding:
    """The first line of a report run by another user than root: ``what`` is root's."""
    return Finding(
        FAIL,
        "user",
        f"{command} runs as uid {uid}: {what} are root's",
        f"run it as root (sudo {command})",
    )
