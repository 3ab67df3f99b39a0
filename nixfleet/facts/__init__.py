"""pyinfra facts: what nixfleet reads from a host (GPUs, systemd, Nix generations)."""
