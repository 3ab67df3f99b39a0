# Grafana dashboards for the monitored hosts: "NixOS System Overview" and one per host titled
# "<host> - AMD|NVIDIA|Intel" with the GPU panels of its hardware class. File name -> dashboard.
# Builtins only, so `nixfleet check-nix` evaluates it without nixpkgs.
{
  hosts,
  monitored,
}:
let
  inherit (builtins) concatStringsSep elemAt genList length listToAttrs map;

  datasource = {
    type = "prometheus";
    uid = "prometheus";
  };
  timeseries = title: unit: expr: {
    inherit title datasource;
    type = "timeseries";
    fieldConfig.defaults.unit = unit;
    targets = [
      {
        refId = "A";
        inherit datasource expr;
        legendFormat = "{{host}}";
      }
    ];
  };
  text = title: content: {
    inherit title;
    type = "text";
    options = {
      mode = "markdown";
      inherit content;
    };
  };
  # Two panels a row, in list order.
  layout = panels: genList (
    i:
    elemAt panels i
    // {
      id = i + 1;
      gridPos = {
        h = 8;
        w = 12;
        x = 12 * (i - 2 * (i / 2));
        y = 8 * (i / 2);
      };
    }
  ) (length panels);
  dashboard = uid: title: panels: {
    inherit uid title;
    tags = [ "nixfleet" ];
    schemaVersion = 39;
    time = {
      from = "now-6h";
      to = "now";
    };
    refresh = "30s";
    panels = layout panels;
  };

  # A PromQL label selector: `{a="x",b="y"}`, or nothing at all for no matchers.
  selector = matchers: if matchers == [ ] then "" else "{${concatStringsSep "," matchers}}";

  # hostMatchers: [ ] for the whole fleet, [ ''host="<name>"'' ] for one host.
  systemPanels =
    hostMatchers:
    let
      s = matchers: selector (matchers ++ hostMatchers);
      rootFs = s [ ''mountpoint="/"'' ];
    in
    [
      (timeseries "CPU usage" "percent"
        "100 * (1 - avg by (host) (rate(node_cpu_seconds_total${s [ ''mode="idle"'' ]}[5m])))")
      (timeseries "Memory usage" "percent"
        "100 * (1 - node_memory_MemAvailable_bytes${s [ ]} / node_memory_MemTotal_bytes${s [ ]})")
      (timeseries "Root filesystem usage" "percent"
        "100 * (1 - node_filesystem_avail_bytes${rootFs} / node_filesystem_size_bytes${rootFs})")
      (timeseries "Nix store size" "bytes" "nixos_store_size_bytes${s [ ]}")
      (timeseries "System generations" "short" "nixos_generations_total${s [ ]}")
      (timeseries "Failed systemd units" "short" "systemd_units_failed${s [ ]}")
    ];

  gpuPanels = {
    amd = s: [
      (timeseries "GPU busy (amdgpu)" "percent" "node_drm_gpu_busy_percent${s}")
      (timeseries "VRAM used (amdgpu)" "bytes" "node_drm_memory_vram_used_bytes${s}")
    ];
    nvidia = s: [
      (timeseries "GPU utilisation (NVIDIA)" "percent" "100 * nvidia_smi_utilization_gpu_ratio${s}")
      (timeseries "GPU memory used (NVIDIA)" "bytes" "nvidia_smi_memory_used_bytes${s}")
      (timeseries "GPU temperature (NVIDIA)" "celsius" "nvidia_smi_temperature_gpu${s}")
    ];
    intel = s: [
      (text "GPU (Intel)"
        "Integrated graphics (modesetting, VA-API media driver): no compute acceleration and no GPU metrics.")
    ];
  };
  classTitle = {
    amd = "AMD";
    nvidia = "NVIDIA";
    intel = "Intel";
  };

  hostDashboard =
    name:
    let
      class = hosts.${name}.hardware_class;
      hostMatchers = [ ''host="${name}"'' ];
    in
    {
      name = "host-${name}.json";
      value = dashboard "nixfleet-host-${name}" "${name} - ${classTitle.${class}}" (
        systemPanels hostMatchers ++ gpuPanels.${class} (selector hostMatchers)
      );
    };
in
{
  "nixos-system-overview.json" = dashboard "nixfleet-overview" "NixOS System Overview" (
    [ (timeseries "Hosts up" "short" ''up{job="node-exporter"}'') ] ++ systemPanels [ ]
  );
}
// listToAttrs (map hostDashboard monitored)
