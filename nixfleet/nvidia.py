"""NVIDIA GPU architectures and the driver branches of the pinned nixpkgs that support them.

A host's `graphics.nvidiaPackage` names an attribute of nixpkgs'
`boot.kernelPackages.nvidiaPackages` (nix/modules/hardware/nvidia.nix). NVIDIA drops old
architectures from new driver series, so a branch that works for one card leaves another with
no driver at all (the kernel module "will ignore this GPU"); the model refuses that pairing.

Facts, for nixos-26.05 (the flake's nixpkgs input), and where they come from (nixpkgs could
not be fetched whole here; read through GitHub's issue and pull-request threads):
- `stable` and `production` are the 595 series: nixpkgs PR #524944 ("nvidiaPackages.production:
  595.71.05 -> 595.80", 2026-05); on 26.05 the default (stable) driver 595.71.05 ignores a
  Pascal GTX 1050 and says it is "supported through the NVIDIA 580.xx Legacy drivers"
  (NixOS/nixos-hardware#1880, #1828). `beta` and `latest` are never older than production
  (nvidia-x11/default.nix: `selectHighestVersion`), so they support no more than it does.
- The 590 series dropped Maxwell, Pascal and Volta; 580 is the last series for them (NVIDIA's
  announcement, quoted in getsolus/packages#7249 and NixOS/nixos-hardware#1843 "nvidia/pascal:
  use legacy_580 drivers by default").
- `legacy_580` is a nixpkgs attribute on 26.05: nixpkgs issue #538659 ("the legacy_580 driver
  shipped with nixos-26.05"), PR #549211 ("nvidiaPackages.(legacy|dc)_580: * -> 580.178.04").
- `legacy_470` is "Last one supporting Kepler architecture" (pkgs/os-specific/linux/nvidia-x11/
  default.nix); the 470 series ends at Ampere (Ada needs 525 or newer).
- NVIDIA's open kernel modules support Turing and newer only (nixos/modules/hardware/video/
  nvidia.nix, `hardware.nvidia.open`; NVIDIA/open-gpu-kernel-modules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

# Oldest first: a branch supports a contiguous range of them.
Architecture = Literal["kepler", "maxwell", "pascal", "volta", "turing", "ampere", "ada",
                       "hopper", "blackwell"]
ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)

# pci.ids (and so lspci, and the inventory's `model`) names an NVIDIA GPU by its chip first:
# "GP106GL [Quadro P2000]", "TU106M [GeForce RTX 2070 Mobile]". The chip's letters are the
# architecture's.
CHIP_PREFIXES: dict[str, Architecture] = {
    "GK": "kepler", "GM": "maxwell", "GP": "pascal", "GV": "volta", "TU": "turing",
    "GA": "ampere", "AD": "ada", "GH": "hopper", "GB": "blackwell",
}
_CHIP = re.compile(r"^(?P<prefix>[A-Z]{2})\d{2,3}")

# Attribute names of nvidiaPackages the fleet may choose (nix/modules/hardware/nvidia.nix has
# the same enum; a unit test keeps them equal).
NvidiaBranch = Literal["stable", "beta", "production", "latest", "legacy_580", "legacy_470"]
DEFAULT_BRANCH: NvidiaBranch = "stable"  # what nix/lib/host-module.nix uses for null


@dataclass(frozen=True)
class Branch:
    series: str  # the driver series the branch is on nixos-26.05
    oldest: Architecture
    newest: Architecture

    def supports(self, architecture: Architecture) -> bool:
        index = ARCHITECTURES.index
        return index(self.oldest) <= index(architecture) <= index(self.newest)


BRANCHES: dict[NvidiaBranch, Branch] = {
    "stable": Branch("595", "turing", "blackwell"),
    "production": Branch("595", "turing", "blackwell"),
    "beta": Branch("595", "turing", "blackwell"),
    "latest": Branch("595", "turing", "blackwell"),
    "legacy_580": Branch("580", "maxwell", "blackwell"),
    "legacy_470": Branch("470", "kepler", "ampere"),
}

OPEN_MODULES_OLDEST: Architecture = "turing"


def architecture(model: str) -> Architecture | None:
    """The architecture of an NVIDIA GPU named as pci.ids names it, or None if unknown.

    + model: lspci's device name, e.g. "GP106GL [Quadro P2000]"
    """
    match = _CHIP.match(model)
    return CHIP_PREFIXES.get(match["prefix"]) if match else None


def branches_for(arch: Architecture) -> list[NvidiaBranch]:
    """The branches that support `arch`, newest series first."""
    supporting = [name for name, branch in BRANCHES.items() if branch.supports(arch)]
    return sorted(supporting, key=lambda name: -int(BRANCHES[name].series))


def open_modules_support(arch: Architecture) -> bool:
    return ARCHITECTURES.index(arch) >= ARCHITECTURES.index(OPEN_MODULES_OLDEST)
