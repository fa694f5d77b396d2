"""The `image` column: local files get content-derived server names that the planner sets on
the image loader, and a missing file is reported with its row."""

import hashlib

import pytest

from comfyui_flowmatch.client.images import attach_images, with_upload_options
from comfyui_flowmatch.client.jobs import plan_jobs
from comfyui_flowmatch.client.rows import Row

pytestmark = pytest.mark.unit

OBJECT_INFO = {
    "LoadImage": {"input": {"required": {"image": [["present.png"], {"image_upload": True}]}},
                  "input_order": {"required": ["image"]}},
    "SaveImage": {"input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {}]}},
                  "input_order": {"required": ["images", "filename_prefix"]}},
}
WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "present.png"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}


def test_rows_get_the_content_name_and_keep_the_local_path(tmp_path):
    (tmp_path / "pics").mkdir()
    data = b"\x89PNG not really"
    (tmp_path / "pics" / "a.PNG").write_bytes(data)
    rows, images = attach_images([Row(1, 2, {"image": "pics/a.PNG"}), Row(2, 3, {"prompt": "no image"})], tmp_path)
    name = f"flowmatch_{hashlib.sha256(data).hexdigest()[:16]}.png"
    assert rows[0].values == {"image": name, "source_image": str(tmp_path / "pics" / "a.PNG")}
    assert rows[1].values == {"prompt": "no image"}
    assert list(images) == [name] and images[name].path == tmp_path / "pics" / "a.PNG"


def test_a_missing_image_names_its_row(tmp_path):
    with pytest.raises(ValueError, match=r"row 1 \(line 2\): image 'gone.png' is not a file"):
        attach_images([Row(1, 2, {"image": "gone.png"})], tmp_path)


def test_planned_jobs_set_the_loader_to_the_upload_name(tmp_path):
    (tmp_path / "a.png").write_bytes(b"a")
    (tmp_path / "b.png").write_bytes(b"b")
    rows, images = attach_images([Row(1, 1, {"image": "a.png"}), Row(2, 2, {"image": "b.png"})], tmp_path)
    info = with_upload_options(OBJECT_INFO, WORKFLOW, images)
    jobs, issues = plan_jobs(WORKFLOW, rows, info)
    assert issues == []
    assert [job.prompt["1"]["inputs"]["image"] for job in jobs] == [row.values["image"] for row in rows]
    assert OBJECT_INFO["LoadImage"]["input"]["required"]["image"][0] == ["present.png"], "the server's info is not changed"
    # Without the upload names the client's own validation would refuse the rows.
    assert plan_jobs(WORKFLOW, rows, OBJECT_INFO)[1]
