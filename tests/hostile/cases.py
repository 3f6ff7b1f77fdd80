"""The hostile-input table: every case of issue 36 as a crafted file and the ``arctax``
command that reads it, with the bound that must hold and what the one line must say.

Shared by tests/hostile/test_hostile_files.py (the suite, in ``make test``) and
tests/hostile/table.py (the closing note's table: ``python -m tests.hostile.table``).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from arctax.data.dataset import load_split
from tests.hostile import crafted as c


@dataclass(frozen=True)
class Case:
    """One hostile input: ``argv`` (arctax's command line, run in the suite's work folder),
    the issue's case number, the bound it meets and a fragment of the one line it must print
    (on ``stream``) with exit code ``rc``."""

    name: str
    issue: str
    bound: str
    argv: list[str]
    says: str
    rc: int = 1
    stream: str = "stderr"


def submission(data: Path) -> dict:
    """An answer (none) for every test input of the prepared test set at ``data``."""
    ds = load_split(data, "test")
    n: dict[str, int] = {}
    for i in range(len(ds)):
        m = ds.meta(i)
        n[m["task_id"]] = max(n.get(m["task_id"], 0), m["pair"] + 1)
    return {t: [{"attempt_1": []}] * k for t, k in n.items()}


def build(root: Path, data: Path) -> list[Case]:
    """Write every crafted file under ``root / "in"``; return the cases (outputs would go to
    ``results/hostile/<case>`` of the work folder ``root / "work"``)."""
    d = root / "in"
    d.mkdir(parents=True)
    (root / "work").mkdir()
    cases: list[Case] = []

    def out(name: str) -> list[str]:
        return ["--out", f"results/hostile/{name}", "--label", "x"]

    def evaluate(name: str, ckpt: Path, issue: str, bound: str, says: str) -> None:
        cases.append(Case(name, issue, bound, ["evaluate", "--checkpoint", str(ckpt), "--data",
                                                str(data), *out(name)], says))  # fmt: skip

    def score(name: str, pred: Path, cache: Path, issue: str, bound: str, says: str) -> None:
        argv = ["score", "--predictions", str(pred), "--data", str(cache), *out(name)]
        cases.append(Case(name, issue, bound, argv, says))

    def prepare(name: str, source: Path, issue: str, bound: str, says: str) -> None:
        argv = ["--set", f"data.source={source}", "prepare", "--out", f"results/hostile/{name}"]
        cases.append(Case(name, issue, bound, argv, says))

    good = c.save(c.ckpt_dict(), d / "good.ckpt")
    ed = "encoder_decoder"
    big = {**c.TINY[ed], "d_model": 4096, "n_heads": 8, "d_ff": 16384}
    evaluate("ckpt_stride0_large", c.save(c.ckpt_dict(ed, big, c.stride0(c.meta_shapes(ed, big))),
             d / "stride0_large.ckpt"), "1", "storage holds every element",
             "a view of shape (15, 4096) over 4 stored bytes")  # fmt: skip
    evaluate("ckpt_stride0_tiny", c.save(c.ckpt_dict(ed, None, c.stride0(c.meta_shapes(ed, c.TINY[ed]))),
             d / "stride0_tiny.ckpt"), "1", "storage holds every element",
             "a view of shape")  # fmt: skip
    evaluate("ckpt_max_grid_3000", c.save(c.ckpt_dict(ed, {**c.TINY[ed], "max_grid": 3000}),
             d / "max_grid.ckpt"), "1", "schema's model block", "unknown key(s) max_grid")  # fmt: skip
    evaluate("ckpt_deflated_1gib", c.rezip(good, d / "deflated.ckpt",
             deflate_zeros={"good/data/0": c.GIB}, compression=zipfile.ZIP_DEFLATED), "1",
             "members stored (file size)", "compressed (method 8)")  # fmt: skip
    evaluate("ckpt_20000_layers", c.save(c.ckpt_dict(ed, {**c.TINY[ed], "n_encoder_layers": 20000}),
             d / "layers.ckpt"), "1", "limits.max_model_elements, sized in ms",
             "over config key 'limits.max_model_elements'")  # fmt: skip
    evaluate("ckpt_d_model_negative", c.save(c.ckpt_dict(ed, {**c.TINY[ed], "d_model": -16}),
             d / "negative.ckpt"), "7", "schema's model block", "d_model: -16 is less than")  # fmt: skip
    evaluate("ckpt_context_empty", c.save(c.ckpt_dict("champion", {**c.TINY["champion"], "context": {}}),
             d / "context.ckpt"), "7", "schema's model block",
             "(the checkpoint's own hyper-parameters, not your config's)")  # fmt: skip
    sd = c.ckpt_dict()["state_dict"]
    evaluate("ckpt_int_key", c.save(c.ckpt_dict(sd={**sd, 3: torch.zeros(1)}), d / "intkey.ckpt"),
             "7", "names only", "state_dict keys that are not names")  # fmt: skip
    sparse = {**sd, "model.head.bias": sd["model.head.bias"].to_sparse()}
    evaluate("ckpt_sparse_tensor", c.save(c.ckpt_dict(sd=sparse), d / "sparse.ckpt"), "7",
             "plain dense tensors", "sparse")  # fmt: skip
    evaluate("ckpt_encrypted", c.patch_members(good, d / "encrypted.ckpt", flags=1), "7",
             "torch.save's zip", "is encrypted")  # fmt: skip
    evaluate("ckpt_method_98", c.patch_members(good, d / "m98.ckpt", method=98), "7",
             "torch.save's zip", "compressed (method 98)")  # fmt: skip
    evaluate("ckpt_broken_directory", c.broken_directory(good, d / "brokencd.ckpt"), "7",
             "torch.save's zip", "broken central directory")  # fmt: skip
    evaluate("ckpt_overlapping_members", c.overlapping(good, d / "overlap.ckpt"), "1",
             "members apart (file size)", "overlaps another")  # fmt: skip
    evaluate("ckpt_pickle_bomb", c.pickle_bomb(good, d / "pbomb.ckpt"), "1",
             "data.pkl: 8 MiB, 1M opcodes", "over 1000000 pickle opcodes")  # fmt: skip
    big_int = c.ckpt_dict()
    big_int["epoch"] = 10**5000
    evaluate("ckpt_5000_digit_epoch", c.save(big_int, d / "bigint.ckpt"), "7",
             "weights-only pickle opcodes", "its pickle uses opcode 139")  # fmt: skip
    huge = c.ckpt_dict()
    huge["hyper_parameters"]["trial69"] = {"max_epochs": 10**70}
    evaluate("ckpt_huge_hyper_parameter", c.save(huge, d / "huge.ckpt"), "7",
             "plain hyper-parameters (64-bit ints)", "trial69.max_epochs is an integer over 64")  # fmt: skip
    evaluate("ckpt_dev_zero", c.link(d / "zero.ckpt"), "7", "regular files only",
             "a character device (such as /dev/zero)")  # fmt: skip
    evaluate("ckpt_fifo", c.fifo(d / "fifo.ckpt"), "3", "regular files only", "a named pipe")
    legacy = d / "legacy.ckpt"
    torch.save(c.ckpt_dict(), legacy, _use_new_zipfile_serialization=False)
    evaluate("ckpt_legacy_format", legacy, "1", "zip format only", "a legacy (pre-1.6)")
    decoy = c.rezip(
        good,
        d / "decoy.ckpt",
        extra={"decoy/data.pkl": b"\x80\x02}q\x00."},
        order=lambda n: [n[0], "decoy/data.pkl", *[x for x in n[1:] if x != "decoy/data.pkl"]],
    )
    cases.append(
        Case(
            "inspect_decoy_data_pkl",
            "8",
            "the member torch loads",
            ["inspect", str(decoy)],
            "'decoy/data.pkl' outside 'good/'",
            1,
            "stdout",
        )
    )

    sub = submission(data)
    pred = d / "pred.json"
    pred.write_text(json.dumps(sub))
    score("pred_dev_zero", c.link(d / "zero.json"), data, "3", "regular files only",
          "a character device (such as /dev/zero)")  # fmt: skip
    score("pred_fifo", c.fifo(d / "fifo.json"), data, "3", "regular files only", "a named pipe")
    (d / "deep.json").write_bytes(c.deep_json())
    score("pred_deep_json", d / "deep.json", data, "7", "JSON depth 32", "nested deeper than 32")
    (d / "bigint.json").write_text('{"t": [{"attempt_1": [[' + "9" * 5000 + "]]}]}")
    score("pred_5000_digit_int", d / "bigint.json", data, "7", "Python's 4300 digits",
          "bigint.json: not valid JSON (Exceeds the limit")  # fmt: skip
    (d / "costly.json").write_bytes(c.costly_json(16))
    score("pred_costly_json", d / "costly.json", data, "7", "JSON memory 400 MiB",
          "would take up to")  # fmt: skip

    def neg(a):
        a["ex_grids"][0, 0] = -5

    def past(a):
        a["grid_offset"][-1] += 10**6

    score("cache_negative_index", pred, c.write_cache(data, d / "neg", neg), "4", "indices in range",
          "field 'ex_grids' holds -5")  # fmt: skip
    score("cache_offset_past_end", pred, c.write_cache(data, d / "past", past), "4",
          "offsets in range", "field 'grid_offset' holds")  # fmt: skip
    score("cache_cells_1gib", pred, c.cells_bomb(data, d / "bomb"), "4",
          "100x the file (>= 64 MiB)", "a zip bomb?")  # fmt: skip
    score("cache_npy_shape_lie", pred, c.npy_shape_lie(data, d / "lie"), "4",
          "shape = bytes held", "array 'cells' holds shape")  # fmt: skip

    prepare("rearc_member_dotdot", c.rearc_zip(d / "dotdot.zip", {"re_arc/tasks/...json": b"[]"}),
            "2", "task ids are file names", "task id '..' cannot name a file")  # fmt: skip
    prepare("folder_file_dotdot", c.task_folder(d / "dotfolder", {"...json": b"[]"}), "2",
            "task ids are file names", "task id '..' cannot name a file")  # fmt: skip
    prepare("rearc_member_64mib", c.rearc_zip(d / "big.zip", {"re_arc/tasks/aaaa0003.json":
            c.costly_json(64)}), "6", "member 40 MiB", "uncompressed, over the 41943040 a file may have")  # fmt: skip
    prepare("rearc_member_costly_16mib", c.rearc_zip(d / "costly.zip", {"re_arc/tasks/aaaa0003.json":
            c.costly_json(16)}), "6", "JSON memory 400 MiB", "would take up to")  # fmt: skip
    prepare("rearc_zip_encrypted", c.patch_members(c.rearc_zip(d / "e0.zip", {}), d / "enc.zip",
            flags=1), "7", "readable members only", "is encrypted")  # fmt: skip
    prepare("rearc_zip_method_98", c.patch_members(c.rearc_zip(d / "m0.zip", {}), d / "m98.zip",
            method=98), "7", "readable members only", "compressed by method 98")  # fmt: skip
    prepare("rearc_zip_broken_directory", c.broken_directory(c.rearc_zip(d / "b0.zip", {}),
            d / "bcd.zip"), "7", "one line", "a broken zip archive")  # fmt: skip
    prepare("task_deep_json", c.task_folder(d / "deeptask", {"aaaa0003.json": c.deep_json()}),
            "7", "JSON depth 32", "nested deeper than 32")  # fmt: skip
    prepare("task_5000_digit_int", c.task_folder(d / "bigtask", {"aaaa0003.json":
            b"[" + b"9" * 5000 + b"]"}), "7", "Python's 4300 digits", "Exceeds the limit")  # fmt: skip
    prepare("generation_json_list", c.rearc_zip(d / "g1.zip", {"re_arc/generation.json": b"[1, 2]"}),
            "7", "an object with a string version", "not the workflow's generation record")  # fmt: skip
    prepare("generation_json_dict_version", c.rearc_zip(d / "g2.zip",
            {"re_arc/generation.json": b'{"version": {"a": 1}}'}), "7",
            "an object with a string version", "got dict")  # fmt: skip

    (d / "deep.yaml").write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    cases.append(Case("overlay_deep_yaml", "7", "YAML depth 32",
                      ["--config", str(d / "deep.yaml"), "inspect", str(good)],
                      "not valid YAML (nested deeper than 32", 2))  # fmt: skip
    laughs = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n"
        for i in range(9)
    )
    (d / "laughs.yaml").write_text(laughs)
    cases.append(Case("overlay_billion_laughs", "7", "YAML 200k values after aliases",
                      ["--config", str(d / "laughs.yaml"), "inspect", str(good)],
                      "once its aliases are expanded", 2))  # fmt: skip
    cases.append(
        Case(
            "run_dotdot",
            "5",
            "run is one folder name",
            ["--set", "run=..", "inspect", str(good)],
            "cannot name the folder",
            2,
        )
    )
    return cases
