"""/etc/ai-providers.json and the providers' key files.

The file is nix/lib/ai-providers.nix rendered for the host: the host's settings
(defaultProvider, enableFallback, costOptimization, timeout, maxRetries) and, per provider,
enabled, priority, models, defaultModel, baseUrl, apiKeyFile, requiresApiKey and prices (USD
per million input and output tokens). A key is read from its file only, and only into an
`ApiKey`, whose text form never shows it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CONFIG_FILE = Path("/etc/ai-providers.json")
CONFIG_ENV = "AI_PROVIDERS_CONFIG"
DEFAULT_PROVIDER_ENV = "AI_DEFAULT_PROVIDER"
# The APIs ai-cli speaks: a provider's name is its type (providers.PROVIDERS has their classes).
APIS = ("openai", "anthropic", "gemini", "ollama")


class ConfigError(Exception):
    """The configuration cannot be used; the message is the one line the user sees."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float

    @property
    def rank(self) -> float:
        """What -c compares: a million tokens in and a million out."""
        return self.input + self.output


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    enabled: bool
    priority: int
    models: tuple[str, ...]
    default_model: str
    base_url: str
    api_key_file: Path | None
    requires_api_key: bool
    prices: Mapping[str, Price]

    def cheapest_model(self) -> tuple[str, Price] | None:
        """The model with the lowest price (ties: the order of `models`); None when no
        model has a price."""
        priced = [(self.prices[m].rank, i, m) for i, m in enumerate(self.models)
                  if m in self.prices]
        if not priced:
            return None
        _, _, model = min(priced)
        return model, self.prices[model]


@dataclass(frozen=True)
class Config:
    path: Path
    default_provider: str
    enable_fallback: bool
    cost_optimization: bool
    timeout: float
    max_retries: int
    providers: Mapping[str, ProviderConfig]

    def by_priority(self) -> list[ProviderConfig]:
        """Every provider, lowest priority number first (ties: by name)."""
        return sorted(self.providers.values(), key=lambda p: (p.priority, p.name))


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(CONFIG_ENV) or CONFIG_FILE)


