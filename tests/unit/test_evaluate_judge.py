"""The analytic judge: ~100% on ground-truth renders, robust to noise, strict on wrong images."""

import pytest
import torch

from comfyui_flowmatch.models.data import HELD_OUT, ShapeSpec, ShapesDataset, render
from comfyui_flowmatch.models.evaluate import evaluation_prompts, judge, parse_caption, score

pytestmark = pytest.mark.unit


def ground_truth(n: int, seed: int, combos=None):
    ds = ShapesDataset(seed=seed, **({"combos": combos} if combos else {}))
    return ds.specs(0, n)


def test_judge_scores_every_ground_truth_image_right():
    specs = ground_truth(300, 11) + ground_truth(100, 12, tuple(sorted(HELD_OUT)))
    verdicts = [judge(render(s), s.caption) for s in specs]
    assert all(v["all"] for v in verdicts)
    assert all(v["position"] for v in verdicts if "position" in v)
    assert sum("position" in v for v in verdicts) > 100


def test_judge_tolerates_mild_noise():
    g = torch.Generator().manual_seed(0)
    specs = ground_truth(100, 13)
    noisy = [(render(s) + 0.04 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1) for s in specs]
    assert sum(judge(img, s.caption)["all"] for img, s in zip(noisy, specs)) >= 98


def test_judge_catches_each_wrong_attribute():
    image = render(ShapeSpec("red", "circle", "black", "top left", 9.0, 9.0, 6.0))
    assert judge(image, "a red circle on a black background in the top left") == \
        {"color": True, "shape": True, "background": True, "all": True, "position": True}
    assert not judge(image, "a blue circle on a black background")["color"]
    assert not judge(image, "a red square on a black background")["shape"]
    assert not judge(image, "a red triangle on a black background")["shape"]
    assert not judge(image, "a red circle on a gray background")["background"]
    assert not judge(image, "a red circle on a black background in the bottom right")["position"]


def test_blank_image_fails_color_and_shape():
    verdict = judge(torch.full((3, 32, 32), 10 / 255), "a red circle on a black background")
    assert verdict["background"] and not verdict["color"] and not verdict["shape"]


def test_judge_works_at_other_sizes():
    spec = ShapeSpec("green", "triangle", "gray", "bottom right", 46.0, 46.0, 12.0)
    assert judge(render(spec, size=64), spec.caption)["all"]


def test_parse_caption():
    assert parse_caption("A red circle on a black background in the top left") == \
        {"color": "red", "shape": "circle", "background": "black", "position": "top left"}
    assert parse_caption("an orange circle on a gray background")["position"] is None
    with pytest.raises(ValueError, match="unknown color 'pink'"):
        parse_caption("a pink circle on a gray background")
    with pytest.raises(ValueError, match="does not match"):
        parse_caption("hello world")


def test_evaluation_prompts_cover_each_split():
    held = evaluation_prompts("held_out", 30)
    assert {(parse_caption(p)["color"], parse_caption(p)["shape"]) for p in held} == set(HELD_OUT)
    assert evaluation_prompts("seen", 30) == evaluation_prompts("seen", 30)
    with pytest.raises(ValueError, match="'train'"):
        evaluation_prompts("train", 3)


def test_score_aggregates():
    specs = ground_truth(20, 14)
    rates = score(torch.stack([render(s) for s in specs]), [s.caption for s in specs])
    assert rates["all"] == 1.0 and rates["n"] == 20
