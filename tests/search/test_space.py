"""sweep.space: the default space, one clear error per bad entry, values applied by dotted key."""

from __future__ import annotations

import copy

import pytest

from arctax.config import ConfigError, validate_config
from arctax.search.space import apply_params, check_space, lookup, parse_space
from arctax.settings import Settings, load_settings


@pytest.fixture(scope="module")
def cfg() -> Settings:
    return load_settings()


def with_space(cfg: Settings, **entries) -> Settings:
    """``cfg`` with ``entries`` in ``sweep.space`` (an entry is typed, and checked for itself,
    as the settings are built)."""
    c = copy.deepcopy(dict(cfg.raw))
    c["sweep"]["space"].update(entries)
    return Settings.of(c)


def test_default_space_is_trial69s_and_holds_its_values(cfg):
    check_space(cfg)
    space = parse_space(cfg, "champion")
    for key, p in space.items():  # every default range contains the Trial 69 value
        value = lookup(cfg.raw, key)
        if p.type == "categorical":
            assert value in p.choices, key
        else:
            assert p.low <= value <= p.high, key
            if p.step:
                assert (value - p.low) % p.step == 0, key
    assert space["trial69.optimizer.lr"].log and space["trial69.optimizer.lr"].type == "float"
    assert {"models.champion.d_model", "trial69.optimizer.betas.0"} <= set(space)


def test_a_study_searches_trial69_and_its_own_models_keys(cfg):
    assert not any(k.startswith("models.") for k in parse_space(cfg, "decoder_only"))
    c = with_space(cfg, **{"models.decoder_only.dropout": {"type": "float", "low": 0, "high": 0.2}})
    check_space(c)
    assert "models.decoder_only.dropout" in parse_space(c, "decoder_only")
    assert "models.decoder_only.dropout" not in parse_space(c, "champion")


def test_null_drops_an_entry(cfg):
    c = with_space(cfg, **{"trial69.batch_size": None})
    check_space(c)
    assert "trial69.batch_size" not in parse_space(c, "champion")


def test_apply_params_sets_dotted_keys_and_list_items(cfg):
    params = {"trial69.optimizer.betas.0": 0.9, "models.champion.d_model": 96}
    out = apply_params(cfg.raw, params)
    assert out["trial69"]["optimizer"]["betas"] == [0.9, 0.999]
    assert out["models"]["champion"]["d_model"] == 96
    assert cfg.raw["trial69"]["optimizer"]["betas"][0] == 0.95  # the original is untouched
    validate_config(out)


@pytest.mark.parametrize(
    ("name", "entry", "fragment"),
    [
        ("trial69.optimizer.lr", {"type": "float", "low": 0.1, "high": 0.01}, "low (0.1) is greater than high"),
        ("trial69.optimizer.lrate", {"type": "float", "low": 1e-4, "high": 1e-2}, "no such key"),
        ("trial69.optimizer.lr", {"type": "float", "low": 0.0, "high": 0.01, "log": True}, "log: true needs low > 0"),
        ("trainer.max_epochs", {"type": "int", "low": 1, "high": 3}, "only trial69.* and models.<model>.*"),
        ("trial69.optimizer.betas", {"type": "float", "low": 0.8, "high": 0.9}, "names a list"),
        ("trial69.optimizer.betas.2", {"type": "float", "low": 0.8, "high": 0.9}, "no such key"),
        ("trial69.scheduler.T_0", {"type": "float", "low": 2, "high": 8}, "use type: int"),
        ("trial69.batch_size", {"type": "categorical"}, "non-empty list of choices"),
        ("trial69.batch_size", {"type": "categorical", "choices": [16, 0]}, "the value 0 is not allowed"),
        ("models.champion.d_model", {"type": "int", "low": 96, "high": 256, "step": 2}, "98 is not a multiple of 4"),
        ("models.champion.d_model", {"type": "int", "low": 96, "high": 250, "step": 32}, "must be a multiple of step"),
        ("trial69.optimizer.betas.0", {"type": "float", "low": 0.9, "high": 1.0}, "the value 1.0 is not allowed"),
        ("trial69.optimizer.lr", {"type": "uniform", "low": 0.1, "high": 1}, "type must be one of"),
    ],
)  # fmt: skip
def test_a_bad_entry_is_one_error_naming_the_key(cfg, name, entry, fragment):
    with pytest.raises(ConfigError) as e:
        check_space(with_space(cfg, **{name: entry}))
    msg = str(e.value)
    assert msg.startswith(f"config key 'sweep.space.{name}'") and fragment in msg, msg
    assert "\n" not in msg


def test_a_model_with_nothing_to_search_is_refused(cfg):
    c = copy.deepcopy(dict(cfg.raw))
    c["sweep"]["models"] = ["decoder_only"]
    c["sweep"]["space"] = {k: None for k in c["sweep"]["space"]}
    with pytest.raises(ConfigError, match="nothing to search for model 'decoder_only'"):
        check_space(Settings.of(c))
