"""The lab's GPU stand-ins answer in formats the real parsers read (a round trip); the Ollama
stand-in speaks the part of Ollama's HTTP API and CLI that checks and ai-cli use."""

from __future__ import annotations

import ast
import http.client
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nixfleet.facts.gpu import (
    NVIDIA_QUERY,
    ROCM_SMI_QUERY,
    detect_gpu_state,
    parse_lspci_nnk,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_xml,
    parse_rocm_smi_json,
)
from nixfleet.lab.secrets import nix_public_key, nix_secret_key

STANDINS = Path(__file__).resolve().parents[2] / "nixfleet" / "lab" / "standins"
TOOLS = ("lspci", "nvidia-smi", "rocm-smi")
REAL_NO_DRIVER = Path(__file__).resolve().parent.parent / "fixtures" / "gpu"

INTEL_IGPU = {
    "vendor": "intel",
    "model": "CoffeeLake-H GT2 [UHD Graphics 630]",
    "vendorId": "8086",
    "deviceId": "3e9b",
    "slot": "0000:00:02.0",
    "driver": "i915",
    "vramMiB": 0,
}
RTX_2070 = {
    "vendor": "nvidia",
    "model": "TU106M [GeForce RTX 2070 Mobile]",
    "vendorId": "10de",
    "deviceId": "1f10",
    "slot": "0000:01:00.0",
    "driver": "nvidia",
    "vramMiB": 8192,
    "uuid": "GPU-5b1f4f7e-2c1d-4f0a-9a55-0e3b7c2d9a11",
    "gfx": None,
}
RX_7900 = {
    "vendor": "amd",
    "model": "Navi 31 [Radeon RX 7900 XT/7900 XTX]",
    "vendorId": "1002",
    "deviceId": "744c",
    "slot": "0000:03:00.0",
    "driver": "amdgpu",
    "vramMiB": 24576,
    "gfx": "gfx1100",
}
RAZER = {
    "hostname": "razer",
    "hardwareClass": "nvidia",
    "nvidiaDriverVersion": "550.144.03",
    "cudaVersion": "12.4",
    "gpus": [INTEL_IGPU, RTX_2070],
}
P620 = {"hostname": "p620", "hardwareClass": "amd", "gpus": [RX_7900]}


