#!/usr/bin/python3
"""STAND-IN for NixOS's switch-to-configuration, used inside nixfleet lab hosts.

Real NixOS builds this program into every system toplevel; the lab cannot build NixOS
(no nixpkgs), so each lab toplevel's bin/switch-to-configuration calls this file with its own
store path. It keeps the real semantics that deploys rely on:
  switch / test    install the generation's units, reload systemd, stop removed units,
                   restart changed ones, start new ones; exit 4 if any unit of the host is
                   failed afterwards (also one that had failed before: NixOS's does the same)
  boot             make the generation the boot default (the profile is already set)
  dry-activate     print what switch would stop, restart and start; change nothing
  --boot           (lab only) what NixOS stage 2 does at boot: build generation 1 on first
                   boot, link /run/booted-system and /run/current-system, start the units
Units live in /run/systemd/system as links into the store, so a reboot activates the
profile's generation afresh, as NixOS does.
Between stopping and starting units, the part of NixOS's activation script the lab needs runs:
the host's users and the secrets' groups (NixOS's users and groups), then /etc (NixOS's
setup-etc: /etc/static points at the generation's etc/, each of its environment.etc files,
listed in etc.json, is a link /etc/NAME -> /etc/static/NAME, and links of files that the
generation no longer has are removed), then nix.sshServe's keys (see install_ssh_serve), then
agenix: each secret
of the generation (agenix.json) is decrypted with the host key into /run/agenix.d/<N>, owner,
group and mode set, and /run/agenix switched to it atomically. A secret that cannot be
decrypted fails activation (exit 2, as NixOS's activation script does) and keeps the previous
secrets generation.
"""

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

PROFILE = Path("/nix/var/nix/profiles/system")
UNIT_DIR = Path("/run/systemd/system")
CURRENT = Path("/run/current-system")
ETC = Path("/etc")
BOOTED = Path("/run/booted-system")
AGENIX = Path("/run/agenix")
AGENIX_GENERATIONS = Path("/run/agenix.d")
# nix.sshServe's keys, as NixOS lists them (environment.etc), and where the lab gives them to root.
SSH_SERVE_KEYS = ETC / "ssh" / "authorized_keys.d" / "nix-ssh"
ROOT_AUTHORIZED_KEYS = Path("/root/.ssh/authorized_keys")
# NixOS's sshd Match block for the user nix-ssh (ForceCommand, no forwarding, no tty) as
# authorized_keys options.
SSH_SERVE_OPTIONS = 'restrict,command="nix-store --serve" '
# agenix's default age.identityPaths: the host's SSH host keys.
AGE_IDENTITIES = (Path("/etc/ssh/ssh_host_ed25519_key"), Path("/etc/ssh/ssh_host_rsa_key"))


def log(message):
    print(message, file=sys.stderr, flush=True)


def systemctl(*args):
    return subprocess.run(["systemctl", *args], capture_output=True, text=True)


def active_units():
    """Units installed by earlier activations: links from UNIT_DIR into the store."""
    if not UNIT_DIR.is_dir():
        return {}
    return {
        link.name: Path(os.readlink(link))
        for link in UNIT_DIR.iterdir()
        if link.is_symlink() and os.readlink(link).startswith("/nix/store/")
    }


def generation_units(toplevel):
    unit_dir = toplevel / "etc" / "systemd" / "system"
    return {p.name: p for p in sorted(unit_dir.iterdir())} if unit_dir.is_dir() else {}


def read(path):
    try:
        return path.read_bytes()
    except OSError:
        return None


def plan(toplevel):
    old, new = active_units(), generation_units(toplevel)
    stop = sorted(set(old) - set(new))
    start = sorted(set(new) - set(old))
    restart = sorted(u for u in set(old) & set(new) if read(old[u]) != read(new[u]))
    keep = sorted(set(old) & set(new) - set(restart))
    return old, new, stop, restart, start, keep


def link(target, path):
    """Point `path` at `target` atomically (a reader never sees it missing)."""
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, path)


def activate(toplevel, at_boot=False):
    _, new, stop, restart, start, keep = plan(toplevel)
    for unit in stop:
        log(f"stopping the following units: {unit}")
        systemctl("stop", unit)
        systemctl("reset-failed", unit)  # a removed unit leaves no failed state behind
        (UNIT_DIR / unit).unlink()
    status = activation_script(toplevel)
    UNIT_DIR.mkdir(parents=True, exist_ok=True)
    for unit, path in new.items():
        link(path, UNIT_DIR / unit)
    link(toplevel, CURRENT)
    if at_boot:
        link(toplevel, BOOTED)
    systemctl("daemon-reload")
    if at_boot:
        # During boot a blocking start could wait on the boot transaction itself.
        systemctl("start", "--no-block", *new)
        return status
    if restart:
        log(f"restarting the following units: {', '.join(restart)}")
    if start:
        log(f"starting the following units: {', '.join(start)}")
    # One systemctl call per verb (each waits for its jobs); units kept from the last
    # generation are started too if they are not running, as NixOS starts every wanted unit.
    if restart:
        systemctl("restart", *restart)
    if start + keep:
        systemctl("start", *(start + keep))
    failed = failed_units()
    if failed:
        log(f"warning: the following units failed: {', '.join(failed)}")
        return 4
    return status


