"""ai-cli (and ai-chat): ask OpenAI, Anthropic, Gemini or Ollama from the shell.

    ai-cli [-p PROVIDER] [-m MODEL] [-f] [-c] [-t SECONDS] [-v] PROMPT...
    echo PROMPT | ai-cli [options]
    ai-cli -s | --status [--json]
    ai-cli -l | --list-providers [--json]
    ai-cli -M | --list-models [PROVIDER] [--json]      (or -p PROVIDER -M)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from nixfleet.ai.ask import Output, ask_in_turn
from nixfleet.ai.columns import output_width
from nixfleet.ai.config import (
    CONFIG_ENV,
    DEFAULT_PROVIDER_ENV,
    Config,
    ConfigError,
    KeyState,
    config_path,
    load_config,
    read_key,
)
from nixfleet.ai.errors import ProviderError
from nixfleet.ai.log import Log
from nixfleet.ai.providers import PROVIDERS, Provider, provider_for
from nixfleet.ai.report import (
    ModelRow,
    models_json,
    models_table,
    price_of,
    problem,
    providers_table,
    status_json,
    status_table,
    statuses,
)
from nixfleet.ai.routing import UsageError, Wish, default_provider, route
from nixfleet.ai.transport import Transport

EXIT_OK = 0
EXIT_CONFIG = 1  # the configuration file is missing or invalid
EXIT_USAGE = 2  # bad command line (argparse's code too), or an unknown provider
EXIT_NO_PROVIDER = 3  # no provider could be asked: none enabled, or no key readable
EXIT_ALL_FAILED = 4  # every provider asked failed (or an answer broke off midway)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)

EPILOG = f"""\
configuration: /etc/ai-providers.json, or the file ${CONFIG_ENV} names; the default provider
is ${DEFAULT_PROVIDER_ENV} when set (ai-switch PROVIDER sets it for a shell), else the file's.
Keys are read from the providers' apiKeyFile (/run/agenix/api-*), never from arguments.

exit codes:
  {EXIT_OK}    answered (--status: at least one provider ready)
  {EXIT_CONFIG}    the configuration file is missing or invalid
  {EXIT_USAGE}    bad usage: unknown option or provider, no prompt
  {EXIT_NO_PROVIDER}    no provider available (not enabled, key file missing or unreadable)
  {EXIT_ALL_FAILED}    every provider asked failed (-M: a provider could not list its models)
  {EXIT_INTERRUPTED}  interrupted
