"""FlowMatchGuidanceInterval: classifier-free guidance only inside a sigma interval.

Guidance applied in a limited interval (Kynkäänniemi et al. 2024) instead of at every step.
Outside [sigma_low, sigma_high] the model is called with the positive conditioning only and
the CFG result is that prediction (uncond = cond makes ComfyUI's uncond + (cond - uncond) * cfg
equal cond exactly), so those steps cost one batch half as large. It is a model patch
(ComfyUI's `sampler_calc_cond_batch_function`), so it works with every sampler and guider
that uses ComfyUI's CFG: KSampler, SamplerCustomAdvanced + CFGGuider, Flow Match Sampler.
A patch already on the model (e.g. Skip Layer Guidance) is kept and called through.
"""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from .limits import range_problem

NODE = "FlowMatchGuidanceInterval"
DEFAULT_SIGMA_HIGH = 0.95
DEFAULT_SIGMA_LOW = 0.8
"""Defaults measured on the bundled model (docs/benchmarks.md, "Guidance interval"): at 3-4
steps they leave out the first step (sigma = 1, pure noise) and the last one, where guidance
at cfg 4 overshoots the image estimate."""


def guidance_interval_patch(sigma_low: float, sigma_high: float, previous=None):
    """A `sampler_calc_cond_batch_function`: the usual cond/uncond batch while
    sigma_low <= sigma <= sigma_high, elsewhere the cond prediction alone, returned as both."""
    def calc_cond_batch(args):
        conds = args["conds"]
        outside = conds[1] is not None and not sigma_low <= float(args["sigma"].max()) <= sigma_high
        if outside:
            args = {**args, "conds": [conds[0], None]}
        out = previous(args) if previous is not None else comfy.samplers.calc_cond_batch(
            args["model"], args["conds"], args["input"], args["sigma"], args["model_options"])
        return [out[0], out[0]] if outside else out

    return calc_cond_batch


class FlowMatchGuidanceInterval(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE,
            display_name="Flow Match Guidance Interval",
            category="flow_matching/sampling",
            description=(
                "Applies classifier-free guidance (the sampler's cfg) only while the noise level sigma is between "
                "sigma_low and sigma_high; elsewhere the model runs on the positive prompt alone (half the work). "
                "For few-step sampling: on the bundled model at 3-4 steps and cfg 4, guidance at the first "
                "(pure noise) and last steps overshoots; the defaults leave both out. Works with KSampler, "
                "SamplerCustomAdvanced and Flow Match Sampler."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to sample; the patched copy is the output."),
                io.Float.Input("sigma_high", default=DEFAULT_SIGMA_HIGH, min=0.0, max=1000.0, step=0.01,
                               tooltip="Guidance only at sigma <= this (1 = pure noise for flow models)."),
                io.Float.Input("sigma_low", default=DEFAULT_SIGMA_LOW, min=0.0, max=1000.0, step=0.01,
                               tooltip="Guidance only at sigma >= this (0 = the finished image)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with guidance limited to the interval.")],
        )

    @classmethod
    def validate_inputs(cls, sigma_high, sigma_low):
        problem = range_problem(NODE, {"sigma_high": (sigma_high, 0.0, 1000.0), "sigma_low": (sigma_low, 0.0, 1000.0)})
        if problem:
            return problem
        if sigma_high is not None and sigma_low is not None and sigma_low > sigma_high:
            return (f"{NODE}: sigma_low {sigma_low} is above sigma_high {sigma_high}; guidance would never apply "
                    "(set cfg 1 on the sampler for that)")
        return True

    @classmethod
    def execute(cls, model, sigma_high, sigma_low) -> io.NodeOutput:
        patched = model.clone()
        previous = patched.model_options.get("sampler_calc_cond_batch_function")
        patched.set_model_sampler_calc_cond_batch_function(guidance_interval_patch(sigma_low, sigma_high, previous))
        return io.NodeOutput(patched)