def failed_units():
    """Every unit of the host that is failed now, this generation's or not (NixOS's
    switch-to-configuration lists them all and exits 4 for any, also one failed before)."""
    listed = systemctl("list-units", "--failed", "--plain", "--no-legend").stdout
    return sorted(line.split()[0] for line in listed.splitlines() if line.strip())


def activation_script(toplevel):
    """Users and groups, /etc, then agenix's secrets: 0, or 2 if a part failed (NixOS's exit
    code when its activation script fails; units are still started)."""
    secrets = generation_secrets(toplevel)
    ok = ensure_users_and_groups(toplevel, secrets)
    ok = install_etc(toplevel) and ok
    ok = install_ssh_serve() and ok
    ok = install_secrets(secrets) and ok
    return 0 if ok else 2


def generation_secrets(toplevel):
    """[{name, file, owner, group, mode}] of the generation (none in older generations)."""
    try:
        return json.loads((toplevel / "agenix.json").read_text())
    except FileNotFoundError:
        return []


def ensure_users_and_groups(toplevel, secrets):
    """Create what NixOS's users module would: the secrets' groups (nix/modules/secrets.nix
    declares them), and the host's users (group users, their supplementary groups that exist).
    Users and groups are never removed, as with NixOS's default mutableUsers."""
    try:
        users = json.loads((toplevel / "host.json").read_text()).get("users", [])
    except (OSError, ValueError):
        users = []
    ok = True
    for group in dict.fromkeys(["users", *(s["group"] for s in secrets)]):
        if not _exists(grp.getgrnam, group):
            log(f"adding group {group}")
            ok = _run_ok(["groupadd", "--system", group]) and ok
    for user in users:
        if _exists(pwd.getpwnam, user["name"]):
            continue
        groups = [g for g in user.get("groups", []) if _exists(grp.getgrnam, g)]
        log(f"adding user {user['name']}")
        ok = _run_ok(["useradd", "--create-home", "--no-user-group", "--gid", "users",
                      "--shell", "/bin/bash", "--comment", user.get("fullName", ""),
                      *(["--groups", ",".join(groups)] if groups else []), user["name"]]) and ok
    return ok


def _exists(lookup, name):
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def _run_ok(argv):
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        log(f"{argv[0]} failed: {result.stderr.strip()}")
    return result.returncode == 0


def install_etc(toplevel):
    """NixOS's setup-etc: point /etc/static at the generation's etc/, link each of its
    environment.etc files (etc.json) as /etc/NAME -> /etc/static/NAME, and remove the links
    into /etc/static that lead nowhere now (files of an earlier generation)."""
    static = ETC / "static"
    try:
        names = json.loads((toplevel / "etc.json").read_text())
    except FileNotFoundError:
        names = []  # a generation from before the lab had environment.etc
    try:
        link(toplevel / "etc", static)
        for name in names:
            path = ETC / name
            if path.is_symlink() and os.readlink(path) == str(static / name):
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            link(static / name, path)
        for directory, subdirectories, files in os.walk(ETC):
            for entry in subdirectories + files:
                path = Path(directory) / entry
                if (path.is_symlink() and os.readlink(path).startswith(f"{static}/")
                        and not path.exists()):
                    log(f"removing obsolete symlink '{path}'...")
                    path.unlink()
    except OSError as error:
        log(f"setting up /etc failed: {error}")
        return False
    return True


def install_ssh_serve():
    """nix.sshServe: the keys of the generation's /etc/ssh/authorized_keys.d/nix-ssh may run
    `nix-store --serve` (read-only) and nothing else. NixOS serves them as the user nix-ssh,
    whose Nix reads the store through nix-daemon; the lab has no daemon, so they are root's
    keys here, each with NixOS's forced command and restrictions. Root's other keys stay;
    those of an earlier generation go."""
    try:
        keys = SSH_SERVE_KEYS.read_text().splitlines() if SSH_SERVE_KEYS.exists() else []
        lines = ROOT_AUTHORIZED_KEYS.read_text().splitlines()
        kept = [line for line in lines if not line.startswith(SSH_SERVE_OPTIONS)]
        wanted = kept + [SSH_SERVE_OPTIONS + key for key in keys if key.strip()]
        if wanted != lines:  # never half-written: the deployer logs in with this file
            new = ROOT_AUTHORIZED_KEYS.with_name("authorized_keys.new")
            new.write_text("".join(f"{line}\n" for line in wanted))
            new.chmod(0o600)
            os.replace(new, ROOT_AUTHORIZED_KEYS)
    except OSError as error:
        log(f"setting up nix.sshServe's keys failed: {error}")
        return False
    return True


