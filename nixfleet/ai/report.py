"""--status, --list-providers and --list-models: what the configuration says and what the
providers answer, as a table or JSON. A key file is reported present and readable or not;
its content never."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from nixfleet.ai import columns
from nixfleet.ai.config import Config, KeyState, Price
from nixfleet.ai.providers import Probe, Provider
from nixfleet.ai.transport import Transport

NOT_ENABLED = "not enabled on this host"


@dataclass(frozen=True)
class ProviderStatus:
    name: str
    enabled: bool
    priority: int
    default_model: str
    models: tuple[str, ...]
    key_file: str | None
    key_present: bool | None  # None: no key needed
    key_readable: bool | None
    key: str  # "readable", "not needed", or the problem
    available: bool  # enabled, and its key (if needed) readable
    reachable: bool | None  # None: not asked
    ready: bool  # available, and it answered as expected
    detail: str
    live_models: tuple[str, ...] | None = None  # Ollama: what /api/tags lists


def problem(config_enabled: bool, key: KeyState) -> str | None:
    """Why a provider cannot be used, or None."""
    if not config_enabled:
        return NOT_ENABLED
    return key.problem


def statuses(config: Config, keys: Mapping[str, KeyState], providers: Mapping[str, Provider],
             transport: Transport) -> list[ProviderStatus]:
    """Each configured provider in priority order; the available ones probed in parallel."""
    ordered = config.by_priority()
    to_probe = [p.name for p in ordered if problem(p.enabled, keys[p.name]) is None
                and p.name in providers]
    with ThreadPoolExecutor(max_workers=max(1, len(to_probe))) as pool:
        probes: dict[str, Probe] = dict(zip(
            to_probe, pool.map(lambda name: providers[name].probe(transport), to_probe),
            strict=True))
    rows = []
    for provider in ordered:
        key = keys[provider.name]
        why = problem(provider.enabled, key)
        probe = probes.get(provider.name)
        if probe is None:
            detail = why or f"ai-cli does not know the {provider.name} API"
        else:
            detail = probe.detail
        rows.append(ProviderStatus(
            name=provider.name, enabled=provider.enabled, priority=provider.priority,
            default_model=provider.default_model, models=provider.models,
            key_file=str(key.file) if key.file else None,
            key_present=key.present if key.needed else None,
            key_readable=key.readable if key.needed else None,
            key=key.summary, available=why is None,
            reachable=probe.reachable if probe else None,
            ready=probe.ok if probe else False, detail=detail,
            live_models=probe.models if probe else None))
    return rows


def status_json(config: Config, default: tuple[str, str],
                rows: Sequence[ProviderStatus]) -> dict[str, Any]:
    return {
        "config": str(config.path),
        "defaultProvider": default[0],
        "defaultProviderFrom": default[1],
        "enableFallback": config.enable_fallback,
        "costOptimization": config.cost_optimization,
        "timeout": config.timeout,
        "maxRetries": config.max_retries,
        "providers": [asdict(row) for row in rows],
    }


def status_table(config: Config, default: tuple[str, str],
                 rows: Sequence[ProviderStatus], width: int) -> str:
    settings = (f"config {config.path}; default provider {default[0]} (from {default[1]}); "
                f"fallback {_on(config.enable_fallback)}; cost optimisation "
                f"{_on(config.cost_optimization)}; timeout {config.timeout:g} s; "
                f"retries {config.max_retries}")
    lines = [*columns.wrap(settings, width), ""]
    table = [("provider", "enabled", "priority", "default model", "key", "reachable")]
    for row in rows:
        key = f"{row.key_file}: readable" if row.key == "readable" else row.key
        table.append((row.name, "yes" if row.enabled else "no", str(row.priority),
                      row.default_model, key, _reachable(row)))
    return "\n".join([*lines, *columns.table(table, width)])


def _reachable(row: ProviderStatus) -> str:
    if not row.enabled:
        return "-"
    if row.reachable is None:
        return "not asked"
    return ("yes" if row.reachable else "no") + f": {row.detail}"


def providers_table(config: Config, default: str,
                    problems: Mapping[str, str | None], width: int) -> str:
    table = [("priority", "provider", "default model", "models", "state")]
    for p in config.by_priority():
        why = problems.get(p.name)
        state = "available" if why is None else why
        if p.name == default:
            state += " (default)"
        table.append((str(p.priority), p.name, p.default_model, str(len(p.models)), state))
    return "\n".join(columns.table(table, width))


@dataclass(frozen=True)
class ModelRow:
    provider: str
    model: str
    price: Price | None
    default: bool


def models_json(rows: Sequence[ModelRow]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


def models_table(rows: Sequence[ModelRow], width: int) -> str:
    table = [("provider", "model", "USD per 1M tokens in / out", "")]
    table += [(r.provider, r.model, price_text(r.price), "default" if r.default else "")
              for r in rows]
    return "\n".join(columns.table(table, width))


def price_of(config: Config, provider: str, model: str) -> Price | None:
    prices = config.providers[provider].prices
    # Ollama lists its models with their tag; the configuration names them without :latest.
    return prices.get(model) or prices.get(model.removesuffix(":latest"))


def price_text(price: Price | None) -> str:
    if price is None:
        return "-"
    return f"{price.input:g} / {price.output:g}"


def _on(flag: bool) -> str:
    return "on" if flag else "off"
