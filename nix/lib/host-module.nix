# What one host's generated data means to NixOS: the only place where host data becomes option
# values. Feature flags pass through unchanged (nixfleet.features has exactly the model's names,
# so the module system rejects a flag no module declares). Builtins only, so `nixfleet check-nix`
# can evaluate it without nixpkgs.
{
  data,
  fleet,
  secrets,
  secretsRoot,
  binaryCachePublicKey,
  # The public half ("ssh-ed25519 ...") of the agenix secret builder-ssh-key ("": none).
  builderSshPublicKey ? "",
}:
let
  inherit (builtins) concatStringsSep mapAttrs;
  ports = builtins.fromJSON (builtins.readFile ./ports.json);
  monitoring = data.features.monitoring;
  class = data.hardware_class;
  field = attrs: name: if attrs == null then null else attrs.${name};
in
{
  networking.hostName = data.name;
  system.stateVersion = data.system.stateVersion;
  time.timeZone = data.system.timezone;
  i18n.defaultLocale = data.system.locale;
  services.xserver.xkb.layout = concatStringsSep "," data.system.keyboardLayouts;
  console.useXkbConfig = true;
  networking.nameservers = data.system.nameservers;
  networking.hosts = mapAttrs (address: name: [ name ]) data.system.hostMappings;
  environment.sessionVariables = data.system.environment;
  services.nfs.server = {
    enable = data.system.nfsExports != [ ];
    exports = concatStringsSep "\n" data.system.nfsExports;
  };

  nixfleet = {
    inherit (data) features users;
    graphical.enable = data.graphical;
    boot = {
      inherit (data.boot) loader configurationLimit;
    };

    hardware = {
      amd = {
        enable = class == "amd";
        rocm = data.graphics.compute == "rocm";
        hsaOverrideGfxVersion = field data.rocm "hsaOverrideGfxVersion";
      };
      nvidia = {
        enable = class == "nvidia";
        package = if data.graphics.nvidiaPackage == null then "stable" else data.graphics.nvidiaPackage;
        open = data.graphics.nvidiaOpen;
        cuda = data.graphics.compute == "cuda";
        prime = {
          sync = data.prime != null && data.prime.sync;
          intelBusId = if data.prime == null then "" else data.prime.intelBusId;
          nvidiaBusId = if data.prime == null then "" else data.prime.nvidiaBusId;
        };
      };
      intel = {
        enable = class == "intel";
        inherit (data.graphics) mediaDriver;
      };
    };

    # The monitoring server is also the fleet's binary cache (the model has no field of its own
    # for it yet); its clients substitute from it.
    binaryCache = {
      server.enable = monitoring.enable && monitoring.mode == "server";
      client = {
        enable = monitoring.enable && monitoring.serverHost != null;
        url =
          if monitoring.serverHost == null then
            ""
          else
            "http://${monitoring.serverHost}:${toString ports.binaryCache}";
      };
      publicKey = binaryCachePublicKey;
      fetchKey = builderSshPublicKey;
    };

    secrets = {
      enable = true;
      declarations = import ./secrets.nix {
        inherit secrets;
        host = data.name;
        root = secretsRoot;
      };
    };
  };
}
