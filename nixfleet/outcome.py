"""What a deploy does to a host and what came of it: the Action asked for, the Result, and the
typed per-host outcome that the deploy summary and summary.json are made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nixfleet.verify.report import HostVerification


class Action(StrEnum):
    """nixos-rebuild's actions (and push, the flake alone), with what each one implies."""

    PUSH = "push"
    BUILD = "build"
    DRY_ACTIVATE = "dry-activate"
    TEST = "test"
    BOOT = "boot"
    SWITCH = "switch"
    ROLLBACK = "rollback"

    @property
    def builds(self) -> bool:
        return self not in (Action.PUSH, Action.ROLLBACK)

    @property
    def sets_profile(self) -> bool:
        """Makes the build the system profile's new generation (the boot default)."""
        return self in (Action.SWITCH, Action.BOOT)

    @property
    def activation(self) -> str:
        """The toplevel's switch-to-configuration argument ("" for none)."""
        return {Action.SWITCH: "switch", Action.TEST: "test", Action.BOOT: "boot",
                Action.DRY_ACTIVATE: "dry-activate"}.get(self, "")

    @property
    def live(self) -> bool:
        """Changes the running system: health gate, watchdog and confirmation apply."""
        return self in (Action.SWITCH, Action.TEST)

    @property
    def may_reboot(self) -> bool:
        return self in (Action.SWITCH, Action.BOOT)

    def satisfied_by(self, toplevel: str | None, current: str | None, profile: str | None) -> bool:
        """The host already has `toplevel` as this action would leave it (deploy.sh's
        `satisfied` is the same rule, applied again under the host's lock)."""
        if not toplevel or self not in (Action.SWITCH, Action.TEST, Action.BOOT):
            return False
        return (not self.sets_profile or toplevel == profile) and \
            (not self.live or toplevel == current)

    @property
    def already(self) -> str:
        return "already active" if self.live else "already the boot default"


class Result(StrEnum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    BUILT = "built"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"
    # The rollback itself failed: the host may run or boot neither system as intended.
    ROLLBACK_FAILED = "rollback-failed"
    LOCKED = "locked"
    UNREACHABLE = "unreachable"
    WOULD_CHANGE = "would-change"  # --dry: what a real run would do
    NOT_ATTEMPTED = "not-attempted"  # a rollout stopped before this host's wave

    @property
    def ok(self) -> bool:
        return self in (Result.CHANGED, Result.UNCHANGED, Result.BUILT, Result.WOULD_CHANGE)


@dataclass(frozen=True)
class StepOutcome:
    """What a step after the remote one (confirmation, reboot) made of the host: a result that
    replaces the remote step's (rolled-back, failed) or None to only add its reason."""

    reason: str
    result: Result | None = None
    generation_after: int | None = None


@dataclass
class HostOutcome:
    host: str
    action: Action | None
    result: Result
    reason: str = ""
    generation_before: int | None = None
    generation_after: int | None = None
    toplevel: str | None = None
    flake: str | None = None  # changed | unchanged
    duration: float | None = None  # seconds on the host
    closure_before: int | None = None  # bytes
    closure_after: int | None = None
    built_on: str | None = None  # target, deployer, or the builder host's name
    fetched_bytes: int | None = None  # from the builder's binary cache
    diff: list[str] = field(default_factory=list)
    would: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    backup: str | None = None
    backups_removed: list[str] = field(default_factory=list)  # older backups (3 are kept)
    # What did not judge this deploy: units, services, checks failing before and after it.
    warnings: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds: lock, flake, build, ...
    verification: HostVerification | None = None  # post-deploy verification, where it ran
    wave: int | None = None  # its wave in a canary rollout (1 = the canaries)

    @property
    def closure_delta(self) -> str | None:
        if self.closure_before is None or self.closure_after is None:
            return None
        delta = self.closure_after - self.closure_before
        return f"{delta / 2**20:+.1f} MiB" if abs(delta) >= 2**20 else f"{delta / 2**10:+.1f} KiB"

    def after(self, step: StepOutcome) -> None:
        if step.result is None:
            self.reason = f"{self.reason}; {step.reason}" if self.reason else step.reason
            return
        self.result, self.reason = step.result, step.reason
        if step.generation_after is not None:
            self.generation_after = step.generation_after

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host, "action": self.action and str(self.action),
            "result": str(self.result), "reason": self.reason,
            "generation_before": self.generation_before,
            "generation_after": self.generation_after, "toplevel": self.toplevel,
            "flake": self.flake, "duration": self.duration,
            "closure_before": self.closure_before, "closure_after": self.closure_after,
            "closure_delta": self.closure_delta, "built_on": self.built_on,
            "fetched_bytes": self.fetched_bytes, "diff": self.diff, "would": self.would,
            "drift": self.drift, "backup": self.backup,
            "backups_removed": self.backups_removed, "warnings": self.warnings,
            "phases": self.phases,
            "verification": self.verification and self.verification.to_json(),
            "wave": self.wave,
        }