class Lab:
    """One lab host's hardware file, booted kernel-module list and unloaded drivers (its /run),
    and its tools."""

    def __init__(self, directory: Path) -> None:
        self.hardware = directory / "hardware.json"
        self.kernel_modules = directory / "kernel-modules"
        self.unloaded = directory / "run" / "unloaded-drivers"

    def host(self, hardware: dict[str, Any], modules: list[str] | None = None) -> None:
        self.hardware.write_text(json.dumps(hardware))
        if modules is None:
            self.kernel_modules.unlink(missing_ok=True)  # no list: every driver counts as loaded
        else:
            self.kernel_modules.write_text("".join(f"{m}\n" for m in modules))

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        tool, *args = shlex.split(command)
        env = {
            **os.environ,
            "NIXFLEET_LAB_HARDWARE": str(self.hardware),
            "NIXFLEET_LAB_KERNEL_MODULES": str(self.kernel_modules),
            "NIXFLEET_LAB_UNLOADED_DRIVERS": str(self.unloaded),
        }
        return subprocess.run(
            [sys.executable, str(STANDINS / tool), *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    def stdout(self, command: str) -> str:
        result = self.run(command)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


@pytest.mark.parametrize("tool", TOOLS)
def test_each_stand_in_is_an_executable_stdlib_only_script_that_says_what_it_is(tool: str) -> None:
    path = STANDINS / tool
    lines = path.read_text().splitlines()

    assert lines[0] == "#!/usr/bin/python3"
    assert lines[1].startswith(f"# STAND-IN for the real {tool}")
    assert os.access(path, os.X_OK)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= sys.stdlib_module_names


def test_hybrid_laptop_round_trip(lab: Lab) -> None:
    lab.host(RAZER)

    pci = parse_lspci_nnk(lab.stdout("lspci -nnk"))
    nvidia = parse_nvidia_smi_csv(lab.stdout(NVIDIA_QUERY))

    assert [(g.slot, g.vendor, g.device_id, g.device_name, g.driver) for g in pci] == [
        ("0000:00:02.0", "intel", "3e9b", "CoffeeLake-H GT2 [UHD Graphics 630]", "i915"),
        ("0000:01:00.0", "nvidia", "1f10", "TU106M [GeForce RTX 2070 Mobile]", "nvidia"),
    ]
    assert [
        (g.index, g.uuid, g.driver_version, g.memory_total_mib, g.mig_mode) for g in nvidia
    ] == [(0, RTX_2070["uuid"], "550.144.03", 8192, None)]
    state = detect_gpu_state(pci, nvidia, [])
    assert (state.hardware_class, state.driver_loaded, state.compute) == ("hybrid", True, "cuda")


def test_nvidia_smi_xml_says_what_the_csv_says(lab: Lab) -> None:
    lab.host(RAZER)

    (from_xml,) = parse_nvidia_smi_xml(lab.stdout("nvidia-smi -q -x"))
    (from_csv,) = parse_nvidia_smi_csv(lab.stdout(NVIDIA_QUERY))

    assert from_xml.pci_bus_id == "0000:01:00.0"
    assert from_xml == from_csv.__class__(**{**vars(from_csv), "pci_bus_id": "0000:01:00.0"})


def test_nvidia_smi_with_header_and_units(lab: Lab) -> None:
    lab.host(RAZER)

    output = lab.stdout("nvidia-smi --query-gpu=index,name,memory.total,power.draw --format=csv")

    assert output.splitlines()[0] == "index, name, memory.total [MiB], power.draw [W]"
    (gpu,) = parse_nvidia_smi_csv(output)
    assert (gpu.memory_total_mib, gpu.power_draw_w) == (8192, 12.34)


def test_two_mig_enabled_datacenter_gpus(lab: Lab) -> None:
    h100 = {
        "vendor": "nvidia",
        "model": "GH100 [H100 SXM5 80GB]",
        "vendorId": "10de",
        "deviceId": "2330",
        "driver": "nvidia",
        "vramMiB": 81559,
        "migMode": "Enabled",
    }
    lab.host(
        {
            "nvidiaDriverVersion": "590.48.01",
            "gpus": [{**h100, "slot": "0000:19:00.0"}, {**h100, "slot": "0000:3b:00.0"}],
        }
    )

    gpus = parse_nvidia_smi_csv(lab.stdout(NVIDIA_QUERY))

    assert [(g.index, g.name, g.mig_mode) for g in gpus] == [
        (0, "NVIDIA H100 SXM5 80GB", True),
        (1, "NVIDIA H100 SXM5 80GB", True),
    ]
    assert [g.pci_bus_id for g in parse_nvidia_smi_xml(lab.stdout("nvidia-smi -x -q"))] == [
        "0000:19:00.0",
        "0000:3b:00.0",
    ]
    # lspci lists both cards; only display-class devices are kept.
    assert {g.slot for g in parse_lspci_nnk(lab.stdout("lspci -nnk"))} == {
        "0000:19:00.0",
        "0000:3b:00.0",
    }


def test_nvidia_driver_not_loaded(lab: Lab) -> None:
    lab.host(RAZER, modules=["i915"])

    result = lab.run(NVIDIA_QUERY)
    pci = parse_lspci_nnk(lab.stdout("lspci -nnk"))

    assert result.returncode == 9
    assert result.stdout == (REAL_NO_DRIVER / "nvidia-smi-driver-not-loaded.txt").read_text()
    assert [g.driver for g in pci] == ["i915", None]
    assert pci[1].modules == ("nvidiafb", "nouveau", "nvidia_drm", "nvidia")
    state = detect_gpu_state(pci, [], [])
    assert (state.hardware_class, state.driver_loaded, state.compute) == ("hybrid", False, "none")


def test_nvidia_smi_list_table_version_and_bad_fields(lab: Lab) -> None:
    lab.host(RAZER)

    assert lab.stdout("nvidia-smi -L") == (
        f"GPU 0: NVIDIA GeForce RTX 2070 Mobile (UUID: {RTX_2070['uuid']})\n"
    )
    table = lab.stdout("nvidia-smi")
    assert "Driver Version: 550.144.03" in table and "CUDA Version: 12.4" in table
    assert {len(line) for line in table.splitlines()[1:] if line} == {91}
    assert "DRIVER version      : 550.144.03" in lab.stdout("nvidia-smi --version")
    bad = lab.run("nvidia-smi --query-gpu=index,bogus --format=csv")
    assert (bad.returncode, bad.stdout) == (2, 'Field "bogus" is not a valid field to query.\n')


def test_amd_workstation_round_trip(lab: Lab) -> None:
    lab.host(P620)

    pci = parse_lspci_nnk(lab.stdout("lspci -nnk"))
    (amd,) = parse_rocm_smi_json(lab.stdout(ROCM_SMI_QUERY))

    assert (amd.model, amd.gfx_version, amd.vram_total_mib) == (
        "Radeon RX 7900 XT/7900 XTX",
        "gfx1100",
        24576,
    )
    assert amd.pci_bus == pci[0].slot == "0000:03:00.0"
    assert amd.model == pci[0].model
    state = detect_gpu_state(pci, [], [amd])
    assert (state.hardware_class, state.driver_loaded, state.compute) == ("amd", True, "rocm")


def test_amdgpu_not_loaded(lab: Lab) -> None:
    lab.host(P620, modules=["nvme"])

    result = lab.run(ROCM_SMI_QUERY)

    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == "ERROR:root:Driver not initialized (amdgpu not found in modules)\n"
    assert parse_rocm_smi_json(result.stdout) == []
    assert parse_lspci_nnk(lab.stdout("lspci -nnk"))[0].driver is None


def test_rocm_smi_text_form_and_unknown_option(lab: Lab) -> None:
    lab.host(P620)

    assert "GPU[0]\t\t: GFX Version: gfx1100" in lab.stdout("rocm-smi --showproductname")
    assert lab.run("rocm-smi --bogus").returncode == 2


def test_lspci_plain_and_numeric_forms(lab: Lab) -> None:
    lab.host(RAZER)

    assert lab.stdout("lspci").splitlines() == [
        "00:02.0 VGA compatible controller: Intel Corporation CoffeeLake-H GT2 [UHD Graphics 630]",
        "01:00.0 3D controller: NVIDIA Corporation TU106M [GeForce RTX 2070 Mobile] (rev a1)",
    ]
    assert lab.stdout("lspci -n -D").splitlines() == [
        "0000:00:02.0 0300: 8086:3e9b",
        "0000:01:00.0 0302: 10de:1f10 (rev a1)",
    ]
    assert lab.run("lspci -x").returncode == 2


def test_a_host_without_a_hardware_file_has_no_gpus(lab: Lab) -> None:
    assert lab.stdout("lspci -nnk") == ""
    assert lab.run(NVIDIA_QUERY).returncode == 9
    assert lab.run(ROCM_SMI_QUERY).stdout == ""


# --- Ollama ----------------------------------------------------------------------------------

OLLAMA = STANDINS / "ollama"
LOADED = ["llama3.2:latest", "mistral-small3.1:latest"]


def said(model: str, text: str) -> str:
    """What the stand-in answers (deterministic, and it says what it is)."""
    return f'Lab stand-in for Ollama ({model}), no model ran. You said: "{text}"'


class Answer:
    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.status, self.content_type, self.text = status, content_type, body.decode()

    def json(self) -> Any:
        return json.loads(self.text)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]


class Ollama:
    """The stand-in serving on a free port, its models in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.models = directory / "models"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{self.port}",
                    "OLLAMA_MODELS": str(self.models)}
        self.process: subprocess.Popen[str] | None = None

    def serve(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, str(OLLAMA), "serve", *args],
                                        env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                self.call("GET", "/")
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"the Ollama stand-in did not start: {self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)

    def log(self) -> str:
        self.stop()
        return self.process.stderr.read() if self.process and self.process.stderr else ""

    def call(self, method: str, path: str, body: Any = None) -> Answer:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, data)
            response = connection.getresponse()
            return Answer(response.status, response.getheader("Content-Type", ""),
                          response.read())
        finally:
            connection.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(OLLAMA), *args], env=self.env,
                              capture_output=True, text=True, check=False, timeout=30)

    def manifest(self, model: str, tag: str = "latest") -> Path:
        return self.models / "manifests" / "registry.ollama.ai" / "library" / model / tag


@pytest.fixture
def ollama(tmp_path: Path) -> Iterator[Ollama]:
    server = Ollama(tmp_path)
    server.serve("--load-models", "mistral-small3.1,llama3.2")
    yield server
    server.stop()


def test_ollama_is_a_stdlib_only_script_that_says_it_is_a_stand_in() -> None:
    tree = ast.parse(OLLAMA.read_text())
    docstring = ast.get_docstring(tree) or ""
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}

    assert OLLAMA.read_text().startswith("#!/usr/bin/python3\n")
    assert docstring.startswith("STAND-IN for Ollama")
    assert os.access(OLLAMA, os.X_OK)
    assert imported <= sys.stdlib_module_names


def test_ollama_pulls_the_models_it_loads_and_lists_them_as_ollama_does(ollama: Ollama) -> None:
    root = ollama.call("GET", "/")
    tags = ollama.call("GET", "/api/tags").json()["models"]

    assert (root.status, root.text) == (200, "Ollama is running")
    assert ollama.call("GET", "/api/version").json() == {"version": "0.5.7"}
    assert [m["name"] for m in tags] == [m["model"] for m in tags] == LOADED
    for model in tags:
        assert set(model) >= {"name", "model", "modified_at", "size", "digest", "details"}
        assert re.fullmatch(r"[0-9a-f]{64}", model["digest"])
        assert isinstance(model["size"], int) and model["details"]["format"] == "gguf"
    assert tags[0]["details"]["family"] == "llama"
    assert ollama.manifest("mistral-small3.1").is_file()
    assert ollama.manifest("llama3.2").is_file()


def test_ollama_serve_pulls_only_the_missing_models(ollama: Ollama, tmp_path: Path) -> None:
    before = ollama.manifest("llama3.2").read_bytes(), ollama.manifest("llama3.2").stat()
    again = Ollama(tmp_path)  # a second server on the same models directory
    again.serve("--load-models", "llama3.2:latest,qwen2.5:0.5b")
    try:
        names = [m["name"] for m in again.call("GET", "/api/tags").json()["models"]]
    finally:
        log = again.log()

    assert names == ["llama3.2:latest", "mistral-small3.1:latest", "qwen2.5:0.5b"]
    assert log == "pulled qwen2.5:0.5b (nixfleet lab stand-in: no weights, no model runs here)\n"
    after = ollama.manifest("llama3.2")
    assert (after.read_bytes(), after.stat().st_mtime_ns) == (before[0], before[1].st_mtime_ns)


def test_ollama_shows_a_model_by_either_form_of_its_name(ollama: Ollama) -> None:
    short = ollama.call("POST", "/api/show", {"model": "llama3.2"})
    full = ollama.call("POST", "/api/show", {"model": "llama3.2:latest"})
    missing = ollama.call("POST", "/api/show", {"model": "llama3.2:70b"})

    assert short.status == 200 and short.json() == full.json()
    assert short.json()["details"]["family"] == "llama"
    assert short.json()["capabilities"] == ["completion"]
    assert (missing.status, missing.json()) == (404, {"error": "model 'llama3.2:70b' not found"})


def test_ollama_generate_streams_ndjson_chunks_then_the_counters(ollama: Ollama) -> None:
    answer = ollama.call("POST", "/api/generate",
                         {"model": "llama3.2", "prompt": "Why is the sky blue?"})

    assert answer.status == 200
    assert answer.content_type == "application/x-ndjson"
    *chunks, final = answer.lines()
    assert len(chunks) > 1 and all(c["done"] is False for c in chunks)
    assert "".join(c["response"] for c in chunks) == said("llama3.2", "Why is the sky blue?")
    assert {c["model"] for c in chunks} == {"llama3.2"}
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["response"] == ""
    assert final["eval_count"] == len(chunks)
    assert final["prompt_eval_count"] == 5
    for counter in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[counter], int) and final[counter] >= 0


def test_ollama_generate_without_streaming_is_one_object(ollama: Ollama) -> None:
    prompt = "one two three four five six seven eight nine ten eleven twelve thirteen"
    answer = ollama.call("POST", "/api/generate", {
        "model": "mistral-small3.1:latest", "prompt": prompt, "stream": False,
        "system": "You are terse.", "options": {"temperature": 0}})
    short = ollama.call("POST", "/api/generate", {
        "model": "llama3.2", "prompt": "hi", "stream": False, "options": {"num_predict": 3}})
    loaded = ollama.call("POST", "/api/generate", {"model": "llama3.2"})

    assert answer.status == 200 and answer.content_type.startswith("application/json")
    body = answer.json()
    assert body["response"] == said("mistral-small3.1:latest", prompt.rsplit(" ", 1)[0] + " ...")
    assert (body["done"], body["done_reason"], body["model"]) == (
        True, "stop", "mistral-small3.1:latest")
    assert body["prompt_eval_count"] == 16
    assert (short.json()["response"], short.json()["done_reason"]) == (
        "Lab stand-in for", "length")
    assert loaded.json() | {"created_at": ""} == {
        "model": "llama3.2", "created_at": "", "response": "", "done_reason": "load",
        "done": True}


def test_ollama_chat_answers_the_last_user_message(ollama: Ollama) -> None:
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is NixOS?"},
                {"role": "assistant", "content": "A Linux distribution."},
                {"role": "user", "content": "Who makes it?"}]
    streamed = ollama.call("POST", "/api/chat", {"model": "llama3.2", "messages": messages})
    whole = ollama.call("POST", "/api/chat",
                        {"model": "llama3.2", "messages": messages, "stream": False})

    assert streamed.content_type == "application/x-ndjson"
    *chunks, final = streamed.lines()
    assert {c["message"]["role"] for c in chunks} == {"assistant"}
    assert "".join(c["message"]["content"] for c in chunks) == said("llama3.2", "Who makes it?")
    assert (final["done"], final["done_reason"], final["message"]["content"]) == (
        True, "stop", "")
    assert whole.json()["message"] == {"role": "assistant",
                                       "content": said("llama3.2", "Who makes it?")}
    assert whole.json()["eval_count"] == len(chunks)


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_ollama_refuses_an_unknown_model_as_ollama_does(ollama: Ollama, path: str) -> None:
    answer = ollama.call("POST", path, {"model": "llama9", "prompt": "hi",
                                        "messages": [{"role": "user", "content": "hi"}]})

    assert answer.status == 404
    assert answer.json() == {"error": 'model "llama9" not found, try pulling it first'}


@pytest.mark.parametrize(("path", "body", "error"), [
    ("/api/generate", b"{not json", "invalid JSON: "),
    ("/api/generate", b"", "missing request body"),
    ("/api/generate", b"[1]", "json: cannot unmarshal array into Go value of type api.Request"),
    ("/api/generate", {"prompt": "hi"}, "model is required"),
    ("/api/generate", {"model": "llama3.2", "prompt": 5},
     "json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string"),
    ("/api/generate", {"model": "llama3.2", "prompt": "hi", "stream": "yes"},
     "json: cannot unmarshal string into Go struct field GenerateRequest.stream of type bool"),
    ("/api/chat", {"model": "llama3.2", "messages": "hi"},
     "json: cannot unmarshal string into Go struct field ChatRequest.messages of type "
     "[]api.Message"),
    ("/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": 1}]},
     "json: cannot unmarshal number into Go struct field Message.content of type string"),
    ("/api/show", {}, "model is required"),
])
def test_ollama_answers_bad_input_with_400(ollama: Ollama, path: str, body: Any,
                                           error: str) -> None:
    answer = ollama.call("POST", path, body)

    assert answer.status == 400
    assert answer.json()["error"].startswith(error)


def test_ollama_rm_removes_a_model_for_the_server_and_list_shows_it(ollama: Ollama) -> None:
    listed = ollama.cli("list")
    removed = ollama.cli("rm", "llama3.2")
    again = ollama.cli("rm", "llama3.2")

    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["NAME", *LOADED]
    assert listed.stdout.splitlines()[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert (removed.returncode, removed.stdout) == (0, "deleted 'llama3.2'\n")
    assert not ollama.manifest("llama3.2").exists()
    assert not ollama.manifest("llama3.2").parent.exists()
    assert [m["name"] for m in ollama.call("GET", "/api/tags").json()["models"]] == LOADED[1:]
    assert ollama.call("POST", "/api/generate", {"model": "llama3.2", "prompt": "x"}).status == 404
    assert (again.returncode, again.stderr) == (1, "Error: model 'llama3.2' not found\n")


def test_ollama_sees_a_model_deleted_from_its_directory_at_once(ollama: Ollama) -> None:
    ollama.manifest("mistral-small3.1").unlink()

    names = [m["name"] for m in ollama.call("GET", "/api/tags").json()["models"]]

    assert names == ["llama3.2:latest"]
    assert ollama.call("POST", "/api/show", {"model": "mistral-small3.1"}).status == 404


def test_ollama_version_asks_the_server_and_says_when_there_is_none(ollama: Ollama) -> None:
    running = ollama.cli("--version")
    ollama.stop()
    stopped = ollama.cli("--version")
    listed = ollama.cli("list")

    assert (running.returncode, running.stdout) == (0, "ollama version is 0.5.7\n")
    assert stopped.stdout == ("Warning: could not connect to a running Ollama instance\n"
                              "Warning: client version is 0.5.7\n")
    assert (listed.returncode, listed.stderr) == (
        1, "Error: could not connect to ollama app, is it running?\n")


# --- a GPU driver unloaded (nixfleet-lab-gpu-driver, the lab's `modprobe -r`) ------------------

GPU_DRIVER = "nixfleet-lab-gpu-driver"


def test_the_gpu_driver_command_says_it_is_lab_only_and_runs_nothing() -> None:
    text = (STANDINS / GPU_DRIVER).read_text()
    calls = {node.func.attr for node in ast.walk(ast.parse(text))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}

    assert text.splitlines()[1].startswith('"""LAB-ONLY command')
    assert os.access(STANDINS / GPU_DRIVER, os.X_OK)
    assert not calls & {"run", "Popen", "system", "call", "check_output", "execv", "execvp"}


def test_an_unloaded_nvidia_driver_is_seen_by_lspci_and_nvidia_smi_until_loaded(lab: Lab) -> None:
    lab.host(RAZER, modules=["i915", "nvidia"])

    assert lab.stdout(f"{GPU_DRIVER} unload nvidia") == ""
    pci = parse_lspci_nnk(lab.stdout("lspci -nnk"))
    result = lab.run(NVIDIA_QUERY)

    assert [g.driver for g in pci] == ["i915", None]  # the iGPU keeps i915
    assert pci[1].modules == ("nvidiafb", "nouveau", "nvidia_drm", "nvidia")
    assert result.returncode == 9
    assert result.stdout == (REAL_NO_DRIVER / "nvidia-smi-driver-not-loaded.txt").read_text()
    assert lab.run("nvidia-smi -L").returncode == 9
    state = detect_gpu_state(pci, [], [])
    assert (state.driver_loaded, state.compute) == (False, "none")
    assert lab.stdout(f"{GPU_DRIVER} status") == "i915\tloaded\nnvidia\tnot loaded\n"

    assert lab.stdout(f"{GPU_DRIVER} load nvidia") == ""
    assert [g.driver for g in parse_lspci_nnk(lab.stdout("lspci -nnk"))] == ["i915", "nvidia"]
    assert len(parse_nvidia_smi_csv(lab.stdout(NVIDIA_QUERY))) == 1


def test_an_unloaded_amdgpu_is_seen_by_lspci_and_rocm_smi_until_loaded(lab: Lab) -> None:
    lab.host(P620)

    lab.stdout(f"{GPU_DRIVER} unload amdgpu")
    lab.stdout(f"{GPU_DRIVER} unload amdgpu")  # already unloaded: nothing to do
    result = lab.run(ROCM_SMI_QUERY)

    assert (result.returncode, result.stdout) == (0, "")  # rocm-smi only logs, as the real one
    assert result.stderr == "ERROR:root:Driver not initialized (amdgpu not found in modules)\n"
    assert "Kernel driver in use" not in lab.stdout("lspci -nnk")
    assert parse_lspci_nnk(lab.stdout("lspci -nnk"))[0].modules == ("amdgpu",)

    lab.stdout(f"{GPU_DRIVER} load amdgpu")
    assert [g.gfx_version for g in parse_rocm_smi_json(lab.stdout(ROCM_SMI_QUERY))] == ["gfx1100"]
    assert "Kernel driver in use: amdgpu" in lab.stdout("lspci -k")


def test_only_the_hosts_own_gpu_drivers_and_those_of_its_system_can_be_loaded(lab: Lab) -> None:
    lab.host(RAZER, modules=["i915"])  # a generation without the nvidia driver

    other = lab.run(f"{GPU_DRIVER} unload amdgpu")
    missing = lab.run(f"{GPU_DRIVER} load nvidia")

    assert (other.returncode, other.stderr) == (
        2, f"{GPU_DRIVER}: no GPU of this host uses 'amdgpu' (its drivers: i915, nvidia)\n")
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"{GPU_DRIVER}: the booted system has no nvidia module")
    assert lab.stdout(f"{GPU_DRIVER} status") == "i915\tloaded\nnvidia\tnot loaded\n"
    assert lab.run(f"{GPU_DRIVER} bogus").returncode == 2


