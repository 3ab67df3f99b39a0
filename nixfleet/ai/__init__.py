"""ai-cli: one command for OpenAI, Anthropic, Gemini and Ollama, over their own HTTP APIs.

What a host may use is /etc/ai-providers.json (AI_PROVIDERS_CONFIG overrides the path), which
the flake renders from the inventory's features.ai.providers (nix/lib/ai-providers.nix): each
provider's priority, models, default model, endpoint, key file and price table. Keys are read
from the key files (agenix: /run/agenix/api-*) and go into request headers only.

    config.py     the configuration file and the key files
    streams.py    server-sent events and NDJSON, from the response's bytes
    providers.py  one small class per API: the request, the stream's text, the status probe
    transport.py  httpx: one request, its status and errors as a ProviderError; -v's log
    ask.py        retries with backoff and Retry-After, fallback in priority order
    routing.py    which provider and model are asked, and in which order (-p, -m, -c, -f)
    report.py     --status, --list-providers, --list-models
    cli.py        the command line (ai-cli, ai-chat) and its exit codes

It needs only the standard library and httpx (Debian's python3-httpx 0.23 too), so a host
runs it without the rest of nixfleet's dependencies.
"""
