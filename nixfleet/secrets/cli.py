"""`nixfleet secrets init | list | status [--hosts] | create NAME | edit NAME | show NAME
| rekey [NAME...] | check-plaintext`: agenix-compatible secrets, encrypted to the inventory's
keys. `status --hosts` checks what the hosts hold in /run/agenix (sha256, owner, group, mode).

Without a subcommand on a terminal it opens an interactive menu. Identities (-i, repeatable):
SSH private keys or age identity files; default ~/.ssh/id_ed25519.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nixfleet import render
from nixfleet.errors import NixfleetError
from nixfleet.secrets import rules as secret_rules
from nixfleet.secrets.editor import edit_value
from nixfleet.secrets.plaintext import check_plaintext
from nixfleet.secrets.store import SecretStore, open_store

SUBCOMMANDS = ("init", "list", "status", "create", "edit", "show", "rekey", "check-plaintext")
RULES_SKELETON = '''"""Who may decrypt which secret (see secrets/README.md)."""

DEFAULTS = {"owner": "root", "group": "root", "mode": "0400"}

SECRETS = {
    # "name": {"recipients": ["allUsers", "allHosts"], "owner": "{admin}", "mode": "0600"},
}
'''


def _root(args: argparse.Namespace) -> Path:
    from nixfleet.commands.options import inventory_path

    return inventory_path(args).parent


def _store(args: argparse.Namespace) -> SecretStore:
    from nixfleet.commands.options import load_fleet

    return open_store(_root(args), [Path(p) for p in args.identity], fleet=load_fleet(args))


def _generate(store: SecretStore) -> None:
    for path in render.write_stale(secret_rules.generated_files(store.rules, store.root)):
        print(f"wrote {path.relative_to(store.root)}")


def cmd_init(args: argparse.Namespace) -> int:
    from nixfleet.files import write_atomic

    root = _root(args)
    rules_file = root / secret_rules.RULES_FILE
    if not rules_file.exists():
        write_atomic(rules_file, RULES_SKELETON)
        print(f"wrote {secret_rules.RULES_FILE} (add your secrets there)")
    store = _store(args)
    _generate(store)
    files = store.files()
    missing = [name for name in store.rules.secrets if name not in files]
    print(f"{len(store.rules.secrets)} secrets in the rules, {len(files)} files in secrets/")
    for name in missing:
        print(f"  missing {store.relative(name)}: nixfleet secrets create {name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    files = store.files()
    rows: list[dict[str, Any]] = [{"name": name, "file": rule.file, "exists": name in files,
             "recipients": list(rule.references), "hosts": rule.hosts,
             "owner": _owner_text(rule), "group": rule.group, "mode": rule.mode}
            for name, rule in store.rules.secrets.items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from nixfleet import console

    table = console.table("secret", "file", "recipients", "hosts", "owner:group", "mode")
    for row in rows:
        table.add_row(row["name"], "yes" if row["exists"] else "MISSING",
                      " ".join(row["recipients"]), ", ".join(row["hosts"]),
                      f"{row['owner']}:{row['group']}", row["mode"])
    console.print_table(table)
    return 0


def _owner_text(rule: secret_rules.SecretRule) -> str:
    owners = sorted(set(rule.owners.values())) or [rule.default_owner]
    return ",".join(owners)


def cmd_status(args: argparse.Namespace) -> int:
    if args.hosts:
        return cmd_status_hosts(args)
    if args.limit:
        raise NixfleetError("--limit selects hosts: use it with --hosts")
    store = _store(args)
    statuses = store.status()
    stale = render.stale(secret_rules.generated_files(store.rules, store.root))
    if args.json:
        print(json.dumps({"secrets": [asdict(s) for s in statuses],
                          "stale_generated": [str(p.relative_to(store.root)) for p in stale]},
                         indent=2))
    else:
        for s in statuses:
            detail = {
                "ok": "recipients match the rules",
                "missing": "no file (nixfleet secrets create NAME)",
                "no-rule": f"no rule in {secret_rules.RULES_FILE}",
                "stale": " ".join([f"+{n}" for n in s.missing] + [f"-{n}" for n in s.extra])
                + " (nixfleet secrets rekey)",
                "damaged": s.error or "",
            }[s.state]
            you = f"; you can decrypt it ({', '.join(s.decryptable_by)})" if s.decryptable_by \
                else ("; none of your identities can decrypt it"
                      if s.state not in ("missing", "damaged") else "")
            print(f"{s.state:8} {s.name}: {detail}{you}")
        for path in stale:
            print(f"stale    {path.relative_to(store.root)} (nixfleet secrets init)")
    problems = sum(s.problem for s in statuses) + len(stale)
    if problems:
        raise NixfleetError(f"{problems} problem{'s' if problems > 1 else ''} in secrets/")
    return 0


def cmd_status_hosts(args: argparse.Namespace) -> int:
    """Delivery on the hosts: each holds exactly its secrets, content (by sha256), owner,
    group and mode as the rules say. Under NIXFLEET_TARGET=lab, against the lab's secrets."""
    from nixfleet.commands.options import inventory_path, load_fleet
    from nixfleet.secrets.delivery import check_delivery
    from nixfleet.target import current_target

    fleet = load_fleet(args)
    store: SecretStore = current_target().secrets_store(fleet, _root(args),
                                                        [Path(p) for p in args.identity])
    deliveries = check_delivery(store, fleet, inventory_path(args), args.limit)
    problems = [p for d in deliveries for p in d.problems]
    if args.json:
        print(json.dumps([d.to_json() for d in deliveries], indent=2))
    else:
        for delivery in deliveries:
            for problem in delivery.problems:
                print(problem.line)
            if delivery.reachable and not delivery.problems:
                print(f"{delivery.host}: ok: {len(delivery.ok)} secrets in /run/agenix "
                      f"(generation {delivery.generation}), content, owner, group and mode "
                      "as expected, no other")
    if problems:
        hosts = len({p.host for p in problems})
        raise NixfleetError(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} on "
                            f"{hosts} host{'s' if hosts > 1 else ''}")
    return 0


