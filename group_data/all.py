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
