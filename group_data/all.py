"""Fleet-wide data: every host gets these unless its entry in inventory.py overrides a key."""

system = {
    "timezone": "Europe/London",
    "locale": "en_GB.UTF-8",
    "keyboardLayouts": ["gb"],
    "nameservers": ["1.1.1.1", "8.8.8.8"],
    "hostMappings": {},
    "environment": {"EDITOR": "nvim", "BROWSER": "google-chrome-stable"},
    "theme": {"scheme": "gruvbox-dark-medium", "wallpaper": "nix-wallpaper-nineish-dark-gray"},
    "nfsExports": [],
    "paths": {"flakeDir": "/etc/nixos"},
    "stateVersion": "25.05",
}

# How deploys treat every host (nixfleet.model.Deploy): a switch that fails to activate or
# fails its health gate rolls back; a switch not confirmed over a fresh SSH connection within
# confirmTimeout seconds reverts by itself. A unit, declared service or check that was already
# failing before a switch is a warning, not a failure (strictUnits: True makes any failed unit
# fail it). checks: extra health checks, e.g.
#   {"name": "web", "http": "http://{address}:8080/", "timeout": 10}
#   {"name": "disk", "command": "test $(df --output=pcent / | tail -1 | tr -dc 0-9) -lt 95"}
deploy = {
    "lockTtl": 3600,
    "rollback": True,
    "confirmTimeout": 30,
    "healthTimeout": 60,
    "reboot": "never",
    "buildOn": "target",
    "checks": [],
    "verify": True,
    "strictUnits": False,
}

# The boot loader and its partition (nixfleet.model.Boot; a host's own "boot" replaces this
# whole block): how many generations the loader keeps (boot.loader.systemd-boot's or
# boot.lanzaboote's configurationLimit), and the MiB a deploy's pre-flight keeps free on the
# boot partition beyond its estimate. espSize and entrySize (MiB), where known, let
# `nixfleet validate` warn when the limit's entries cannot fit.
boot = {
    "loader": "systemd-boot",
    "configurationLimit": 10,
    "espGuard": 16,
}
