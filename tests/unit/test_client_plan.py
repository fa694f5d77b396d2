"""Planning a batch without a server: prompts files, columns -> inputs, seeds, validation."""

from __future__ import annotations

import pytest

from comfyui_flowmatch.client.jobs import SeedPlan, plan_jobs
from comfyui_flowmatch.client.overrides import apply_row, resolve_column
from comfyui_flowmatch.client.rows import Row, read_rows

pytestmark = pytest.mark.unit

# A small /object_info subset, in the server's shapes (V1 combo list, V3 COMBO with options).
OBJECT_INFO = {
    "CLIPTextEncode": {"input": {"required": {"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]}}},
    "KSampler": {"input": {"required": {
        "model": ["MODEL"], "seed": ["INT", {"min": 0, "max": 2**64 - 1}], "steps": ["INT", {"min": 1, "max": 10000}],
        "cfg": ["FLOAT", {"min": 0.0, "max": 100.0}], "sampler_name": [["euler", "heun"]],
        "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "latent_image": ["LATENT"]}}},
    "EmptyLatentImage": {"input": {"required": {"width": ["INT", {"min": 16, "max": 8192}],
                                                "height": ["INT", {"min": 16, "max": 8192}],
                                                "batch_size": ["INT", {"min": 1, "max": 4096}]}}},
    "Loader": {"input": {"required": {"solver": ["COMBO", {"options": ["euler", "rk4"]}]}}},
}
WORKFLOW = {
    "4": {"class_type": "Loader", "inputs": {"solver": "euler"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}, "_meta": {"title": "Pos"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}, "_meta": {"title": "Neg"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                                               "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]},
          "_meta": {"title": "Sampler"}},
}


def test_prompts_files_in_three_formats(tmp_path):
    (tmp_path / "p.txt").write_text("# a comment\na red circle\n\n a blue square \n")
    (tmp_path / "p.csv").write_text("prompt,steps,seed\nred,10,\nblue,,5\n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "red", "cfg": 4.5}\n\n{"Sampler.steps": 8}\n')
    assert [(r.index, r.line, r.values) for r in read_rows(tmp_path / "p.txt")] == [
        (1, 2, {"prompt": "a red circle"}), (2, 4, {"prompt": "a blue square"})]
    assert [r.values for r in read_rows(tmp_path / "p.csv")] == [{"prompt": "red", "steps": "10"}, {"prompt": "blue", "seed": "5"}]
    assert [(r.line, r.values) for r in read_rows(tmp_path / "p.jsonl")] == [(1, {"prompt": "red", "cfg": 4.5}), (3, {"Sampler.steps": 8})]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n["not", "an object"]\n')
    with pytest.raises(ValueError, match="line 2"):
        read_rows(tmp_path / "bad.jsonl")


def test_columns_find_their_inputs():
    assert resolve_column("prompt", WORKFLOW, OBJECT_INFO) == [("6", "text")]
    assert resolve_column("negative", WORKFLOW, OBJECT_INFO) == [("7", "text")]
    assert resolve_column("Sampler.cfg", WORKFLOW, OBJECT_INFO) == [("3", "cfg")]
    assert resolve_column("3.steps", WORKFLOW, OBJECT_INFO) == [("3", "steps")]
    assert resolve_column("solver", WORKFLOW, OBJECT_INFO) == [("4", "solver")]
    prompt, issues = apply_row(WORKFLOW, {"prompt": "a dog", "size": "96x32", "steps": "12", "cfg": "3.5"}, OBJECT_INFO)
    assert not issues
    assert prompt["6"]["inputs"]["text"] == "a dog" and prompt["3"]["inputs"]["steps"] == 12 and prompt["3"]["inputs"]["cfg"] == 3.5
    assert (prompt["5"]["inputs"]["width"], prompt["5"]["inputs"]["height"]) == (96, 32)
    assert WORKFLOW["6"]["inputs"]["text"] == "a cat", "the workflow itself is not changed"


def test_unplaceable_columns_say_what_exists():
    with pytest.raises(ValueError, match=r"no node with id or title 'Smapler'.*titles: Neg, Pos, Sampler"):
        resolve_column("Smapler.steps", WORKFLOW, OBJECT_INFO)
    with pytest.raises(ValueError, match=r"node 3 \(KSampler\) has no input 'stepz'"):
        resolve_column("Sampler.stepz", WORKFLOW, OBJECT_INFO)
    with pytest.raises(ValueError, match=r"column 'guidance' matches no node input"):
        resolve_column("guidance", WORKFLOW, OBJECT_INFO)


def test_seed_plans():
    assert SeedPlan.parse(None) == SeedPlan() and SeedPlan.parse("42") == SeedPlan("fixed", 42)
    assert SeedPlan.parse("10-19") == SeedPlan("range", 10, 19)
    with pytest.raises(ValueError, match="FIRST-LAST"):
        SeedPlan.parse("ten")
    rows = [Row(1, 1, {"prompt": "a"}), Row(2, 2, {"prompt": "b", "seed": "100"})]
    fixed, _ = plan_jobs(WORKFLOW, rows, OBJECT_INFO, SeedPlan.parse("7"), repeat=2)
    assert [(j.key, j.seed, j.prompt["3"]["inputs"]["seed"]) for j in fixed] == [
        ("0001_1", 7, 7), ("0001_2", 8, 8), ("0002_1", 100, 100), ("0002_2", 101, 101)]
    three = [Row(i, i, {"prompt": "a"}) for i in (1, 2, 3)]
    ranged, _ = plan_jobs(WORKFLOW, three, OBJECT_INFO, SeedPlan.parse("10-12"))
    assert [j.seed for j in ranged] == [10, 11, 12]
    with pytest.raises(ValueError, match="fewer seeds"):
        plan_jobs(WORKFLOW, three, OBJECT_INFO, SeedPlan.parse("10-11"))
    _, issues = plan_jobs(WORKFLOW, [Row(1, 1, {"seed": "abc"})], OBJECT_INFO)
    assert [str(issue) for issue in issues] == ["row 1 (line 1), input 'seed': seed 'abc' is not a whole number"]
    derived = [plan_jobs(WORKFLOW, rows[:1], OBJECT_INFO)[0][0].seed for _ in range(2)]
    assert derived[0] == derived[1], "derived seeds are stable across reruns"


def test_invalid_rows_name_row_node_and_input():
    rows = [Row(1, 2, {"steps": 0}), Row(2, 3, {"sampler_name": "dpm"}), Row(3, 4, {"prompt": "fine"}),
            Row(4, 5, {"Sampler.stepz": 3}), Row(5, 6, {"solver": "midpoint"})]
    jobs, issues = plan_jobs(WORKFLOW, rows, OBJECT_INFO, SeedPlan.parse("1"))
    assert [job.row.index for job in jobs] == [3]
    text = [str(issue) for issue in issues]
    assert text[0] == "row 1 (line 2), node 3 'Sampler' (KSampler), input 'steps': 0 is smaller than the minimum 1"
    assert text[1].startswith("row 2 (line 3), node 3 'Sampler' (KSampler), input 'sampler_name': 'dpm' is not one of")
    assert "row 4 (line 5)" in text[2] and "has no input 'stepz'" in text[2]
    assert text[3].startswith("row 5 (line 6), node 4 (Loader), input 'solver': 'midpoint' is not one of the options ('euler', 'rk4')")