"""


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Ask an AI provider (OpenAI, Anthropic, Gemini, Ollama); the "
        "answer streams to stdout, everything else goes to stderr.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="*", help="the prompt (else read from stdin)")
    parser.add_argument("-p", "--provider", help="ask this provider first")
    parser.add_argument("-m", "--model", help="ask for this model")
    parser.add_argument("-f", "--fallback", action="store_true",
                        help="when a provider fails, ask the next one by priority "
                        "(always on with the configuration's enableFallback)")
    parser.add_argument("-c", "--cost-optimize", action="store_true",
                        help="ask the cheapest available provider and model (price table)")
    parser.add_argument("-t", "--timeout", type=_seconds, metavar="SECONDS",
                        help="longest wait for a provider, per request and per piece of the "
                        "answer (default: the configuration's timeout)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log each request and its status on stderr (keys redacted)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-l", "--list-providers", action="store_true",
                      help="list the providers with their priority and state")
    mode.add_argument("-M", "--list-models", action="store_true",
                      help="list the models of -p's provider, of PROVIDER, or of all enabled "
                      "ones (Ollama: what its server has)")
    mode.add_argument("-s", "--status", action="store_true",
                      help="each provider's settings, key file and whether it answers")
    parser.add_argument("--json", action="store_true", help="-s, -l, -M: print JSON")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


class Session:
    """One run: the configuration, the keys as this user reads them, the API objects and
    the HTTP transport."""

    def __init__(self, config: Config, args: argparse.Namespace, log: Log,
                 environ: Mapping[str, str]):
        self.config = config
        self.args = args
        self.log = log
        self.default = default_provider(config, environ)
        self.keys: dict[str, KeyState] = {name: read_key(p)
                                          for name, p in config.providers.items()}
        for state in self.keys.values():
            if state.key is not None:
                log.secret(state.key)
        self.providers: dict[str, Provider] = {
            name: provider_for(p, self.keys[name].key)
            for name, p in config.providers.items() if name in PROVIDERS}
        self.problems: dict[str, str | None] = {
            name: problem(p.enabled, self.keys[name]) if name in PROVIDERS
            else f"ai-cli does not know the {name} API"
            for name, p in config.providers.items()}
        self.transport = Transport(args.timeout or config.timeout, log)


def main(argv: Sequence[str] | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "ai-cli"
    if prog not in ("ai-cli", "ai-chat"):
        prog = "ai-cli"
    log = Log(prog)
    try:
        return run(prog, log, argv, sleep)
    except KeyboardInterrupt:
        log.say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (ai-cli ... | head): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def run(prog: str, log: Log, argv: Sequence[str] | None,
        sleep: Callable[[float], None]) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    log.verbose = args.verbose
    asking = not (args.status or args.list_providers or args.list_models)
    if args.json and asking:
        parser.error("--json goes with --status, --list-providers or --list-models")
    if (args.status or args.list_providers) and args.prompt:
        parser.error("--status and --list-providers take no prompt")
    prompt = ""
    if asking:
        prompt = " ".join(args.prompt)
        if not prompt and not sys.stdin.isatty():
            prompt = sys.stdin.read()
        if not prompt.strip():
            parser.error("no prompt: give it as arguments or on stdin")
    try:
        config = load_config(config_path())
        session = Session(config, args, log, os.environ)
    except ConfigError as error:
        log.say(str(error))
        return EXIT_CONFIG
    except UsageError as error:
        parser.error(str(error))
    log.debug(f"config {config.path}; default provider {session.default[0]} "
              f"(from {session.default[1]})")
    try:
        if args.status:
            return status(session)
        if args.list_providers:
            return list_providers(session)
        if args.list_models:
            return list_models(session, parser)
        return answer(session, prompt, sleep, parser)
    finally:
        session.transport.close()


def answer(session: Session, prompt: str, sleep: Callable[[float], None],
           parser: argparse.ArgumentParser) -> int:
    args = session.args
    wish = Wish(provider=args.provider, model=args.model, fallback=args.fallback,
                cost=args.cost_optimize)
    try:
        steps = route(session.config, wish, session.default[0], session.problems)
    except UsageError as error:
        parser.error(str(error))
    output = Output(sys.stdout)
    try:
        outcome = ask_in_turn(steps, session.providers, prompt, session.transport, output,
                              session.config.max_retries, session.log, sleep)
    except KeyboardInterrupt:
        output.finish()  # "ai-cli: interrupted" on a line of its own, not after the answer
        raise
    if outcome.answered is not None:
        return EXIT_OK
    if not outcome.tried:
        session.log.say(_nothing_asked(session, steps[0].provider))
        return EXIT_NO_PROVIDER
    if not outcome.partial:
        session.log.say("no answer: every provider asked failed" + _hint(session, len(steps)))
    return EXIT_ALL_FAILED


def _nothing_asked(session: Session, first: str) -> str:
    """Why no request was sent: the provider asked for (and who named it) is not available,
    or none is."""
    available = [p.name for p in session.config.by_priority()
                 if session.problems[p.name] is None]
    if not available:
        return "no provider available"
    if session.args.provider:
        origin = "-p"
    elif session.default[1] == DEFAULT_PROVIDER_ENV:
        origin = DEFAULT_PROVIDER_ENV
    else:
        origin = f"defaultProvider in {session.default[1]}"
    return (f"nothing asked: {first} (from {origin}) is not available; available: "
            f"{', '.join(available)} (-f asks them too)")


def _hint(session: Session, asked: int) -> str:
    if asked == 1 and not session.config.enable_fallback and not session.args.fallback:
        return " (-f asks the other providers too)"
    return ""


def status(session: Session) -> int:
    rows = statuses(session.config, session.keys, session.providers, session.transport)
    if session.args.json:
        print(json.dumps(status_json(session.config, session.default, rows), indent=2))
    else:
        print(status_table(session.config, session.default, rows, output_width()))
    return EXIT_OK if any(row.ready for row in rows) else EXIT_NO_PROVIDER


def list_providers(session: Session) -> int:
    if session.args.json:
        print(json.dumps([{"name": p.name, "priority": p.priority, "enabled": p.enabled,
                           "defaultModel": p.default_model, "models": list(p.models),
                           "available": session.problems[p.name] is None,
                           "problem": session.problems[p.name],
                           "default": p.name == session.default[0]}
                          for p in session.config.by_priority()], indent=2))
    else:
        print(providers_table(session.config, session.default[0], session.problems,
                            output_width()))
    available = any(why is None for why in session.problems.values())
    return EXIT_OK if available else EXIT_NO_PROVIDER


def list_models(session: Session, parser: argparse.ArgumentParser) -> int:
    args, config = session.args, session.config
    if len(args.prompt) > 1 or (args.prompt and args.provider):
        parser.error("--list-models takes one provider: -M PROVIDER or -p PROVIDER -M")
    wanted = args.provider or (args.prompt[0] if args.prompt else None)
    if wanted is not None:
        if wanted not in config.providers:
            parser.error(f"unknown provider {wanted!r} (known: "
                         f"{', '.join(p.name for p in config.by_priority())})")
        names = [wanted]
    else:
        names = [p.name for p in config.by_priority() if p.enabled]
    rows: list[ModelRow] = []
    failed = False
    for name in names:
        provider = config.providers[name]
        api = session.providers.get(name)
        if api is None:
            session.log.say(f"{name}: ai-cli does not know the {name} API")
            failed = True
            continue
        try:
            models = api.models(session.transport)
        except ProviderError as error:
            session.log.say(f"{name}: cannot list its models: {error}")
            failed = True
            continue
        for model in models:
            is_default = model in (provider.default_model, f"{provider.default_model}:latest")
            rows.append(ModelRow(name, model, price_of(config, name, model), is_default))
    if args.json:
        print(json.dumps(models_json(rows), indent=2))
    elif rows:
        print(models_table(rows, output_width()))
    return EXIT_ALL_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
