"""Our text-to-image flow model, in plain torch (never imports ComfyUI).

Conventions (the seed's):
- Model space is RGB in [-1, 1], NCHW: ``x = 2 * img - 1`` for ``img`` in [0, 1].
- Seed time t in [0, 1]: t=0 noise, t=1 data, ``x_t = (1 - t) * noise + t * data``;
  the network predicts ``v = data - noise``.

Public interface (what `nodes/` and the CLIs build on):

`models.dit`
    ``DiTConfig`` (frozen: image_size, channels, patch, width, depth, heads, text_dim,
    mlp_ratio, conv_channels) and ``FlowDiT(config)`` with
    ``forward(x [B,C,H,W], t [B], context [B,L,text_dim], pooled [B,text_dim]) -> v [B,C,H,W]``.
    Equal batch sizes; any H, W that are multiples of ``config.patch`` (positions are
    2-D sincos computed for the actual grid); no fixed device or dtype.

`models.text`
    ``Tokenizer(vocab, max_length)`` with ``encode(prompt) -> (ids, problems)`` (ids are
    always ``max_length`` long; unknown words -> ``[UNK]``, long prompts truncated, both
    reported in ``problems`` and via ``warnings.warn``) and ``tokenizer(prompts) -> ids [B,L]``;
    ``TextEncoder(config)`` with ``forward(ids [B,L]) -> (tokens [B,L,D], pooled [B,D])``
    (pad positions are zero; the DiT attends to all L); ``encode_prompts(tokenizer, encoder,
    prompts)``. The empty prompt ``""`` is the unconditional (CFG) embedding.

`models.checkpoint`
    ``save_checkpoint(path, dit, text_encoder, tokenizer, training, dtype=fp16)`` (atomic),
    ``load_checkpoint(path, device="cpu") -> FlowMatchBundle`` (``.dit``, ``.text_encoder``,
    ``.tokenizer``, ``.metadata`` = {format, version, config: {dit, text}, tokenizer, latent,
    training}), ``read_header(path)``, ``read_metadata(path)``, ``is_flowmatch_checkpoint(path)``
    (header only) and ``CheckpointError(ValueError)``, whose messages name the file.

`models.generate`
    ``generate_images(bundle, prompts, *, steps=20, method="euler", cfg=4.0, seed=0,
    size=None, negative="") -> [B,3,H,W] in [0,1]`` via ``samplers.integrate``
    (CFG: ``v = v_u + cfg * (v_c - v_u)``; sample i uses noise seeded ``seed + i``).

`models.evaluate`
    ``parse_caption(caption) -> {color, shape, background, position}``,
    ``judge(image [3,H,W] in [0,1], caption_or_attrs) -> {color, shape, background, all[, position]}``
    and ``analyze(image)`` (the detected attributes).

`models.data`
    ``ShapesDataset`` (procedural, deterministic per seed and step; ``HELD_OUT`` combos
    excluded), ``FolderDataset`` (images + same-name ``.txt`` captions), ``render``, the palettes.

The bundled checkpoint is ``models/weights/flowmatch_shapes.safetensors``
(``generate.DEFAULT_CHECKPOINT``).
"""
