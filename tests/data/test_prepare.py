"""The cache: task-level splits, manifest, plain arrays, examples and augmentation."""

import json
import zipfile

import numpy as np
import pytest

from arctax.data.dataset import CacheError, load_split
from arctax.data.prepare import prepare
from arctax.data.sources import load_source
from arctax.data.splits import size_bucket, split_tasks
from arctax.data.validate import InvalidTaskError
from arctax.settings import load_settings
from tests.conftest import SHARED, prepared


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """All 800 ARC-AGI-1 tasks, default config."""
    out = tmp_path_factory.mktemp("full")
    return out, prepared(load_settings(), out)


def test_no_task_in_two_splits(full):
    _, m = full
    s = {k: set(v) for k, v in m["splits"].items()}
    assert (
        not (s["train"] & s["val"]) and not (s["train"] & s["test"]) and not (s["val"] & s["test"])
    )
    assert len(s["train"]) + len(s["val"]) == 400 and len(s["test"]) == 400


def test_manifest_records_source_counts_and_hashes(full):
    out, m = full
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == m
    assert m["version"] == "aa922be" and m["k"] == 2
    assert m["source"] == "arcagi_aa922be/train" and m["test_source"] == "arcagi_aa922be/eval"
    assert len(m["inputs_sha256"]) == 64 and len(m["config_sha256"]) == 64
    assert m["counts"]["test"]["examples"] == 419  # every ARC-AGI-1 evaluation test pair
    assert set(m["files"]) == {"train.npz", "val.npz", "test.npz"}


def test_cache_is_plain_arrays(full):
    out, _ = full
    with np.load(out / "train.npz", allow_pickle=False) as z:
        assert all(z[name].dtype != object for name in z.files)


def test_examples_use_context_from_the_same_task(full):
    out, _ = full
    ds = load_split(out, "train")
    src = {t.task_id: t for t in load_source("arcagi").tasks}
    for i in range(0, len(ds), 97):
        ex, meta = ds[i], ds.meta(i)
        task = src[meta["task_id"]]
        q = task.pairs[meta["pair"]]
        assert np.array_equal(ex["query_in"], q[0]) and np.array_equal(ex["query_out"], q[1])
        others = [p for j, p in enumerate(task.pairs) if j != meta["pair"]]
        for a, b in ex["context"]:
            assert any(np.array_equal(a, x) and np.array_equal(b, y) for x, y in others)


def test_test_split_queries_are_test_pairs_with_train_context(full):
    out, _ = full
    ds = load_split(out, "test")
    src = {t.task_id: t for t in load_source("arcagi", "eval").tasks}
    ex, meta = ds[0], ds.meta(0)
    task = src[meta["task_id"]]
    assert np.array_equal(ex["query_out"], task.test[meta["pair"]][1])
    assert all(any(np.array_equal(a, x) for x, _ in task.train) for a, _ in ex["context"])


def test_prepare_is_deterministic(tmp_path, tiny_cfg):
    a, b = (
        prepare(tiny_cfg.data, tiny_cfg.taxonomy, tmp_path / "a"),
        prepare(tiny_cfg.data, tiny_cfg.taxonomy, tmp_path / "b"),
    )
    assert a["files"] == b["files"]


def test_augmented_copies_are_consistent(tmp_path):
    cfg = load_settings(overrides={"data": {"max_tasks": 5, "augment": {"copies": 3}}})
    prepare(cfg.data, cfg.taxonomy, tmp_path)
    ds = load_split(tmp_path, "train")
    with np.load(tmp_path / "train.npz") as z:
        dih, perm, aug = z["ex_dihedral"], z["ex_perm"], z["ex_aug"]
    from arctax.data.augment import Augmentation

    orig = {(ds.meta(i)["task_id"], ds.meta(i)["pair"]): i for i in range(len(ds)) if aug[i] == 0}
    assert (aug > 0).sum() == 3 * len(orig)
    for i in np.flatnonzero(aug > 0)[:20]:
        a = Augmentation(int(dih[i]), perm[i].astype(np.int64))
        j = orig[(ds.meta(i)["task_id"], ds.meta(i)["pair"])]
        assert np.array_equal(a.invert(ds[i]["query_out"]), ds[j]["query_out"])
        for (ci, co), (oi, oo) in zip(ds[i]["context"], ds[j]["context"], strict=True):
            assert np.array_equal(a.invert(ci), oi) and np.array_equal(a.invert(co), oo)
    assert load_split(tmp_path, "val").ex_aug.max() == 0  # never augment val/test


