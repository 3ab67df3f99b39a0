# The fleet's binary cache: nix-serve on one host, signing with a key from agenix; every other
# host substitutes from it. Every host trusts the key's public half: a builder host
# (deploy.buildOn) signs with it what it builds for the others, the cache server's clones too.
# A host that holds the signing key also serves its store over SSH, read-only (nix.sshServe), to
# the fleet's fetch key: the targets of a builder that runs no cache fetch from it that way.
{ config, lib, ... }:
let
  inherit (lib) mkEnableOption mkIf mkMerge mkOption types;
  cfg = config.nixfleet.binaryCache;
  ports = lib.importJSON ../lib/ports.json;
  ageSecrets = config.age.secrets or { };
in
{
  options.nixfleet.binaryCache = {
    server = {
      enable = mkEnableOption "serving this host's Nix store to the fleet with nix-serve";
      secretName = mkOption {
        type = types.str;
        default = "binary-cache-key";
        description = "agenix secret holding the signing key (nix-store --generate-binary-cache-key).";
      };
    };
    client = {
      enable = mkEnableOption "substituting from the fleet's binary cache";
      url = mkOption {
        type = types.str;
        default = "";
        example = "http://cache-host:5000";
        description = "URL of the fleet's cache.";
      };
    };
    fetchKey = mkOption {
      type = types.str;
      default = "";
      example = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... builder-ssh-key";
      description = "Public half of the agenix secret builder-ssh-key: a host that holds the signing key serves its store to it over SSH, read-only (nix.sshServe), for the targets of a builder that runs no binary cache.";
    };
    publicKey = mkOption {
      type = types.str;
      default = "";
      example = "nixfleet-cache-1:7z/A5+C8jX+MwZxDf5RzjvE+6Bm+2nkmvF+JuWynMjY=";
      description = "Public half of the signing key (name:base64), trusted by the clients.";
    };
  };

  config = mkMerge [
    (mkIf cfg.server.enable {
      assertions = [
        {
          assertion = ageSecrets ? ${cfg.server.secretName};
          message = "nixfleet.binaryCache.server needs the agenix secret ${cfg.server.secretName} on this host (nix/secrets.json)";
        }
      ];
      nixfleet.health.services.nix-serve = {
        unit = "nix-serve.service";
        port = ports.binaryCache;
      };
      services.nix-serve = {
        enable = true;
        port = ports.binaryCache;
        openFirewall = true;
        # nix-serve reads it through systemd's LoadCredential, so root:root 0400 is enough.
        secretKeyFile = (ageSecrets.${cfg.server.secretName} or { path = null; }).path;
      };
    })
    (mkIf cfg.client.enable {
      assertions = [
        {
          assertion = cfg.client.url != "" && cfg.publicKey != "";
          message = "nixfleet.binaryCache.client needs url and publicKey";
        }
      ];
      nix.settings = {
        # Listed before cache.nixos.org (which NixOS appends), so the fleet's cache is asked first.
        substituters = [ cfg.client.url ];
        # A sleeping cache host must not stall every build for long.
        connect-timeout = 5;
      };
    })
    (mkIf (ageSecrets ? ${cfg.server.secretName} && cfg.fetchKey != "") {
      # A builder: its targets fetch what it built with `nix copy --from ssh://nix-ssh@HOST`
      # (nixfleet/builder.py), and their Nix checks the fleet's signature on every path.
      nix.sshServe = {
        enable = true;
        keys = [ cfg.fetchKey ];
      };
    })
    (mkIf (cfg.publicKey != "") {
      # Beside cache.nixos.org's key (NixOS's default): what the fleet signs, from its cache or
      # its builder, is accepted; a path signed by no trusted key is refused.
      nix.settings.trusted-public-keys = [ cfg.publicKey ];
    })
  ];
}
