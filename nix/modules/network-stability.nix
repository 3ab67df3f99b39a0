# A DNS monitor: when lookups keep failing, restart systemd-resolved. Off unless a host asks.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) escapeShellArg mkEnableOption mkIf mkOption types;
  cfg = config.nixfleet.networkStability;
in
{
  options.nixfleet.networkStability = {
    enable = mkEnableOption "the DNS monitor that restarts systemd-resolved after repeated failures";
    probeName = mkOption {
      type = types.str;
      default = "nixos.org";
      description = "Name resolved on every check.";
    };
    interval = mkOption {
      type = types.str;
      default = "1min";
      description = "Time between checks (a systemd time span).";
    };
    failureThreshold = mkOption {
      type = types.ints.positive;
      default = 3;
      description = "Consecutive failed lookups before systemd-resolved is restarted.";
    };
  };

  config = mkIf cfg.enable {
    services.resolved.enable = true;

    systemd.services.dns-monitor = {
      description = "Restart systemd-resolved when DNS lookups keep failing";
      after = [ "systemd-resolved.service" ];
      path = [ pkgs.systemd ];
      serviceConfig = {
        Type = "oneshot";
        StateDirectory = "dns-monitor";
      };
      script = ''
        state=/var/lib/dns-monitor/failures
        if resolvectl query --cache=no ${escapeShellArg cfg.probeName} >/dev/null 2>&1; then
          echo 0 > "$state"
          exit 0
        fi
        failures=$(( $(cat "$state" 2>/dev/null || echo 0) + 1 ))
        echo "$failures" > "$state"
        echo "lookup of ${cfg.probeName} failed ($failures in a row)"
        if [ "$failures" -ge ${toString cfg.failureThreshold} ]; then
          echo "restarting systemd-resolved"
          systemctl restart systemd-resolved.service
          echo 0 > "$state"
        fi
      '';
    };
    systemd.timers.dns-monitor = {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = cfg.interval;
        OnUnitActiveSec = cfg.interval;
      };
    };
  };
}
