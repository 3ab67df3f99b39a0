"""A deploy's pre-flight: the boot partition's arithmetic (systemd-boot and lanzaboote peaks,
entries already there, the guard), the rollback target's boot files, the store's room."""

from __future__ import annotations

from nixfleet.facts.deploy import parse_deploy_state
from nixfleet.facts.parsers.boot import BootGeneration, BootSpace, efi_name, parse_boot_space
from nixfleet.model import Boot
from nixfleet.outcome import Action
from nixfleet.preflight import MIB, boot_need, check, esp_warning

KERNEL, INITRD = 15 * MIB, 155 * MIB  # razer's: about 170 MiB per generation


def generation(number: int, kernel: str = "k1", initrd: str = "i1") -> BootGeneration:
    return BootGeneration(number, f"/nix/store/{kernel}-linux-6.6/bzImage",
                          f"/nix/store/{initrd}-initrd-linux-6.6/initrd", KERNEL, INITRD)


def installed(*generations: BootGeneration, lanzaboote: bool = False) -> dict[str, int]:
    files: dict[str, int] = {}
    for g in generations:
        if lanzaboote:
            files[f"EFI/Linux/nixos-generation-{g.number}-abc.efi"] = g.size
        else:
            files.update(g.efi_files())
    return files


def space(*generations: BootGeneration, on_boot: tuple[BootGeneration, ...] | None = None,
          size: int = 511 * MIB, lanzaboote: bool = False, **extra) -> BootSpace:
    files = installed(*(generations if on_boot is None else on_boot), lanzaboote=lanzaboote)
    return BootSpace(mount="/boot", size=size, free=size - sum(files.values()), files=files,
                     generations=generations, **extra)


def test_systemd_boot_names_copies_as_its_builder_does():
    assert efi_name("/nix/store/abc-linux-6.6/bzImage") == "EFI/nixos/abc-linux-6.6-bzImage.efi"
    assert efi_name("/nix/store/abc-linux-6.6") == "EFI/nixos/abc-linux-6.6.efi"


def test_one_new_entry_is_the_running_generations_kernel_and_initrd_plus_the_guard():
    host = space(generation(1))
    need = boot_need(host, Boot(configurationLimit=2), current=1, guard=16 * MIB)

    assert need.entry == KERNEL + INITRD
    assert need.required == KERNEL + INITRD + 16 * MIB


def test_systemd_boot_frees_what_no_kept_generation_boots_before_it_copies():
    # Limit 2: the new generation and generation 3 stay; 2's distinct files go first.
    host = space(generation(2, "k2", "i2"), generation(3, "k3", "i3"))
    need = boot_need(host, Boot(configurationLimit=2), current=3, guard=0)

    assert need.freed_first == KERNEL + INITRD
    assert need.required == 0  # three entries' room is never needed at once


def test_entries_already_there_are_reused_and_missing_ones_of_kept_generations_count():
    # Two generations share one kernel and initrd: nothing of theirs is copied again.
    shared = space(generation(1), generation(2))
    assert boot_need(shared, Boot(configurationLimit=3), 2, guard=0).write == KERNEL + INITRD

    # A raised limit brings back generation 1, whose files a lower limit removed.
    old, kept = generation(1, "k1", "i1"), generation(2, "k2", "i2")
    missing = space(old, kept, on_boot=(kept,))
    need = boot_need(missing, Boot(configurationLimit=3), 2, guard=0)
    assert need.write == 2 * (KERNEL + INITRD)


def test_lanzaboote_needs_limit_plus_one_images_at_its_peak():
    gens = (generation(1, "k1", "i1"), generation(2, "k2", "i2"))
    host = space(*gens, lanzaboote=True)
    need = boot_need(host, Boot(loader="lanzaboote", configurationLimit=2), 2, guard=0)

    # Nothing is removed before the new image is written: one whole image more.
    assert need.freed_first == 0
    assert need.required == KERNEL + INITRD
    # Each generation is an image of its own, even with the same kernel: no reuse.
    same = space(generation(1), generation(2), lanzaboote=True)
    assert boot_need(same, Boot(loader="lanzaboote", configurationLimit=3), 2,
                     guard=0).required == KERNEL + INITRD


def test_razer_with_three_images_on_a_511_mib_esp_fails_and_says_what_to_run():
    gens = tuple(generation(n, f"k{n}", f"i{n}") for n in (1, 2, 3))
    host = space(*gens, lanzaboote=True)  # 510 MiB used, 1 MiB free
    problems = check(Action.SWITCH, host, Boot(loader="lanzaboote", configurationLimit=3,
                                               espGuard=16), 3, "razer")

    assert problems == [
        "boot partition /boot: needs 186.0 MiB free for the new generation's boot files "
        "(configurationLimit 3 + 1 images at the peak; a new entry estimated at 170.0 MiB, "
        "16.0 MiB guard), has 1.0 MiB: short 185.0 MiB; run `nixfleet gc --boot --limit razer`"]


