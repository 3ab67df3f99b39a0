# One user's home-manager configuration on one host: users/<user>/<host>_home.nix, plus what the
# inventory knows about the user (git identity) and the host (state version).
{
  user,
  data,
  usersDir,
}:
let
  relative = "${user.name}/${data.name}_home.nix";
  file = usersDir + "/${relative}";
in
if !builtins.pathExists file then
  throw "nix/users/${relative} is missing: every user of a host needs a home file (start from another host's)"
else
  {
    imports = [ file ];
    home.stateVersion = data.system.stateVersion;
    programs.git = {
      enable = true;
      settings.user = {
        name = user.fullName;
      }
      // (if user.email == "" then { } else { inherit (user) email; });
    };
  }
