"""Edit benchmark on the bundled model (``python -m comfyui_flowmatch.models.edit_bench``).

Reconstruction: invert each image with its own prompt, regenerate with the same prompt and
solver, PSNR against the image, per solver at 8 and 16 velocity calls (NFE) per direction,
over generated images and PIL hand-drawn ones in the dataset's style.

Editing: generated source images the judge reads correctly, edited three ways (colour,
shape, background). An edit succeeds when `evaluate.judge` finds the target caption's
colour, shape and background, the untouched attributes (and the position) equal the
source's, and, for colour and background edits, the object's mask has IoU >= 0.7 with the
source's. FlowEdit (the renoised update with and without its data bound, and the paper's ODE)
is compared at equal NFE with inversion-then-regenerate (target prompt) and img2img with the
target prompt at denoise 0.5 and 0.7. NFE counts guided velocity evaluations (each is one
batched cond + uncond network call).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..samplers.editing import EditStats
from ..samplers.editing import INVERSION_METHODS, flow_edit, invert, regenerate
from ..samplers.schedules import SD3_SHIFT, time_grid
from ..samplers.solvers import METHODS
from .data import BACKGROUNDS, COLORS, SEEN, SHAPES, make_caption
from .evaluate import FOREGROUND_DISTANCE, analyze, judge, largest_component
from .generate import DEFAULT_CHECKPOINT, generate_images, initial_noise
from .text import encode_prompts

logger = logging.getLogger(__name__)

EDIT_KINDS = ("color", "shape", "background")
MASK_IOU_MIN = 0.7
DOPRI5_TOLERANCE = {8: 1e-2, 16: 1e-3}  # reconstruction budget -> dopri5 rtol = atol
GENERATION = dict(steps=20, method="euler", cfg=4.0)  # how source images are drawn (models.evaluate's setting)


def guided_velocity(bundle, prompts: list[str], cfg: float):
    """velocity(x, t) for one prompt per batch row with classifier-free guidance (cfg 1: none)."""
    context, pooled = encode_prompts(bundle.tokenizer, bundle.text_encoder, prompts)
    if cfg != 1.0:
        u_context, u_pooled = encode_prompts(bundle.tokenizer, bundle.text_encoder, [""] * len(prompts))
        context, pooled = torch.cat([context, u_context]), torch.cat([pooled, u_pooled])

    @torch.no_grad()
    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if cfg == 1.0:
            return bundle.dit(x, t, context, pooled)
        v_c, v_u = bundle.dit(torch.cat([x, x]), torch.cat([t, t]), context, pooled).chunk(2)
        return v_u + cfg * (v_c - v_u)

    return velocity


def to_latent(images: torch.Tensor) -> torch.Tensor:
    return images * 2 - 1


def to_image(latents: torch.Tensor) -> torch.Tensor:
    return ((latents + 1) / 2).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images [B, 3, H, W] in [0, 1]."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(1 / mse)


def hand_drawn(count: int, size: int = 32, seed: int = 7) -> tuple[torch.Tensor, list[str]]:
    """Images drawn with PIL's own rasterizer (not `data.render`) in the dataset's style."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for i in range(count):
        color, shape = SEEN[int(rng.integers(len(SEEN)))]
        background = list(BACKGROUNDS)[i % 2]
        r = int(rng.integers(6, 11))
        cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
        canvas = Image.new("RGB", (size, size), BACKGROUNDS[background])
        draw = ImageDraw.Draw(canvas)
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            draw.ellipse(box, fill=COLORS[color])
        elif shape == "square":
            draw.rectangle(box, fill=COLORS[color])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLORS[color])
        images.append(torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255).permute(2, 0, 1))
        captions.append(make_caption(color, shape, background))
    return torch.stack(images), captions


