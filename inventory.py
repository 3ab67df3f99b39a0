"""The fleet: one entry per host. Everything else (groups, nix/ host data, secrets rules,
monitoring targets, lab hosts) is derived from these entries and group_data/.

    pyinfra inventory.py deploys/switch.py --limit nvidia -y
    NIXFLEET_TARGET=lab pyinfra inventory.py exec -- nixos-version

Groups (derived, never listed by hand): amd, nvidia, intel; workstations, laptops, servers,
sff; monitoring_server, monitoring_clients; ollama; lab_extra (lab only).
Keys below are EXAMPLES generated for this repository: replace users' sshKey with your own
public keys and each ssh.hostKey with the host's /etc/ssh/ssh_host_ed25519_key.pub.
"""

from nixfleet.inventory import nixfleet_inventory

_ADMIN = {
    "name": "olafkfreund",
    "fullName": "Olaf K-Freund",
    "email": "olaf@example.org",
    "sshKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGGa1qpwVLoSJtqTbhJ12m0NcLDrezd8GxKzGd55hExO",
    "groups": ["wheel", "networkmanager", "video", "audio", "docker", "libvirtd"],
}
_DEVELOPMENT = {
    "enable": True, "python": True, "go": True, "nodejs": True, "java": True, "lua": True,
    "nix": True, "shell": True, "ansible": True, "cargo": True, "github": True, "devshell": True,
}
_CLOUD = {"enable": True, "aws": True, "azure": True, "google": True, "k8s": True,
          "terraform": True}
_SECURITY = {"enable": True, "onepassword": True, "gnupg": True}
_NETWORKING = {"enable": True, "tailscale": True}
_CLOUD_PROVIDERS = ["openai", "anthropic", "gemini"]


def _monitoring_client(**features: bool) -> dict:
    return {"enable": True, "mode": "client", "serverHost": "p620",
            "features": {"nodeExporter": True, "nixosMetrics": True, **features}}


