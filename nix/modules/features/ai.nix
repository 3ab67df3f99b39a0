# features.ai: ai-cli with /etc/ai-providers.json, and Ollama accelerated by the hardware class.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkEnableOption mkIf mkMerge mkOption types;
  cfg = config.nixfleet.features.ai;
  hardware = config.nixfleet.hardware;
  ports = lib.importJSON ../../lib/ports.json;
  providerNames = [
    "openai"
    "anthropic"
    "gemini"
    "ollama"
  ];

  ollamaPackage =
    if hardware.amd.enable && hardware.amd.rocm then
      pkgs.ollama-rocm
    else if hardware.nvidia.enable && hardware.nvidia.cuda then
      pkgs.ollama-cuda
    else
      pkgs.ollama;
  # `ai-switch PROVIDER`: ai-cli's default provider for this shell session only (ai-cli reads
  # AI_DEFAULT_PROVIDER before the configuration's), refused unless enabled on this host.
  enabled = lib.concatStringsSep " " cfg.providers.enabled;
  aiSwitch = ''
    ai-switch() {
      case "''${1-}" in
        ${lib.concatStringsSep "|" cfg.providers.enabled})
          export AI_DEFAULT_PROVIDER="$1"
          echo "ai-switch: ai-cli asks $1 first in this shell" ;;
        "")
          echo "usage: ai-switch PROVIDER (enabled here: ${enabled})" >&2
          return 2 ;;
        *)
          echo "ai-switch: '$1' is not an enabled provider (enabled here: ${enabled})" >&2
          return 2 ;;
      esac
    }
  '';
  # The monitoring server scrapes Ollama where aiMetrics asks for it, so it must be reachable.
  ollamaScraped = config.nixfleet.features.monitoring.enable
    && config.nixfleet.features.monitoring.features.aiMetrics;
in
{
  options.nixfleet.features.ai = {
    enable = mkEnableOption "AI tooling";
    ollama = mkEnableOption "the Ollama server, GPU-accelerated by the host's hardware class";
    providers = {
      enable = mkEnableOption "ai-cli and its provider configuration, /etc/ai-providers.json";
      defaultProvider = mkOption {
        type = types.enum providerNames;
        default = "anthropic";
        description = "Provider ai-cli asks first (AI_DEFAULT_PROVIDER overrides it).";
      };
      enableFallback = mkOption {
        type = types.bool;
        default = true;
        description = "Try the other enabled providers, by priority, when one fails.";
      };
      costOptimization = mkOption {
        type = types.bool;
        default = false;
        description = "Pick the cheapest capable model unless one is asked for.";
      };
      timeout = mkOption {
        type = types.ints.between 1 3600;
        default = 30;
        description = "Seconds before a provider request is abandoned.";
      };
      maxRetries = mkOption {
        type = types.ints.between 0 10;
        default = 3;
        description = "Retries per provider before falling back.";
      };
      enabled = mkOption {
        type = types.listOf (types.enum providerNames);
        default = providerNames;
        description = "Providers ai-cli may use on this host.";
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    (mkIf cfg.ollama {
      nixfleet.health.services.ollama = {
        unit = "ollama.service";
        port = ports.ollama;
      };
      services.ollama = {
        enable = true;
        package = ollamaPackage;
        port = ports.ollama;
        rocmOverrideGfx = mkIf hardware.amd.enable hardware.amd.hsaOverrideGfxVersion;
        host = mkIf ollamaScraped "0.0.0.0";
        openFirewall = ollamaScraped;
      };
    })
    (mkIf cfg.providers.enable {
      assertions = [
        {
          assertion = builtins.elem cfg.providers.defaultProvider cfg.providers.enabled;
          message = "features.ai.providers.defaultProvider ${cfg.providers.defaultProvider} is not in features.ai.providers.enabled";
        }
      ];
      environment.etc."ai-providers.json".text = builtins.toJSON (
        import ../../lib/ai-providers.nix {
          settings = cfg.providers;
          secretsDir = config.age.secretsDir or "/run/agenix";
        }
      );
      # ai-cli and ai-chat are console scripts of the nixfleet package (pyproject.toml).
      environment.systemPackages = [ config.nixfleet.package ];
      # The original's aliases; `ai-models PROVIDER` lists one provider's models.
      environment.shellAliases = {
        ai = "ai-cli";
        chat = "ai-cli";
        aii = "ai-cli";
        aif = "ai-cli --fallback";
        aic = "ai-cli --cost-optimize";
        ai-status = "ai-cli --status";
        ai-models = "ai-cli --list-models";
      };
      environment.interactiveShellInit = aiSwitch;
    })
  ]);
}
