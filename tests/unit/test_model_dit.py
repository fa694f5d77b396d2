"""FlowDiT: shapes, other image sizes, zero-init output, data prediction, config validation."""

from dataclasses import replace

import pytest
import torch

from comfyui_flowmatch.models.dit import MIN_GAP, DiTConfig, FlowDiT, sincos_2d

pytestmark = pytest.mark.unit

TINY = DiTConfig(image_size=16, patch=4, width=32, depth=2, heads=2, text_dim=16, conv_channels=8)


def randomized(config: DiTConfig = TINY) -> FlowDiT:
    torch.manual_seed(0)
    model = FlowDiT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # leave adaLN-Zero so outputs are non-trivial
    return model.eval()


def inputs(b: int, h: int, w: int, config: DiTConfig = TINY):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(b, 3, h, w, generator=g), torch.rand(b, generator=g),
            torch.randn(b, 5, config.text_dim, generator=g), torch.randn(b, config.text_dim, generator=g))


def test_output_shape_and_finite():
    v = randomized()(*inputs(3, 16, 16))
    assert v.shape == (3, 3, 16, 16) and torch.isfinite(v).all()


@pytest.mark.parametrize("h, w", [(8, 8), (24, 16), (32, 32)])
def test_other_sizes_that_are_multiples_of_the_patch(h, w):
    assert randomized()(*inputs(2, h, w)).shape == (2, 3, h, w)


def test_size_not_multiple_of_patch_is_refused():
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        randomized()(*inputs(1, 18, 16))


def test_batch_mismatch_is_refused():
    x, t, ctx, pooled = inputs(2, 16, 16)
    with pytest.raises(ValueError, match="batch sizes differ"):
        randomized()(x, t, ctx[:1], pooled[:1])


def test_fresh_model_predicts_zero_velocity():
    """adaLN-Zero + zero-initialised head: training starts from the identity flow."""
    assert FlowDiT(TINY)(*inputs(2, 16, 16)).abs().max() == 0


def test_data_prediction_turns_the_head_output_into_a_velocity():
    """v = (d - x_t) / max(1 - t, MIN_GAP): with the zero-initialised head d = 0, so v = -x_t / gap."""
    x, _, ctx, pooled = inputs(3, 16, 16)
    t = torch.tensor([0.0, 0.5, 1.0])
    v = FlowDiT(replace(TINY, prediction="data"))(x, t, ctx, pooled)
    gap = torch.tensor([1.0, 0.5, MIN_GAP]).view(-1, 1, 1, 1)
    assert torch.allclose(v, -x / gap)


def test_data_prediction_recovers_the_exact_velocity_from_the_true_image():
    """If the head outputs the true data d, v is exactly data - noise (t below 1 - MIN_GAP)."""
    g = torch.Generator().manual_seed(2)
    data, noise = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.randn(2, 3, 16, 16, generator=g)
    t = torch.tensor([0.2, 0.9])
    x_t = (1 - t.view(-1, 1, 1, 1)) * noise + t.view(-1, 1, 1, 1) * data

    class IdealHead(torch.nn.Module):
        def forward(self, features):
            return data

    model = FlowDiT(replace(TINY, prediction="data"))
    model.head = IdealHead()
    assert torch.allclose(model(x_t, t, *inputs(2, 16, 16)[2:]), data - noise, atol=1e-5)


def test_batch_items_are_independent():
    model = randomized()
    x, t, ctx, pooled = inputs(4, 16, 16)
    full = model(x, t, ctx, pooled)
    assert torch.allclose(full[1:2], model(x[1:2], t[1:2], ctx[1:2], pooled[1:2]), atol=1e-5)


def test_time_and_text_change_the_output():
    model = randomized()
    x, t, ctx, pooled = inputs(1, 16, 16)
    base = model(x, t, ctx, pooled)
    assert not torch.allclose(base, model(x, t * 0.5, ctx, pooled))
    assert not torch.allclose(base, model(x, t, ctx + 1, pooled))


def test_sincos_positions_depend_on_the_grid_only():
    pos = sincos_2d(4, 6, 32, torch.device("cpu"))
    assert pos.shape == (24, 32)
    assert torch.allclose(sincos_2d(8, 8, 32, torch.device("cpu")).view(8, 8, 32)[:4, :6].reshape(24, 32), pos)


@pytest.mark.parametrize("field, value, message", [
    ("patch", 5, "multiple of patch"), ("heads", 5, "heads"), ("depth", 0, "depth must be >= 1"),
    ("mlp_ratio", 0.0, "mlp_ratio"), ("prediction", "noise", "prediction must be one of"),
])
def test_config_validation_names_the_value(field, value, message):
    kwargs = {**TINY.to_dict(), field: value}
    with pytest.raises(ValueError, match=message):
        DiTConfig(**kwargs)