def test_split_is_seeded_and_stratified_by_size():
    tasks = load_source("arcagi").tasks
    a = split_tasks(tasks, 0.23, 42, {})
    assert a == split_tasks(tasks, 0.23, 42, {})
    assert a != split_tasks(tasks, 0.23, 43, {})


# the paper's nine categories over the 400 ARC-AGI-1 training tasks (ORIGINAL_PROJECT.md)
TAXONOMY_COUNTS = {
    "S1": 52, "S2": 38, "S3": 108, "C1": 99, "C2": 28,
    "K1": 7, "L1": 21, "A1": 5, "A2": 28, "ambiguous": 14,
}  # fmt: skip


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/original not present")
def test_real_taxonomy_labels_and_stratified_split(tmp_path):
    labels_path = SHARED / "all_tasks_classified.json"
    labels = json.loads(labels_path.read_text())
    counts = {c: list(labels.values()).count(c) for c in set(labels.values())}
    assert counts == TAXONOMY_COUNTS
    _, val = split_tasks(load_source("arcagi").tasks, 0.23, 42, labels)
    for cat, n in counts.items():
        n_val = sum(labels[t] == cat for t in val)
        assert abs(n_val - 0.23 * n) <= 1, cat  # every category held out in proportion
    m = prepared(load_settings(overrides={"taxonomy": {"labels": str(labels_path)}}), tmp_path)
    ds = load_split(tmp_path, "train")
    assert {ds.categories[i] for i, t in enumerate(ds.task_ids)} <= set(counts)
    assert all(ds.categories[i] == labels[t] for i, t in enumerate(ds.task_ids))
    # every ARC-AGI-1 training task lands in train or val with its category
    cats = ds.categories + load_split(tmp_path, "val").categories
    assert {c: cats.count(c) for c in set(cats)} == TAXONOMY_COUNTS
    assert set(load_split(tmp_path, "test").categories) == {"unlabelled"}
    assert m["splits"]["train"]


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/original not present")
def test_original_split_manifest_wins(tmp_path):
    m = prepared(
        load_settings(overrides={"data": {"manifest": str(SHARED / "split_manifest.json")}}),
        tmp_path,
    )
    ref = json.loads((SHARED / "split_manifest.json").read_text())
    assert len(m["splits"]["train"]) == 308 and len(m["splits"]["val"]) == 92
    assert set(m["splits"]["val"]) == {f[:-5] for f in ref["val_files"]}