def test_razer_at_limit_two_with_two_entries_passes():
    gens = (generation(1, "k1", "i1"), generation(2, "k2", "i2"))
    assert check(Action.SWITCH, space(*gens), Boot(configurationLimit=2, espGuard=16), 2,
                 "razer") == []


def test_a_rollback_target_without_boot_files_fails_the_pre_flight():
    gone, current = generation(1, "k1", "i1"), generation(2, "k2", "i2")
    problems = check(Action.BOOT, space(gone, current, on_boot=(gone,), size=2048 * MIB),
                     Boot(configurationLimit=5), 2, "p620")

    assert problems == [
        "boot partition /boot: the rollback target, generation 2, has no boot files there "
        "(it could not be booted); run `nixfleet gc --boot --limit p620` to rewrite the boot "
        "entries"]


def test_actions_that_install_no_boot_entries_check_only_the_store():
    full = space(*(generation(n, f"k{n}", f"i{n}") for n in (1, 2, 3)),
                 store_free=100 * MIB, closure=300 * MIB)
    boot = Boot(configurationLimit=4)

    assert check(Action.TEST, full, boot, 3, "razer") == [
        "/nix/store: needs up to 300.0 MiB free for the new closure (the current one's size), "
        "has 100.0 MiB: short 200.0 MiB; run `nixfleet gc --limit razer`"]
    assert check(Action.PUSH, full, boot, 3, "razer") == []
    assert len(check(Action.SWITCH, full, boot, 3, "razer")) == 2


def test_the_lab_scales_the_guard():
    lab = BootGeneration(1, "/nix/store/k", "/nix/store/i", 224 * 1024, 2240 * 1024)
    small = BootSpace(mount="/boot", size=8 * MIB, free=2 * MIB, files=lab.efi_files(),
                      generations=(lab,))
    problems = check(Action.SWITCH, small, Boot(configurationLimit=2, espGuard=16), 1, "razer",
                     scale=16 / 1024)

    # 2.4 MiB for the new entry and 16 "MiB" of guard at 16 KiB per real MiB.
    assert "needs 2.7 MiB free" in problems[0] and "256 KiB guard" in problems[0]


def test_the_deploy_state_fact_carries_the_boot_space():
    text = "\n".join([
        "generation system-3-link",
        "boot-fs /boot   8351744 5796864",
        "boot-file 229376 EFI/nixos/abc-linux-6.6.63.efi",
        "boot-gen 3 /nix/store/abc-linux-6.6.63 /nix/store/def-initrd 229376 2293760 ",
        "boot-gen 2 /nix/store/gone  ",  # its kernel was collected: left out
        "booted /nix/store/xyz-nixos-system-razer",
        "store-free 84074242048",
        "closure 2729984",
    ])
    state = parse_deploy_state(text)

    assert state.generation == 3
    assert state.boot == BootSpace(
        mount="/boot", size=8351744, free=5796864,
        files={"EFI/nixos/abc-linux-6.6.63.efi": 229376},
        generations=(BootGeneration(3, "/nix/store/abc-linux-6.6.63", "/nix/store/def-initrd",
                                    229376, 2293760),),
        booted="/nix/store/xyz-nixos-system-razer", store_free=84074242048, closure=2729984)
    # A host without a boot partition or store figures: nothing to check, nothing fails.
    assert parse_boot_space(["boot-fs ", "closure "]).free is None


def test_validate_warns_when_the_limits_peak_cannot_fit_the_known_esp():
    razer = Boot(configurationLimit=2, espSize=511, entrySize=170, espGuard=16)
    assert esp_warning("razer", razer) is None  # systemd-boot: 2 entries at the peak
    assert esp_warning("razer", razer.model_copy(update={"loader": "lanzaboote"})) == (
        "host razer: boot.configurationLimit 2 (lanzaboote): 3 entries of 170 MiB at the "
        "install's peak + 16 MiB guard = 526 MiB, the boot partition has 511 MiB; set "
        "boot.configurationLimit to 1 or less")
    assert esp_warning("razer", razer.model_copy(update={"configurationLimit": 3})) == (
        "host razer: boot.configurationLimit 3 (systemd-boot): 3 entries of 170 MiB at the "
        "install's peak + 16 MiB guard = 526 MiB, the boot partition has 511 MiB; set "
        "boot.configurationLimit to 2 or less")
    assert esp_warning("p620", Boot(configurationLimit=5)) is None  # sizes unknown
