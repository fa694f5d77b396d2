"""A small text-conditioned flow-matching transformer (DiT / SD3 / Flux family).

Pixel space, RGB in [-1, 1], NCHW. Convention (the seed's): x_t = (1 - t) * noise
+ t * data, t in [0, 1] runs noise -> data, and the network predicts the velocity
v = data - noise.

Layout: a 3x3 conv stem, a p x p patch embedding, 2-D sincos positions computed for
the actual grid (so any H, W divisible by the patch work), `depth` blocks of
adaLN-Zero-modulated self-attention, cross-attention to the text tokens and an MLP,
then a linear un-patchify and a small conv head that also sees the stem features
(sharp, non-blocky edges at patch 4).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config_checks import require_positive


PREDICTIONS = ("velocity", "data")
MIN_GAP = 0.05  # floor on 1 - t when a data estimate is turned into a velocity


@dataclass(frozen=True)
class DiTConfig:
    """Shape of `FlowDiT`.

    Attributes:
        image_size: native side in pixels (training size); other multiples of `patch` work.
        channels: image channels (3, RGB).
        patch: patch side p; tokens = (H / p) * (W / p).
        width: transformer width.
        depth: number of blocks.
        heads: attention heads (width must divide evenly).
        text_dim: width D of the text tokens and pooled vector.
        mlp_ratio: MLP hidden width / width.
        conv_channels: channels of the full-resolution conv stem and head.
        prediction: what the conv head outputs. ``"velocity"``: v itself. ``"data"``: a
            clean-image estimate d, turned into v = (d - x_t) / max(1 - t, MIN_GAP) (the
            x-prediction of JiT, Li & He 2025); a piecewise-flat image is easier for a
            patch model to draw than v, which carries the full-resolution noise.
            `forward` returns v either way.
    """

    image_size: int = 32
    channels: int = 3
    patch: int = 4
    width: int = 128
    depth: int = 6
    heads: int = 4
    text_dim: int = 128
    mlp_ratio: float = 4.0
    conv_channels: int = 32
    prediction: str = "velocity"

    def __post_init__(self) -> None:
        require_positive(self, ("image_size", "channels", "patch", "width", "depth", "heads", "text_dim", "conv_channels"))
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch {self.patch}")
        if self.width % self.heads or (self.width // self.heads) % 4:
            raise ValueError(f"width {self.width} / heads {self.heads} must be an integer multiple of 4")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of seed time t [B] (scaled by 1000) -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_2d(grid_h: int, grid_w: int, dim: int, device: torch.device) -> torch.Tensor:
    """2-D sincos positions [grid_h * grid_w, dim], row-major; half the channels per axis."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, device=device, dtype=torch.float32),
        torch.arange(grid_w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    parts = [f(a.reshape(-1, 1) * omega) for a in (ys, xs) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x [B, N, W] * (1 + scale [B, W]) + shift [B, W]."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head attention via `scaled_dot_product_attention`; self when context is None."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, w = x.shape
        source = x if context is None else context
        h = self.heads
        q = self.q(x).view(b, n, h, w // h).transpose(1, 2)
        k, v = self.kv(source).view(b, source.shape[1], 2, h, w // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, w))


class DiTBlock(nn.Module):
    """adaLN-Zero block: modulated self-attention, cross-attention and MLP, each gated."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.cross_attn = Attention(width, heads)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 9 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        s1, sc1, g1, s2, sc2, g2, s3, sc3, g3 = self.ada(c).chunk(9, dim=-1)
        x = x + g1[:, None] * self.self_attn(modulate(self.norm1(x), s1, sc1))
        x = x + g2[:, None] * self.cross_attn(modulate(self.norm2(x), s2, sc2), context)
        return x + g3[:, None] * self.mlp(modulate(self.norm3(x), s3, sc3))


class FlowDiT(nn.Module):
    """Text-conditioned flow transformer.

    forward(x [B, C, H, W] in model space, t [B] seed time, context [B, L, text_dim],
    pooled [B, text_dim]) -> velocity [B, C, H, W] (data - noise). H and W must be
    multiples of `config.patch`; the batch of x, t, context and pooled must match.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        w, cc, p = config.width, config.conv_channels, config.patch
        self.stem = nn.Sequential(nn.Conv2d(config.channels, cc, 3, padding=1), nn.GELU())
        self.patch_embed = nn.Conv2d(cc, w, p, stride=p)
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.pooled_mlp = nn.Sequential(nn.Linear(config.text_dim, w), nn.SiLU(), nn.Linear(w, w))
        self.context_proj = nn.Linear(config.text_dim, w)
        self.blocks = nn.ModuleList(DiTBlock(w, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.unpatch = nn.Linear(w, p * p * cc)
        self.head = nn.Sequential(
            nn.Conv2d(2 * cc, cc, 3, padding=1), nn.GELU(), nn.Conv2d(cc, config.channels, 3, padding=1)
        )
        nn.init.zeros_(self.final_ada[1].weight)
        nn.init.zeros_(self.final_ada[1].bias)
        nn.init.zeros_(self.head[2].weight)
        nn.init.zeros_(self.head[2].bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor
    ) -> torch.Tensor:
        b, _, height, width = x.shape
        p = self.config.patch
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} must be a multiple of the patch size {p}")
        if not (t.shape[0] == context.shape[0] == pooled.shape[0] == b):
            raise ValueError(
                f"batch sizes differ: x {b}, t {t.shape[0]}, context {context.shape[0]}, pooled {pooled.shape[0]}"
            )
        gh, gw = height // p, width // p
        features = self.stem(x)
        tokens = self.patch_embed(features).flatten(2).transpose(1, 2)
        tokens = tokens + sincos_2d(gh, gw, self.config.width, x.device).to(tokens.dtype)
        c = self.time_mlp(timestep_embedding(t, self.config.width).to(tokens.dtype)) + self.pooled_mlp(pooled)
        ctx = self.context_proj(context)
        for block in self.blocks:
            tokens = block(tokens, c, ctx)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        tokens = self.unpatch(modulate(self.final_norm(tokens), shift, scale))
        cc = self.config.conv_channels
        grid = tokens.view(b, gh, gw, p, p, cc).permute(0, 5, 1, 3, 2, 4).reshape(b, cc, height, width)
        out = self.head(torch.cat([grid, features], dim=1))
        if self.config.prediction == "velocity":
            return out
        gap = (1 - t.to(out.dtype)).clamp_min(MIN_GAP).view(-1, 1, 1, 1)
        return (out - x) / gap
