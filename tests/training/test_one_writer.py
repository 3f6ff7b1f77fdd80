"""Two trainings of the same model and seed started at once on the same state (a driver
started again while its orphan still trains): one trains, the other waits for it and adopts
its result; the checkpoint loads and equals an undisturbed training's."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_overrides
from tests.training.test_preemption import start, val_losses

WAITED = "another copy of this job owns"


@pytest.mark.slow
def test_two_trainers_on_one_state_one_trains_the_other_adopts(tiny_data, tmp_path):
    o = tiny_overrides(max_epochs=3)
    out, state = tmp_path / "out", tmp_path / "state"
    first, second = start(o, tiny_data, out, state), start(o, tiny_data, out, state)
    logs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [g[-3000:] for g in logs]
    waited = [g for g in logs if WAITED in g]
    assert len(waited) == 1, "both trained at once, or neither waited"
    assert "training: its other copy" in waited[0] and "finished it; adopted" in waited[0]
    assert "epoch" not in waited[0].split(WAITED)[1]  # the waiting copy trained nothing
    assert not state.with_name("state.owner.json").exists()  # released

    straight = tmp_path / "straight"
    plain = start(o, tiny_data, straight / "out", straight / "state")
    log = plain.communicate(timeout=600)[0]
    assert plain.returncode == 0, log[-3000:]
    assert val_losses(out / "metrics.csv") == val_losses(straight / "out" / "metrics.csv")
    for name in ("best.ckpt", "last.ckpt"):
        got = torch.load(out / name, map_location="cpu", weights_only=True)["state_dict"]
        want = torch.load(straight / "out" / name, map_location="cpu", weights_only=True)
        want = want["state_dict"]
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in got), name
