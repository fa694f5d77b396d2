"""FlowMatchTextEncode: prompt text -> standard CONDITIONING, with vocabulary warnings in the UI."""

from __future__ import annotations

from comfy_api.latest import io, ui

from .text_clip import FlowMatchClipTokenizer, prompt_warnings


def encode_text(clip, text: str):
    """CONDITIONING `[[cond, {"pooled_output": ...}]]` exactly as native CLIPTextEncode makes it."""
    if clip is None:
        raise ValueError(
            "FlowMatchTextEncode: the clip input is empty (the checkpoint holds no text encoder). "
            "Load one with a native CLIP loader (e.g. TripleCLIPLoader for SD3, DualCLIPLoader for Flux) and connect it."
        )
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def text_warnings(clip, text: str) -> list[str]:
    """Unknown / truncated words for our text encoder; native encoders report nothing."""
    if isinstance(clip.tokenizer, FlowMatchClipTokenizer):
        return prompt_warnings(clip.tokenizer.tokenizer, text)
    return []


class FlowMatchTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowMatchTextEncode",
            display_name="Flow Match Text Encode",
            category="flow_matching/conditioning",
            description=(
                "Encodes a prompt into standard CONDITIONING for the sampler (works with native conditioning nodes "
                "such as Conditioning Combine or Zero Out). With the bundled model, words outside its vocabulary "
                "and words beyond its prompt length are listed under the node. An empty prompt is the "
                "unconditional (negative) prompt."
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder from Flow Match Model Loader (or any native CLIP)."),
                io.String.Input(
                    "text", multiline=True, dynamic_prompts=True, default="a red circle on a black background",
                    tooltip="What the image should show. The bundled model knows simple shapes, colours and positions.",
                ),
            ],
            outputs=[io.Conditioning.Output(tooltip="The encoded prompt, for the sampler's positive or negative input.")],
        )

    @classmethod
    def execute(cls, clip, text) -> io.NodeOutput:
        conditioning = encode_text(clip, text)
        return io.NodeOutput(conditioning, ui=ui.PreviewText("\n".join(text_warnings(clip, text))))