def load_config(path: Path) -> Config:
    """The configuration at `path`, or a ConfigError naming the file and the bad field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (is features.ai.providers enabled on this "
                          f"host? {CONFIG_ENV} names another file)") from None
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except ValueError as error:
        raise ConfigError(f"{path}: not JSON: {error}") from None
    return parse_config(data, path)


def parse_config(data: Any, path: Path) -> Config:
    fields = _Fields(path)
    fields.object(data, "")
    providers_data = fields.get(data, "providers", dict, "")
    providers = {name: _provider(fields, name, value)
                 for name, value in providers_data.items()}
    config = Config(
        path=path,
        default_provider=fields.get(data, "defaultProvider", str, ""),
        enable_fallback=fields.get(data, "enableFallback", bool, ""),
        cost_optimization=fields.get(data, "costOptimization", bool, ""),
        timeout=float(fields.get(data, "timeout", (int, float), "")),
        max_retries=fields.get(data, "maxRetries", int, ""),
        providers=providers,
    )
    if config.default_provider not in providers:
        raise ConfigError(f"{path}: defaultProvider: {config.default_provider!r} is not one of "
                          f"the providers ({', '.join(sorted(providers))})")
    if config.timeout <= 0:
        raise ConfigError(f"{path}: timeout: must be more than 0 seconds")
    if config.max_retries < 0:
        raise ConfigError(f"{path}: maxRetries: must be 0 or more")
    return config


def _provider(fields: _Fields, name: str, data: Any) -> ProviderConfig:
    where = f"providers.{name}."
    if name not in APIS:
        raise ConfigError(f"{fields.path}: providers.{name}: unknown provider type (ai-cli "
                          f"speaks {', '.join(APIS)})")
    fields.object(data, where[:-1])
    key_file = fields.get(data, "apiKeyFile", (str, type(None)), where)
    models = fields.get(data, "models", list, where)
    for model in models:
        if not isinstance(model, str):
            raise ConfigError(f"{fields.path}: {where}models: expected a list of names")
    prices = {}
    for model, price in fields.get(data, "prices", dict, where, default={}).items():
        at = f"{where}prices.{model}."
        fields.object(price, at[:-1])
        prices[model] = Price(float(fields.get(price, "input", (int, float), at)),
                              float(fields.get(price, "output", (int, float), at)))
    if not models:
        raise ConfigError(f"{fields.path}: {where}models: empty (a provider needs at least "
                          "one model)")
    default_model = fields.get(data, "defaultModel", str, where)
    if default_model not in models:
        raise ConfigError(f"{fields.path}: {where}defaultModel: {default_model!r} is not one "
                          f"of its models ({', '.join(models)})")
    base_url = fields.get(data, "baseUrl", str, where)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{fields.path}: {where}baseUrl: {base_url!r} is no http:// or "
                          "https:// URL")
    return ProviderConfig(
        name=name,
        enabled=fields.get(data, "enabled", bool, where),
        priority=fields.get(data, "priority", int, where),
        models=tuple(models),
        default_model=default_model,
        base_url=base_url.rstrip("/"),
        api_key_file=Path(key_file) if key_file else None,
        requires_api_key=fields.get(data, "requiresApiKey", bool, where),
        prices=prices,
    )


_MISSING = object()
_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", list: "a list",
               dict: "an object", float: "a number", type(None): "null"}


class _Fields:
    """Typed reads of JSON fields, each failure one line: FILE: FIELD: expected ..."""

    def __init__(self, path: Path):
        self.path = path

    def object(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ConfigError(f"{self.path}: {where or 'the file'}: expected an object")

    def get(self, data: dict[str, Any], key: str, kind: Any, where: str,
            default: Any = _MISSING) -> Any:
        value = data.get(key, _MISSING)
        if value is _MISSING:
            if default is not _MISSING:
                return default
            raise ConfigError(f"{self.path}: {where}{key}: missing")
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # JSON's true is no number and no count here.
        if isinstance(value, bool) and bool not in kinds:
            value_ok = False
        else:
            value_ok = isinstance(value, kinds)
        if not value_ok:
            wanted = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            if kinds == (int, float):
                wanted = "a number"
            raise ConfigError(f"{self.path}: {where}{key}: expected {wanted}, "
                              f"got {json.dumps(value)[:40]}")
        return value


# --- keys ------------------------------------------------------------------------------------


class ApiKey:
    """A provider's API key. It goes into request headers (`reveal`) and nowhere else: its
    repr and str are redacted, so no message or log can show it by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ApiKey([redacted])"

    __str__ = __repr__


@dataclass(frozen=True)
class KeyState:
    """A provider's key file as this user finds it. `problem` says why the provider cannot be
    used (None: it can); the key's content is only ever in `key`."""

    needed: bool
    file: Path | None
    present: bool
    readable: bool
    key: ApiKey | None
    problem: str | None

    @property
    def summary(self) -> str:
        if not self.needed:
            return "not needed"
        return self.problem or "readable"


def read_key(provider: ProviderConfig) -> KeyState:
    """The provider's key from its apiKeyFile (surrounding whitespace dropped)."""
    path = provider.api_key_file
    if not provider.requires_api_key:
        return KeyState(False, path, False, False, None, None)
    if path is None:
        return KeyState(True, None, False, False, None, "no apiKeyFile configured")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return KeyState(True, path, False, False, None, f"key file {path} is missing")
    except PermissionError:
        return KeyState(True, path, True, False, None,
                        f"key file {path} is not readable by this user")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        return KeyState(True, path, path.exists(), False, None,
                        f"key file {path} cannot be read: {reason}")
    value = text.strip()
    if not value:
        return KeyState(True, path, True, True, None, f"key file {path} is empty")
    if any(c.isspace() or not c.isprintable() for c in value):
        # It goes into an HTTP header: one token, no line breaks.
        return KeyState(True, path, True, True, None,
                        f"key file {path} holds more than one word or line")
    return KeyState(True, path, True, True, ApiKey(value), None)
