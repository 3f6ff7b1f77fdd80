"""re-arc's own layout as data.source: its folder, its zip and its task files; a seeded sample of
data.examples_per_task per task; context from the same task; splits by task; held out tasks."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from arctax.cli import main as cli
from arctax.data.dataset import load_split
from arctax.data.prepare import prepare_training
from arctax.data.rearc import Sample
from arctax.data.sources import load_source
from arctax.data.validate import InvalidTaskError
from arctax.settings import load_settings
from tests.conftest import prepared

IDS = ["007bbfb7", "00d62c1b", "017c7c7b", "025d127b", "045e512c", "0520fde7",
       "05269061", "05f2a901", "06df4c85", "08ed6ac7", "09629e4f", "0a938d79"]  # fmt: skip


def examples(task_id: str, n: int, rng: np.random.Generator) -> list[dict]:
    """n distinct examples of a made-up task (output: the input flipped left-right)."""
    out, seen = [], set()
    while len(out) < n:
        h, w = (int(x) for x in rng.integers(2, 6, 2))
        g = rng.integers(0, 10, (h, w))
        if g.tobytes() in seen:
            continue
        seen.add(g.tobytes())
        out.append({"input": g.tolist(), "output": g[:, ::-1].tolist()})
    return out


def write_rearc(root: Path, ids=IDS, n: int = 20, seed: int = 0) -> Path:
    """A folder in re-arc's layout: re_arc/tasks/<id>.json lists and re_arc/metadata.json."""
    rng = np.random.default_rng(seed)
    tasks = root / "re_arc" / "tasks"
    tasks.mkdir(parents=True)
    meta = {}
    for tid in ids:
        (tasks / f"{tid}.json").write_text(json.dumps(examples(tid, n, rng)))
        meta[tid] = {"n_generations": n, "n_verified": n, "n_nondegenerate": n}
    (root / "re_arc" / "metadata.json").write_text(json.dumps(meta))
    return root / "re_arc"


