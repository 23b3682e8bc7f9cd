"""The commands' conventions (one flag library: --help without --config, the config's
fields and the resolved config without running), the config schema's meanings, and the
config rules in one place (one field named per error; library constructors name their
own arguments). In-process and compile-free: each command parses a fresh FlagValues."""

import os
import pathlib

import pytest

from llada_jax import objectives
from llada_jax.commands import export, train
from llada_jax.config import MEANINGS, base_config, describe, load_config_file, rules
from llada_jax.model.adapters import lora

ROOT = pathlib.Path(__file__).parent.parent


def _run(main, argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_help_without_config_lists_the_flags(capsys):
    code, out, _ = _run(train.main, ["--help"], capsys)
    assert code == 0 and "--workdir" in out and "print_config" in out and "list_config_fields" in out
    code, out, _ = _run(export.main, ["--help"], capsys)
    assert code == 0 and "peft:" in out and "--max_shard_size" in out


def test_list_config_fields_and_print_config_do_not_run(capsys, tmp_path):
    code, out, _ = _run(train.main, ["--list_config_fields"], capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == sum(len(s) for s in base_config().values())
    assert "optim.schedule = 'cosine'  # wsd (warmup-stable-decay), cosine or constant" in lines
    code, out, _ = _run(train.main, [f"--config={ROOT / 'configs/sft.py'}", "--config.train.steps=7",
                                     "--print_config"], capsys)  # no --workdir: nothing runs
    assert code == 0 and "train.steps = 7  # optimizer steps" in out and "data.kind = 'sft'" in out
    assert not any(tmp_path.iterdir())


def test_a_bad_flag_is_one_error_line(capsys):
    code, _, _ = _run(train.main, [f"--config={ROOT / 'configs/tiny.py'}", "--bogus"], capsys)
    assert code == "error: Unknown command line flag 'bogus'"
    code, _, _ = _run(train.main, [f"--config={ROOT / 'configs/tiny.py'}"], capsys)
    assert code == "error: --workdir: required (see --help)"


def test_every_field_has_a_meaning():
    c = base_config()
    assert {s: sorted(f) for s, f in c.items()} == {s: sorted(MEANINGS[s]) for s in c}
    assert describe(c).count("\n") + 1 == sum(len(f) for f in c.values())


def test_configs_load_each_other_by_path_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("sft", "rl_sort", "vrpo_sort"):
        c = load_config_file(str(ROOT / "configs" / f"{name}.py"))
        assert c.data.kind == "sft"


def test_a_shorter_run_names_the_one_field_out_of_range():
    c = load_config_file(str(ROOT / "configs/tiny.py"))
    c.train.steps, c.data.source = 100, "synthetic"
    with pytest.raises(ValueError) as e:
        rules.check(c, 1)
    assert str(e.value).startswith(f"config.optim.decay_steps={c.optim.decay_steps}: expected 0..train.steps=100")
    assert "warmup_steps" not in str(e.value) and "lr=" not in str(e.value)


def test_training_kinds_come_from_the_objectives_registry():
    assert objectives.training_kinds() == ("pretrain", "sft")
    assert objectives.rl_algorithms() == ("grpo", "vrpo")


def test_constructors_name_their_arguments_and_the_rules_the_fields():
    with pytest.raises(ValueError, match=r"^LoRAConfig\.rank=-1"):
        lora.LoRAConfig(rank=-1)
    c = load_config_file(str(ROOT / "configs/tiny.py"))
    c.lora.rank, c.data.source = -1, "synthetic"
    with pytest.raises(ValueError, match=r"^config\.lora\.rank=-1"):
        rules.check(c, 1)
    c.lora.rank, c.model.n_kv_heads = 0, 3
    with pytest.raises(ValueError, match=r"^config\.model\.n_kv_heads=3: expected a divisor of n_heads"):
        rules.check(c, 1)
    assert os.path.isfile(ROOT / "llada_jax/config/rules.py")
