"""The lab: the fleet's hosts as systemd-nspawn containers with real systemd, sshd and Nix.

Only what cannot exist on one Linux machine is stood in (nixos-rebuild and
switch-to-configuration without nixpkgs, GPU tools answering from the inventory's hardware),
and each stand-in says so in its own file.
"""