def test_rearc_directory_source_with_manifest(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "rearc"
    d.mkdir()
    for name in ["aaaa0001", "aaaa0002", "aaaa0003", "aaaa0004"]:
        pairs = [
            {
                "input": rng.integers(0, 10, (3, 4)).tolist(),
                "output": rng.integers(0, 10, (2, 2)).tolist(),
            }
            for _ in range(150)
        ]
        (d / f"{name}.json").write_text(json.dumps({"train": pairs, "test": []}))
    man = tmp_path / "split.json"
    man.write_text(
        json.dumps(
            {
                "train_files": ["aaaa0001.json", "aaaa0002.json", "aaaa0003.json"],
                "val_files": ["aaaa0004.json"],
            }
        )
    )
    cfg = load_settings(
        overrides={"data": {"source": str(d), "manifest": str(man), "max_tasks": 5}}
    )
    m = prepare(cfg.data, cfg.taxonomy, tmp_path / "out")
    assert m["splits"]["val"] == ["aaaa0004"] and m["counts"]["train"]["examples"] == 450
    assert m["test_source"] == "arcagi_aa922be/eval" and m["version"] == f"dir:{d}"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train_files": ["zzz.json"], "val_files": []}))
    with pytest.raises(ValueError, match="zzz"):
        prepared(
            load_settings(overrides={"data": {"source": str(d), "manifest": str(bad)}}),
            tmp_path / "o2",
        )


def test_corrupt_or_missing_cache_is_a_clear_error(tmp_path, tiny_data):
    with pytest.raises(CacheError, match="run the prepare step"):
        load_split(tmp_path, "train")
    (tmp_path / "train.npz").write_bytes((tiny_data / "train.npz").read_bytes()[:100])
    with pytest.raises(CacheError, match="corrupt"):
        load_split(tmp_path, "train")
    assert zipfile.is_zipfile(tiny_data / "train.npz")


def _write_task(d, name, n_pairs, shape=(2, 2), test=0):
    rng = np.random.default_rng(len(name) + n_pairs)

    def pair(s):
        return {"input": rng.integers(0, 10, s).tolist(), "output": rng.integers(0, 10, s).tolist()}

    obj = {
        "train": [pair(shape) for _ in range(n_pairs)],
        "test": [pair(shape) for _ in range(test)],
    }
    (d / f"{name}.json").write_text(json.dumps(obj))


def test_missing_context_slots_are_minus_one(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    for i in range(6):
        _write_task(d, f"t{i}", n_pairs=2 + i % 3)  # 1..3 other pairs for K=3
    cfg = load_settings(
        overrides={"data": {"source": str(d), "context_pairs": 3, "val_fraction": 0.3}}
    )
    prepare(cfg.data, cfg.taxonomy, tmp_path / "out")
    for split in ("train", "val"):
        ds = load_split(tmp_path / "out", split)
        assert ds.k == 3 and ds.ex_grids.shape[1] == 8
        for i in range(len(ds)):
            n_pairs = 2 + int(ds.meta(i)["task_id"][1:]) % 3
            n_ctx = min(3, n_pairs - 1)
            assert (ds.ex_grids[i, 2 : 2 + 2 * n_ctx] >= 0).all()
            assert (ds.ex_grids[i, 2 + 2 * n_ctx :] == -1).all()
            assert len(ds[i]["context"]) == n_ctx


def test_max_cells_keeps_pair_indices_and_counts_dropped_tasks(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    rng = np.random.default_rng(0)
    big = rng.integers(0, 10, (9, 9)).tolist()
    small = [rng.integers(0, 10, (2, 2)).tolist() for _ in range(4)]
    pairs = [{"input": big, "output": big}] + [{"input": g, "output": g} for g in small]
    for i in range(4):
        (d / f"ok{i}.json").write_text(json.dumps({"train": pairs, "test": []}))
    (d / "toobig.json").write_text(json.dumps({"train": [pairs[0]] * 3, "test": []}))
    cfg = load_settings(
        overrides={"data": {"source": str(d), "max_cells": 16, "val_fraction": 0.25}}
    )
    m = prepare(cfg.data, cfg.taxonomy, tmp_path / "out")
    assert "toobig" in m["unusable_after_filter"]
    assert "toobig" not in m["splits"]["train"] + m["splits"]["val"]
    ds = load_split(tmp_path / "out", "train")
    assert sorted({ds.meta(i)["pair"] for i in range(len(ds))}) == [1, 2, 3, 4]  # 0 was too big
    assert all(np.array_equal(ds[i]["query_in"], small[ds.meta(i)["pair"] - 1]) for i in range(4))


def test_max_tasks_applies_per_split_after_the_split(full, tmp_path):
    m_full = full[1]
    m = prepared(load_settings(overrides={"data": {"max_tasks": 7}}), tmp_path)
    for split in ("train", "val", "test"):
        assert m["splits"][split] == m_full["splits"][split][:7]


def test_split_by_output_size_is_stratified():
    tasks = load_source("arcagi").tasks
    train, val = split_tasks(tasks, 0.23, 42, {})
    for bucket in ("small", "medium", "large"):
        ids = {t.task_id for t in tasks if size_bucket(t) == bucket}
        assert abs(len(ids & set(val)) - 0.23 * len(ids)) <= 1, bucket
    assert len(train) + len(val) == 400


def test_arcagi2_aliases_and_versions():
    a = load_source("arcagi2_f3283f7", "eval")
    assert a.version == "f3283f7" and len(a.tasks) == 120
    for alias in ("arcagi2", "latest", "f3283f7"):
        assert load_source(alias, "eval").sha256 == a.sha256
    one = load_source("arcagi", "eval")
    assert one.version == "aa922be" and len(one.tasks) == 400
    for alias in ("arcagi1", "arc-agi-1", "aa922be", "ARCAGI"):
        assert load_source(alias, "eval").sha256 == one.sha256


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{oops", "not valid JSON"), ('["a"]', "JSON object"), ('{"a": 3}', "JSON object")],
)
def test_bad_labels_file_is_one_clear_error(tmp_path, text, problem):
    p = tmp_path / "labels.json"
    p.write_text(text)
    with pytest.raises(InvalidTaskError) as e:
        prepared(load_settings(overrides={"taxonomy": {"labels": str(p)}}), tmp_path / "out")
    assert str(p) in str(e.value) and problem in str(e.value)


def test_test_source_directory_uses_its_test_pairs_as_queries(tmp_path):
    d = tmp_path / "evaldir"
    d.mkdir()
    for i in range(3):
        _write_task(d, f"ev{i}", n_pairs=3, test=2)
    cfg = load_settings(overrides={"data": {"test_source": str(d), "max_tasks": 4}})
    m = prepare(cfg.data, cfg.taxonomy, tmp_path / "out")
    assert m["splits"]["test"] == ["ev0", "ev1", "ev2"] and m["test_version"] == f"dir:{d}"
    ds = load_split(tmp_path / "out", "test")
    assert len(ds) == 6 and sorted({ds.meta(i)["pair"] for i in range(6)}) == [0, 1]
    for i in range(6):
        task = json.loads((d / f"{ds.meta(i)['task_id']}.json").read_text())
        assert ds[i]["query_out"].tolist() == task["test"][ds.meta(i)["pair"]]["output"]
        train_inputs = [p["input"] for p in task["train"]]
        assert all(a.tolist() in train_inputs for a, _ in ds[i]["context"])


def _write_tasks(d, names, rng, n_pairs=3):
    d.mkdir(exist_ok=True)
    for name in names:
        pairs = [
            {
                "input": rng.integers(0, 10, (3, 4)).tolist(),
                "output": rng.integers(0, 10, (2, 2)).tolist(),
            }
            for _ in range(n_pairs)
        ]
        (d / f"{name}.json").write_text(json.dumps({"train": pairs, "test": []}))


def test_a_split_manifest_inside_the_source_folder_is_not_a_task(tmp_path):
    """The original's re-arc layout: task files and split_manifest.json in one folder."""
    d = tmp_path / "rearc"
    _write_tasks(d, ["aaaa0001", "aaaa0002", "aaaa0003", "aaaa0004"], np.random.default_rng(0))
    man = d / "split_manifest.json"
    man.write_text(json.dumps({"train_files": ["aaaa0001.json", "aaaa0002.json", "aaaa0003.json"],
                               "val_files": ["aaaa0004.json"]}))  # fmt: skip
    src = load_source(str(d))
    assert sorted(t.task_id for t in src.tasks) == ["aaaa0001", "aaaa0002", "aaaa0003", "aaaa0004"]
    m = prepared(
        load_settings(overrides={"data": {"source": str(d), "manifest": str(man), "max_tasks": 4}}),
        tmp_path / "out",
    )
    assert m["splits"]["val"] == ["aaaa0004"]


def test_a_stray_json_in_the_source_folder_names_the_fix(tmp_path):
    d = tmp_path / "tasks"
    _write_tasks(d, ["aaaa0001", "aaaa0002"], np.random.default_rng(1))
    (d / "notes.json").write_text(json.dumps({"author": "me", "date": "2025"}))
    with pytest.raises(InvalidTaskError) as e:
        load_source(str(d))
    msg = str(e.value)
    assert "notes.json" in msg and "missing key 'train'" in msg
    assert "data.on_invalid: skip" in msg and "move it out of" in msg
    assert [t.task_id for t in load_source(str(d), on_invalid="skip").tasks] == [
        "aaaa0001",
        "aaaa0002",
    ]


def test_a_failed_prepare_leaves_nothing(tmp_path):
    d = tmp_path / "tasks"
    _write_tasks(d, ["aaaa0001"], np.random.default_rng(2), n_pairs=1)  # no usable task
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no examples"):
        prepared(load_settings(overrides={"data": {"source": str(d)}}), out)
    assert not out.exists()


def test_demonstrations_are_stored_and_exclude_test_outputs(full):
    out, _ = full
    ds = load_split(out, "test")
    arc = {t.task_id: t for t in load_source("arcagi", "eval").tasks}
    for t_idx, task_id in enumerate(ds.task_ids[:40]):
        demos = ds.demos(t_idx)
        task = arc[task_id]
        assert len(demos) == len(task.train)
        for (a, b), (x, y) in zip(demos, task.train, strict=True):
            assert np.array_equal(a, x) and np.array_equal(b, y)
        outputs = [y.tobytes() + bytes(y.shape) for _, y in demos]
        for _, y in task.test:
            if not any(np.array_equal(y, d) for _, d in task.train):
                assert y.tobytes() + bytes(y.shape) not in outputs
    train = load_split(out, "train")
    assert len(train.demos(0)) >= 2  # training tasks: every pair of the task


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/original not present")
def test_held_out_test_split_covers_the_categories(tmp_path):
    labels_path = SHARED / "all_tasks_classified.json"
    labels = json.loads(labels_path.read_text())
    cfg = load_settings(
        overrides={
            "taxonomy": {"labels": str(labels_path)},
            "data": {"test_source": "held_out", "test_fraction": 0.2},
        }
    )
    m = prepare(cfg.data, cfg.taxonomy, tmp_path)
    test, train, val = (set(m["splits"][s]) for s in ("test", "train", "val"))
    assert not (test & train) and not (test & val) and not (train & val)
    assert test | train | val <= set(labels)  # all from the labelled source
    for cat, n in TAXONOMY_COUNTS.items():
        n_test = sum(labels[t] == cat for t in test)
        assert n_test >= 1 and abs(n_test - 0.2 * n) <= 1.5, (cat, n_test)
    ds = load_split(tmp_path, "test")
    assert set(ds.categories) == set(TAXONOMY_COUNTS) and "unlabelled" not in ds.categories
    assert m["test_source"].endswith("(held out)")
    again = prepare(cfg.data, cfg.taxonomy, tmp_path / "again")  # seeded
    assert again["splits"] == m["splits"]


def test_max_cells_leaves_a_test_task_out_whole_and_says_so(tmp_path):
    """ARC scores a task on ALL its test inputs: a task one of whose inputs is over
    data.max_cells used to be scored on the other alone (and count as solved)."""
    from arctax.evaluation.evaluate import write_evaluation
    from arctax.evaluation.submission import to_submission

    d = tmp_path / "eval"
    d.mkdir()
    rng = np.random.default_rng(0)

    def pair(h, w):
        return {"input": rng.integers(0, 10, (h, w)).tolist(),
                "output": rng.integers(0, 10, (h, w)).tolist()}  # fmt: skip

    tasks = {
        "whole": {"train": [pair(2, 2)] * 2, "test": [pair(2, 2), pair(3, 3)]},
        "partial": {"train": [pair(2, 2)] * 2, "test": [pair(2, 2), pair(5, 5)]},
        "nodemos": {"train": [pair(5, 5)] * 2, "test": [pair(2, 2)]},
    }
    for name, obj in tasks.items():
        (d / f"{name}.json").write_text(json.dumps(obj))
    cfg = load_settings(overrides={"data": {"test_source": str(d), "max_cells": 16}})
    m = prepare(cfg.data, cfg.taxonomy, tmp_path / "out")
    assert m["splits"]["test"] == ["whole"]
    assert m["test_left_out"] == {
        "nodemos": "every demonstration over data.max_cells (16 cells)",
        "partial": "a test input over data.max_cells (16 cells)",
    }
    ds = load_split(tmp_path / "out", "test")
    assert sorted(ds.meta(i)["pair"] for i in range(len(ds))) == [0, 1]  # both inputs kept
    # every answer right: 1 of 1 task solved, and the summary says 2 were left out
    answers = {i: [ds[i]["query_out"]] for i in range(len(ds))}
    assert to_submission({"whole": {ds.meta(i)["pair"]: a for i, a in answers.items()}})
    table = write_evaluation(cfg.eval, ds, answers, tmp_path / "ev", "m", None, identity={})
    assert table["grid_correct"].all() and len(table) == 2
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["n_tasks"] == 1 and summary["test_left_out"]["n_tasks"] == 2
    # with no filter nothing is left out, and nothing is filed as unusable after a filter
    m = prepared(load_settings(overrides={"data": {"test_source": str(d), "max_tasks": 4}}),
                tmp_path / "all")  # fmt: skip
    assert m["splits"]["test"] == ["nodemos", "partial", "whole"]
    assert m["test_left_out"] == {} and m["unusable_after_filter"] == []


def test_the_val_test_set_in_one_folder_is_the_val_split(tmp_path):
    cfg = load_settings(overrides={"data": {"max_tasks": 4, "test_sets": {"val": "val"}}})
    m = prepare(cfg.data, cfg.taxonomy, tmp_path)
    assert m["test_set"] == "val" and m["test_source"].endswith("(val split)")
    assert m["splits"]["test"] == m["splits"]["val"] and m["test_left_out"] == {}
    with np.load(tmp_path / "val.npz") as v, np.load(tmp_path / "test.npz") as t:
        assert sorted(v.files) == sorted(t.files)
        for name in v.files:
            assert np.array_equal(v[name], t[name]), name


def test_the_val_test_set_refuses_a_val_split_its_manifest_does_not_name(tmp_path):
    from arctax.data.prepare import prepare_training
    from arctax.data.prepare_test import prepare_test_set

    cfg = load_settings(overrides={"data": {"max_tasks": 4, "test_sets": {"v": "val"}}})
    prepare_training(cfg.data, cfg.taxonomy, tmp_path / "data")
    m = prepare_test_set(cfg.data, cfg.taxonomy, "v", tmp_path / "v", tmp_path / "data")
    assert m["counts"]["test"]["examples"] == len(load_split(tmp_path / "v", "test"))
    with open(tmp_path / "data/val.npz", "ab") as f:
        f.write(b"x")  # changed since the training data were prepared
    with pytest.raises(InvalidTaskError, match=r"val\.npz: does not match"):
        prepare_test_set(cfg.data, cfg.taxonomy, "v", tmp_path / "v2", tmp_path / "data")
    assert not (tmp_path / "v2").exists()
