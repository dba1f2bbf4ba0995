"""Regenerate the bad-input corpus: one folder per case with its files and ``case.json``.

Run from the repository root: ``python tests/bad_inputs/make_corpus.py``. The files are
committed; this script documents how each was made. ``case.json`` holds the command-line
arguments (``{case}`` is the case folder), the expected error category and a regular
expression the one-line message must match.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import tarfile
from pathlib import Path

HERE = Path(__file__).parent


def workspace(signal=(5.0, 4.0), *, poi="mu"):
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [50.0, 52.0],
                        "modifiers": [
                            {"name": "uncorr_bkguncrt", "type": "shapesys", "data": [3.0, 7.0]}
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [51.0, 48.0]}],
        "measurements": [{"name": "meas", "config": {"poi": poi, "parameters": []}}],
        "version": "1.0.0",
    }


def signal_op(data=(5.0, 4.0), *, poi="mu", path="/channels/0/samples/0"):
    return {
        "op": "add",
        "path": path,
        "value": {
            "name": "signal",
            "data": list(data),
            "modifiers": [{"name": poi, "type": "normfactor", "data": None}],
        },
    }


def write(case: str, files: dict[str, object], args: list[str], category: str, match: str):
    folder = HERE / case
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(json.dumps(content, indent=1))
    (folder / "case.json").write_text(
        json.dumps({"args": args, "category": category, "match": match}, indent=1) + "\n"
    )


def tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def main() -> None:
    ws, ok = workspace(), [signal_op()]
    std = ["{case}/BkgOnly.json", "{case}/patch.sig_100_10.json"]
    good = {"BkgOnly.json": ws, "patch.sig_100_10.json": ok}

    write(
        "01_malformed_workspace_json",
        {"BkgOnly.json": '{"channels": [\n {"name": "SR",,}\n]}', "patch.sig_100_10.json": ok},
        std,
        "json",
        r"BkgOnly\.json: invalid JSON at line 2",
    )
    write(
        "02_empty_workspace",
        {"BkgOnly.json": "", "patch.sig_100_10.json": ok},
        std,
        "json",
        r"BkgOnly\.json: the file is empty",
    )
    write(
        "03_missing_workspace",
        {"patch.sig_100_10.json": ok},
        std,
        "json",
        r"BkgOnly\.json: no such file",
    )
    write(
        "04_workspace_is_a_list",
        {"BkgOnly.json": [1, 2], "patch.sig_100_10.json": ok},
        std,
        "workspace",
        r"must be a JSON object",
    )
    no_obs = workspace()
    del no_obs["observations"]
    write(
        "05_workspace_schema",
        {"BkgOnly.json": no_obs, "patch.sig_100_10.json": ok},
        std,
        "workspace",
        r"not a valid pyhf workspace.*observations",
    )
    nan = workspace()
    nan["channels"][0]["samples"][0]["data"][1] = math.nan
    write(
        "06_workspace_nan_yield",
        {"BkgOnly.json": json.dumps(nan), "patch.sig_100_10.json": ok},
        std,
        "workspace",
        r"sample 'bkg' data\[1\] is nan",
    )
    neg = workspace()
    neg["channels"][0]["samples"][0]["data"][0] = -4.0
    write(
        "07_workspace_negative_yield",
        {"BkgOnly.json": neg, "patch.sig_100_10.json": ok},
        std,
        "workspace",
        r"sample 'bkg' data\[0\] is negative",
    )
    negobs = workspace()
    negobs["observations"][0]["data"][0] = -1.0
    write(
        "08_negative_observation",
        {"BkgOnly.json": negobs, "patch.sig_100_10.json": ok},
        std,
        "workspace",
        r"observations of 'SR' data\[0\] is negative",
    )
    patchset = {
        "metadata": {
            "name": "x",
            "references": {"hepdata": "ins1234567"},
            "description": "x",
            "digests": {"sha256": "0" * 64},
            "labels": ["m1", "m2"],
        },
        "patches": [{"metadata": {"name": "sig_100_10", "values": [100, 10]}, "patch": ok}],
        "version": "1.0.0",
    }
    write(
        "09_patchset_digest_mismatch",
        {"BkgOnly.json": ws, "patchset.json": patchset},
        ["{case}/BkgOnly.json", "{case}/patchset.json"],
        "patch",
        r"digest does not match",
    )
    bad_ps = json.loads(json.dumps(patchset))
    del bad_ps["metadata"]["labels"]
    bad_ps["metadata"]["references"]["hepdata"] = "ins0"
    write(
        "10_patchset_schema",
        {"BkgOnly.json": ws, "patchset.json": bad_ps},
        ["{case}/BkgOnly.json", "{case}/patchset.json"],
        "patch",
        r"not a valid pyhf patchset at metadata\.references\.hepdata: 'ins0'",
    )
    write(
        "11_malformed_patch_json",
        {"BkgOnly.json": ws, "patch.sig_100_10.json": '[{"op": '},
        std,
        "json",
        r"patch\.sig_100_10\.json: invalid JSON at line 1",
    )
    write(
        "12_patch_is_an_object",
        {"BkgOnly.json": ws, "patch.sig_100_10.json": {"op": "add"}},
        std,
        "patch",
        r"neither a pyhf patchset",
    )
    write(
        "13_patch_path_missing",
        {"BkgOnly.json": ws, "patch.sig_100_10.json": [signal_op(path="/channels/3/samples/0")]},
        std,
        "patch",
        r"sig_100_10.*operation 0 \(add '/channels/3/samples/0'\) does not apply",
    )
    write(
        "14_patch_replace_missing_member",
        {
            "BkgOnly.json": ws,
            "patch.sig_100_10.json": [
                *ok,
                {"op": "replace", "path": "/channels/0/lumi", "value": 1},
            ],
        },
        std,
        "patch",
        r"operation 1 \(replace '/channels/0/lumi'\) does not apply: no member 'lumi'",
    )
    write(
        "15_patch_unknown_op",
        {
            "BkgOnly.json": ws,
            "patch.sig_100_10.json": [*ok, {"op": "frobnicate", "path": "/channels"}],
        },
        std,
        "patch",
        r"unknown operation",
    )
    write(
        "16_patch_not_operations",
        {"BkgOnly.json": ws, "patch.sig_100_10.json": ["add"]},
        std,
        "patch",
        r"not a jsonpatch",
    )
    write(
        "17_patch_name_without_numbers",
        {"BkgOnly.json": ws, "patch.signal.json": ok},
        ["{case}/BkgOnly.json", "{case}/patch.signal.json"],
        "grid",
        r"no grid coordinates can be parsed from the patch name 'signal'",
    )
    write(
        "18_patch_names_differ_in_coordinates",
        {**good, "patch.sig_200.json": ok},
        [*std, "{case}/patch.sig_200.json"],
        "grid",
        r"has 1 coordinates, 'sig_100_10' has 2",
    )
    write(
        "19_duplicate_coordinates",
        {**good, "patch.other_100_10.json": ok},
        [*std, "{case}/patch.other_100_10.json"],
        "grid",
        r"duplicate grid coordinates",
    )
    write(
        "20_wrong_number_of_labels",
        good,
        [*std, "--labels", "m1,m2,m3"],
        "grid",
        r"3 labels given \(m1,m2,m3\) for 2 coordinates",
    )
    write(
        "21_empty_selection",
        good,
        [*std, "--patch", "nothing_*"],
        "grid",
        r"no point matches 'nothing_\*'",
    )
    write(
        "22_patch_nan_yield",
        {"BkgOnly.json": ws, "patch.sig_100_10.json": json.dumps([signal_op((math.nan, 1.0))])},
        std,
        "patch",
        r"sig_100_10.*data\[0\] is nan",
    )
    write(
        "23_patch_negative_yield",
        {"BkgOnly.json": ws, "patch.sig_100_10.json": [signal_op((1.0, -2.0))]},
        std,
        "patch",
        r"sig_100_10.*data\[1\] is negative",
    )
    write(
        "24_poi_missing_from_model",
        {"BkgOnly.json": ws, "patch.sig_100_10.json": [signal_op(poi="mu_SIG")]},
        std,
        "grid",
        r"POI 'mu' is not a normfactor .* sig_100_10",
    )
    write(
        "25_unknown_measurement",
        good,
        [*std, "--measurement", "nope"],
        "option",
        r"no measurement 'nope' in the workspace \(measurements: meas\)",
    )
    ws_bytes = json.dumps(ws).encode()
    patch_bytes = json.dumps(ok).encode()
    write(
        "26_archive_parent_path",
        {
            "likelihood.tar.gz": tar(
                {"BkgOnly.json": ws_bytes, "../patch.sig_100_10.json": patch_bytes}
            )
        },
        ["{case}/likelihood.tar.gz"],
        "archive",
        r"unsafe archive member '\.\./patch",
    )
    write(
        "27_archive_absolute_path",
        {
            "likelihood.tar.gz": tar(
                {"BkgOnly.json": ws_bytes, "/tmp/patch.sig_100_10.json": patch_bytes}
            )
        },
        ["{case}/likelihood.tar.gz"],
        "archive",
        r"unsafe archive member '/tmp/patch",
    )
    write(
        "28_archive_link_out",
        {
            "likelihood.tar.gz": tar(
                {"BkgOnly.json": ws_bytes}, {"patch.sig_100_10.json": "/etc/passwd"}
            )
        },
        ["{case}/likelihood.tar.gz"],
        "archive",
        r"unsafe archive member 'patch\.sig_100_10",
    )
    write(
        "29_archive_without_workspace",
        {"likelihood.tar.gz": tar({"patch.sig_100_10.json": patch_bytes})},
        ["{case}/likelihood.tar.gz"],
        "archive",
        r"holds no BkgOnly\.json",
    )
    write(
        "30_several_regions",
        {
            "A/BkgOnly.json": ws,
            "A/patch.sig_100_10.json": ok,
            "B/BkgOnly.json": ws,
            "B/patch.sig_100_10.json": ok,
        },
        ["{case}"],
        "archive",
        r"holds several regions, choose one with --region \(A, B\)",
    )
    write(
        "31_unknown_region",
        good,
        ["{case}", "--region", "RegionZ"],
        "archive",
        r"no region 'RegionZ'",
    )
    write(
        "32_not_an_archive",
        {"likelihood.tar.gz": b"\x00\x01 definitely not gzip"},
        ["{case}/likelihood.tar.gz"],
        "archive",
        r"not a readable tar archive",
    )
    write(
        "33_bad_output_suffix",
        good,
        [*std, "-o", "{case}/out.txt"],
        "option",
        r"out\.txt: output must end in \.nc or \.zarr",
    )
    write(
        "34_resume_without_store",
        good,
        [*std, "-o", "{case}/out.nc", "--resume"],
        "option",
        r"--resume, --retry-failed and --overwrite need a \.zarr output",
    )
    write(
        "35_poi_values_not_increasing",
        good,
        [*std, "--poi-value", "2", "--poi-value", "1"],
        "option",
        r"strictly increasing",
    )
    write(
        "36_not_utf8",
        {"BkgOnly.json": b'{"channels": "\xff\xfe"}', "patch.sig_100_10.json": ok},
        std,
        "json",
        r"BkgOnly\.json: not UTF-8",
    )
    write(
        "37_folder_without_patches",
        {"BkgOnly.json": ws},
        ["{case}"],
        "patch",
        r"holds no patch\.\*\.json files and no patchset",
    )
    inconsistent = workspace()
    inconsistent["observations"][0]["name"] = "CR"
    write(
        "38_observations_for_unknown_channel",
        {"BkgOnly.json": inconsistent, "patch.sig_100_10.json": ok},
        std,
        "workspace",
        r"channel 'SR' has no observations \(observations are given for: CR\)",
    )
    longer = workspace()
    longer["observations"][0]["data"] = [51.0, 48.0, 50.0]
    write(
        "39_observations_longer_than_bins",
        {"BkgOnly.json": longer, "patch.sig_100_10.json": ok},
        std,
        "workspace",
        r"observations of channel 'SR' hold 3 values but the channel has 2 bins",
    )
    write(
        "40_patch_sample_with_other_bins",
        {"BkgOnly.json": ws, "patch.sig_100_10.json": [signal_op((5.0, 4.0, 3.0))]},
        std,
        "patch",
        r"patch 'sig_100_10': channel 'SR': samples differ in their bins \(signal: 3, bkg: 2\)",
    )
    write(
        "41_more_bins_than_the_limit",
        good,
        [*std, "--max-bins", "1"],
        "limit",
        r"channel 'SR' has 2 bins, more than 1 \(raise the limit with --max-bins N\)",
    )
    write(
        "42_json_nested_too_deep",
        {"BkgOnly.json": "[" * 100_000 + "]" * 100_000, "patch.sig_100_10.json": ok},
        std,
        "limit",
        r"BkgOnly\.json: JSON nested deeper than 64 levels",
    )
    write(
        "43_file_larger_than_the_limit",
        {"BkgOnly.json": ws, "patch.sig_100_10.json": json.dumps(ok) + " " * 20_000},
        [*std, "--max-file-size", "0.01"],
        "limit",
        r"patch\.sig_100_10\.json: larger than 0\.01 MB \(raise the limit with --max-file-size",
    )
    histo = workspace()
    histo["channels"][0]["samples"][0]["modifiers"].append(
        {"name": "h", "type": "histosys", "data": {"hi_data": [51.0], "lo_data": [49.0, 50.0]}}
    )
    write(
        "44_modifier_with_other_bins",
        {"BkgOnly.json": histo, "patch.sig_100_10.json": ok},
        std,
        "workspace",
        r"sample 'bkg' modifier 'h' hi_data has 1 values",
    )
    member = b"[" * 70 + b"]" * 70
    write(
        "45_archive_member_nested_too_deep",
        {
            "archive.tar.gz": tar(
                {"R/BkgOnly.json": json.dumps(ws).encode(), "R/patch.sig_1_2.json": member}
            )
        },
        ["{case}/archive.tar.gz"],
        "limit",
        r"archive\.tar\.gz:R/patch\.sig_1_2\.json: JSON nested deeper than 64 levels",
    )


if __name__ == "__main__":
    main()
