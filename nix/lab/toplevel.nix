# One lab host's system: which units it runs follows its feature flags, as NixOS modules would.
{ name, system, nixosRelease, data, extraUnits, secrets ? [ ], buildGate ? null,
  monitoringFiles ? null, binaryCachePublicKey ? "", builderSshPublicKey ? "",
  # The base packages' versions: the lab flake's input labpkgs (as nixpkgs gives them).
  versions }:
let
  # As NixOS's system.nixos.version: the release of the nixpkgs the system is built from (not
  # data.system.stateVersion, the release the host was first installed with), with a suffix
  # that says it is the lab's.
  nixosVersion = "${nixosRelease}.lab";
  inherit (builtins) attrNames concatStringsSep filter hasAttr listToAttrs map toJSON;

  textFile = fileName: text: derivation {
    name = fileName;
    inherit system text;
    builder = "/bin/sh";
    args = [ "-c" "printf '%s' \"$text\" > $out" ];
    PATH = "/usr/bin:/bin";
    # As nixpkgs' writeText: built where needed, never asked of a binary cache (so a build
    # neither waits for nor fails on a cache host that is down).
    allowSubstitutes = false;
    preferLocalBuild = true;
  };

  monitoring = data.features.monitoring;
  graphics = data.graphics;

  # A file of `kib` KiB: the text, then filler up to that size (never sparse, so copying it
  # onto the lab's boot partition takes that room).
  sizedFile = fileName: kib: text: derivation {
    name = fileName;
    inherit system text;
    size = toString (kib * 1024);
    builder = "/bin/sh";
    args = [ "-c" "{ printf '%s' \"$text\"; head -c \"$size\" /dev/zero | tr '\\0' '.'; } | head -c \"$size\" > $out" ];
    PATH = "/usr/bin:/bin";
    allowSubstitutes = false;
    preferLocalBuild = true;
  };
  # Kernel and initrd in the real ones' proportions, scaled down: one real MiB is 16 KiB here
  # (nixfleet.lab.config.BOOT_SCALE), an initrd of 140 "MiB" and a kernel of 14, so that a
  # generation's boot files (about 154 MiB on razer's real ESP) are 2.4 MiB in the lab.
  kibPerMiB = 16;

  # Kernel, modules and initrd are their own store paths (as on NixOS), so they change only
  # when what they are made of changes: that is what "reboot required" compares.
  kernelVersion = "6.6.63";
  kernel = sizedFile "linux-${kernelVersion}" (14 * kibPerMiB)
    "lab stand-in kernel ${kernelVersion}\n";
  driverEnabled = gpu: gpu.vendor == "intel" || gpu.driver == graphics.videoDriver;
  modules = builtins.sort builtins.lessThan
    (map (gpu: gpu.driver) (filter driverEnabled data.gpus));
  driverPackage = if graphics.nvidiaPackage == null then "" else "-nvidia-${graphics.nvidiaPackage}";
  kernelModules = textFile "kernel-modules-${kernelVersion}${driverPackage}"
    (concatStringsSep "\n" modules + "\n");
  initrd = sizedFile "initrd-linux-${kernelVersion}" (140 * kibPerMiB)
    "lab stand-in initrd for ${kernel}\n${kernelModules}\n";

  service = description: execStart: port: {
    inherit description execStart port;
    type = "simple";
    restart = "on-failure";
  };

  features = data.features;
  nodeExporter = monitoring.enable && monitoring.features.nodeExporter;
  nixosMetrics = monitoring.enable && monitoring.features.nixosMetrics;
  serviceMetrics = monitoring.enable && monitoring.features.serviceMetrics;
  # The monitoring server (modules/monitoring/server.nix): mode server or standalone, with the
  # files nixfleet renders for the lab's addresses (nixfleet/lab/target.py) in the flake.
  monitoringServer = monitoring.enable && monitoring.mode != "client" && monitoringFiles != null;
  alerting = monitoringServer && monitoring.features.alerting;
  ollama = features.ai.enable && features.ai.ollama;
  # As modules/features/ai.nix: Ollama listens beyond the host only where it is scraped.
  ollamaHost =
    if monitoring.enable && monitoring.features.aiMetrics then "0.0.0.0" else "127.0.0.1";
  # The real flake's /etc/ai-providers.json (modules/features/ai.nix): the same function of the
  # same settings, so the file is the real one; Ollama loads that table's ollama models.
  aiProviders = import ./lib/ai-providers.nix {
    settings = features.ai.providers;
    secretsDir = "/run/agenix"; # agenix's, where the lab's activation decrypts too
  };
  providersFile = features.ai.enable && features.ai.providers.enable;
  ports = builtins.fromJSON (builtins.readFile ./lib/ports.json);
  port = key: toString ports.${key};
  # The fleet's binary cache (modules/binary-cache.nix, as lib/host-module.nix enables it): the
  # monitoring server serves its store, signed with the agenix secret binary-cache-key; hosts
  # that name a monitoring server substitute from it. Every host trusts the lab key's public
  # half (what a builder host signs for it, too).
  cacheServer = monitoring.enable && monitoring.mode == "server";
  cacheSigned = builtins.any (secret: secret.name == "binary-cache-key") secrets;
  cacheClient = monitoring.enable && monitoring.serverHost != null && binaryCachePublicKey != "";
  # nix.sshServe where the host holds the signing key (modules/binary-cache.nix): a builder's
  # store, read-only over SSH, for the fleet's fetch key. NixOS lists the keys in
  # /etc/ssh/authorized_keys.d/nix-ssh; the lab's activation gives them to root with NixOS's
  # forced command (the lab has no nix-daemon, through which the nix-ssh user reads the store).
  sshServe = cacheSigned && builderSshPublicKey != "";
  # The client's nix.settings, an environment.etc file that the lab's /etc/nix/nix.conf
  # includes (NixOS writes them into nix.conf itself; the lab's keeps what Nix needs offline).
  # No cache.nixos.org: the lab is offline.
  nixSettings = concatStringsSep "" ((if cacheClient then [
    "substituters = http://${monitoring.serverHost}:${port "binaryCache"}\n"
  ] else [ ]) ++ [
    "trusted-public-keys = ${binaryCachePublicKey}\n"
  ] ++ (if cacheClient then [
    # A sleeping cache host must not stall every build for long.
    "connect-timeout = 5\n"
  ] else [ ]));

  # The exporters of nixfleet's Python package, as modules/monitoring/client.nix runs them;
  # the lab ships their modules to every host (nixfleet/lab/machine.py).
  exporter = description: module: key: service description
    "/usr/bin/python3 -m ${module} --port ${port key}" ports.${key} // {
      serviceExtra = [ "Environment=PYTHONPATH=/usr/lib/nixfleet-lab/python" ];
    };
  serverDir = "${monitoringFiles}/${name}";

  featureUnits = listToAttrs (filter (u: u.value != null) [
    {
      name = "prometheus-node-exporter";
      value = if nodeExporter
        then service "Prometheus node exporter"
          (concatStringsSep " " [
            "/usr/bin/prometheus-node-exporter --web.listen-address=:${port "nodeExporter"}"
            # node_systemd_unit_state, which the SystemdServiceFailed alert reads.
            "--collector.systemd"
            # Lab only: a lab host's / is an overlayfs, which the default excludes; the
            # dashboards' root filesystem panels then have a series as on NixOS. ($$: systemd)
            "--collector.filesystem.fs-types-exclude=^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$$"
          ])
          ports.nodeExporter
        else null;
    }
    {
      name = "nixfleet-nixos-exporter";
      value = if nixosMetrics
        then exporter "NixOS metrics exporter" "nixfleet.exporters.nixos" "nixosExporter"
        else null;
    }
    {
      name = "nixfleet-systemd-exporter";
      value = if serviceMetrics
        then exporter "systemd metrics exporter" "nixfleet.exporters.systemd" "systemdExporter"
        else null;
    }
    {
      # The real Prometheus (Debian's) with the generated prometheus.yml; its rule_files name
      # ../alerts.yml, relative to the file, in the same store directory.
      name = "prometheus";
      value = if monitoringServer
        then service "Prometheus" (concatStringsSep " " [
          "/usr/bin/prometheus"
          "--config.file=${serverDir}/prometheus.yml"
          "--storage.tsdb.path=/var/lib/nixfleet-prometheus"
          "--storage.tsdb.retention.time=30d"
          "--web.listen-address=:${port "prometheus"}"
        ]) ports.prometheus // { serviceExtra = [ "StateDirectory=nixfleet-prometheus" ]; }
        else null;
    }
    {
      name = "alertmanager";
      value = if alerting
        then service "Alertmanager" (concatStringsSep " " [
          "/usr/bin/prometheus-alertmanager"
          "--config.file=${monitoringFiles}/alertmanager.yml"
          "--storage.path=/var/lib/nixfleet-alertmanager"
          "--web.listen-address=:${port "alertmanager"}"
          "--cluster.listen-address="
        ]) ports.alertmanager // { serviceExtra = [ "StateDirectory=nixfleet-alertmanager" ]; }
        else null;
    }
    {
      # alertmanager.yml's webhook receivers (modules/monitoring/alert_log.py, unchanged).
      name = "nixfleet-alert-log";
      value = if alerting
        then service "Alertmanager's webhook receiver"
          "/usr/bin/python3 /usr/lib/nixfleet-lab/alert_log.py --port ${port "alertWebhook"}"
          ports.alertWebhook
        else null;
    }
    {
      # STAND-IN: no registry ships Grafana; this answers /api/health and /api/search from
      # the provisioned dashboards, with the admin password from agenix (group grafana).
      name = "grafana";
      value = if monitoringServer
        then service "Grafana (lab stand-in)" (concatStringsSep " " [
          "/usr/lib/nixfleet-lab/standins/grafana --port ${port "grafana"}"
          "--dashboards ${serverDir}/dashboards"
          "--admin-password-file /run/agenix/grafana-admin-password"
        ]) ports.grafana // { serviceExtra = [ "User=nobody" "Group=grafana" ]; }
        else null;
    }
    {
      # STAND-IN: no registry reachable here ships nix-serve; this serves the store as it does.
      name = "nix-serve";
      value = if cacheServer
        then service "nix-serve binary cache (lab stand-in)"
          "/usr/lib/nixfleet-lab/standins/nix-serve --listen :${port "binaryCache"}"
          ports.binaryCache // {
            serviceExtra = if cacheSigned
              then [ "Environment=NIX_SECRET_KEY_FILE=/run/agenix/binary-cache-key" ] else [ ];
          }
        else null;
    }
    {
      # STAND-IN: no registry ships Ollama; this speaks the part of its HTTP API that checks
      # and ai-cli use, with models that are manifests only. At start it "pulls" the missing
      # ones of the ollama provider's models (NixOS: services.ollama.loadModels).
      name = "ollama";
      value = if ollama
        then service "Ollama (lab stand-in)" (concatStringsSep " " [
          "/usr/lib/nixfleet-lab/standins/ollama serve"
          "--load-models ${concatStringsSep "," aiProviders.providers.ollama.models}"
        ]) ports.ollama // {
          serviceExtra = [
            "Environment=OLLAMA_HOST=${ollamaHost}:${port "ollama"}"
            "Environment=OLLAMA_MODELS=/var/lib/ollama/models"
            "StateDirectory=ollama"
          ];
        }
        else null;
    }
  ]);

  # Named, versioned store paths for what each feature installs, so that a deploy's closure
  # difference reads like a real one (package: old -> new version, size).
  package = pname: version: textFile "${pname}-${version}"
    (builtins.concatStringsSep "" (builtins.genList (_: "${pname} ${version} lab package\n") 512));
  when = cond: list: if cond then list else [ ];
  dev = features.development;
  virt = features.virtualization;
  cloud = features.cloud;
  packages = [ (package "bash" versions.bash) (package "coreutils" versions.coreutils) ]
    ++ when (dev.enable && dev.python) [ (package "python3" "3.12.8") ]
    ++ when (dev.enable && dev.go) [ (package "go" "1.23.4") ]
    ++ when (dev.enable && dev.nodejs) [ (package "nodejs" "22.11.0") ]
    ++ when (dev.enable && dev.cargo) [ (package "cargo" "1.83.0") ]
    ++ when (virt.enable && virt.docker) [ (package "docker" "27.3.1") ]
    ++ when (virt.enable && virt.podman) [ (package "podman" "5.3.1") ]
    ++ when (cloud.enable && cloud.aws) [ (package "awscli2" "2.22.0") ]
    ++ when (cloud.enable && cloud.k8s) [ (package "kubectl" "1.31.3") ]
    ++ when (cloud.enable && cloud.terraform) [ (package "terraform" "1.10.0") ]
    ++ when (features.security.enable && features.security.gnupg) [ (package "gnupg" "2.4.7") ]
    ++ when (features.networking.enable && features.networking.tailscale)
      [ (package "tailscale" "1.78.1") ]
    ++ when ollama [ (package "ollama" "0.5.7") ]
    ++ when nodeExporter [ (package "prometheus-node-exporter" "1.8.2") ];

  units = featureUnits // extraUnits;

  # What the health gate checks after a switch: each service with its unit and port
  # (NAME<TAB>UNIT<TAB>PORT; the real flake's modules write the same file).
  healthTsv = concatStringsSep "" (map
    (name: "${name}\t${name}.service\t${toString featureUnits.${name}.port}\n")
    (attrNames featureUnits));

  # environment.etc: NAME (relative to /etc) -> text; activation links each into /etc.
  etcFiles = { "nixfleet/health.tsv" = healthTsv; }
    // (if providersFile then { "ai-providers.json" = toJSON aiProviders; } else { })
    // (if binaryCachePublicKey != "" then { "nix/settings.conf" = nixSettings; } else { })
    // (if sshServe then { "ssh/authorized_keys.d/nix-ssh" = "${builderSshPublicKey}\n"; } else { });

  # What the system's packages put on PATH (/run/current-system/sw/bin): NAME -> program.
  # ai-cli and ai-chat are the nixfleet package's (modules/features/ai.nix); the lab's runs
  # nixfleet's ai-cli from the modules it ships to every host.
  swBin = (if ollama then { ollama = "/usr/lib/nixfleet-lab/standins/ollama"; } else { })
    // (if providersFile then {
      ai-cli = "/usr/lib/nixfleet-lab/ai-cli";
      ai-chat = "/usr/lib/nixfleet-lab/ai-cli";
    } else { });
in
derivation ({
  name = "nixos-system-${name}-${nixosVersion}";
  inherit system;
  builder = "/usr/bin/python3";
  args = [ ./build-toplevel.py ];
  PATH = "/usr/bin:/bin";
  # As NixOS's top-level.nix: the system is built locally, never substituted.
  allowSubstitutes = false;
  preferLocalBuild = true;
  hostName = name;
  inherit nixosVersion;
  inherit kernelVersion kernel kernelModules initrd;
  packages = concatStringsSep "\n" packages;
  etcFiles = toJSON etcFiles;
  swBin = toJSON swBin;
  hostData = toJSON data;
  units = toJSON units;
  # [{ name, file, owner, group, mode }]: what activation decrypts into /run/agenix.
  secrets = toJSON secrets;
} // (if buildGate == null then { } else { inherit buildGate; }))