def _read_value(args: argparse.Namespace, name: str, initial: bytes | None) -> bytes:
    """The new value: --from-file (- = stdin), piped stdin on create, else $EDITOR."""
    source = args.from_file
    if source == "-" or (source is None and initial is None and not sys.stdin.isatty()):
        return sys.stdin.buffer.read()
    if source is not None:
        try:
            return Path(source).read_bytes()
        except OSError as error:
            raise NixfleetError(f"--from-file {source}: {error.strerror}") from None
    return edit_value(name, initial or b"")


def cmd_create(args: argparse.Namespace) -> int:
    store = _store(args)
    store.check_new(args.name)  # fails before the editor opens
    path = store.create(args.name, _read_value(args, args.name, None))
    recipients = ", ".join(r.name for r in store.rules.secrets[args.name].recipients)
    print(f"wrote {path.relative_to(store.root)} (recipients: {recipients})")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    store = _store(args)
    relative = store.relative(args.name)
    if store.update(args.name, lambda current: _read_value(args, args.name, current)):
        print(f"wrote {relative}")
    else:
        print(f"{relative}: value unchanged, not re-encrypted")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    value = _store(args).decrypt(args.name)
    sys.stdout.buffer.write(value)
    sys.stdout.flush()
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    store = _store(args)
    _generate(store)
    errors = store.rekey(args.names, force=args.all)
    if errors:
        raise NixfleetError(f"rekey: {len(errors)} file{'s' if len(errors) > 1 else ''} "
                            "could not be rekeyed (see above)")
    return 0


def cmd_check_plaintext(args: argparse.Namespace) -> int:
    root = _root(args)
    problems = check_plaintext(root)
    for problem in problems:
        print(problem)
    if problems:
        raise NixfleetError(f"plaintext check failed: {len(problems)} "
                            f"problem{'s' if len(problems) > 1 else ''}")
    print("no plaintext secrets or private keys found")
    return 0


# --- interactive menu ------------------------------------------------------------------------


