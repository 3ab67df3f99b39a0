"""Builder of a lab toplevel (STAND-IN for NixOS's system.build.toplevel).

Runs inside `nix build` with the derivation's attributes in the environment.
"""

import json
import os
import time
from pathlib import Path

# Lab-only (lock tests): wait until the file named in buildGate exists, at most 10 minutes.
gate = os.environ.get("buildGate", "").split("\n")[0].strip()
deadline = time.monotonic() + 600
while gate and not Path(gate).exists() and time.monotonic() < deadline:
    time.sleep(0.1)

out = Path(os.environ["out"])
(out / "etc" / "systemd" / "system").mkdir(parents=True)
(out / "bin").mkdir()
(out / "sw" / "bin").mkdir(parents=True)
(out / "specialisation").mkdir()

(out / "nixos-version").write_text(os.environ["nixosVersion"])
(out / "kernel-version").write_text(os.environ["kernelVersion"])
(out / "host.json").write_text(os.environ["hostData"])
# The system's packages (their store paths make them part of the closure).
(out / "sw" / "packages").write_text(os.environ["packages"] + "\n")
# agenix's secrets of this generation (store paths of the .age files, owner, group, mode):
# the lab's switch-to-configuration decrypts them with the host key, as agenix does.
(out / "agenix.json").write_text(os.environ.get("secrets", "[]"))
for link in ("kernel", "kernel-modules", "initrd"):
    os.symlink(os.environ[link.replace("-m", "M")], out / link)
# environment.etc: the files under etc/, their names in etc.json; the lab's
# switch-to-configuration links each into /etc through /etc/static, as NixOS does.
etc_files = json.loads(os.environ["etcFiles"])
for name, text in sorted(etc_files.items()):
    path = out / "etc" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
(out / "etc.json").write_text(json.dumps(sorted(etc_files)))
for name, program in sorted(json.loads(os.environ["swBin"]).items()):
    os.symlink(program, out / "sw" / "bin" / name)

for name, unit in sorted(json.loads(os.environ["units"]).items()):
    kind = unit.get("type", "simple")
    (out / "etc" / "systemd" / "system" / f"{name}.service").write_text(
        "[Unit]\n"
        f"Description={unit.get('description', name)}\n"
        "\n[Service]\n"
        f"Type={kind}\n"
        f"ExecStart={unit['execStart']}\n"
        + ("RemainAfterExit=yes\n" if kind == "oneshot" else
           f"Restart={unit.get('restart', 'on-failure')}\n")
        + "".join(f"{line}\n" for line in unit.get("serviceExtra", []))
    )

switch = out / "bin" / "switch-to-configuration"
switch.write_text(
    "#!/bin/sh\n"
    "# STAND-IN: the lab's switch-to-configuration (see /usr/lib/nixfleet-lab).\n"
    f'exec /usr/bin/python3 /usr/lib/nixfleet-lab/switch_to_configuration.py {out} "$@"\n'
)
switch.chmod(0o555)
