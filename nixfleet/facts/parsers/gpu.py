"""
Parsers for GPUs: the display devices on the PCI bus (``lspci -nnk``), what ``nvidia-smi``,
``rocm-smi`` and ``amd-smi`` report, and the class of machine they add up to (nvidia, amd,
intel or hybrid).

Pure functions (text in, frozen dataclasses out), tested on real captured outputs; the
pyinfra facts (nixfleet.facts.gpu) and the exporters' GPU metrics run the tools and call them.
"""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from nixfleet.facts.parsers.errors import FactParseError
from nixfleet.facts.results import FactResult

T = TypeVar("T")
Vendor = Literal["amd", "nvidia", "intel", "other"]
HardwareClass = Literal["nvidia", "amd", "intel", "hybrid", "none"]
Compute = Literal["cuda", "rocm", "none"]

VENDOR_IDS: dict[str, Vendor] = {"1002": "amd", "10de": "nvidia", "8086": "intel"}
# PCI classes of GPUs: VGA compatible controller, 3D controller, Display controller.
DISPLAY_CLASSES = frozenset({"0300", "0302", "0380"})
# The kernel driver a vendor's GPU needs for compute (nouveau or vfio-pci do not count).
COMPUTE_DRIVERS: dict[Vendor, frozenset[str]] = {
    "nvidia": frozenset({"nvidia"}),
    "amd": frozenset({"amdgpu"}),
    "intel": frozenset({"i915", "xe"}),
    "other": frozenset(),
}
_CLASS_OF_VENDOR: dict[Vendor, HardwareClass] = {
    "nvidia": "nvidia",
    "amd": "amd",
    "intel": "intel",
    "other": "none",
}


# --- lspci -nnk ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PciGpu(FactResult):
    """One display-class PCI device from ``lspci -nnk``."""

    slot: str  # always with its domain: 0000:01:00.0
    vendor: Vendor
    vendor_id: str
    device_id: str
    model: str  # the marketing name, without brackets: "GeForce RTX 2070 Mobile"
    device_name: str  # lspci's device name as pci.ids spells it: "TU106M [GeForce RTX 2070 Mobile]"
    driver: str | None  # "Kernel driver in use", None when no driver is bound
    modules: tuple[str, ...] = ()  # "Kernel modules": the drivers that could bind it


_LSPCI_DEVICE = re.compile(
    r"^(?P<slot>(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\s+"
    r"(?P<class_name>[^\[]+?)\s+\[(?P<class_id>[0-9a-fA-F]{4})\]:\s+(?P<description>.*)$"
)
_PCI_IDS = re.compile(
    r"\s*\[(?P<vendor_id>[0-9a-fA-F]{4}):(?P<device_id>[0-9a-fA-F]{4})\]"
    r"(?:\s+\(rev [0-9a-fA-F]+\))?(?:\s+\(prog-if [^)]*\))?\s*$"
)
# lspci prints "<vendor name> <device name>"; these are the vendor names pci.ids uses.
_VENDOR_NAME = re.compile(
    r"^(?:Advanced Micro Devices,? Inc\. \[AMD/ATI\]|Advanced Micro Devices \[AMD/ATI\]"
    r"|ATI Technologies Inc|NVIDIA Corporation|nVidia Corporation|Intel Corporation)\s+"
)


LSPCI_COMMAND = "lspci -nnk"


def parse_lspci_nnk(text: str) -> list[PciGpu]:
    """Parse ``lspci -nnk`` (or ``-nn``) into its display-class devices.

    Other devices (bridges, audio functions of a graphics card...) are skipped.

    + text: the command's whole output

    **Example:**

    .. code:: python

        parse_lspci_nnk(open("lspci.txt").read())[0].driver  # "nvidia"
    """
    gpus: list[PciGpu] = []
    current: PciGpu | None = None  # the display device whose attribute lines follow
    seen_device = False
    for line in text.splitlines():
        header = _LSPCI_DEVICE.match(line)
        if header:
            seen_device = True
            if current:
                gpus.append(current)
            current = _lspci_device(header) if header["class_id"] in DISPLAY_CLASSES else None
            continue
        # Attribute lines are indented, but pasted outputs sometimes lost the indent.
        key, _, value = line.strip().partition(":")
        if current is None or not value:
            continue
        if key == "Kernel driver in use":
            current = replace(current, driver=value.strip())
        elif key == "Kernel modules":
            current = replace(current, modules=tuple(m.strip() for m in value.split(",")))
    if current:
        gpus.append(current)
    if text.strip() and not seen_device:
        raise FactParseError(
            "lspci", "no device lines with [class] and [vendor:device] ids; run it with -nnk", text
        )
    return gpus


