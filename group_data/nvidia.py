"""NVIDIA hosts: proprietary driver branch and CUDA (hardware.nvidia.package)."""

graphics = {"videoDriver": "nvidia", "compute": "cuda", "nvidiaPackage": "stable",
            "nvidiaOpen": False}
