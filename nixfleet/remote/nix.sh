# Shell functions of the remote steps that run Nix (prepended to deploy.sh and build.sh).
nix_error() { # FILE: Nix's last line, unless it is only its hint about --show-trace
  grep -v -e '^(use .--show-trace' -e '^$' "$1" | tail -n 1
}