def install_secrets(secrets):
    """agenix: decrypt every secret into a new /run/agenix.d/<N> (N = the current one + 1),
    set owner, group and mode, point /run/agenix at it, remove older generations. If one
    fails, nothing changes: the new generation is removed and /run/agenix stays."""
    try:
        previous = int(os.readlink(AGENIX).rstrip("/").rsplit("/", 1)[-1])
    except (OSError, ValueError):
        previous = 0
    generation = previous + 1
    directory = AGENIX_GENERATIONS / str(generation)
    AGENIX_GENERATIONS.mkdir(mode=0o751, exist_ok=True)
    AGENIX_GENERATIONS.chmod(0o751)
    shutil.rmtree(directory, ignore_errors=True)  # a failed attempt's leftovers
    directory.mkdir(mode=0o751)
    directory.chmod(0o751)
    log(f"[agenix] creating new generation in {directory}")
    identities = [str(p) for p in AGE_IDENTITIES if p.exists()]
    failed = []
    for secret in secrets:
        log(f"[agenix] decrypting '{secret['file']}' to '{AGENIX}/{secret['name']}'...")
        error = decrypt_secret(secret, directory, identities)
        if error:
            log(f"[agenix] error: {secret['name']}: {error}")
            failed.append(secret["name"])
    if failed:
        shutil.rmtree(directory, ignore_errors=True)
        log(f"[agenix] failed to decrypt {', '.join(failed)}; keeping the previous secrets"
            + (f" (generation {previous})" if previous else ""))
        return False
    link(directory, AGENIX)
    for old in AGENIX_GENERATIONS.iterdir():
        if old.name != str(generation):
            log(f"[agenix] removing old secrets (generation {old.name})")
            shutil.rmtree(old, ignore_errors=True)
    return True


def decrypt_secret(secret, directory, identities):
    """Decrypt one secret to directory/<name> (through a 0400 temp file beside it, the value
    only ever in age's stdout); None, or why it failed (age's message, never the value)."""
    try:
        uid = pwd.getpwnam(secret["owner"]).pw_uid
        gid = grp.getgrnam(secret["group"]).gr_gid
    except KeyError:
        return f"unknown owner or group {secret['owner']}:{secret['group']}"
    if not identities:
        return "no host key to decrypt with (" + ", ".join(map(str, AGE_IDENTITIES)) + ")"
    target = directory / secret["name"]
    temp = directory / f"{secret['name']}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
    try:
        argv = ["age", "--decrypt", *(a for i in identities for a in ("-i", i)), secret["file"]]
        with os.fdopen(fd, "wb") as out:
            result = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            return lines[0] if lines else f"age exited {result.returncode}"
        os.chown(temp, uid, gid)
        os.chmod(temp, int(secret["mode"], 8))
        os.replace(temp, target)
    except OSError as error:
        return f"{error.strerror}"
    finally:
        if temp.exists():
            temp.unlink()
    return None


def dry_activate(toplevel):
    _, _, stop, restart, start, _ = plan(toplevel)
    for verb, units in (("stop", stop), ("restart", restart), ("start", start)):
        if units:
            print(f"would {verb} the following units: {', '.join(units)}")
    return 0


def stage2():
    if not PROFILE.exists():
        hostname = Path("/etc/hostname").read_text().strip()
        log(f"first boot: building generation 1 of {hostname} from /etc/nixos")
        result = subprocess.run(["/usr/local/sbin/nixos-rebuild", "boot"])
        if result.returncode != 0:
            return result.returncode
    elif not any(Path("/boot/loader/entries").glob("*.conf")):
        # Lab only: a host from before the lab had boot partitions gets an empty one; fill it
        # as nixos-install would, so that its generations can be booted and rolled back to.
        log("an empty boot partition: installing the boot entries")
        install_boot_loader(PROFILE.resolve())
    return activate(PROFILE.resolve(), at_boot=True)


def install_boot_loader(toplevel):
    """As NixOS's installBootLoader, before anything else of switch and boot: the boot entries
    of the newest generations (boot_entries.py, the lab's stand-in for systemd-boot's and
    lanzaboote's installers, on the host's own small /boot). Failing, NixOS's exits 1."""
    import boot_entries  # beside this file in /usr/lib/nixfleet-lab

    try:
        boot_entries.install(toplevel)
    except (OSError, boot_entries.InstallError) as error:
        log(f"installing the boot loader failed: {error}")
        log("Failed to install bootloader")
        return False
    return True


def main(argv):
    if argv[1:] == ["--boot"]:
        return stage2()
    if len(argv) != 3:
        log("usage: switch-to-configuration {switch|boot|test|dry-activate}")
        return 1
    toplevel, action = Path(argv[1]), argv[2]
    if action in ("switch", "boot") and not install_boot_loader(toplevel):
        return 1
    if action in ("switch", "test"):
        return activate(toplevel)
    if action == "boot":
        return 0
    if action == "dry-activate":
        return dry_activate(toplevel)
    log(f"switch-to-configuration: unknown action {action!r}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