def _lspci_device(header: re.Match[str]) -> PciGpu:
    description = header["description"]
    ids = _PCI_IDS.search(description)
    if not ids:
        raise FactParseError(
            "lspci", "device line has no [vendor:device] ids; run it with -nnk", header[0]
        )
    device_name = _VENDOR_NAME.sub("", description[: ids.start()]).strip()
    vendor_id = ids["vendor_id"].lower()
    return PciGpu(
        slot=_full_slot(header["slot"]),
        vendor=VENDOR_IDS.get(vendor_id, "other"),
        vendor_id=vendor_id,
        device_id=ids["device_id"].lower(),
        model=_marketing_name(device_name),
        device_name=device_name,
        driver=None,
    )


def _full_slot(slot: str) -> str:
    slot = slot.lower()
    return slot if slot.count(":") == 2 else f"0000:{slot}"


def _marketing_name(device_name: str) -> str:
    """'TU106M [GeForce RTX 2070 Mobile]' -> 'GeForce RTX 2070 Mobile'."""
    bracketed = re.search(r"\[([^\[\]]+)\]$", device_name)
    return bracketed[1] if bracketed else device_name


# --- nvidia-smi ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NvidiaGpu(FactResult):
    """One GPU as ``nvidia-smi`` reports it; None where it says N/A or Not Supported."""

    index: int
    name: str | None
    uuid: str | None
    driver_version: str | None
    memory_total_mib: int | None
    memory_used_mib: int | None
    utilization_pct: int | None
    temperature_c: int | None
    power_draw_w: float | None
    mig_mode: bool | None  # None: the GPU has no MIG (consumer cards)
    pci_bus_id: str | None = None  # 0000:01:00.0, like PciGpu.slot


NVIDIA_QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "driver_version",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "temperature.gpu",
    "power.draw",
    "mig.mode.current",
)
# What the exporters ask for besides: the PCI bus id labels each GPU with its slot.
NVIDIA_METRICS_FIELDS = (*NVIDIA_QUERY_FIELDS, "pci.bus_id")


def nvidia_smi_query(fields: tuple[str, ...] = NVIDIA_QUERY_FIELDS) -> str:
    """The ``nvidia-smi --query-gpu`` command whose output ``parse_nvidia_smi_csv`` reads with
    the same ``fields``.

    + fields: the ``--query-gpu`` fields, in order
    """
    return f"nvidia-smi --query-gpu={','.join(fields)} --format=csv,noheader,nounits"


NVIDIA_QUERY = nvidia_smi_query()

_KNOWN_FIELDS = frozenset({*NVIDIA_QUERY_FIELDS, "pci.bus_id"})
# A number with an optional unit ("81559 MiB", "71.15 W", "27 C", "0 %").
_NUMBER_WITH_UNIT = re.compile(r"^(-?\d+(?:\.\d+)?)(?:\s*[A-Za-z%/]+)?$")


def parse_nvidia_smi_csv(
    text: str, fields: tuple[str, ...] = NVIDIA_QUERY_FIELDS
) -> list[NvidiaGpu]:
    """Parse ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]``.

    With a header line the columns are read from it (units in brackets are dropped),
    otherwise from ``fields``. Columns other than NvidiaGpu's are ignored; a GPU without
    an ``index`` column gets its row number.

    + text: the command's whole output
    + fields: the ``--query-gpu`` fields, in order, when the output has no header
    """
    rows = [row for row in csv.reader(text.splitlines(), skipinitialspace=True) if row]
    if rows and _KNOWN_FIELDS.intersection(_header_names(rows[0])):
        fields, rows = _header_names(rows[0]), rows[1:]
    gpus = []
    for position, row in enumerate(rows):
        if len(row) != len(fields):
            raise FactParseError(
                "nvidia-smi",
                f"expected {len(fields)} comma-separated values per GPU, got {len(row)}",
                text,
            )
        cell = dict(zip(fields, (_nvidia_value(value) for value in row), strict=True))
        index = _nvidia_int(cell.get("index"), "index", text)
        gpus.append(
            NvidiaGpu(
                index=position if index is None else index,
                name=cell.get("name"),
                uuid=cell.get("uuid"),
                driver_version=cell.get("driver_version"),
                memory_total_mib=_nvidia_int(cell.get("memory.total"), "memory.total", text),
                memory_used_mib=_nvidia_int(cell.get("memory.used"), "memory.used", text),
                utilization_pct=_nvidia_int(cell.get("utilization.gpu"), "utilization.gpu", text),
                temperature_c=_nvidia_int(cell.get("temperature.gpu"), "temperature.gpu", text),
                power_draw_w=_nvidia_float(cell.get("power.draw"), "power.draw", text),
                mig_mode=_enabled(cell.get("mig.mode.current")),
                pci_bus_id=_pci_bus_id(cell.get("pci.bus_id")),
            )
        )
    return gpus