# --- nix-serve (the binary cache), over a throwaway Nix store ---------------------------------

NIX_SERVE = STANDINS / "nix-serve"
NIX_OFFLINE = ("build-users-group =\nsandbox = false\nsubstituters =\n"
               "experimental-features = nix-command\n")
needs_nix = pytest.mark.skipif(shutil.which("nix") is None, reason="needs Nix (nix-bin)")


class Store:
    """A local Nix store under a directory (NIX_REMOTE=local?root=DIR), and real Nix on it."""

    def __init__(self, directory: Path) -> None:
        self.url = f"local?root={directory}"
        self.root = directory
        self.env = {**os.environ, "NIX_CONFIG": NIX_OFFLINE, "NIX_REMOTE": self.url,
                    "XDG_CACHE_HOME": str(directory.parent / f"{directory.name}-cache")}

    def nix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["nix", *args], capture_output=True, text=True, env=self.env)
        assert result.returncode == 0 or not check, result.stderr
        return result


class Cache:
    """The stand-in serving a store on a free port."""

    def __init__(self, store: Store, key_file: Path | None) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**store.env, **({"NIX_SECRET_KEY_FILE": str(key_file)} if key_file else {})}
        self.process = subprocess.Popen([sys.executable, str(NIX_SERVE), "--listen",
                                         f"127.0.0.1:{self.port}"], env=env)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.get("/nix-cache-info")
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail("the nix-serve stand-in did not start")
                time.sleep(0.05)

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Store, Cache, str, str, str]]:
    """A store holding b (which refers to a), served signed with a key the lab generates:
    the store, the cache, b's and a's paths and the key's public half."""
    store = Store(tmp_path / "server")
    b = store.nix("eval", "--raw", "--expr",
                  'builtins.toFile "b" "uses ${builtins.toFile "a" "hello"}"').stdout
    (a,) = json.loads(store.nix("path-info", "--json", b).stdout)[0]["references"]
    key_file = tmp_path / "binary-cache-key"
    key_file.write_bytes(nix_secret_key("nixfleet-lab-cache-1"))
    public = nix_public_key(key_file.read_bytes())
    assert public is not None
    cache = Cache(store, key_file)
    yield store, cache, b, a, public
    cache.stop()


