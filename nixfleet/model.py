"""The fleet model: one validated description of a host.

Every consumer (pyinfra inventory, nix/ host data, secrets rules, lab, checks) reads this model,
so a typo or a wrong type is rejected here, once, with the host and field it concerns.
Feature flag names and nesting follow the original configuration (features.monitoring.serverHost,
...), because the flake's modules use the same names.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
import subprocess
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from nixfleet import nvidia
from nixfleet.errors import InventoryError

HardwareClass = Literal["amd", "nvidia", "intel"]
Role = Literal["workstation", "laptop", "server", "sff"]
MonitoringMode = Literal["server", "client", "standalone"]
ProviderName = Literal["openai", "anthropic", "gemini", "ollama"]

# Host names end up in file paths, systemd unit names, Nix attribute names and shell commands.
SAFE_HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
SAFE_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SAFE_ADDRESS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384")


def _check_host_name(value: str) -> str:
    if not SAFE_HOST_NAME.match(value):
        raise ValueError(f"unsafe host name {value!r} (use lowercase letters, digits and '-')")
    return value


def _check_user_name(value: str) -> str:
    if not SAFE_USER_NAME.match(value):
        raise ValueError(f"unsafe user name {value!r}")
    return value


def _check_address(value: str) -> str:
    if not SAFE_ADDRESS.match(value):
        raise ValueError(f"unsafe SSH address {value!r}")
    return value


def parse_ssh_public_key(value: str) -> tuple[str, bytes]:
    """Return (key type, key blob) of an OpenSSH public key line, or raise ValueError."""
    parts = value.split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ValueError(f"not an SSH public key (expected one of {', '.join(SSH_KEY_TYPES)})")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("SSH public key is not valid base64") from None
    # The blob starts with the length-prefixed key type; it must agree with the prefix.
    name_len = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + name_len].decode(errors="replace") != parts[0]:
        raise ValueError(f"SSH public key blob does not match its type {parts[0]}")
    return parts[0], blob


def _check_ssh_key(value: str) -> str:
    parse_ssh_public_key(value)
    return value


HostName = Annotated[str, AfterValidator(_check_host_name)]

UserName = Annotated[str, AfterValidator(_check_user_name)]
Address = Annotated[str, AfterValidator(_check_address)]
SshPublicKey = Annotated[str, AfterValidator(_check_ssh_key)]


def _check_build_on(value: str) -> str:
    """target, local, or a host's name (the inventory checks that the host is a builder)."""
    if value in ("target", "local") or SAFE_HOST_NAME.match(value):
        return value
    raise ValueError(f"target, local or a fleet host's name, got {value!r}")
