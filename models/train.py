"""Train the flow-matching DiT + text encoder (``python -m comfyui_flowmatch.models.train``).

The seed's loss: x_t = (1 - t) * noise + t * data, target v = data - noise,
loss = mean((model(x_t, t, text) - v)^2). t is uniform or logit-normal (SD3:
t = sigmoid(n), n ~ N(0, 1)). AdamW, linear warm-up then cosine decay, gradient
clipping, EMA weights (the EMA is what gets shipped), ~10% caption dropout to the
empty prompt for classifier-free guidance.

Every random draw of step k comes from generators seeded with (seed, k), so a run is
deterministic for a seed and resuming reproduces the uninterrupted run's batches.
Under ``torchrun --nproc_per_node N`` the run uses DistributedDataParallel (gloo on CPU,
NCCL on CUDA): every rank draws the same global batch of step k and trains on its 1/N
slice, so N processes step like one with the same ``--batch-size``; rank 0 writes.
Outputs in ``--run-dir``: ``train_state.safetensors`` (fp32 weights, EMA, optimizer;
for ``--resume``), ``log.jsonl`` (loss curve), ``samples_<step>.png``; the EMA
checkpoint goes to ``--output`` (periodically and at the end).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from .checkpoint import FlowMatchBundle, atomic_save_file, save_checkpoint
from .cli_args import CLIParser, device_name, finite_float, int_in, run_cli, writable_file, writable_folder
from .config_checks import require_positive
from .data import FolderDataset, ShapesDataset
from .distributed import Distributed, barrier, from_main, mean_over_ranks, setup, shard, teardown, wrap
from .dit import MIN_GAP, DiTConfig, FlowDiT
from .generate import generate_images, image_grid
from .text import TextConfig, TextEncoder, Tokenizer

logger = logging.getLogger(__name__)

T_SAMPLINGS = ("uniform", "logit_normal", "uniform_zero")
LOSS_WEIGHTINGS = ("velocity", "data")
ZERO_T_FRACTION = 0.25  # share of t = 0 draws under "uniform_zero"
SAMPLE_PROMPTS = (
    "a red circle on a black background",
    "a green square on a gray background in the top left",
    "a blue triangle on a black background in the bottom right",
    "a yellow circle on a gray background in the center",
    "a purple triangle on a gray background",
    "a orange circle on a black background",
    "a cyan square on a gray background",
    "a white triangle on a black background in the top right",
)


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe (architecture lives in `DiTConfig` / `TextConfig`)."""

    steps: int = 3600
    time_budget_s: float = 0.0
    batch_size: int = 64
    lr: float = 8e-4
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    t_sampling: str = "uniform"
    loss_weighting: str = "velocity"
    caption_dropout: float = 0.1
    seed: int = 0
    log_every: int = 25
    sample_every: int = 500
    save_every: int = 250

    def __post_init__(self) -> None:
        require_positive(self, ("steps", "batch_size", "log_every", "sample_every", "save_every"))
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.time_budget_s < 0:
            raise ValueError(f"time_budget_s must be >= 0 (0 = no budget), got {self.time_budget_s}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.t_sampling not in T_SAMPLINGS:
            raise ValueError(f"t_sampling must be one of {T_SAMPLINGS}, got {self.t_sampling!r}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")


def schedule_progress(step: int, elapsed_s: float, config: TrainConfig) -> float:
    """Fraction of the run done after warm-up: by steps, or by training time when a budget is set.

    With ``time_budget_s`` the run ends at whichever of `steps` and the budget comes first,
    so a shared or slow machine still finishes its cosine schedule on time.
    """
    by_steps = (step - config.warmup) / max(1, config.steps - config.warmup)
    by_time = elapsed_s / config.time_budget_s if config.time_budget_s else 0.0
    return min(1.0, max(0.0, by_steps, by_time))


def finished(step: int, elapsed_s: float, config: TrainConfig) -> bool:
    """True once `steps` are done or the training-time budget (if any) is spent."""
    return step >= config.steps or 0 < config.time_budget_s <= elapsed_s


def learning_rate(step: int, config: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Linear warm-up to `lr`, then cosine decay to `lr * min_lr_ratio` at the end of the run."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = schedule_progress(step, elapsed_s, config)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def sample_t(n: int, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Training times t [n] in [0, 1): uniform; logit-normal (sigmoid of a standard normal);
    or "uniform_zero": uniform with a `ZERO_T_FRACTION` share at exactly t = 0, the point a
    one-step sampler evaluates (reflow)."""
    if kind == "uniform":
        return torch.rand(n, generator=generator)
    if kind == "uniform_zero":
        t = torch.rand(n, generator=generator)
        return torch.where(torch.rand(n, generator=generator) < ZERO_T_FRACTION, torch.zeros_like(t), t)
    return torch.sigmoid(torch.randn(n, generator=generator))


class FlowNetwork(torch.nn.Module):
    """The DiT and its text encoder as one module (what DDP wraps): forward(ids, x_t, t) -> v."""

    def __init__(self, dit: FlowDiT, text_encoder: TextEncoder) -> None:
        super().__init__()
        self.dit, self.text_encoder = dit, text_encoder

    def forward(self, ids: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        context, pooled = self.text_encoder(ids)
        return self.dit(x_t, t, context, pooled)


def flow_matching_loss(network: torch.nn.Module, ids: torch.Tensor, data: torch.Tensor,
                       noise: torch.Tensor, t: torch.Tensor, weighting: str = "velocity") -> torch.Tensor:
    """The seed's loss: mean((v(x_t, t) - (data - noise))^2), x_t = (1 - t) noise + t data.

    `network(ids, x_t, t) -> v` (a `FlowNetwork`, possibly DDP-wrapped); shapes [B, C, H, W], t [B].
    ``weighting="data"`` multiplies each sample by max(1 - t, MIN_GAP)², which makes it the
    error of the data estimate x_t + (1 - t) v (for t < 1 - MIN_GAP): every t counts alike,
    where the velocity loss lets the few draws near t = 1 dominate (reflow uses it).
    """
    tb = t.view(-1, 1, 1, 1)
    x_t = (1 - tb) * noise + tb * data
    error = (network(ids, x_t, t) - (data - noise)).pow(2)
    if weighting == "data":
        error = error * (1 - tb).clamp_min(MIN_GAP).pow(2)
    return error.mean()


class EMA:
    """Exponential moving average of a module list's float parameters and buffers."""

    def __init__(self, modules: list[torch.nn.Module], decay: float) -> None:
        self.decay = decay
        self.shadow = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]

    @torch.no_grad()
    def update(self, modules: list[torch.nn.Module], step: int) -> None:
        # Warm-up of the decay so early averages are not dominated by the random init.
        decay = min(self.decay, (1 + step) / (10 + step))
        for shadow, module in zip(self.shadow, modules):
            for k, v in module.state_dict().items():
                shadow[k].lerp_(v.detach(), 1 - decay)

    def copy_to(self, modules: list[torch.nn.Module]) -> None:
        for shadow, module in zip(self.shadow, modules):
            module.load_state_dict(shadow)


@dataclass
class Run:
    """Everything a training run mutates."""

    dit: FlowDiT
    text_encoder: TextEncoder
    tokenizer: Tokenizer
    optimizer: torch.optim.Optimizer
    ema: EMA
    network: torch.nn.Module  # FlowNetwork(dit, text_encoder), DDP-wrapped under torchrun
    where: Distributed = Distributed()
    step: int = 0
    elapsed_s: float = 0.0


def step_batch(dataset, config: TrainConfig, step: int, tokenizer: Tokenizer) -> tuple[torch.Tensor, ...]:
    """Deterministic global batch of `step`: (ids, data in [-1, 1], noise, t)."""
    images, captions = dataset.batch(step, config.batch_size)
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    drop = torch.rand(len(captions), generator=gen) < config.caption_dropout
    captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
    data = images * 2 - 1
    noise = torch.randn(data.shape, generator=gen)
    t = sample_t(len(captions), config.t_sampling, gen)
    return tokenizer(captions), data, noise, t


def train_step(run: Run, dataset, config: TrainConfig, device: torch.device) -> float:
    """One optimizer step on `step_batch` of a captioned-image dataset; returns the global-batch loss."""
    return optimizer_step(run, step_batch(dataset, config, run.step, run.tokenizer), config, device)


def optimizer_step(run: Run, batch: tuple[torch.Tensor, ...], config: TrainConfig, device: torch.device) -> float:
    """One optimizer step (LR schedule, clipping, EMA) on this rank's slice of the global
    `batch` = (ids, data, noise, t); returns the loss of the whole global batch."""
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(run.step, config, run.elapsed_s)
    ids, data, noise, t = (x.to(device) for x in shard(batch, run.where))
    loss = flow_matching_loss(run.network, ids, data, noise, t, config.loss_weighting)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in run.optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    run.optimizer.step()
    run.ema.update([run.dit, run.text_encoder], run.step)
    run.step += 1
    return mean_over_ranks(loss.item(), run.where)


def new_run(dit_config: DiTConfig, text_config: TextConfig, tokenizer: Tokenizer, config: TrainConfig,
            device: torch.device, where: Distributed = Distributed()) -> Run:
    """Fresh networks (same init on every rank: seeded by `config.seed`), AdamW and EMA."""
    torch.manual_seed(config.seed)
    dit, text_encoder = FlowDiT(dit_config).to(device), TextEncoder(text_config).to(device)
    params = [*dit.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99))
    network = wrap(FlowNetwork(dit, text_encoder), where)
    return Run(dit, text_encoder, tokenizer, optimizer, EMA([dit, text_encoder], config.ema_decay), network, where)