def _header_names(row: list[str]) -> tuple[str, ...]:
    return tuple(re.sub(r"\s*\[[^\]]*\]$", "", cell.strip()) for cell in row)


def _nvidia_value(value: str) -> str | None:
    # nvidia-smi brackets every non-value: [N/A], [Not Supported], [Unknown Error]...
    value = value.strip()
    if not value or value in ("N/A", "Not Supported") or value.startswith("["):
        return None
    return value


def _nvidia_float(value: str | None, field: str, text: str) -> float | None:
    if value is None:
        return None
    number = _NUMBER_WITH_UNIT.match(value)
    if not number:
        raise FactParseError("nvidia-smi", f"{field}: expected a number, got {value!r}", text)
    return float(number[1])


def _nvidia_int(value: str | None, field: str, text: str) -> int | None:
    return _rounded(_nvidia_float(value, field, text))


def _rounded(number: float | None) -> int | None:
    return None if number is None else round(number)


def _enabled(value: str | None) -> bool | None:
    return {"Enabled": True, "Disabled": False}.get(value) if value else None


def _pci_bus_id(value: str | None) -> str | None:
    # nvidia-smi pads the domain to 8 digits: 00000000:01:00.0
    if not value:
        return None
    domain, _, rest = value.lower().partition(":")
    return f"{domain[-4:]}:{rest}"