def zip_rearc(folder: Path, path: Path) -> Path:
    """re_arc.zip as re-arc ships it: members under re_arc/."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*.json")):
            z.write(f, f"re_arc/{f.relative_to(folder)}")
    return path


@pytest.fixture
def rearc(tmp_path) -> Path:
    return write_rearc(tmp_path)


def test_folder_zip_parent_and_tasks_folder_read_alike(rearc, tmp_path):
    folder = load_source(str(rearc))
    assert folder.kind == "re-arc" and [t.task_id for t in folder.tasks] == IDS
    assert all(len(t.train) == 20 and t.test == [] for t in folder.tasks)
    assert folder.version.startswith("re-arc:") and len(folder.sha256) == 64
    z = load_source(str(zip_rearc(rearc, tmp_path / "re_arc.zip")))
    assert (z.kind, z.sha256, z.version) == (folder.kind, folder.sha256, folder.version)
    for a, b in zip(folder.tasks, z.tasks, strict=True):
        assert all(np.array_equal(x[0], y[0]) for x, y in zip(a.train, b.train, strict=True))
    parent = load_source(str(rearc.parent))  # the folder holding re_arc/
    assert parent.sha256 == folder.sha256
    plain = load_source(str(rearc / "tasks"))  # the tasks folder alone: its files are lists
    assert plain.kind == "re-arc" and len(plain.tasks) == len(IDS)
    assert all(t.train[0][0].dtype == np.uint8 for t in folder.tasks)


def test_examples_per_task_is_a_seeded_sample_of_each_task(rearc):
    full = {t.task_id: t for t in load_source(str(rearc)).tasks}
    five = {t.task_id: t for t in load_source(str(rearc), sample=Sample(5, 0)).tasks}
    again = {t.task_id: t for t in load_source(str(rearc), sample=Sample(5, 0)).tasks}
    other = {t.task_id: t for t in load_source(str(rearc), sample=Sample(5, 1)).tasks}
    for tid in IDS:
        assert len(five[tid].train) == 5
        idx = [next(i for i, p in enumerate(full[tid].train) if np.array_equal(p[0], q[0]))
               for q in five[tid].train]  # fmt: skip
        assert idx == sorted(idx)  # a subset of the task's own examples, in file order
        assert all(
            np.array_equal(a[0], b[0])
            for a, b in zip(five[tid].train, again[tid].train, strict=True)
        )
    assert any(
        not all(
            np.array_equal(a[0], b[0]) for a, b in zip(five[t].train, other[t].train, strict=True)
        )
        for t in IDS
    )
    # a task's sample does not depend on the other tasks in the folder
    (rearc / "tasks" / f"{IDS[0]}.json").unlink()
    fewer = {t.task_id: t for t in load_source(str(rearc), sample=Sample(5, 0)).tasks}
    assert all(
        np.array_equal(a[0], b[0])
        for a, b in zip(fewer[IDS[1]].train, five[IDS[1]].train, strict=True)
    )
    # max_cells: the sample is drawn among the examples that fit
    small = load_source(str(rearc), sample=Sample(5, 0, max_cells=12)).tasks
    assert all(max(a.size, b.size) <= 12 for t in small for a, b in t.train)


def test_prepare_a_rearc_folder_splits_by_task_with_context_from_the_task(rearc, tmp_path):
    cfg = load_settings(
        overrides={"data": {"source": str(rearc), "examples_per_task": 6, "val_fraction": 0.25}}
    )
    m = prepare_training(cfg.data, cfg.taxonomy, tmp_path / "out")
    assert m["source_kind"] == "re-arc" and m["examples_per_task"] == 6 and m["short_tasks"] == {}
    train, val = set(m["splits"]["train"]), set(m["splits"]["val"])
    assert not train & val and train | val == set(IDS) and len(val) == 3
    assert m["counts"]["train"]["examples"] == 6 * len(train)
    assert m["counts"]["val"]["examples"] == 6 * len(val)
    assert set(m["files"]) == {"train.npz", "val.npz"}  # the test sets are prepared apart
    src = {t.task_id: t for t in load_source(str(rearc), sample=Sample(6, 0)).tasks}
    for split in ("train", "val"):
        ds = load_split(tmp_path / "out", split)
        for i in range(len(ds)):
            ex, meta = ds[i], ds.meta(i)
            pairs = src[meta["task_id"]].train
            assert np.array_equal(ex["query_in"], pairs[meta["pair"]][0])
            others = [p for j, p in enumerate(pairs) if j != meta["pair"]]
            assert len(ex["context"]) == 2
            for a, b in ex["context"]:
                assert any(np.array_equal(a, x) and np.array_equal(b, y) for x, y in others)


def test_a_split_manifest_and_short_tasks_on_rearc(rearc, tmp_path):
    man = tmp_path / "split.json"
    man.write_text(json.dumps({"train_files": [f"{t}.json" for t in IDS[:9]],
                               "val_files": [f"{t}.json" for t in IDS[9:]]}))  # fmt: skip
    cfg = load_settings(
        overrides={"data": {"source": str(rearc), "examples_per_task": 25, "manifest": str(man)}}
    )
    m = prepare_training(cfg.data, cfg.taxonomy, tmp_path / "out")
    assert m["splits"]["train"] == IDS[:9] and m["splits"]["val"] == IDS[9:]
    assert m["short_tasks"] == dict.fromkeys(IDS, 20)  # 25 asked, 20 in each file: said so


def test_held_out_from_rearc_tests_on_the_original_tasks(rearc, tmp_path):
    from arctax.data.prepare_test import prepare_test_set

    cfg = load_settings(
        overrides={
            "data": {"source": str(rearc), "examples_per_task": 5, "held_out_fraction": 0.25,
                     "test_sets": {"held_out": "held_out", "arcagi1_eval": "arcagi"},
                     "max_tasks": 5},
        }
    )  # fmt: skip
    m = prepare_training(cfg.data, cfg.taxonomy, tmp_path / "train")
    reserved = set(m["held_out"])
    assert len(reserved) == 3 and not reserved & set(m["splits"]["train"] + m["splits"]["val"])
    t = prepare_test_set(
        cfg.data, cfg.taxonomy, "held_out", tmp_path / "held_out", tmp_path / "train"
    )
    assert set(t["splits"]["test"]) == reserved and t["source"].endswith("(held out)")
    arc1 = {x.task_id: x for x in load_source("arcagi").tasks}
    ds = load_split(tmp_path / "held_out", "test")
    for i in range(len(ds)):  # the real ARC-AGI-1 task: its test pairs are the queries
        task = arc1[ds.meta(i)["task_id"]]
        assert np.array_equal(ds[i]["query_out"], task.test[ds.meta(i)["pair"]][1])
    e = prepare_test_set(
        cfg.data, cfg.taxonomy, "arcagi1_eval", tmp_path / "eval", tmp_path / "train"
    )
    assert e["source"] == "arcagi_aa922be/eval" and e["counts"]["test"]["tasks"] == 5
    assert e["training"]["inputs_sha256"] == m["inputs_sha256"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ([[1, 2]], "non-empty JSON list of {'input', 'output'}"),
        ([{"input": [[1]], "output": [[12]]}], "example 0 output: colour 12 outside 0..9"),
        ([{"input": [[1]]}], "example 0: missing key 'input' or 'output'"),
    ],
)
def test_a_bad_rearc_task_file_is_one_clear_error(rearc, content, fragment):
    bad = rearc / "tasks" / "ffffffff.json"
    bad.write_text(json.dumps(content))
    with pytest.raises(InvalidTaskError) as e:
        load_source(str(rearc))
    assert str(bad) in str(e.value) and fragment in str(e.value)
    assert "data.on_invalid: skip" in str(e.value)
    src = load_source(str(rearc), on_invalid="skip")
    assert src.skipped == ["ffffffff"] and len(src.tasks) == len(IDS)


def test_a_zip_without_tasks_names_the_fix(tmp_path):
    p = tmp_path / "other.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(InvalidTaskError, match="re_arc/tasks/"):
        load_source(str(p))


def test_arctax_prepare_reads_a_rearc_folder(rearc, tmp_path, capsys):
    out = tmp_path / "data"
    code = cli(["--set", f"data.source={rearc}", "--set", "data.examples_per_task=4",
                "--set", "data.max_tasks=3", "prepare", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "manifest.json").read_text())
    assert m["source_kind"] == "re-arc" and m["counts"]["train"]["examples"] == 12
    assert m["test_set"] == "arcagi1_eval" and m["counts"]["test"]["tasks"] == 3
    assert prepared(load_settings(overrides={"data": {"source": str(rearc),
                                          "examples_per_task": 4, "max_tasks": 3}}),
                   tmp_path / "again")["files"] == m["files"]  # fmt: skip


# ---- a hostile zip: refused whole, before any member is read, and nothing is written ----


def _hostile_zip(rearc: Path, path: Path, name: str, data: bytes = b"[]", link: bool = False):
    zip_rearc(rearc, path)
    with zipfile.ZipFile(path, "a") as z:
        info = zipfile.ZipInfo(name)
        if link:  # a symlink member: unix mode S_IFLNK | 0777, its bytes the link's target
            info.external_attr = (0o120777 << 16) | 0
        z.writestr(info, data)
    return path


@pytest.mark.parametrize(
    ("name", "link", "fragment"),
    [
        ("../x.json", False, "absolute or climbs out"),
        ("re_arc/tasks/../../../etc/cron.d/x.json", False, "absolute or climbs out"),
        ("/etc/tasks/abcd1234.json", False, "absolute or climbs out"),
        ("re_arc/tasks/abcd1234.json", True, "a symbolic link"),
    ],
)
def test_a_zip_with_an_unsafe_member_is_refused_whole(rearc, tmp_path, name, link, fragment):
    p = _hostile_zip(rearc, tmp_path / "re_arc.zip", name, b"/etc/passwd" if link else b"[]", link)
    with pytest.raises(InvalidTaskError) as e:
        load_source(str(p))
    msg = str(e.value)
    assert str(p) in msg and repr(name) in msg and fragment in msg and "data.source" in msg
    assert not (tmp_path / "x.json").exists()


def test_a_zip_bomb_is_refused_by_declared_and_by_actual_size(rearc, tmp_path, monkeypatch):
    from arctax.data import rearc as mod

    # declared: a member over the cap (a small cap here; 64 MiB in use)
    monkeypatch.setattr(mod, "MAX_MEMBER_BYTES", 4096)
    big = _hostile_zip(rearc, tmp_path / "big.zip", "re_arc/tasks/abcd1234.json", b"[" * 8192)
    with pytest.raises(InvalidTaskError, match=r"8192 bytes uncompressed, over the 4096"):
        load_source(str(big))
    monkeypatch.undo()
    # actual: a member whose headers declare 64 bytes but whose data inflates to far more
    lie = _hostile_zip(rearc, tmp_path / "lie.zip", "re_arc/tasks/abcd1234.json", b" " * 10**6)
    raw = bytearray(lie.read_bytes())
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        i = raw.rfind(sig)
        assert int.from_bytes(raw[i + at : i + at + 4], "little") == 10**6
        raw[i + at : i + at + 4] = (64).to_bytes(4, "little")
    lie.write_bytes(bytes(raw))
    with pytest.raises(InvalidTaskError, match=r"abcd1234\.json' is corrupt"):
        load_source(str(lie))


@pytest.mark.parametrize("layout", ["rearc", "plain"])
def test_a_task_file_that_is_a_link_to_a_device_is_refused_before_reading(rearc, tmp_path, layout):
    folder = rearc / "tasks" if layout == "rearc" else tmp_path / "plain"
    folder.mkdir(exist_ok=True)
    (folder / "abcd1234.json").symlink_to("/dev/zero")  # read_bytes() would never end
    with pytest.raises(
        InvalidTaskError,
        match=r"abcd1234\.json: a character device \(such as /dev/zero\), not a regular file",
    ):
        load_source(str(rearc if layout == "rearc" else folder))


def test_a_task_file_over_the_cap_is_refused(rearc, monkeypatch):
    from arctax.data import rearc as mod

    monkeypatch.setattr(mod, "MAX_MEMBER_BYTES", 64)  # 64 MiB in use
    with pytest.raises(InvalidTaskError, match="over the 64 a task file may have"):
        load_source(str(rearc))