def save_train_state(run: Run, path: Path, meta: dict) -> None:
    """fp32 weights, EMA and AdamW moments in one safetensors file (atomic)."""
    tensors = {}
    for prefix, module, shadow in (("dit", run.dit, run.ema.shadow[0]), ("text", run.text_encoder, run.ema.shadow[1])):
        tensors.update({f"model.{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
        tensors.update({f"ema.{prefix}.{k}": v.detach().cpu().contiguous() for k, v in shadow.items()})
    state = run.optimizer.state_dict()
    for idx, moments in state["state"].items():
        for name, value in moments.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().reshape(-1).contiguous() \
                if name == "step" else value.detach().cpu().contiguous()
    meta = {**meta, "step": str(run.step), "elapsed_s": str(run.elapsed_s)}
    atomic_save_file(tensors, path, meta)


class ResumeError(ValueError):
    """`--resume` found no train state, or one that does not fit this run; the message says what to do."""


def load_train_state(run: Run, path: Path) -> dict:
    """Restore a run saved by `save_train_state`; returns its metadata.

    Raises:
        ResumeError: the file is missing, unreadable (truncated, corrupted, not safetensors),
            not a train state, or saved with another architecture or vocabulary.
    """
    if not path.is_file():
        raise ResumeError(f"--resume: no train state at {path}; start without --resume, "
                          f"or give the --run-dir of the run to continue")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as error:
        raise ResumeError(f"--resume: {path} is not a readable train state ({error}); it may be truncated "
                          f"(a crash while saving) or corrupted: delete it to start afresh") from None
    try:
        step, elapsed_s = int(meta["step"]), float(meta["elapsed_s"])
        json.loads(meta["train_config"])
    except (KeyError, ValueError) as error:
        raise ResumeError(f"--resume: {path} has no valid step/elapsed_s/train_config metadata ({error}); "
                          f"it was not written by models.train") from None
    expected = train_state_shapes(run)
    missing = sorted(set(expected) - set(shapes))
    wrong = [f"{k} {list(shapes[k])} (this run: {list(v)})" for k, v in expected.items() if k in shapes and shapes[k] != v]
    if missing or wrong:
        problem = f"{len(missing)} missing tensors (e.g. {missing[0]})" if missing else f"shapes differ: {'; '.join(wrong[:3])}"
        raise ResumeError(f"--resume: {path} was saved by a different model ({problem}); resume with the same "
                          f"--data and --dit-*/--text-* options as the saved run, or use a new --run-dir")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for prefix, module, shadow in (("dit", run.dit, run.ema.shadow[0]), ("text", run.text_encoder, run.ema.shadow[1])):
        module.load_state_dict({k: tensors[f"model.{prefix}.{k}"] for k in module.state_dict()})
        for k in shadow:
            shadow[k].copy_(tensors[f"ema.{prefix}.{k}"])
    state = run.optimizer.state_dict()
    for idx in range(len(state["param_groups"][0]["params"])):
        if f"optim.{idx}.exp_avg" in tensors:
            state["state"][idx] = {
                "step": tensors[f"optim.{idx}.step"].reshape(()),
                "exp_avg": tensors[f"optim.{idx}.exp_avg"],
                "exp_avg_sq": tensors[f"optim.{idx}.exp_avg_sq"],
            }
    run.optimizer.load_state_dict(state)
    run.step, run.elapsed_s = step, elapsed_s
    return meta


def train_state_shapes(run: Run) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the weight tensors a train state of `run` holds (optimizer moments aside)."""
    shapes = {}
    for prefix, module in (("dit", run.dit), ("text", run.text_encoder)):
        for k, v in module.state_dict().items():
            shapes[f"model.{prefix}.{k}"] = shapes[f"ema.{prefix}.{k}"] = tuple(v.shape)
    return shapes


def ema_bundle(run: Run) -> FlowMatchBundle:
    """A bundle holding copies of the networks with the EMA weights, in eval mode."""
    dit, text_encoder = FlowDiT(run.dit.config), TextEncoder(run.text_encoder.config)
    run.ema.copy_to([dit, text_encoder])
    device = next(run.dit.parameters()).device
    return FlowMatchBundle(dit.to(device).eval(), text_encoder.to(device).eval(), run.tokenizer, {})


def save_sample_grid(run: Run, path: Path, settings: tuple[tuple[int, float], ...] = ((20, 4.0),)) -> None:
    """`SAMPLE_PROMPTS` with the EMA weights, one row per (Euler steps, CFG) setting -> PNG grid."""
    bundle = ema_bundle(run)
    images = torch.cat([generate_images(bundle, list(SAMPLE_PROMPTS), steps=steps, cfg=cfg, seed=0)
                        for steps, cfg in settings])
    grid = image_grid(images, columns=len(SAMPLE_PROMPTS))
    grid.resize((grid.width * 2, grid.height * 2)).save(path)


def training_facts(run: Run, config: TrainConfig, data: str, losses: list[float]) -> dict:
    tail = losses[-100:]
    return {
        "steps": run.step,
        "data": data,
        "final_loss": round(sum(tail) / max(1, len(tail)), 5),
        "train_seconds": round(run.elapsed_s, 1),
        "recipe": asdict(config),
        "weights": "ema",
        "torch": torch.__version__,
    }


def train(run: Run, dataset, config: TrainConfig, run_dir: Path, output: Path, data_name: str, *,
          batches: Callable[[int], tuple[torch.Tensor, ...]] | None = None,
          sample_grid: Callable[[Run, Path], None] = save_sample_grid, extra_facts: dict | None = None) -> dict:
    """Train `run` to `config.steps`; rank 0 writes state, log, sample grids and the EMA checkpoint.

    `batches(step)` gives the global batch (ids, data, noise, t) of a step; default
    `step_batch` on `dataset`. `extra_facts` join the checkpoint's training facts.
    """
    main = run.where.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    batches = batches or (lambda step: step_batch(dataset, config, step, run.tokenizer))
    device = next(run.dit.parameters()).device
    losses: list[float] = []
    meta = {"train_config": json.dumps(asdict(config)), "data": data_name}
    facts = lambda: {**training_facts(run, config, data_name, losses), **(extra_facts or {})}  # noqa: E731
    log = (run_dir / "log.jsonl").open("a") if main else None
    with tqdm(total=config.steps, initial=run.step, desc="train", disable=not main) as bar:
        while not finished(run.step, run.elapsed_s, config):
            start = time.perf_counter()
            loss = optimizer_step(run, batches(run.step), config, device)
            run.elapsed_s = from_main(run.elapsed_s + time.perf_counter() - start, run.where)
            losses.append(loss)
            bar.update(1)
            lr = run.optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            done = finished(run.step, run.elapsed_s, config)
            if not main:
                continue
            if run.step % config.log_every == 0:
                recent = losses[-config.log_every:]
                log.write(json.dumps({"step": run.step, "loss": sum(recent) / len(recent),
                                      "lr": lr,
                                      "elapsed_s": round(run.elapsed_s, 1)}) + "\n")
                log.flush()
            if run.step % config.save_every == 0 or done:
                save_train_state(run, run_dir / "train_state.safetensors", meta)
                bundle = ema_bundle(run)
                save_checkpoint(output, bundle.dit, bundle.text_encoder, run.tokenizer, facts())
            if run.step % config.sample_every == 0 or done:
                sample_grid(run, run_dir / f"samples_{run.step:06d}.png")
    if log:
        log.close()
    logger.info("done: %s", json.dumps(facts()))
    return facts()


def build_parser() -> argparse.ArgumentParser:
    parser = CLIParser(prog="python -m comfyui_flowmatch.models.train", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, type=Path, help="EMA checkpoint path (.safetensors)")
    parser.add_argument("--run-dir", required=True, type=Path, help="folder for train state, log and sample grids")
    parser.add_argument("--data", default="shapes", help="'shapes' (procedural) or a folder of images + .txt")
    parser.add_argument("--resume", action="store_true", help="continue from <run-dir>/train_state.safetensors")
    add_runtime_arguments(parser)
    add_train_config_arguments(parser)
    for field, default in asdict(DiTConfig()).items():
        if field != "text_dim":
            kind = finite_float() if isinstance(default, float) else type(default)
            parser.add_argument(f"--dit-{field.replace('_', '-')}", type=kind, default=default)
    for field in ("dim", "depth", "heads", "max_length"):
        default = getattr(TextConfig(vocab_size=1), field)
        parser.add_argument(f"--text-{field.replace('_', '-')}", type=int, default=default)
    return parser


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int_in(1, 1024), default=None, help="torch CPU threads (per process)")
    parser.add_argument("--device", type=device_name, default=None, help="default: cuda when available, else cpu")


def add_train_config_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig = TrainConfig()) -> None:
    for field, default in asdict(defaults).items():
        kind = finite_float() if isinstance(default, float) else type(default)
        parser.add_argument(f"--{field.replace('_', '-')}", type=kind, default=default)


BYTES_PER_TRAINED_PARAMETER = 20
"""fp32 weights, gradients, AdamW's two moments and the EMA copy: 5 x 4 bytes."""


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of `device`: the GPU's, or the machine's physical RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_training_memory(dit_config: DiTConfig, text_config: TextConfig, batch_size: int, device: torch.device) -> None:
    """Refuse a model or batch whose fixed memory alone exceeds the device, before allocating anything.

    Counts the parameters exactly (the networks are built on the meta device, which allocates
    nothing) at `BYTES_PER_TRAINED_PARAMETER`, plus four fp32 batch tensors (images, data,
    noise, x_t); activations come on top, so passing is necessary, not sufficient.

    Raises:
        ValueError: with the parameter count, the estimate and the device's memory.
    """
    with torch.device("meta"):
        parameters = sum(p.numel() for module in (FlowDiT(dit_config), TextEncoder(text_config)) for p in module.parameters())
    batch_bytes = 4 * 4 * batch_size * dit_config.channels * dit_config.image_size ** 2
    needed, available = parameters * BYTES_PER_TRAINED_PARAMETER + batch_bytes, device_memory_bytes(device)
    if needed > available:
        raise ValueError(
            f"training {parameters / 1e6:,.0f}M parameters at batch {batch_size} needs at least {needed / 2**30:,.1f} GiB "
            f"(weights, gradients, AdamW moments, EMA, batch) before activations; this {device.type} has "
            f"{available / 2**30:,.1f} GiB: lower --dit-width/--dit-depth/--text-dim or --batch-size")


def check_paths(args: argparse.Namespace) -> None:
    """Output, run folder and data folder, checked before any process group or model exists."""
    writable_file(args.output, (".safetensors",))
    if args.run_dir.exists() and not args.run_dir.is_dir():
        raise ValueError(f"--run-dir {args.run_dir} is a file; give a folder")
    writable_folder(args.run_dir)
    if args.data != "shapes" and not Path(args.data).is_dir():
        raise ValueError(f"--data {args.data!r}: no such folder (use 'shapes' or a folder of images with .txt captions)")


def start_process(args: argparse.Namespace) -> Distributed:
    """Logging, threads and (under torchrun) the process group; only rank 0 logs INFO."""
    if args.threads:
        torch.set_num_threads(args.threads)
    where = setup(args.device)
    logging.basicConfig(level=logging.INFO if where.is_main else logging.WARNING,
                        format="%(asctime)s %(message)s")
    return where


def main(argv: list[str] | None = None) -> int:
    """CLI: check every argument and the data (and the state to resume), then train.

    Returns 0, or 2 with a one-line error before the first step (bad option, unwritable
    output, no usable data, a train state that cannot be resumed).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_cli(parser.prog, lambda: run_process(args))


def run_process(args: argparse.Namespace) -> None:
    check_paths(args)
    run_in_process_group(args, run_training)


def run_in_process_group(args: argparse.Namespace, work: Callable[[argparse.Namespace, Distributed], None]) -> None:
    """`work(args, where)` between `start_process` and the process group's teardown."""
    where = start_process(args)
    try:
        work(args, where)
        # Rank 0 saves after the others finish their last step; gloo aborts a rank whose peer
        # tears the group down under it, so all ranks meet before any does.
        barrier(where)
    finally:
        teardown(where)


def run_training(args: argparse.Namespace, where: Distributed) -> None:
    device = where.device
    config = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    dit_fields = {f: getattr(args, f"dit_{f}") for f in asdict(DiTConfig()) if f != "text_dim"}
    dit_config = DiTConfig(**dit_fields, text_dim=args.text_dim)
    if args.data == "shapes":
        dataset = ShapesDataset(seed=config.seed, size=dit_fields["image_size"])
    else:
        dataset = FolderDataset(args.data, seed=config.seed, size=dit_fields["image_size"])
    tokenizer = Tokenizer.from_captions(dataset.vocabulary_captions(), max_length=args.text_max_length)
    text_config = TextConfig(vocab_size=len(tokenizer.vocab), dim=args.text_dim, depth=args.text_depth,
                             heads=args.text_heads, max_length=args.text_max_length)
    check_training_memory(dit_config, text_config, config.batch_size, device)
    run = new_run(dit_config, text_config, tokenizer, config, device, where)
    run_dir = args.run_dir
    if args.resume:
        meta = load_train_state(run, run_dir / "train_state.safetensors")
        logger.info("resumed at step %d (%.0f s trained)", run.step, run.elapsed_s)
        if json.loads(meta["train_config"]) != asdict(config):
            logger.warning("resuming with a different training config than the saved run")
    n_params = sum(p.numel() for p in [*run.dit.parameters(), *run.text_encoder.parameters()])
    logger.info("device %s, %d process(es), %d threads each, %.2fM parameters", device, where.world,
                torch.get_num_threads(), n_params / 1e6)
    if where.is_main:
        args.output.parent.mkdir(parents=True, exist_ok=True)
    train(run, dataset, config, run_dir, args.output, args.data)


if __name__ == "__main__":
    sys.exit(main())
