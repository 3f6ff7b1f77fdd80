"""inspect_checkpoint: every kind of file told apart from its pickle opcodes, nothing unpickled."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import save_arctax_ckpt

from arctax.evaluation.inspection import inspect_checkpoint


class _Evil:
    """Unpickling this would run a shell command (which leaves a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["champion", "encoder_decoder", "decoder_only"])
def test_arctax_checkpoints_name_their_model(tmp_path, name):
    p = tmp_path / "m.ckpt"
    save_arctax_ckpt(p, name)
    found = inspect_checkpoint(p)
    assert found.kind == "arctax" and found.model_name == name and found.is_arctax


def test_legacy_format_is_read_too(tmp_path):
    p, legacy = tmp_path / "m.ckpt", tmp_path / "legacy.ckpt"
    save_arctax_ckpt(p, "decoder_only")
    torch.save(torch.load(p, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    assert inspect_checkpoint(legacy).model_name == "decoder_only"


def test_broken_files(tmp_path):
    good = tmp_path / "good.ckpt"
    save_arctax_ckpt(good)
    data = good.read_bytes()
    cases = {
        "missing": tmp_path / "nope.ckpt",
        "not_a_file": tmp_path,
    }
    (tmp_path / "empty.ckpt").touch()
    cases["empty"] = tmp_path / "empty.ckpt"
    (tmp_path / "half.ckpt").write_bytes(data[: len(data) // 2])
    cases["truncated"] = tmp_path / "half.ckpt"
    (tmp_path / "x80.ckpt").write_bytes(b"\x80 but then nothing a pickle would hold")
    cases["corrupt"] = tmp_path / "x80.ckpt"
    (tmp_path / "notes.ckpt").write_text("epoch: 3\n")
    cases["not_torch"] = tmp_path / "notes.ckpt"
    for kind, path in cases.items():
        found = inspect_checkpoint(path)
        assert found.kind == kind and not found.is_arctax, (kind, found)
    z = tmp_path / "foreign.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("readme.txt", "hello")
    assert (
        inspect_checkpoint(z).kind == "not_torch" and "readme.txt" in inspect_checkpoint(z).detail
    )
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    assert inspect_checkpoint(plain).kind == "not_torch"


def test_a_malicious_pickle_is_named_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    for i, proto in enumerate((2, 4)):  # GLOBAL and STACK_GLOBAL opcodes
        p = tmp_path / f"evil{i}.ckpt"
        torch.save({"state_dict": {}, "hyper_parameters": _Evil(marker)}, p, pickle_protocol=proto)
        found = inspect_checkpoint(p)
        assert found.kind == "unsafe" and "system" in found.detail, found
        assert any(g.endswith(".system") for g in found.unsafe_globals)
    assert not marker.exists()


def test_original_codebase_and_foreign_torch_files(tmp_path):
    p = tmp_path / "orig.ckpt"
    sd = {"cebr_alpha": torch.zeros(()), "core_model.bos_embed": torch.zeros(4)}
    torch.save({"state_dict": sd, "hyper_parameters": {"model": {}}}, p)
    found = inspect_checkpoint(p)
    assert found.kind == "original" and "core_model.bos_embed" in found.detail
    t = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), t)
    assert inspect_checkpoint(t).kind == "foreign"
    other = tmp_path / "other.ckpt"
    torch.save(
        {"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"model_name": "x"}}, other
    )
    assert inspect_checkpoint(other).kind == "foreign"


def test_reads_only_the_pickle_of_a_large_file(tmp_path):
    """A 30 MB original-like file is told in milliseconds: tensors are never read."""
    import time

    p = tmp_path / "big.ckpt"
    sd = {f"core_model.layer{i}.weight": torch.zeros(160, 160) for i in range(292)}
    torch.save({"state_dict": sd}, p)
    assert p.stat().st_size > 25e6
    t0 = time.perf_counter()
    found = inspect_checkpoint(Path(p))
    seconds = time.perf_counter() - t0
    assert found.kind == "original"
    print(f"inspect_checkpoint of {p.stat().st_size / 1e6:.0f} MB: {seconds * 1e3:.1f} ms")


def test_a_pickle_that_inflates_past_the_cap_is_not_read(tmp_path, monkeypatch):
    from arctax.evaluation import inspection

    path = tmp_path / "bomb.ckpt"
    save_arctax_ckpt(path)
    size = max(
        i.file_size for i in zipfile.ZipFile(path).infolist() if i.filename.endswith("data.pkl")
    )
    monkeypatch.setattr(inspection, "MAX_PICKLE_BYTES", size - 1)  # 64 MiB in use
    found = inspect_checkpoint(path)
    assert found.kind == "corrupt" and f"declares {size} bytes" in found.detail
    monkeypatch.setattr(inspection, "MAX_PICKLE_BYTES", size)
    assert inspect_checkpoint(path).kind == "arctax"


def test_a_decoy_model_class_makes_it_foreign(tmp_path):
    path = tmp_path / "decoy.ckpt"
    save_arctax_ckpt(path, model_class=None)
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["model_cfg"] = {"model_class": "evil.py:X"}  # two values read
    torch.save(ckpt, path)
    found = inspect_checkpoint(path)
    assert found.kind == "foreign" and "model_class is not one string" in found.detail


def test_a_name_twice_or_a_member_outside_the_first_folder_is_not_read(tmp_path):
    """torch takes its folder from the FIRST member and looks names up in its own reader: a
    name written twice, or a data.pkl in another folder, would let inspect and torch read
    different pickles (issue 36), so neither is read."""
    import warnings

    good = tmp_path / "good.ckpt"
    save_arctax_ckpt(good)
    with zipfile.ZipFile(good) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    twice, other = tmp_path / "twice.ckpt", tmp_path / "other.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(twice, "w") as z:
            for name, data in [*members, members[0]]:
                z.writestr(name, data)
    with zipfile.ZipFile(other, "w") as z:  # torch's folder is good/, the second pickle another
        for name, data in [members[0], ("other/data.pkl", members[0][1]), *members[1:]]:
            z.writestr(name, data)
    found = inspect_checkpoint(twice)
    assert found.kind == "corrupt" and "is there twice" in found.detail
    found = inspect_checkpoint(other)
    assert found.kind == "not_torch" and "'other/data.pkl' outside 'good/'" in found.detail
