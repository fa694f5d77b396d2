"""The batch-queue client: prompts files through ComfyUI servers, resumably (stdlib + websocket-client + tqdm).

Public API: `run_queue` (batch.py), `QueueSettings` (runner.py), `ui_to_api` (ui_to_api.py),
`LocalComfyUI` (local_server.py). The CLI is `python -m comfyui_flowmatch queue`; see docs/client.md.
This package never imports ComfyUI or torch.
"""
