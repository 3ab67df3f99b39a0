# One lab host's system: which units it runs follows its feature flags, as NixOS modules would.
{ name, system, data, extraUnits }:
let
  inherit (builtins) attrNames concatStringsSep filter hasAttr listToAttrs map toJSON;

  textFile = fileName: text: derivation {
    name = fileName;
    inherit system text;
    builder = "/bin/sh";
    args = [ "-c" "printf '%s' \"$text\" > $out" ];
    PATH = "/usr/bin:/bin";
  };

  monitoring = data.features.monitoring;
  graphics = data.graphics;

  # Kernel, modules and initrd are their own store paths (as on NixOS), so they change only
  # when what they are made of changes: that is what "reboot required" compares.
  kernelVersion = "6.6.63";
  kernel = textFile "linux-${kernelVersion}" "lab stand-in kernel ${kernelVersion}\n";
  driverEnabled = gpu: gpu.vendor == "intel" || gpu.driver == graphics.videoDriver;
  modules = builtins.sort builtins.lessThan
    (map (gpu: gpu.driver) (filter driverEnabled data.gpus));
  driverPackage = if graphics.nvidiaPackage == null then "" else "-nvidia-${graphics.nvidiaPackage}";
  kernelModules = textFile "kernel-modules-${kernelVersion}${driverPackage}"
    (concatStringsSep "\n" modules + "\n");
  initrd = textFile "initrd-linux-${kernelVersion}" "lab stand-in initrd for ${kernel}\n${kernelModules}\n";

  service = description: execStart: extra: {
    inherit description execStart;
    type = extra.type or "simple";
    restart = extra.restart or "on-failure";
  };

  featureUnits = listToAttrs (filter (u: u.value != null) [
    {
      name = "prometheus-node-exporter";
      value = if monitoring.enable && monitoring.features.nodeExporter
        then service "Prometheus node exporter"
          "/usr/bin/prometheus-node-exporter --web.listen-address=:9100" { }
        else null;
    }
  ]);

  units = featureUnits // extraUnits;
in
derivation {
  name = "nixos-system-${name}-${data.system.stateVersion}.lab";
  inherit system;
  builder = "/usr/bin/python3";
  args = [ ./build-toplevel.py ];
  PATH = "/usr/bin:/bin";
  hostName = name;
  nixosVersion = "${data.system.stateVersion}.lab";
  inherit kernelVersion kernel kernelModules initrd;
  hostData = toJSON data;
  units = toJSON units;
}
