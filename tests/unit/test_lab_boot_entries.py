"""The lab's boot loader installer (stand-in): what it leaves on /boot for each layout, and
that a copy that fails leaves no half-written file."""

from __future__ import annotations

import errno
import importlib.util
import json
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "nixfleet" / "lab" / "files" / "boot_entries.py"
spec = importlib.util.spec_from_file_location("boot_entries", SOURCE)
assert spec and spec.loader
boot_entries = importlib.util.module_from_spec(spec)
spec.loader.exec_module(boot_entries)


def system(store: Path, profiles: Path, number: int, initrd: str, loader: str,
           limit: int) -> Path:
    """Generation `number` of a profile: a toplevel with a kernel shared by all and an initrd
    of its own content."""
    kernel = store / "k1-linux-6.6.63"
    kernel.write_bytes(b"k" * 100)
    initrd_path = store / f"{initrd}-initrd-linux-6.6.63"
    initrd_path.write_bytes(b"i" * 1000)
    toplevel = store / f"t{number}-nixos-system"
    toplevel.mkdir()
    (toplevel / "kernel").symlink_to(kernel)
    (toplevel / "initrd").symlink_to(initrd_path)
    (toplevel / "nixos-version").write_text("26.05.lab")
    (toplevel / "host.json").write_text(json.dumps(
        {"boot": {"loader": loader, "configurationLimit": limit}}))
    (profiles / f"system-{number}-link").symlink_to(toplevel)
    return toplevel


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path, Path]:
    store, profiles, boot = tmp_path / "store", tmp_path / "profiles", tmp_path / "boot"
    for path in (store, profiles, boot):
        path.mkdir()
    return store, profiles, boot


def files(boot: Path) -> list[str]:
    return sorted(str(p.relative_to(boot)) for p in boot.rglob("*") if p.is_file())


def test_systemd_boot_keeps_the_newest_limit_generations_files_and_entries(paths):
    store, profiles, boot = paths
    for n in (1, 2, 3):
        last = system(store, profiles, n, f"i{n}", "systemd-boot", limit=2)
    boot_entries.install(last, boot=boot, profiles=profiles)

    assert files(boot) == [
        "EFI/nixos/i2-initrd-linux-6.6.63.efi", "EFI/nixos/i3-initrd-linux-6.6.63.efi",
        "EFI/nixos/k1-linux-6.6.63.efi", "loader/entries/nixos-generation-2.conf",
        "loader/entries/nixos-generation-3.conf", "loader/loader.conf"]
    assert "default nixos-generation-3.conf" in (boot / "loader/loader.conf").read_text()
    entry = (boot / "loader/entries/nixos-generation-3.conf").read_text()
    assert "initrd /EFI/nixos/i3-initrd-linux-6.6.63.efi" in entry


def test_lanzaboote_writes_one_image_per_generation(paths):
    store, profiles, boot = paths
    for n in (1, 2, 3):
        last = system(store, profiles, n, "i1", "lanzaboote", limit=2)
    boot_entries.install(last, boot=boot, profiles=profiles)

    images = [f for f in files(boot) if f.startswith("EFI/Linux/")]
    assert [i.split("-")[2] for i in images] == ["2", "3"]
    assert all((boot / i).stat().st_size == 1100 for i in images)  # kernel + initrd


def test_a_copy_that_fails_leaves_no_half_written_file(paths, monkeypatch):
    store, profiles, boot = paths
    last = system(store, profiles, 1, "i1", "systemd-boot", limit=2)
    real_open = Path.open

    def full(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        if "w" in mode and "initrd" in self.name:
            def write(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            handle.write = write
        return handle

    monkeypatch.setattr(Path, "open", full)
    with pytest.raises(OSError, match="No space left"):
        boot_entries.install(last, boot=boot, profiles=profiles)
    assert not any("initrd" in f for f in files(boot))
