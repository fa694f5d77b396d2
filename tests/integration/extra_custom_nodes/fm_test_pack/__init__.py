"""Test-only ComfyUI nodes (loaded only by the node tests' extra server, never shipped).

- FMTestNaNAtStep: makes a MODEL return NaN from sampling step k on (fault injection).
- FMTestConditioning: random CONDITIONING of a given width (native models without their
  multi-GB text encoders).
- FMTestStackConditioning: two single-entry CONDITIONINGs stacked along the batch, so one
  sampler call draws a different prompt per latent batch item (ComfyUI keeps a cond
  whose batch equals the latent batch).
- FMTestLatentFormat: a MODEL whose latent format is replaced by one of ComfyUI's own
  (`comfy.latent_formats.<name>`), to check shapes for families we have no tiny model of.
- FMTestTinyFlux: a small random Flux built in process from ComfyUI's own Flux config
  (ModelSamplingFlux, resolution shift); ComfyUI's file detection fixes Flux at hidden 3072.
"""

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.supported_models


def _nan_at_step(model, step):
    patched = model.clone()

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        sigmas = args["c"]["transformer_options"]["sample_sigmas"]
        if step <= len(sigmas) - 1 and torch.isclose(args["timestep"][0], sigmas[step - 1]).item():
            return torch.full_like(out, float("nan"))
        return out

    patched.set_model_unet_function_wrapper(wrapper)
    return patched


class FMTestNaNAtStep:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "step": ("INT", {"default": 2, "min": 1})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing"

    def patch(self, model, step):
        return (_nan_at_step(model, step),)


class FMTestConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 4096, "min": 1, "max": 8192}),
            "length": ("INT", {"default": 8, "min": 1}),
            "pooled_width": ("INT", {"default": 0, "min": 0, "max": 8192}),
            "seed": ("INT", {"default": 0, "min": 0}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, width, length, pooled_width, seed):
        generator = torch.Generator().manual_seed(seed)
        extra = {}
        if pooled_width:
            extra["pooled_output"] = torch.randn(1, pooled_width, generator=generator)
        return ([[torch.randn(1, length, width, generator=generator), extra]],)


class FMTestStackConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"first": ("CONDITIONING",), "second": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "stack"
    CATEGORY = "testing"

    def stack(self, first, second):
        (cond_a, extra_a), (cond_b, extra_b) = first[0], second[0]
        extra = {"pooled_output": torch.cat([extra_a["pooled_output"], extra_b["pooled_output"]])}
        return ([[torch.cat([cond_a, cond_b]), extra]],)


TINY_FLUX = {
    "image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "patch_size": 2,
    "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2,
    "depth": 1, "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True,
}


class FMTestTinyFlux:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"
    CATEGORY = "testing"

    def build(self, seed):
        config = comfy.supported_models.Flux(TINY_FLUX)
        config.set_inference_dtype(torch.float32, None)
        model = config.get_model({})
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in model.diffusion_model.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
        device = comfy.model_management.get_torch_device()
        return (comfy.model_patcher.ModelPatcher(model, device, comfy.model_management.unet_offload_device()),)


class FMTestLatentFormat:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "latent_format": ("STRING", {"default": "SD3"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing"

    def patch(self, model, latent_format):
        import comfy.latent_formats

        patched = model.clone()
        patched.add_object_patch("latent_format", getattr(comfy.latent_formats, latent_format)())
        return (patched,)


NODE_CLASS_MAPPINGS = {
    "FMTestNaNAtStep": FMTestNaNAtStep,
    "FMTestConditioning": FMTestConditioning,
    "FMTestStackConditioning": FMTestStackConditioning,
    "FMTestTinyFlux": FMTestTinyFlux,
    "FMTestLatentFormat": FMTestLatentFormat,
}