def cmd_menu(args: argparse.Namespace) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise NixfleetError(f"secrets needs a subcommand ({', '.join(SUBCOMMANDS)}); the "
                            "interactive menu needs a terminal")
    actions: list[tuple[str, Callable[[argparse.Namespace], int], bool]] = [
        ("list", cmd_list, False), ("status", cmd_status, False), ("create", cmd_create, True),
        ("edit", cmd_edit, True), ("show", cmd_show, True), ("rekey", cmd_rekey, False),
        ("check-plaintext", cmd_check_plaintext, False)]
    menu = "  ".join(f"{i} {label}" for i, (label, _, _) in enumerate(actions, 1)) + "  q quit"
    while True:
        print(f"\nnixfleet secrets: {menu}")
        try:
            choice = input("choice> ").strip()
        except EOFError:
            return 0
        if choice in ("q", "quit", ""):
            return 0
        match = [a for i, a in enumerate(actions, 1) if choice in (str(i), a[0])]
        if not match:
            print(f"unknown choice {choice!r}")
            continue
        _, func, needs_name = match[0]
        step = argparse.Namespace(**{**vars(args), "json": False, "names": [], "all": False,
                                       "from_file": None, "hosts": False, "limit": []})
        try:
            if needs_name:
                print("secrets: " + ", ".join(_store(args).rules.secrets))
                step.name = input("name> ").strip()
            func(step)
        except NixfleetError as error:
            print(f"nixfleet: error: {error}", file=sys.stderr)
        except EOFError:
            return 0


# --- wiring ----------------------------------------------------------------------------------


def register(commands: Any) -> None:
    identity = argparse.ArgumentParser(add_help=False)
    identity.add_argument("-i", "--identity", action="append", default=argparse.SUPPRESS,
                          metavar="PATH", help="SSH private key or age identity file "
                          "(repeatable; default ~/.ssh/id_ed25519)")
    secrets = commands.add_parser("secrets", help="agenix-compatible secrets (secrets/*.age)",
                                  description=__doc__)
    secrets.add_argument("-i", "--identity", action="append", default=[], metavar="PATH",
                         help="SSH private key or age identity file (repeatable; default "
                         "~/.ssh/id_ed25519)")
    secrets.set_defaults(func=cmd_menu)
    sub = secrets.add_subparsers(dest="secrets_command", parser_class=type(secrets))

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str) -> Any:
        parser = sub.add_parser(name, help=text, description=text, parents=[identity])
        parser.set_defaults(func=func)
        return parser

    add("init", cmd_init, "create secrets/ and rules.py if missing; write secrets/secrets.nix "
        "and nix/secrets.json")
    add("list", cmd_list, "every secret of the rules: recipients, hosts, owner, mode"
        ).add_argument("--json", action="store_true", help="machine-readable output")
    status = add("status", cmd_status, "files vs rules: missing, orphaned, stale recipients, "
                 "damaged; which of your identities can decrypt each; with --hosts, what the "
                 "hosts hold in /run/agenix")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--hosts", action="store_true", help="check the hosts instead: each "
                        "holds exactly its secrets, content (sha256 of the local value), owner, "
                        "group and mode as the rules say (one SSH command per host; values "
                        "never leave the hosts)")
    status.add_argument("--limit", action="append", default=[], metavar="PATTERN",
                        help="with --hosts: host name, glob or group (repeatable)")
    for name, func, text in (
            ("create", cmd_create, "encrypt a new secret (value from $EDITOR, piped stdin or "
             "--from-file); refuses an existing one"),
            ("edit", cmd_edit, "change a secret in $EDITOR (private tmpfs file, wiped "
             "afterwards) or from --from-file")):
        parser = add(name, func, text)
        parser.add_argument("name", help="secret name (without .age)")
        parser.add_argument("--from-file", metavar="PATH", help="read the value from PATH "
                            "('-' for stdin)")
    add("show", cmd_show, "print a secret's value").add_argument("name")
    rekey = add("rekey", cmd_rekey, "re-encrypt files whose recipients differ from the rules")
    rekey.add_argument("names", nargs="*", metavar="NAME", help="only these secrets")
    rekey.add_argument("--all", action="store_true", help="re-encrypt every (selected) file")
    add("check-plaintext", cmd_check_plaintext, "fail on non-age files in secrets/ and on "
        "private keys in the repository's files")
