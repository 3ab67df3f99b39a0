"""Which providers a prompt goes to, in which order, and with which model.

The first provider: -p; else the provider that lists -m's model (else the default one); else,
with cost optimisation (-c or costOptimization), the available provider whose cheapest model
costs least (input + output price per million tokens; ties by priority); else the default
provider (AI_DEFAULT_PROVIDER, else defaultProvider). With fallback (-f or enableFallback) the
other enabled providers follow in priority order. Each is asked for -m (the first provider
only), else its cheapest model under cost optimisation, else its default model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nixfleet.ai.config import DEFAULT_PROVIDER_ENV, Config, ProviderConfig


class UsageError(Exception):
    """A command line (or AI_DEFAULT_PROVIDER) that names what does not exist."""


@dataclass(frozen=True)
class Wish:
    """What the command line asked for."""

    provider: str | None = None
    model: str | None = None
    fallback: bool = False
    cost: bool = False


@dataclass(frozen=True)
class Step:
    """One provider to ask with its model, or why it cannot be asked (`problem`)."""

    provider: str
    model: str
    problem: str | None = None


def default_provider(config: Config, environ: Mapping[str, str]) -> tuple[str, str]:
    """The default provider and where it comes from (the environment or the file)."""
    chosen = environ.get(DEFAULT_PROVIDER_ENV, "").strip()
    if chosen:
        known(config, chosen, DEFAULT_PROVIDER_ENV)
        return chosen, DEFAULT_PROVIDER_ENV
    return config.default_provider, str(config.path)


def known(config: Config, name: str, where: str) -> ProviderConfig:
    provider = config.providers.get(name)
    if provider is None:
        raise UsageError(f"{where}: unknown provider {name!r} "
                         f"(known: {', '.join(p.name for p in config.by_priority())})")
    return provider


def route(config: Config, wish: Wish, default: str,
          problems: Mapping[str, str | None]) -> list[Step]:
    """The providers to try, in order. `problems` says, per provider, why it cannot be used
    (disabled, no key), or None."""
    cost = wish.cost or config.cost_optimization
    ordered = config.by_priority()
    usable = [p for p in ordered if problems.get(p.name) is None]
    if wish.provider:
        first = known(config, wish.provider, "-p").name
    elif wish.model:
        listing = [p.name for p in usable if wish.model in p.models]
        first = listing[0] if listing else default
    elif cost:
        priced = [(cheapest[1].rank, p.priority, p.name) for p in usable
                  if (cheapest := p.cheapest_model()) is not None]
        first = min(priced)[2] if priced else default
    else:
        first = default
    names = [first]
    if wish.fallback or config.enable_fallback:
        names += [p.name for p in ordered if p.enabled and p.name != first]

    def model(provider: ProviderConfig) -> str:
        if wish.model and provider.name == first:
            return wish.model
        cheapest = provider.cheapest_model() if cost else None
        return cheapest[0] if cheapest else provider.default_model

    return [Step(name, model(config.providers[name]), problems.get(name)) for name in names]
