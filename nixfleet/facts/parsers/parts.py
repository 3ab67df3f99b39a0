"""The output of several commands run one after another in one SSH round trip, each behind a
marker line, split back into each command's lines."""

from __future__ import annotations


def split_parts(output: list[str], mark: str) -> dict[str, list[str]]:
    """The output of commands run one after another, each behind a `MARK + NAME` line, by NAME
    (what one SSH round trip for several facts gives back)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output:
        if line.startswith(mark):
            current = sections.setdefault(line[len(mark):], [])
        elif current is not None:
            current.append(line)
    return sections
