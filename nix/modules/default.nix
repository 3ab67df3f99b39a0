# Every fleet module. Each declares its options (nixfleet.*) and does nothing until they are
# set; lib/host-module.nix sets them from a host's generated data. No host is named here.
{
  imports = [
    ./base.nix
    ./boot.nix
    ./health.nix
    ./users.nix
    ./secrets.nix
    ./binary-cache.nix
    ./network-stability.nix
    ./hardware/amd.nix
    ./hardware/nvidia.nix
    ./hardware/intel.nix
    ./graphical.nix
    ./features/development.nix
    ./features/virtualization.nix
    ./features/cloud.nix
    ./features/security.nix
    ./features/networking.nix
    ./features/programs.nix
    ./features/ai.nix
    ./features/monitoring.nix
    ./monitoring/client.nix
    ./monitoring/server.nix
  ];
}
