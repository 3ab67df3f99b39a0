# features.cloud: cloud provider and infrastructure CLIs.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) concatLists mapAttrsToList mkEnableOption mkIf optionals;
  cfg = config.nixfleet.features.cloud;

  packagesFor = with pkgs; {
    aws = [ awscli2 ];
    azure = [ azure-cli ];
    google = [ google-cloud-sdk ];
    k8s = [
      kubectl
      kubernetes-helm
      k9s
    ];
    terraform = [ terraform ];
  };
in
{
  options.nixfleet.features.cloud = {
    enable = mkEnableOption "cloud tooling";
    aws = mkEnableOption "the AWS CLI";
    azure = mkEnableOption "the Azure CLI";
    google = mkEnableOption "the Google Cloud SDK";
    k8s = mkEnableOption "Kubernetes clients (kubectl, helm, k9s)";
    terraform = mkEnableOption "Terraform";
  };

  config = mkIf cfg.enable {
    environment.systemPackages = concatLists (
      mapAttrsToList (tool: packages: optionals cfg.${tool} packages) packagesFor
    );
  };
}
