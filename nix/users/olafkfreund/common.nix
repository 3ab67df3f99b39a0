# What olafkfreund wants on every host; the per-host files add to it.
{ pkgs, ... }:
{
  programs.bash.enable = true;
  programs.neovim = {
    enable = true;
    defaultEditor = true;
  };
  programs.tmux.enable = true;
  home.packages = [
    pkgs.ripgrep
    pkgs.fd
    pkgs.jq
    pkgs.htop
  ];
}
