# olafkfreund on the Xeon server.
{
  imports = [ ./common.nix ];
}
