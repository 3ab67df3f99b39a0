"""Intel integrated graphics: modesetting with VA-API through the media driver, no compute."""

graphics = {"videoDriver": "modesetting", "compute": "none", "mediaDriver": "intel-media-driver"}
