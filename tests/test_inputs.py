"""Reading inputs: JSON errors with positions, safe archives, workspace checks."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from pyhf_dask.exceptions import InvalidArchive, InvalidJSON, InvalidWorkspace
from pyhf_dask.inputs import FileTree, check_workspace, load_json, patch_name


def test_patch_name():
    assert patch_name("RegionA/patch.sbottom_1300_205_60.json") == "sbottom_1300_205_60"


def test_malformed_json_names_file_and_position(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"channels": [\n  {"name": "x",,}\n]}')
    with pytest.raises(InvalidJSON, match=r"bad\.json: invalid JSON at line 2 column"):
        load_json(bad)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InvalidJSON, match="no such file"):
        load_json(tmp_path / "missing.json")
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(InvalidJSON, match="the file is empty"):
        load_json(empty)


def test_workspace_schema_error(seed_workspace):
    broken = json.loads(json.dumps(seed_workspace))
    del broken["observations"]
    with pytest.raises(InvalidWorkspace, match="not a valid pyhf workspace"):
        check_workspace(broken, "ws.json")


@pytest.mark.parametrize("value", [float("nan"), -3.0])
def test_bad_yields(seed_workspace, value):
    broken = json.loads(json.dumps(seed_workspace))
    broken["channels"][0]["samples"][1]["data"][1] = value
    with pytest.raises(InvalidWorkspace, match=r"sample 'background' data\[1\]"):
        check_workspace(broken, "ws.json")


def _tar_with(tmp_path, members: dict[str, bytes], *, symlink: tuple[str, str] | None = None):
    path = tmp_path / "archive.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink[0])
            info.type = tarfile.SYMTYPE
            info.linkname = symlink[1]
            tar.addfile(info)
    return path


@pytest.mark.parametrize("name", ["../evil.json", "/abs/evil.json", "a/../../evil.json"])
def test_unsafe_archive_paths_are_refused(tmp_path, name):
    path = _tar_with(tmp_path, {"BkgOnly.json": b"{}", name: b"[]"})
    with pytest.raises(InvalidArchive, match="unsafe archive member"):
        FileTree.open(path)


def test_links_out_of_the_archive_are_refused(tmp_path):
    path = _tar_with(tmp_path, {"BkgOnly.json": b"{}"}, symlink=("patch.x_1.json", "/etc/passwd"))
    with pytest.raises(InvalidArchive, match="unsafe archive member"):
        FileTree.open(path)


def test_not_an_archive(tmp_path):
    path = tmp_path / "junk.tar.gz"
    path.write_bytes(b"not a tar file at all")
    with pytest.raises(InvalidArchive, match="not a readable tar archive"):
        FileTree.open(path)


def test_archive_members_are_read_in_memory(sbottom_archive, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = FileTree.open(sbottom_archive)
    assert [str(f) for f in tree.folders()] == ["RegionA", "RegionB", "RegionC"]
    assert list(tmp_path.iterdir()) == []


def test_names_of_the_split_modules_are_importable_from_inputs():
    """``inputs`` re-exports what moved to ``reading`` (bounded reads, JSON) and
    ``archives`` (folders, archives, regions): the same objects."""
    from pyhf_dask import archives, inputs, reading

    for module in (reading, archives):
        for name in module.__all__:
            if name in inputs.__all__:
                assert getattr(inputs, name) is getattr(module, name), name
    moved = {"FileTree", "find_region", "limit", "load_json", "parse_json", "read_file"}
    assert moved <= set(inputs.__all__) and {"patch_name", "too_large"} <= set(inputs.__all__)