def parse_nvidia_smi_xml(text: str) -> list[NvidiaGpu]:
    """Parse ``nvidia-smi -q -x``; the driver version is read from the top of the log.

    + text: the command's whole output
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise FactParseError("nvidia-smi -q -x", f"not XML ({error})", text) from error
    if root.tag != "nvidia_smi_log":
        raise FactParseError("nvidia-smi -q -x", f"root element is <{root.tag}>", text)
    driver_version = _xml_text(root, "driver_version")
    gpus = []
    for index, gpu in enumerate(root.iterfind("gpu")):
        # Logs of format v13 report instant/average power; older ones one power_draw.
        power = _first(
            _xml_number(gpu, path, text)
            for path in (
                "gpu_power_readings/power_draw",
                "gpu_power_readings/instant_power_draw",
                "power_readings/power_draw",
            )
        )
        gpus.append(
            NvidiaGpu(
                index=index,
                name=_xml_text(gpu, "product_name"),
                uuid=_xml_text(gpu, "uuid"),
                driver_version=driver_version,
                memory_total_mib=_rounded(_xml_number(gpu, "fb_memory_usage/total", text)),
                memory_used_mib=_rounded(_xml_number(gpu, "fb_memory_usage/used", text)),
                utilization_pct=_rounded(_xml_number(gpu, "utilization/gpu_util", text)),
                temperature_c=_rounded(_xml_number(gpu, "temperature/gpu_temp", text)),
                power_draw_w=power,
                mig_mode=_enabled(_xml_text(gpu, "mig_mode/current_mig")),
                pci_bus_id=_pci_bus_id(_xml_text(gpu, "pci/pci_bus_id") or gpu.get("id")),
            )
        )
    return gpus


def _xml_number(element: ET.Element, path: str, text: str) -> float | None:
    return _nvidia_float(_xml_text(element, path), path, text)


def _xml_text(element: ET.Element, path: str) -> str | None:
    found = element.find(path)
    return None if found is None or found.text is None else _nvidia_value(found.text)


# --- rocm-smi / amd-smi ----------------------------------------------------------------------


@dataclass(frozen=True)
class AmdGpu(FactResult):
    """One GPU as ``rocm-smi --json`` (or ``amd-smi --json``) reports it."""

    card: str  # card0, card1... in the tool's device order
    model: str | None  # marketing name as in PciGpu.model; None where the tool gives hex ids
    gfx_version: str | None  # gfx1100
    pci_bus: str | None  # 0000:03:00.0, like PciGpu.slot
    vram_total_mib: int | None
    vram_used_mib: int | None
    utilization_pct: float | None
    temperature_c: float | None
    power_w: float | None = None  # average (socket) graphics package power


ROCM_SMI_QUERY = (
    "rocm-smi --showproductname --showmeminfo vram --showuse --showtemp --showbus --json"
)
# The exporters' query: the power draw too.
ROCM_SMI_METRICS_QUERY = ROCM_SMI_QUERY.replace(" --json", " --showpower --json")

# rocm-smi renamed its JSON keys between releases ("Card series" up to 5.x, "Card Series" and
# "Device Name" in 6.x): keys are looked up case-insensitively, first match wins.
_ROCM_MODEL_KEYS = ("card series", "device name", "card model")
_ROCM_TEMPERATURE_KEYS = (
    "temperature (sensor edge) (c)",
    "temperature (sensor junction) (c)",
    "temperature (c)",
)
# ROCm up to 6.0 reports the average power, 6.1 and later the current socket power.
_ROCM_POWER_KEYS = (
    "average graphics package power (w)",
    "current socket graphics package power (w)",
)
_MIB = 1024 * 1024


def parse_rocm_smi_json(text: str) -> list[AmdGpu]:
    """Parse ``rocm-smi ... --json`` (any mix of --show* flags, ROCm 2.x to 6.x).

    + text: the command's whole output; warning lines before the JSON are skipped
    """
    if not text.strip() or "No JSON data to report" in text:
        return []
    data = _json_payload(text, "rocm-smi")
    if not isinstance(data, dict):
        raise FactParseError("rocm-smi", "expected a JSON object of cards", text)
    gpus = []
    for card, raw in data.items():
        if not card.startswith("card") or not isinstance(raw, dict):
            continue  # "system" holds the driver version
        values = {key.lower(): str(value) for key, value in raw.items()}
        total = _rocm_number(values.get("vram total memory (b)"))
        used = _rocm_number(values.get("vram total used memory (b)"))
        gpus.append(
            AmdGpu(
                card=card,
                model=_first(_rocm_name(values.get(key)) for key in _ROCM_MODEL_KEYS),
                gfx_version=_rocm_text(values.get("gfx version")),
                pci_bus=_rocm_text(values.get("pci bus"), lower=True),
                vram_total_mib=None if total is None else int(total // _MIB),
                vram_used_mib=None if used is None else int(used // _MIB),
                utilization_pct=_rocm_number(values.get("gpu use (%)")),
                temperature_c=_first(_rocm_number(values.get(k)) for k in _ROCM_TEMPERATURE_KEYS),
                power_w=_first(_rocm_number(values.get(key)) for key in _ROCM_POWER_KEYS),
            )
        )
    return gpus


def _first(values: Iterable[T | None]) -> T | None:
    return next((value for value in values if value is not None), None)


def _json_payload(text: str, tool: str) -> Any:
    # Tools print warnings (stderr mixed in, Python SyntaxWarnings) before their JSON.
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip()[:1] in ("{", "[")), None)
    if start is None:
        raise FactParseError(tool, "no JSON in the output", text)
    try:
        return json.loads("\n".join(lines[start:]))
    except json.JSONDecodeError as error:
        raise FactParseError(tool, f"invalid JSON ({error})", text) from error


def _rocm_text(value: str | None, lower: bool = False) -> str | None:
    if value is None or value.strip() in ("", "N/A"):
        return None
    return value.strip().lower() if lower else value.strip()


def _rocm_name(value: str | None) -> str | None:
    text = _rocm_text(value)
    # Older releases put hex ids ("0x1002") where the name belongs.
    if text is None or re.fullmatch(r"0x[0-9a-fA-F]+", text):
        return None
    return _marketing_name(text)


def _rocm_number(value: str | None) -> float | None:
    text = _rocm_text(value)
    if text is None:
        return None
    number = re.search(r"-?\d+(?:\.\d+)?", text)
    if not number:
        raise FactParseError("rocm-smi", f"expected a number, got {text!r}")
    return float(number[0])


def parse_amd_smi_json(text: str) -> list[AmdGpu]:
    """Parse ``amd-smi static --json`` and/or ``amd-smi metric --json``.

    Older amd-smi prints a JSON list of GPUs, newer ones ``{"gpu_data": [...]}``; both are
    read. Fields the command did not report are None.

    + text: the command's whole output; warning lines before the JSON are skipped
    """
    if not text.strip():
        return []
    data = _json_payload(text, "amd-smi")
    entries = data.get("gpu_data") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise FactParseError("amd-smi", "expected a list of GPUs or {'gpu_data': [...]}", text)
    gpus = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("gpu"), int):
            raise FactParseError("amd-smi", "a GPU entry has no 'gpu' number", text)
        asic, bus, vram = entry.get("asic", {}), entry.get("bus", {}), entry.get("vram", {})
        memory, usage, temperature, power = (
            entry.get("mem_usage", {}),
            entry.get("usage", {}),
            entry.get("temperature", {}),
            entry.get("power", {}),
        )
        gpus.append(
            AmdGpu(
                card=f"card{entry['gpu']}",
                model=_rocm_name(asic.get("market_name")),
                gfx_version=_rocm_text(asic.get("target_graphics_version")),
                pci_bus=_rocm_text(bus.get("bdf"), lower=True),
                # metric reports mem_usage.total_vram; static reports vram.size (or vram_size)
                vram_total_mib=_first(
                    _amd_mib(measure)
                    for measure in (
                        memory.get("total_vram"),
                        vram.get("size"),
                        vram.get("vram_size"),
                    )
                ),
                vram_used_mib=_amd_mib(memory.get("used_vram")),
                utilization_pct=_amd_value(usage.get("gfx_activity")),
                temperature_c=_first(
                    _amd_value(temperature.get(sensor)) for sensor in ("edge", "hotspot")
                ),
                power_w=_amd_value(power.get("socket_power")),
            )
        )
    return gpus


def _amd_value(measure: Any) -> float | None:
    # amd-smi values are {"value": 42, "unit": "%"} or the string "N/A".
    if isinstance(measure, dict) and isinstance(measure.get("value"), int | float):
        return float(measure["value"])
    return None


def _amd_mib(measure: Any) -> int | None:
    value = _amd_value(measure)
    if value is None:
        return None
    unit = measure.get("unit", "MB")
    # amd-smi labels MiB as "MB".
    return int(value * 1024) if unit == "GB" else int(value)


# --- the class of machine --------------------------------------------------------------------


@dataclass(frozen=True)
class GpuState(FactResult):
    """What kind of GPU machine a host is, and whether its compute stack works."""

    hardware_class: HardwareClass  # hybrid: an iGPU next to a dGPU of another vendor
    driver_loaded: bool  # the primary GPU is bound to its vendor's compute driver
    compute: Compute  # cuda/rocm only when the driver is loaded and the tool sees GPUs
    primary: PciGpu | None  # the GPU that does the work: NVIDIA, else AMD, else Intel


def detect_gpu_state(pci: list[PciGpu], nvidia: list[NvidiaGpu], amd: list[AmdGpu]) -> GpuState:
    """Combine the three GPU facts into one verdict.

    Display devices of other vendors (a server's ASPEED BMC, a VM's virtual VGA) are
    ignored.

    + pci: the PciGpus fact
    + nvidia: the NvidiaGpus fact
    + amd: the AmdGpus fact
    """
    known = [gpu for gpu in pci if gpu.vendor != "other"]
    primary = next(
        (gpu for vendor in ("nvidia", "amd", "intel") for gpu in known if gpu.vendor == vendor),
        None,
    )
    if primary is None:
        return GpuState(hardware_class="none", driver_loaded=False, compute="none", primary=None)
    vendors = {gpu.vendor for gpu in known}
    hardware_class = "hybrid" if len(vendors) > 1 else _CLASS_OF_VENDOR[primary.vendor]
    driver_loaded = primary.driver in COMPUTE_DRIVERS[primary.vendor]
    compute: Compute = "none"
    if driver_loaded and primary.vendor == "nvidia" and nvidia:
        compute = "cuda"
    elif driver_loaded and primary.vendor == "amd" and amd:
        compute = "rocm"
    return GpuState(hardware_class, driver_loaded, compute, primary)
