# The agenix secrets one host declares, from nix/secrets.json (written by the secrets tooling
# from the rules in secrets/):
#   { "<name>": { "file": "secrets/<name>.age", "owner": "root", "group": "root",
#                 "mode": "0400", "hosts": [ "<host>", ... ] } }
# `file` is relative to `root` (the repository root). Builtins only.
{
  secrets,
  host,
  root,
}:
let
  inherit (builtins) attrNames elem filter listToAttrs map;
  forHost = filter (name: elem host secrets.${name}.hosts) (attrNames secrets);
in
listToAttrs (
  map (
    name:
    let
      secret = secrets.${name};
    in
    {
      inherit name;
      value = {
        file = root + "/${secret.file}";
        inherit (secret) owner group mode;
      };
    }
  ) forHost
)
