# The monitoring server's configuration, derived from the fleet's host data: which hosts it
# scrapes (itself and every client whose serverHost names it), the scrape jobs each host's
# monitoring.features ask for, the alert rules, and Alertmanager's routing.
# Builtins only, so `nixfleet check-nix` evaluates it without nixpkgs.
{
  hosts,
  server,
  receivers ? [ { name = "default"; } ],
}:
let
  inherit (builtins) attrNames filter map;
  ports = builtins.fromJSON (builtins.readFile ./ports.json);

  monitoringOf = name: hosts.${name}.features.monitoring;
  monitored = filter (
    name:
    let
      m = monitoringOf name;
    in
    m.enable && (name == server || m.serverHost == server)
  ) (attrNames hosts);
  withFeature = feature: filter (name: (monitoringOf name).features.${feature}) monitored;

  staticConfig = port: name: {
    targets = [ "${name}:${toString port}" ];
    labels = {
      host = name;
      class = hosts.${name}.hardware_class;
    };
  };
  job = jobName: interval: port: names: {
    job_name = jobName;
    scrape_interval = interval;
    static_configs = map (staticConfig port) names;
  };

  nvidiaHosts = filter (name: hosts.${name}.hardware_class == "nvidia") (withFeature "nodeExporter");
  # Ollama serves no Prometheus metrics of its own; it is scraped where aiMetrics asks for it.
  ollamaHosts = filter (name: hosts.${name}.features.ai.ollama) (withFeature "aiMetrics");

  rule = alert: expr: for: severity: service: summary: {
    inherit alert expr for;
    labels = { inherit severity service; };
    annotations.summary = summary;
  };
  alerting = (monitoringOf server).features.alerting;
in
{
  inherit monitored;

  global = {
    scrape_interval = "15s";
    evaluation_interval = "15s";
    external_labels.cluster = "nixos-homelab";
  };
  retentionTime = "30d";

  scrapeConfigs = filter (j: j.static_configs != [ ]) [
    {
      job_name = "prometheus";
      scrape_interval = "15s";
      static_configs = [
        {
          targets = [ "localhost:${toString ports.prometheus}" ];
          labels.host = server;
        }
      ];
    }
    (job "node-exporter" "15s" ports.nodeExporter (withFeature "nodeExporter"))
    (job "nixos-exporter" "60s" ports.nixosExporter (withFeature "nixosMetrics"))
    (job "systemd-exporter" "30s" ports.systemdExporter (withFeature "serviceMetrics"))
    (job "nvidia-gpu" "15s" ports.nvidiaGpuExporter nvidiaHosts)
    (job "ollama" "30s" ports.ollama ollamaHosts)
  ];

  inherit alerting;
  # The original sent no alert anywhere: Prometheus must name its Alertmanager.
  alertmanagers =
    if alerting then
      [ { static_configs = [ { targets = [ "localhost:${toString ports.alertmanager}" ]; } ]; } ]
    else
      [ ];

  rules = {
    groups = [
      {
        name = "nixfleet";
        rules = [
          (rule "HighCPUUsage"
            ''100 * (1 - avg by (host) (rate(node_cpu_seconds_total{mode="idle"}[5m]))) > 80''
            "5m" "warning" "system" "CPU usage above 80% on {{ $labels.host }}")
          (rule "HighMemoryUsage"
            "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes) > 90"
            "5m" "warning" "system" "Memory usage above 90% on {{ $labels.host }}")
          (rule "LowDiskSpace"
            ''100 * (1 - node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs|overlay|squashfs"} / node_filesystem_size_bytes{fstype!~"tmpfs|ramfs|overlay|squashfs"}) > 85''
            "10m" "warning" "system" "{{ $labels.mountpoint }} above 85% full on {{ $labels.host }}")
          (rule "NixStoreSize" "nixos_store_size_bytes > 50 * 1024 * 1024 * 1024"
            "1h" "info" "nix" "Nix store above 50 GiB on {{ $labels.host }}")
          (rule "SystemdServiceFailed" "systemd_units_failed > 0"
            "0m" "warning" "systemd" "{{ $value }} failed systemd units on {{ $labels.host }}")
          # A host is down when its node exporter is; other jobs' targets are not hosts.
          (rule "HostDown" ''up{job="node-exporter"} == 0''
            "1m" "critical" "system" "{{ $labels.host }} is down")
          (rule "HighNetworkTraffic"
            ''sum by (host) (rate(node_network_receive_bytes_total{device!="lo"}[5m]) + rate(node_network_transmit_bytes_total{device!="lo"}[5m])) > 100 * 1024 * 1024''
            "10m" "warning" "network" "Network traffic above 100 MiB/s on {{ $labels.host }}")
        ];
      }
    ];
  };

  alertmanager = {
    route = {
      receiver = "default";
      group_by = [
        "alertname"
        "cluster"
        "service"
      ];
      group_wait = "30s";
      group_interval = "5m";
      repeat_interval = "4h";
      routes = [
        {
          matchers = [ ''severity="critical"'' ];
          receiver = "default";
          group_wait = "5s";
          repeat_interval = "5m";
        }
        {
          matchers = [ ''severity="warning"'' ];
          receiver = "default";
          repeat_interval = "30m";
        }
      ];
    };
    inhibit_rules = [
      {
        source_matchers = [ ''severity="critical"'' ];
        target_matchers = [ ''severity="warning"'' ];
        equal = [
          "alertname"
          "cluster"
          "service"
        ];
      }
    ];
    inherit receivers;
  };
}
