"""AMD hosts: amdgpu with the ROCm compute stack (per-host gfx override lives on the host)."""

graphics = {"videoDriver": "amdgpu", "compute": "rocm"}