def generated_sources(bundle, count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """`count` generated images the judge reads as their prompt (colour, shape, background), with prompts."""
    rng = np.random.default_rng(seed)
    kept_images, kept_prompts, offset = [], [], 0
    while len(kept_prompts) < count:
        prompts = []
        for _ in range(2 * count):
            color, shape = SEEN[int(rng.integers(len(SEEN)))]
            prompts.append(make_caption(color, shape, list(BACKGROUNDS)[int(rng.integers(2))]))
        images = generate_images(bundle, prompts, seed=seed + offset, **GENERATION)
        offset += len(prompts)
        for image, prompt in zip(images, prompts):
            if judge(image, prompt)["all"] and len(kept_prompts) < count:
                kept_images.append(image)
                kept_prompts.append(prompt)
    return torch.stack(kept_images), kept_prompts


def steps_for(method: str, nfe: int) -> int:
    """Steps of `method` within `nfe` velocity calls (fireflow: N + 1 calls for N steps)."""
    if method == "fireflow":
        return nfe - 1
    return max(1, nfe // METHODS[method].calls_per_step)


def reconstruction_rows(bundle, images: torch.Tensor, prompts: list[str], label: str, nfes: tuple[int, ...],
                        cfg: float, shift: float) -> list[dict]:
    """PSNR of invert -> regenerate with each solver at each NFE budget per direction, on the
    SD3-shifted grid `time_grid(steps, shift=shift)` (shift 1: uniform)."""
    velocity = guided_velocity(bundle, prompts, cfg)
    x = to_latent(images)
    rows = []
    for method in INVERSION_METHODS:
        for nfe in nfes:
            stats_inv, stats_gen = EditStats(), EditStats()
            if method == "dopri5":  # adaptive: a tolerance stands in for the budget; the NFE columns show the cost
                tolerance = DOPRI5_TOLERANCE.get(nfe, 1e-3)
                ts, options = torch.tensor([0.0, 1.0]), {"rtol": tolerance, "atol": tolerance}
            else:
                ts, options = time_grid(steps_for(method, nfe), shift=shift).float(), {}
            noise = invert(velocity, x, ts, method, stats=stats_inv, **options)
            back = regenerate(velocity, noise, ts, method, stats=stats_gen, **options)
            values = psnr(to_image(back), images)
            rows.append({"images": label, "n": len(prompts), "solver": method, "cfg": cfg, "shift": shift,
                         "nfe_invert": stats_inv.nfe, "nfe_regenerate": stats_gen.nfe,
                         "psnr_mean": float(values.mean()), "psnr_median": float(values.median()),
                         "psnr_min": float(values.min()), "at_least_30db": float((values >= 30).float().mean()),
                         "noise_std": float(noise.std())})
            logger.info(json.dumps(rows[-1]))
    return rows


def edit_targets(prompts: list[str], kind: str, seed: int) -> list[str]:
    """One target caption per source caption that changes exactly the `kind` attribute."""
    from .evaluate import parse_caption

    rng = np.random.default_rng([seed, EDIT_KINDS.index(kind)])
    targets = []
    for prompt in prompts:
        a = parse_caption(prompt)
        if kind == "color":
            options = [c for c in COLORS if c != a["color"] and (c, a["shape"]) in SEEN]
            a["color"] = options[int(rng.integers(len(options)))]
        elif kind == "shape":
            options = [s for s in SHAPES if s != a["shape"] and (a["color"], s) in SEEN]
            a["shape"] = options[int(rng.integers(len(options)))]
        else:
            a["background"] = next(b for b in BACKGROUNDS if b != a["background"])
        targets.append(make_caption(a["color"], a["shape"], a["background"]))
    return targets


def object_mask(image: torch.Tensor) -> np.ndarray:
    """The largest blob of pixels farther than the judge's threshold from the median border colour."""
    pixels = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    foreground = np.sqrt(((pixels - np.median(border, axis=0)) ** 2).sum(-1)) > FOREGROUND_DISTANCE
    return largest_component(foreground) if foreground.any() else foreground


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    ma, mb = object_mask(a), object_mask(b)
    return float((ma & mb).sum() / max(1, (ma | mb).sum()))


def edit_verdict(source: torch.Tensor, edited: torch.Tensor, target: str, kind: str) -> dict:
    """Target attributes right, untouched attributes and position kept, mask kept (colour/background)."""
    before, after = analyze(source), analyze(edited)
    target_ok = judge(edited, target)["all"]
    kept = [key for key in ("color", "shape", "background", "position") if key != kind]
    kept_ok = all(after[key] == before[key] for key in kept)
    iou = mask_iou(source, edited)
    iou_ok = iou >= MASK_IOU_MIN if kind in ("color", "background") else True
    return {"target": target_ok, "kept": kept_ok, "iou": iou, "success": target_ok and kept_ok and iou_ok}


@dataclass(frozen=True)
class FlowEditSettings:
    steps: int
    n_max: int
    n_min: int = 0
    n_avg: int = 1
    cfg_source: float = 2.0
    cfg_target: float = 4.0
    relaxation: float | None = None  # None: the paper's ODE; else the re-noised update's fraction
    data_bound: float | None = None  # re-noised only: clip the data predictions to +-data_bound * max|source|

    @property
    def nfe(self) -> int:
        return 2 * self.n_avg * (self.n_max - self.n_min) + self.n_min


def run_flow_edit(bundle, x: torch.Tensor, prompts, targets, s: FlowEditSettings, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = lambda: torch.randn(x.shape, generator=generator)  # noqa: E731 (a zero-argument draw)
    ts = torch.linspace(0, 1, s.steps + 1)
    return flow_edit(guided_velocity(bundle, prompts, s.cfg_source), guided_velocity(bundle, targets, s.cfg_target),
                     x, ts, noise, n_max=s.n_max, n_min=s.n_min, n_avg=s.n_avg, relaxation=s.relaxation,
                     data_bound=s.data_bound)


def run_inversion_edit(bundle, x, prompts, targets, nfe: int, cfg_target: float) -> torch.Tensor:
    ts = torch.linspace(0, 1, nfe // 2 + 1)
    noise = invert(guided_velocity(bundle, prompts, 1.0), x, ts, "euler")
    return regenerate(guided_velocity(bundle, targets, cfg_target), noise, ts, "euler")


def run_img2img(bundle, x, targets, nfe: int, denoise: float, cfg_target: float, seed: int) -> torch.Tensor:
    """KSampler's img2img: the last `nfe` steps of a uniform grid of round(nfe / denoise) steps."""
    total = round(nfe / denoise)
    ts = torch.linspace(0, 1, total + 1)[total - nfe:]
    t0 = float(ts[0])
    noise = initial_noise(x.shape[0], x.shape[1], x.shape[2], x.shape[3], seed)
    start = t0 * x + (1 - t0) * noise
    return regenerate(guided_velocity(bundle, targets, cfg_target), start, ts, "euler")


def edit_rows(bundle, images, prompts, settings: list[FlowEditSettings], seed: int, cfg_target: float) -> list[dict]:
    """Success per method and edit kind; FlowEdit once per settings entry, baselines at each NFE used."""
    x = to_latent(images)
    rows = []
    for kind in EDIT_KINDS:
        targets = edit_targets(prompts, kind, seed)
        runs = {}
        for s in settings:
            update = "ode" if s.relaxation is None else f"renoised {s.relaxation}"
            if s.data_bound is not None:
                update += f" bound {s.data_bound}"
            runs[(f"flowedit {update} T={s.steps} n_max={s.n_max} n_min={s.n_min} n_avg={s.n_avg} "
                  f"cfg={s.cfg_source}/{s.cfg_target}", s.nfe)] = run_flow_edit(bundle, x, prompts, targets, s, seed)
        for nfe in sorted({s.nfe for s in settings}):
            runs[("invert+regenerate", nfe)] = run_inversion_edit(bundle, x, prompts, targets, nfe, cfg_target)
            for denoise in (0.5, 0.7):
                runs[(f"img2img denoise {denoise}", nfe)] = run_img2img(bundle, x, targets, nfe, denoise, cfg_target, seed)
        for (method, nfe), edited in runs.items():
            verdicts = [edit_verdict(a, b, t, kind) for a, b, t in zip(images, to_image(edited), targets)]
            row = {"kind": kind, "method": method, "nfe": nfe, "n": len(verdicts),
                   **{key: float(np.mean([v[key] for v in verdicts])) for key in ("success", "target", "kept", "iou")}}
            logger.info(json.dumps(row))
            rows.append(row)
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(value):
        return f"{value:.3g}" if isinstance(value, float) and not math.isnan(value) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def parse_flowedit(text: str) -> FlowEditSettings:
    """``"10:8:0:1:2:4"`` -> steps, n_max, n_min, n_avg, cfg_source, cfg_target (the paper's ODE);
    a seventh field is the re-noised update's relaxation (``"10:5:0:2:1:4:0.5"``), an eighth its
    data bound (``"10:5:0:2:4:4:0.5:2"``)."""
    parts = text.split(":")
    if len(parts) not in (6, 7, 8):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected steps:n_max:n_min:n_avg:cfg_source:cfg_target[:relaxation[:data_bound]]")
    return FlowEditSettings(*(int(p) for p in parts[:4]), *(float(p) for p in parts[4:]))


def main(argv: list[str] | None = None) -> None:
    from .checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(prog="python -m comfyui_flowmatch.models.edit_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--generated", type=int, default=32, help="generated images for reconstruction")
    parser.add_argument("--drawn", type=int, default=8, help="PIL hand-drawn images for reconstruction")
    parser.add_argument("--edits", type=int, default=48, help="source images per edit kind")
    parser.add_argument("--nfe", type=int, nargs="+", default=[8, 16], help="reconstruction NFE per direction")
    parser.add_argument("--cfg", type=float, default=1.0, help="guidance for reconstruction")
    parser.add_argument("--shift", type=float, default=SD3_SHIFT, help="SD3 shift of the reconstruction grid (1: uniform)")
    parser.add_argument("--flowedit", type=parse_flowedit, nargs="+",
                        default=[parse_flowedit(text) for text in
                                 ("10:5:0:2:4:4:0.5:2", "10:5:0:2:4:4:0.5", "10:5:0:2:4:4", "10:5:0:1:1:6")],
                        help="FlowEdit settings steps:n_max:n_min:n_avg:cfg_source:cfg_target"
                             "[:relaxation[:data_bound]] (several to compare; without relaxation: the paper's ODE)")
    parser.add_argument("--baseline-cfg", type=float, default=4.0, help="target-prompt guidance of the baselines")
    parser.add_argument("--skip-reconstruction", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write all rows to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bundle = load_checkpoint(args.checkpoint)
    result = {}
    if not args.skip_reconstruction:
        gen_images, gen_prompts = generated_sources(bundle, args.generated, args.seed + 1000)
        drawn_images, drawn_prompts = hand_drawn(args.drawn)
        result["reconstruction"] = (
            reconstruction_rows(bundle, gen_images, gen_prompts, "generated", tuple(args.nfe), args.cfg, args.shift)
            + reconstruction_rows(bundle, drawn_images, drawn_prompts, "hand-drawn", tuple(args.nfe), args.cfg,
                                  args.shift))
    sources, prompts = generated_sources(bundle, args.edits, args.seed)
    result["edits"] = edit_rows(bundle, sources, prompts, args.flowedit, args.seed, args.baseline_cfg)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if "reconstruction" in result:
        print(markdown(result["reconstruction"], ["images", "n", "solver", "nfe_invert", "nfe_regenerate",
                                                  "psnr_mean", "psnr_median", "psnr_min", "at_least_30db"]))
    print(markdown(result["edits"], ["kind", "method", "nfe", "n", "success", "target", "kept", "iou"]))


if __name__ == "__main__":
    main()
