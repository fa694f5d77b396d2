"""Benchmarks that run ComfyUI in-process (``python -m comfyui_flowmatch.benchmarks.<name>``).

Like `nodes/`, this package imports ComfyUI; `comfy_runtime.import_comfyui()` must run
before anything else of it is imported. The pure packages (`samplers/`, `models/`) never
import from here.
"""