_HOSTS: list[tuple[str, dict]] = [
    ("p620", {
        "hardware_class": "amd",
        "roles": ["workstation"],
        "description": "AMD workstation (ROCm), monitoring server, binary cache",
        "cpu": "AMD Ryzen Threadripper PRO 3945WX",
        "gpus": [{"vendor": "amd", "model": "Navi 31 [Radeon RX 7900 XT/7900 XTX]",
                  "vendorId": "1002", "deviceId": "744c", "slot": "0000:03:00.0",
                  "driver": "amdgpu", "vramMiB": 24576, "gfx": "gfx1100"}],
        "rocm": {"gfxVersion": "gfx1100", "hsaOverrideGfxVersion": "11.0.0"},
        "graphical": True,
        "boot": {"configurationLimit": 5},
        "users": [_ADMIN],
        "features": {
            "development": _DEVELOPMENT,
            "virtualization": {"enable": True, "docker": True, "podman": True, "incus": True,
                               "spice": True, "libvirt": True, "sunshine": True},
            "cloud": _CLOUD,
            "security": _SECURITY,
            "networking": _NETWORKING,
            "ai": {"enable": True, "ollama": True,
                   "providers": {"enable": True, "defaultProvider": "anthropic",
                                 "enabled": [*_CLOUD_PROVIDERS, "ollama"]}},
            "programs": {"lazygit": True, "thunderbird": True, "obsidian": True,
                         "office": True, "webcam": True, "print": True},
            "monitoring": {"enable": True, "mode": "server",
                           "features": {"nodeExporter": True, "nixosMetrics": True,
                                        "serviceMetrics": True, "aiMetrics": True,
                                        "networkMetrics": True, "alerting": True}},
        },
        "ssh": {"hostKey": "ssh-ed25519 "
                       "AAAAC3NzaC1lZDI1NTE5AAAAIBo9g9kBN5qKfPIGKHQvLenpbc0Hj4yKzRlMB/UlcJnl"},
    }),
    ("razer", {
        "hardware_class": "nvidia",
        "roles": ["laptop", "workstation"],
        "description": "Intel/NVIDIA hybrid laptop (PRIME sync)",
        "cpu": "Intel Core i7-9750H",
        "gpus": [{"vendor": "intel", "model": "CoffeeLake-H GT2 [UHD Graphics 630]",
                  "vendorId": "8086", "deviceId": "3e9b", "slot": "0000:00:02.0",
                  "driver": "i915"},
                 {"vendor": "nvidia", "model": "TU106M [GeForce RTX 2070 Mobile]",
                  "vendorId": "10de", "deviceId": "1f10", "slot": "0000:01:00.0",
                  "driver": "nvidia", "vramMiB": 8192,
                  "uuid": "GPU-5b1f4f7e-2c1d-4f0a-9a55-0e3b7c2d9a11"}],
        "prime": {"sync": True, "intelBusId": "PCI:0:2:0", "nvidiaBusId": "PCI:1:0:0"},
        "graphical": True,
        # A 511 MiB ESP and about 170 MiB of kernel + initrd per generation: three fit, and
        # systemd-boot removes the old entries before it copies, so the limit is 2 (a deploy
        # needs room for the new one beside them).
        "boot": {"configurationLimit": 2, "espSize": 511, "entrySize": 170},
        "users": [_ADMIN],
        "features": {
            "development": _DEVELOPMENT,
            "virtualization": {"enable": True, "docker": True, "libvirt": True, "spice": True},
            "cloud": _CLOUD,
            "security": _SECURITY,
            "networking": _NETWORKING,
            "ai": {"enable": True, "providers": {"enable": True, "enabled": _CLOUD_PROVIDERS}},
            "programs": {"lazygit": True, "thunderbird": True, "obsidian": True,
                         "webcam": True},
            "monitoring": _monitoring_client(serviceMetrics=True),
        },
        "ssh": {"hostKey": "ssh-ed25519 "
                       "AAAAC3NzaC1lZDI1NTE5AAAAIKJIyf2jBpNDEltu5UUTZ9Oh2/aaqAIpRIbP48WG+bjt"},
    }),
    ("p510", {
        "hardware_class": "nvidia",
        "roles": ["server"],
        "description": "Intel Xeon workstation-server with NVIDIA (CUDA)",
        "cpu": "Intel Xeon E5-2698 v4",
        "gpus": [{"vendor": "nvidia", "model": "GP106GL [Quadro P2000]",
                  "vendorId": "10de", "deviceId": "1c30", "slot": "0000:02:00.0",
                  "driver": "nvidia", "vramMiB": 5120,
                  "uuid": "GPU-0d6c2a7e-8b3f-4c21-b7e4-91a2f0c3d5e6"}],
        # Pascal: the stable driver of nixos-26.05 (595) no longer drives it, the 580 legacy
        # branch does (nixfleet/nvidia.py).
        "graphics": {"videoDriver": "nvidia", "compute": "cuda", "nvidiaPackage": "legacy_580",
                     "nvidiaOpen": False},
        "boot": {"configurationLimit": 6},
        "users": [_ADMIN],
        "features": {
            "development": _DEVELOPMENT,
            "virtualization": {"enable": True, "docker": True, "podman": True},
            "cloud": _CLOUD,
            "security": _SECURITY,
            "networking": _NETWORKING,
            "ai": {"enable": True, "ollama": True,
                   "providers": {"enable": True, "enabled": [*_CLOUD_PROVIDERS, "ollama"]}},
            "monitoring": _monitoring_client(serviceMetrics=True),
        },
        "ssh": {"hostKey": "ssh-ed25519 "
                       "AAAAC3NzaC1lZDI1NTE5AAAAILdP2ilcSgb5VEoIAAxJxUG0Uf/6A9jKAj1f0j/jKulQ"},
    }),
    ("dex5550", {
        "hardware_class": "intel",
        "roles": ["sff", "server"],
        "description": "Intel small form factor, integrated graphics, no acceleration",
        "cpu": "Intel Core i5-8365U",
        "gpus": [{"vendor": "intel", "model": "WhiskeyLake-U GT2 [UHD Graphics 620]",
                  "vendorId": "8086", "deviceId": "3ea0", "slot": "0000:00:02.0",
                  "driver": "i915"}],
        "users": [_ADMIN],
        "features": {
            "development": {"enable": True, "python": True, "nix": True, "shell": True},
            "security": {"enable": True, "gnupg": True},
            "networking": _NETWORKING,
            "ai": {"enable": True, "providers": {"enable": True, "enabled": _CLOUD_PROVIDERS}},
            "monitoring": _monitoring_client(),
        },
        "ssh": {"hostKey": "ssh-ed25519 "
                       "AAAAC3NzaC1lZDI1NTE5AAAAIMDe7ec65Dh8yydqe0srKVG6Zs208iPqQxdbVM4eVJyu"},
    }),
]

fleet, _groups = nixfleet_inventory(_HOSTS, __file__)
# pyinfra reads module-level lists/tuples as groups; these are derived from the entries above.
globals().update(_groups)
