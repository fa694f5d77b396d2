"""scripts/gpu_check.py, the device check, runs its CPU fallback here: the pure-torch path and
the ComfyUI path through our node functions agree, and KSampler matches our euler."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def test_gpu_check_cpu_fallback_agrees_with_itself(tmp_path):
    ng.build_tiny_checkpoints(tmp_path, flowmatch_only=True)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoint", str(tmp_path / "tiny_flowmatch.safetensors"),
         "--prompts", "2", "--steps", "6", "--min-adherent", "0"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert result.returncode == 0, (report, result.stderr[-3000:])
    assert report["pure"]["finite"] and report["comfyui"]["finite"]
    assert report["pure"]["nfe"] == 6 and report["comfyui"]["nfe"] == 12
    assert report["comfyui"]["ksampler_max_abs_diff"] < 1e-4
    assert report["pure_vs_comfyui_max_abs_diff"] < 1e-3
