"""The integration tests' shared native-model server (one start for every module that uses it)."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)


@pytest.fixture(scope="session")
def native(start_comfy_server, tmp_path_factory):
    """(server, build report): a server whose model folders hold the tiny random-weight native
    checkpoints (build_tiny_checkpoints.py), with the test-only nodes and latent previews on."""
    ckpts = tmp_path_factory.mktemp("native_ckpts")
    report = ng.build_tiny_checkpoints(ckpts)
    yaml = ng.extra_paths_yaml(tmp_path_factory.mktemp("yaml") / "extra.yaml", flow_matching=ckpts,
                               diffusion_models=ckpts)
    server = start_comfy_server("--extra-model-paths-config", str(yaml), "--preview-method", "latent2rgb")
    return server, report