def narinfo_fields(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines())


def hash_part(path: str) -> str:
    return path.removeprefix("/nix/store/")[:32]


def test_nix_serve_says_it_is_a_stand_in_and_needs_only_what_lab_hosts_have() -> None:
    text = NIX_SERVE.read_text()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.Import) for alias in node.names} | {
        node.module.split(".")[0] for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.ImportFrom) and node.module}

    assert text.splitlines()[:2] == ["#!/usr/bin/python3", '"""STAND-IN for nix-serve in the '
                                     "nixfleet lab: no package registry reachable here ships"]
    assert os.access(NIX_SERVE, os.X_OK)
    # The standard library, and Debian's python3-cryptography (the lab's rootfs has it).
    assert imported - sys.stdlib_module_names == {"cryptography"}


@needs_nix
def test_nix_serve_answers_cache_info_and_unknown_paths_as_nix_serve(served) -> None:
    _, cache, b, _, _ = served

    assert cache.get("/nix-cache-info")[::2] == (
        200, b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n")
    assert cache.get(f"/{'0' * 32}.narinfo")[::2] == (404, b"No such path.\n")
    assert cache.get("/nar/" + "0" * 32 + ".nar")[::2] == (404, b"No such path.\n")
    assert cache.get("/log/whatever")[::2] == (404, b"File not found.\n")
    status, headers, body = cache.get(f"/{hash_part(b)}.narinfo", "HEAD")
    assert (status, headers["Content-Type"], body) == (200, "text/x-nix-narinfo", b"")
    assert int(headers["Content-Length"]) > 0
    assert "lab stand-in" in headers["Server"]


@needs_nix
def test_a_narinfo_is_the_paths_info_signed_so_that_nix_substitutes_it(served, tmp_path) -> None:
    store, cache, b, a, public = served
    status, _, body = cache.get(f"/{hash_part(b)}.narinfo")
    info = narinfo_fields(body.decode())
    (real,) = json.loads(store.nix("path-info", "--json", b).stdout)
    nar_hash = store.nix("hash", "to-base32", real["narHash"]).stdout.strip()

    assert status == 200
    assert info == {
        "StorePath": b, "URL": f"nar/{hash_part(b)}-{nar_hash}.nar", "Compression": "none",
        "NarHash": f"sha256:{nar_hash}", "NarSize": str(real["narSize"]),
        "References": a.removeprefix("/nix/store/"), "Sig": info["Sig"]}
    assert info["Sig"].startswith("nixfleet-lab-cache-1:")
    # Real Nix fetches b and a from the cache, checking the signature with the public half.
    client = Store(tmp_path / "client")
    fetched = client.nix("build", "--no-link", b, "--option", "substituters", cache.url,
                         "--option", "trusted-public-keys", public)
    assert "is not signed" not in fetched.stderr
    assert (client.root / b.lstrip("/")).read_text() == f"uses {a}"
    # Trusting another key, it refuses them.
    other = nix_public_key(nix_secret_key("other-1"))
    refused = Store(tmp_path / "refusing").nix(
        "build", "--no-link", b, "--option", "substituters", cache.url,
        "--option", "trusted-public-keys", str(other), check=False)
    assert refused.returncode != 0 and "is not signed by any of the keys" in refused.stderr


@needs_nix
def test_a_nar_is_the_paths_dump_and_a_stale_nar_hash_is_refused(served) -> None:
    store, cache, b, _, _ = served
    url = narinfo_fields(cache.get(f"/{hash_part(b)}.narinfo")[2].decode())["URL"]
    dump = subprocess.run(["nix", "store", "dump-path", b], capture_output=True,
                          env=store.env, check=True).stdout

    assert cache.get(f"/{url}")[::2] == (200, dump)
    assert cache.get(f"/nar/{hash_part(b)}.nar")[::2] == (200, dump)
    stale = f"/nar/{hash_part(b)}-{'1' * 52}.nar"
    assert cache.get(stale)[::2] == (
        404, b"Incorrect NAR hash. Maybe the path has been recreated.\n")


@needs_nix
def test_without_a_key_nix_serve_passes_on_the_stores_own_signatures(served, tmp_path) -> None:
    store, _, b, _, _ = served
    unsigned = Cache(store, None)
    try:
        before = narinfo_fields(unsigned.get(f"/{hash_part(b)}.narinfo")[2].decode())
        key = tmp_path / "own-key"
        key.write_bytes(nix_secret_key("own-1"))
        store.nix("store", "sign", "--key-file", str(key), b)
        after = narinfo_fields(unsigned.get(f"/{hash_part(b)}.narinfo")[2].decode())
    finally:
        unsigned.stop()

    assert "Sig" not in before
    assert after["Sig"].startswith("own-1:")


@needs_nix
def test_the_labs_cache_key_is_a_nix_signing_key(tmp_path) -> None:
    secret = nix_secret_key("nixfleet-lab-cache-1")
    (tmp_path / "key").write_bytes(secret)
    converted = subprocess.run(
        ["nix", "--extra-experimental-features", "nix-command", "key",
         "convert-secret-to-public"], input=secret, capture_output=True, check=True).stdout

    assert not secret.endswith(b"\n")
    assert nix_public_key(secret) == converted.decode().strip()
    assert nix_public_key(b"lab-dummy-binary-cache-key-0123\n") is None
    assert nix_public_key(secret[:-8] + b"AAAAAA==") is None  # public half not the seed's