HexId = Annotated[str, Field(pattern=r"^[0-9a-f]{4}$")]
PciSlot = Annotated[str, Field(pattern=r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")]
NixBusId = Annotated[str, Field(pattern=r"^PCI:\d+:\d+:\d+$")]


class Strict(BaseModel):
    """Unknown keys and wrong types are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- feature flags (names and nesting of the original's features.*) -------------------------


class Development(Strict):
    enable: bool = False
    python: bool = False
    go: bool = False
    nodejs: bool = False
    java: bool = False
    lua: bool = False
    nix: bool = False
    shell: bool = False
    ansible: bool = False
    cargo: bool = False
    github: bool = False
    devshell: bool = False


class Virtualization(Strict):
    enable: bool = False
    docker: bool = False
    podman: bool = False
    incus: bool = False
    spice: bool = False
    libvirt: bool = False
    sunshine: bool = False


class Cloud(Strict):
    enable: bool = False
    aws: bool = False
    azure: bool = False
    google: bool = False
    k8s: bool = False
    terraform: bool = False


class Security(Strict):
    enable: bool = False
    onepassword: bool = False
    gnupg: bool = False


class Networking(Strict):
    enable: bool = False
    tailscale: bool = False


class AiProviders(Strict):
    """What /etc/ai-providers.json and ai-cli use on this host."""

    enable: bool = False
    defaultProvider: ProviderName = "anthropic"
    enableFallback: bool = True
    costOptimization: bool = False
    timeout: Annotated[int, Field(gt=0, le=3600)] = 30
    maxRetries: Annotated[int, Field(ge=0, le=10)] = 3
    enabled: list[ProviderName] = ["openai", "anthropic", "gemini", "ollama"]

    @model_validator(mode="after")
    def _default_is_enabled(self) -> AiProviders:
        if self.enable and self.defaultProvider not in self.enabled:
            raise ValueError(
                f"defaultProvider {self.defaultProvider!r} is not in enabled {self.enabled}"
            )
        return self


class Ai(Strict):
    enable: bool = False
    ollama: bool = False
    providers: AiProviders = AiProviders()


class Programs(Strict):
    lazygit: bool = False
    thunderbird: bool = False
    obsidian: bool = False
    office: bool = False
    webcam: bool = False
    print: bool = False


class MonitoringFeatures(Strict):
    nodeExporter: bool = True
    nixosMetrics: bool = True
    serviceMetrics: bool = True
    aiMetrics: bool = False
    networkMetrics: bool = False
    alerting: bool = False


class Monitoring(Strict):
    enable: bool = False
    mode: MonitoringMode = "client"
    serverHost: HostName | None = None
    features: MonitoringFeatures = MonitoringFeatures()


class Features(Strict):
    development: Development = Development()
    virtualization: Virtualization = Virtualization()
    cloud: Cloud = Cloud()
    security: Security = Security()
    networking: Networking = Networking()
    ai: Ai = Ai()
    programs: Programs = Programs()
    monitoring: Monitoring = Monitoring()


# --- hardware ------------------------------------------------------------------------------


class Gpu(Strict):
    """One PCI display device; the lab's stand-in tools answer from these values."""

    vendor: Literal["amd", "nvidia", "intel"]
    model: str
    vendorId: HexId
    deviceId: HexId
    slot: PciSlot
    driver: str
    vramMiB: Annotated[int, Field(ge=0)] = 0
    uuid: str | None = None
    gfx: str | None = None

    @model_validator(mode="after")
    def _nvidia_architecture_known(self) -> Gpu:
        if self.vendor == "nvidia" and self.architecture is None:
            raise ValueError(
                f"model: cannot tell the NVIDIA architecture of {self.model!r}; name the GPU as "
                "lspci does, chip first (e.g. 'GP106GL [Quadro P2000]')"
            )
        return self

    @property
    def architecture(self) -> nvidia.Architecture | None:
        """An NVIDIA GPU's architecture, from the chip in its pci.ids name (None otherwise)."""
        return nvidia.architecture(self.model) if self.vendor == "nvidia" else None


class Graphics(Strict):
    """Per hardware class (group_data/<class>.py): driver and compute stack."""

    videoDriver: Literal["amdgpu", "nvidia", "modesetting"]
    compute: Literal["rocm", "cuda", "none"]
    # An attribute of nixpkgs' nvidiaPackages; it must support every NVIDIA GPU of the host
    # (nixfleet/nvidia.py). None: the module's default, stable.
    nvidiaPackage: nvidia.NvidiaBranch | None = None
    nvidiaOpen: bool = False
    mediaDriver: str | None = None


class Prime(Strict):
    """NVIDIA PRIME for hybrid laptops (hardware.nvidia.prime.*)."""

    sync: bool = True
    intelBusId: NixBusId
    nvidiaBusId: NixBusId


class Rocm(Strict):
    gfxVersion: str
    hsaOverrideGfxVersion: str | None = None


# --- people, system, connection ------------------------------------------------------------


class User(Strict):
    name: UserName
    fullName: str
    email: str = ""
    sshKey: SshPublicKey
    groups: list[str] = []


class Paths(Strict):
    flakeDir: str = "/etc/nixos"
    externalDisk: str | None = None


class System(Strict):
    """Fleet-wide defaults live in group_data/all.py; a host may override the whole block."""

    timezone: str = "UTC"
    locale: str = "en_US.UTF-8"
    keyboardLayouts: list[str] = ["us"]
    nameservers: list[str] = []
    hostMappings: dict[str, str] = {}
    environment: dict[str, str] = {}
    theme: dict[str, str] = {}
    nfsExports: list[str] = []
    paths: Paths = Paths()
    stateVersion: str = "25.05"


class Ssh(Strict):
    """How the deployer reaches the host (the real fleet; the lab overrides address and key)."""

    host: Address | None = None
    user: UserName = "root"
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    hostKey: SshPublicKey | None = None


SAFE_CHECK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@cache
def _sh_syntax_error(command: str) -> str | None:
    """sh's own complaint about a command's syntax (`sh -n`: parsed, not run), or None."""
    result = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True)
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines()
    return lines[-1].removeprefix("sh: ") if lines else f"sh -n exited {result.returncode}"


class HealthCheck(Strict):
    """A check of the health gate (morph style): a command on the host, or an HTTP GET from
    the deployer ({address} in the URL is the host's SSH address)."""

    name: Annotated[str, Field(pattern=SAFE_CHECK_NAME.pattern)]
    command: str | None = None
    http: str | None = None
    expectStatus: Annotated[int, Field(ge=100, le=599)] = 200
    # Seconds one attempt may take; attempts repeat every `period` seconds until the gate's
    # healthTimeout.
    timeout: Annotated[int, Field(ge=1, le=600)] = 10
    period: Annotated[int, Field(ge=1, le=60)] = 2

    @model_validator(mode="after")
    def _one_kind(self) -> HealthCheck:
        if (self.command is None) == (self.http is None):
            raise ValueError("a check has exactly one of command or http")
        if self.command is not None and ("\t" in self.command or "\n" in self.command):
            raise ValueError("command: one line, no tabs")
        if self.command is not None and (error := _sh_syntax_error(self.command)):
            # A check that cannot run could never pass: it would fail every deploy.
            raise ValueError(f"command: not valid sh, the check could never pass: {error}")
        if self.http is not None and not self.http.startswith(("http://", "https://")):
            raise ValueError("http: must be an http:// or https:// URL")
        return self


# The generated alert rules' names (nixfleet/monitoring/alerts.py makes them; a unit test keeps
# the two equal: the monitoring package imports this module, so this one cannot import it).
ALERT_NAMES = ("HighCPUUsage", "HighMemoryUsage", "LowDiskSpace", "HostDown",
               "HighNetworkTraffic", "NixStoreSize", "RebootRequired", "HostNotVerified",
               "RebootPending", "SystemdServiceFailed", "SystemdUnitsFailed",
               "GpuTemperatureHigh", "ExporterDown", "ExporterSourceFailing")
# The fleet's own rules that a bad generation sets off soon (a deploy's alert gate watches them).
ALERT_GATE_DEFAULT = ("HostDown", "ExporterDown", "ExporterSourceFailing", "SystemdServiceFailed",
                      "SystemdUnitsFailed")
BATCH = re.compile(r"^[1-9][0-9]?%$|^100%$")
PROMETHEUS_DURATION = re.compile(r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$")


class AlertGate(Strict):
    """After each wave of a canary rollout: the fleet's Prometheus is asked, for `settle`
    seconds, for alerts firing on the wave's hosts that were not firing before the wave."""

    # Seconds to watch after the wave (none: the target's default, 180 for real hosts; long
    # enough for a scrape, a rule evaluation and a rule's `for`).
    settle: Annotated[int, Field(ge=0, le=3600)] | None = None
    # Which alerts count: these names, and any alert with one of these severities.
    alerts: list[str] = list(ALERT_GATE_DEFAULT)
    severities: list[Literal["critical", "warning", "info"]] = []

    @field_validator("alerts")
    @classmethod
    def _known_alerts(cls, names: list[str]) -> list[str]:
        for name in names:
            _known_alert(name)
        return names


def _known_alert(name: str) -> None:
    known = ALERT_NAMES
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown alert {name!r}{hint}; known: {', '.join(known)}")


class AlertRule(Strict):
    """A change to one of the generated alert rules (nix/monitoring/alerts.yml)."""

    # "for" is Python's: the field is for_, written "for" in data and in every dump.
    model_config = ConfigDict(**Strict.model_config, serialize_by_alias=True,
                              validate_by_name=True)

    # Prometheus's `for`: how long the condition holds before the alert fires.
    for_: Annotated[str, Field(alias="for", pattern=PROMETHEUS_DURATION.pattern)]


class Deploy(Strict):
    """How deploys treat this host (group_data/all.py sets the fleet's defaults)."""

    # The longest a build may hold a host's deploy lock (seconds); it is then stopped.
    lockTtl: Annotated[int, Field(ge=60, le=86400)] = 3600
    # Roll back when activation or the health gate fails (--no-rollback turns it off).
    rollback: bool = True
    # Seconds the deployer has to confirm over a fresh SSH connection after a switch; without
    # a confirmation the host returns to its previous generation by itself.
    confirmTimeout: Annotated[int, Field(ge=5, le=3600)] = 30
    # Seconds the health gate retries before it fails.
    healthTimeout: Annotated[int, Field(ge=1, le=3600)] = 60
    # Where the host's system is built: target (the host itself, as nixos-rebuild does by
    # default); local (the deployer, which copies the closure with nix copy); or a fleet
    # member's name, a builder: every target naming it is built there in one Nix invocation,
    # signed with the fleet's cache key, and fetched by the target from it (nixfleet/builder.py).
    buildOn: Annotated[str, AfterValidator(_check_build_on)] = "target"
    # When the builder fails or cannot be reached: none (its targets fail, the builder named)
    # or target (they build for themselves).
    buildFallback: Literal["none", "target"] = "none"
    # auto: reboot after the switch when the kernel, initrd or kernel modules changed.
    reboot: Literal["never", "auto"] = "never"
    checks: list[HealthCheck] = []
    # A unit that had already failed before a switch does not fail it (it is a warning; NixOS's
    # switch-to-configuration exits 4 for any failed unit). True: any failed unit fails it.
    strictUnits: bool = False
    # "canary" (or --canary, --data canary=true): waves, one host per hardware class first.
    strategy: Literal["all", "canary"] = "all"
    # This host is its class's canary (else the first host of its class in the inventory).
    canary: bool = False
    # After the canaries, the rest in waves of this many hosts, or this share ("50%", as
    # Ansible's serial); none: the rest in one wave.
    batch: int | str | None = None
    alertGate: AlertGate = AlertGate()

    @field_validator("batch")
    @classmethod
    def _batch(cls, value: int | str | None) -> int | str | None:
        if value is None or (isinstance(value, int) and value >= 1) or (
                isinstance(value, str) and BATCH.match(value)):
            return value
        raise ValueError(f"a number of hosts (e.g. 2) or a share (e.g. '50%'), got {value!r}")
    # Run post-deploy verification (tests/fleet, `nixfleet verify`) on the hosts a switch, test
    # or boot with reboot changed; a failed check makes the deploy exit 1 (no rollback: the
    # health gate decides that). `--data no_verify=true` turns it off for one run.
    verify: bool = True


class Boot(Strict):
    """The host's boot partition and how many generations its boot loader keeps (the real
    flake sets systemd-boot's or lanzaboote's configurationLimit from it; deploys check the
    boot partition's free space against it before they change anything)."""

    # systemd-boot: one kernel and one initrd file per store path, shared by the generations
    # that boot them, obsolete ones removed before new ones are copied. lanzaboote: one
    # image per generation (kernel and initrd in it), the old ones removed after the new one
    # is written, so an install needs room for configurationLimit + 1 of them at its peak.
    loader: Literal["systemd-boot", "lanzaboote"] = "systemd-boot"
    # Boot entries (generations) the loader keeps.
    configurationLimit: Annotated[int, Field(ge=1, le=1000)] = 10
    # The boot partition's size and one generation's kernel + initrd, in MiB, where known:
    # `nixfleet validate` warns when configurationLimit + 1 entries cannot fit.
    espSize: Annotated[int, Field(ge=1)] | None = None
    entrySize: Annotated[int, Field(ge=1)] | None = None
    # MiB that must stay free on the boot partition beyond the pre-flight estimate (a new
    # kernel or initrd may be larger than the running one).
    espGuard: Annotated[int, Field(ge=0)] = 16


class Host(Strict):
    name: HostName
    hardware_class: HardwareClass
    roles: Annotated[list[Role], Field(min_length=1)]
    description: str = ""
    cpu: str = ""
    gpus: list[Gpu] = []
    graphics: Graphics
    # A graphical session: the flake runs the X server (nix/modules/graphical.nix), which the
    # GPU's driver and NVIDIA PRIME sync configure; the desktop in it is the owner's choice.
    graphical: bool = False
    prime: Prime | None = None
    rocm: Rocm | None = None
    users: Annotated[list[User], Field(min_length=1)]
    features: Features = Features()
    system: System = System()
    ssh: Ssh = Ssh()
    deploy: Deploy = Deploy()
    boot: Boot = Boot()
    # Changes to the generated alert rules, by alert name (the monitoring server's data
    # decides: alerts.yml is rendered from it), e.g. {"ExporterDown": {"for": "30s"}}.
    alertRules: dict[str, AlertRule] = {}

    @field_validator("alertRules")
    @classmethod
    def _known_rules(cls, rules: dict[str, AlertRule]) -> dict[str, AlertRule]:
        for name in rules:
            _known_alert(name)
        return rules

    @model_validator(mode="after")
    def _hardware_agrees(self) -> Host:
        if self.prime and self.hardware_class != "nvidia":
            raise ValueError("prime: only an nvidia-class host has NVIDIA PRIME")
        if self.prime and self.prime.sync and not self.graphical:
            raise ValueError("prime.sync: PRIME sync only configures the X server; set "
                             "graphical: true (or sync: false)")
        if self.rocm and self.hardware_class != "amd":
            raise ValueError("rocm: only an amd-class host runs ROCm")
        expected_compute = {"amd": "rocm", "nvidia": "cuda", "intel": "none"}[self.hardware_class]
        if self.graphics.compute not in (expected_compute, "none"):
            raise ValueError(
                f"graphics.compute: {self.graphics.compute} does not fit a "
                f"{self.hardware_class}-class host"
            )
        if self.gpus and not any(g.vendor == self.hardware_class for g in self.gpus):
            raise ValueError(f"gpus: no {self.hardware_class} GPU listed for this class")
        self._nvidia_driver_supports_the_gpus()
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError("users: duplicate user name")
        return self

    def _nvidia_driver_supports_the_gpus(self) -> None:
        if self.graphics.videoDriver != "nvidia":
            return
        name = self.graphics.nvidiaPackage or nvidia.DEFAULT_BRANCH
        branch = nvidia.BRANCHES[name]
        for gpu in self.gpus:
            arch = gpu.architecture
            if arch is None:
                continue
            if not branch.supports(arch):
                choices = nvidia.branches_for(arch)
                hint = f"; use {choices[0]}" if choices else ""
                raise ValueError(
                    f"graphics.nvidiaPackage: {name} (the {branch.series} driver) does not "
                    f"support the {gpu.model} ({arch.capitalize()}){hint}"
                )
            if self.graphics.nvidiaOpen and not nvidia.open_modules_support(arch):
                raise ValueError(
                    f"graphics.nvidiaOpen: NVIDIA's open kernel modules need Turing or newer; "
                    f"the {gpu.model} is {arch.capitalize()}"
                )

    @property
    def address(self) -> str:
        return self.ssh.host or self.name

    @property
    def admin(self) -> User:
        """The host's primary user (owner of api-* secrets, like the original's `username`)."""
        return self.users[0]

    def nix_data(self) -> dict[str, Any]:
        """What the flake reads from nix/hosts/<name>.json: everything but how to connect."""
        return self.model_dump(mode="json", exclude={"ssh", "deploy", "alertRules"})


# The model's own keys; anything else in host data must be pyinfra's (ssh_*, _sudo, ...).
MODEL_KEYS = frozenset(Host.model_fields) - {"name"}
PASSTHROUGH_PREFIXES = ("ssh_", "_")


def format_validation_error(host: str, error: ValidationError) -> str:
    """One line: the host, the dotted field path and what is wrong with it."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        known = _known_fields_at(first["loc"][:-1])
        hint = difflib.get_close_matches(str(first["loc"][-1]), known, n=1)
        message = "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        message += f"; known: {', '.join(known)}" if known else ""
    else:
        message = first["msg"].removeprefix("Value error, ")
        if first["type"].endswith("_type") or first["type"] == "literal_error":
            message += f", got {first['input']!r}"
    return f"host {host}: {location}: {message}" if location else f"host {host}: {message}"


def _known_fields_at(location: tuple[Any, ...]) -> list[str]:
    """Field names of the model at a dotted location (for 'did you mean')."""
    model: Any = Host
    for part in location:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)),
                     None)
        if model is None:
            return []
    return sorted(model.model_fields)


def validate_host(name: str, data: dict[str, Any]) -> Host:
    """Validate one host's merged data; raise InventoryError with a one-line message."""
    if not isinstance(name, str) or not SAFE_HOST_NAME.match(name):
        raise InventoryError(f"host {name!r}: unsafe host name (use lowercase letters, digits "
                             "and '-')")
    model_data = {k: v for k, v in data.items() if not k.startswith(PASSTHROUGH_PREFIXES)}
    try:
        return Host.model_validate({"name": name, **model_data})
    except ValidationError as error:
        raise InventoryError(format_validation_error(name, error)) from None
