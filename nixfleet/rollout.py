"""Canary rollouts: the selected hosts in waves, each wave gated before the next one starts.

Wave 1 is one host per hardware class (the host whose `deploy.canary` is true, else the first
of its class in the inventory); then the rest, in inventory order, in waves of `deploy.batch`
hosts (a count, or a share of them such as "50%", as Ansible's `serial`; none: one wave).

The waves run inside one pyinfra run and one operation: each host's rebuild first waits for
its wave's turn (`Rollout.turn`), so no wave waits for more than the one before it, and
pyinfra's progress per host stays as it is. A wave is done when each of its hosts finished
its rebuild (health gate and confirmation included); then its gate runs (the caller's `finish`:
verification, the alert gate) and says whether the rollout goes on. The first wave with a
failure stops it: the hosts of every later wave are told so when their turn comes, and change
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gevent.event import Event


@dataclass(frozen=True)
class Member:
    """A selected host, as the waves see it."""

    name: str
    hardware_class: str
    canary: bool = False  # deploy.canary: this host goes first for its class


def plan_waves(members: Sequence[Member], batch: int | str | None) -> list[tuple[str, ...]]:
    """The waves, in order (members in inventory order)."""
    first: dict[str, str] = {}
    for member in members:
        if member.canary and member.hardware_class not in first:
            first[member.hardware_class] = member.name
    for member in members:
        first.setdefault(member.hardware_class, member.name)
    canaries = tuple(m.name for m in members if m.name in first.values())
    rest = [m.name for m in members if m.name not in first.values()]
    if not rest:
        return [canaries]
    if batch is None:
        size = len(rest)
    elif isinstance(batch, str):  # "N%": of the hosts after the canaries, at least one
        size = max(1, math.ceil(len(rest) * int(batch.rstrip("%")) / 100))
    else:
        size = batch
    return [canaries, *(tuple(rest[i:i + size]) for i in range(0, len(rest), size))]


# start(wave index) before a wave; finish(wave index) after it: why the rollout stops, or None.
Start = Callable[[int], None]
Finish = Callable[[int], str | None]


class Rollout:
    """Which wave runs, and who waits: `turn(host)` blocks a host's rebuild until its wave
    starts; `done(host)` when its rebuild ended (however it ended)."""

    def __init__(self, waves: Sequence[Sequence[str]], waiting: Callable[[int], set[str]],
                 start: Start, finish: Finish) -> None:
        """+ waiting(i): the hosts of wave i whose rebuild is to run and end with `done` (asked
          again each time: a host that failed before its rebuild ran is not waited for)."""
        self.waves = [tuple(w) for w in waves]
        self.wave_of = {name: i for i, wave in enumerate(self.waves) for name in wave}
        self.waiting, self.start, self.finish = waiting, start, finish
        self.released = [Event() for _ in self.waves]
        self.finished: set[str] = set()
        self.current = -1
        self.stopped: str | None = None
        self.complete = Event()  # every wave is done (or not attempted), its gate too
        self._advancing = False

    def turn(self, name: str) -> str | None:
        """Wait for this host's wave (the first call starts the first wave); None to go on, or
        why it is not attempted."""
        self._advance()
        index = self.wave_of.get(name)
        if index is None:
            return None
        self.released[index].wait()
        return self.stopped

    def done(self, name: str) -> None:
        self.finished.add(name)
        self._advance()

    def _advance(self) -> None:
        """Finish the current wave once none of its hosts is pending; start the next. (A
        finish takes a while, the alert gate's settle: hosts that end meanwhile only count.)"""
        if self._advancing:
            return
        self._advancing = True
        try:
            while self.current < len(self.waves) and (
                    self.current < 0 or not self.waiting(self.current) - self.finished):
                if self.current >= 0 and self.stopped is None:
                    self.stopped = self.finish(self.current)
                self.current += 1
                if self.current < len(self.waves):
                    if self.stopped is None:
                        self.start(self.current)
                    self.released[self.current].set()
            if self.current >= len(self.waves):
                self.complete.set()
        finally:
            self._advancing = False
