# olafkfreund on the small form factor server.
{
  imports = [ ./common.nix ];
}
