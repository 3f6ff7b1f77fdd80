"""Test sets: the two forms, their names, and what training depends on (never a test set; the
held-out reservation always)."""

from __future__ import annotations

import pytest

from arctax.config import ConfigError
from arctax.data.prepare import training_data
from arctax.data.testsets import held_out_fraction, named_sets, training_data_config
from arctax.lifecycle import fingerprint
from arctax.settings import Data, load_settings


def cfg(**data) -> Data:
    return load_settings(overrides={"data": data}).data


def config_hash(d: Data) -> str:
    """The training data's fingerprint (their manifest's config_sha256)."""
    return fingerprint(training_data(d, load_settings().taxonomy))


def test_the_one_set_form_and_its_default_names():
    assert named_sets(cfg()) == {"arcagi1_eval": "arcagi"}
    assert named_sets(cfg(source="arcagi2")) == {"arcagi2_eval": "arcagi2"}
    assert named_sets(cfg(source="/data/re_arc")) == {"arcagi1_eval": "arcagi"}
    assert named_sets(cfg(test_source="latest")) == {"arcagi2_eval": "latest"}
    assert named_sets(cfg(test_source="/data/my eval.v2")) == {"my_eval_v2": "/data/my eval.v2"}
    assert named_sets(cfg(test_source="held_out")) == {"held_out": "held_out"}


def test_several_test_sets_in_order_and_a_null_entry_is_dropped():
    sets = {"b": "arcagi2", "a": "arcagi", "gone": None}
    assert list(named_sets(cfg(test_sets=sets))) == ["b", "a"]
    with pytest.raises(ConfigError, match="exclude each other"):
        named_sets(cfg(test_sets={"a": "arcagi"}, test_source="arcagi2"))


def test_held_out_needs_a_reservation_made_on_the_training_side():
    with pytest.raises(ConfigError) as e:
        named_sets(cfg(test_sets={"held_out": "held_out"}))
    assert "data.held_out_fraction" in str(e.value) and "trained again" in str(e.value)
    assert named_sets(cfg(held_out_fraction=0.2, test_sets={"held_out": "held_out"}))
    # the one-set form keeps its meaning: it reserves data.test_fraction
    assert held_out_fraction(cfg(test_source="held_out")) == 0.2
    assert held_out_fraction(cfg(test_source="held_out", test_fraction=0.1)) == 0.1
    assert held_out_fraction(cfg(test_source="held_out", held_out_fraction=0.3)) == 0.3
    assert held_out_fraction(cfg(test_source="arcagi2")) == 0.0


def test_training_depends_on_no_test_set_but_on_the_reservation():
    base = training_data_config(cfg())
    for other in (
        cfg(test_source="arcagi2"),
        cfg(test_sets={"a": "arcagi", "b": "arcagi2"}),
        cfg(test_fraction=0.4),  # read only by test_source: held_out
    ):
        assert training_data_config(other) == base
        assert config_hash(other) == config_hash(cfg())
    reserved = cfg(held_out_fraction=0.2, test_sets={"a": "arcagi"})
    assert training_data_config(reserved) != base  # reserving retrains
    with_set = cfg(held_out_fraction=0.2, test_sets={"a": "arcagi", "held_out": "held_out"})
    assert training_data_config(with_set) == training_data_config(reserved)  # the set does not
    # the one-set form: held_out reserves, so switching to it changes the training data
    assert training_data_config(cfg(test_source="held_out")) == training_data_config(
        cfg(held_out_fraction=0.2)
    )
    assert training_data_config(cfg(test_source="held_out")) != base


def test_a_generated_source_depends_on_what_makes_its_examples_only():
    a = cfg(source="rearc", rearc={"repo": "/a/re-arc", "tasks_per_job": 10})
    b = cfg(source="rearc", rearc={"repo": "/b/re-arc", "tasks_per_job": 40, "call_timeout_s": 9})
    assert training_data_config(a) == training_data_config(b)
    assert training_data_config(cfg(source="rearc", rearc={"repo": "/a", "seed": 1})) != (
        training_data_config(a)
    )


def test_val_is_a_test_set_that_trains_nothing_again_and_is_never_adapted():
    from arctax.data.testsets import check_adapt_set

    both = cfg(test_sets={"arcagi1_eval": "arcagi", "val": "val"})
    assert named_sets(both) == {"arcagi1_eval": "arcagi", "val": "val"}
    assert named_sets(cfg(test_source="val")) == {"val": "val"}
    assert training_data_config(both) == training_data_config(cfg())
    assert config_hash(both) == config_hash(cfg())
    adapt = load_settings().adapt
    check_adapt_set(both, adapt.replace(enabled=True), "arcagi1_eval")  # another set: fine
    with pytest.raises(ConfigError, match=r"adapt\.test_set"):
        check_adapt_set(both, adapt.replace(enabled=True), "val")  # each other's context
    check_adapt_set(both, adapt.replace(enabled=False), "val")
