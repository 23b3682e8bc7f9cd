"""The experiment configs: they load with overrides, have the published shapes and
recipe, and bad ones fail before anything compiles with a message naming the field."""

import os
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import pytest
from absl import flags
from ml_collections import config_flags

from llada_jax import cli, config as config_lib
from llada_jax.model import from_config
from llada_jax.config import rules
from llada_jax.training import loop, optimizer
from llada_jax.model import LLaDA, param_count

CONFIGS = pathlib.Path(__file__).parent.parent / "configs"


def load(name, *overrides):
    """Parse as the command line does (config_flags reads the overrides from sys.argv)."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True)
    argv = ["prog", f"--config={CONFIGS / name}.py", *overrides]
    saved, sys.argv = sys.argv, argv
    try:
        fv(argv)
    finally:
        sys.argv = saved
    return fv.config


def n_params(config):
    model = LLaDA(from_config.model_config(config, None))
    shapes = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32))["params"], jax.random.PRNGKey(0))
    return param_count(shapes)


def test_every_config_loads_and_has_its_size():
    sizes = {name: n_params(load(name)) for name in ("tiny", "small", "llada_1b", "llada_8b", "dream_7b",
                                                      "llada_moe_7b", "llama3_8b", "qwen3_8b")}
    assert sizes["llada_8b"] == 8_015_581_184  # the published count
    assert sizes["dream_7b"] == 7_615_616_512  # Qwen2.5-7B's
    assert sizes["llada_moe_7b"] == 7_356_880_896  # 7B total (A1B: 1.4B active)
    assert sizes["llama3_8b"] == 8_030_261_248  # Llama-3.1-8B's (untied head)
    assert sizes["qwen3_8b"] == 8_190_735_360  # Qwen3-8B's (untied head, q/k norms)
    assert 40e6 < sizes["small"] < 60e6
    assert 0.9e9 < sizes["llada_1b"] - 2 * 126464 * 2048 < 1.3e9  # 1B without embedding and head
    assert sizes["tiny"] < 1e6
    # sft.py has no shape: every inheritable model field comes from its train.init_from
    assert set(config_lib.unset_fields(load("sft").model)) >= {"family", "d_model", "n_layers", "vocab_size"}


def test_every_config_file_loads_from_any_directory(tmp_path):
    """Config files that build on another load it by path: no `configs` package is needed."""
    import subprocess

    code = ("import glob, os; from llada_jax.config import load_config_file; "
            f"[load_config_file(p) for p in sorted(glob.glob(os.path.join({str(CONFIGS)!r}, '*.py')))]")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_every_field_has_a_meaning_and_the_command_line_prints_its_config(tmp_path, capsys):
    """FIELD_DOCS documents exactly the schema's fields; `python -m llada_jax.config FILE`
    lists them; `--print_config` prints the overridden value and runs nothing."""
    import subprocess

    leaves = [line.split(" = ")[0] for line in config_lib.describe(config_lib.base_config())]
    assert sorted(leaves) == sorted(config_lib.FIELD_DOCS) and all(config_lib.FIELD_DOCS.values())
    for path in sorted(CONFIGS.glob("*.py")):  # every config file's fields are the schema's
        assert len(config_lib.describe(config_lib.load_config_file(str(path)))) == len(leaves), path
    out = subprocess.run([sys.executable, "-m", "llada_jax.config", str(CONFIGS / "demo.py")], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "model.d_model = 128  # embedding width" in out.stdout.splitlines()
    workdir = tmp_path / "never_made"
    with pytest.raises(SystemExit) as e:
        loop.run_cli(["train", f"--config={CONFIGS / 'tiny.py'}", f"--workdir={workdir}", "--config.optim.lr=0.25",
                      "--print_config"])
    assert e.value.code == 0 and "optim.lr = 0.25  # peak learning rate" in capsys.readouterr().out.splitlines()
    assert not workdir.exists()


def test_a2d_8b_configs_are_the_ar_shapes_made_bidirectional():
    for name in ("llama3_8b", "qwen3_8b"):
        m = from_config.model_config(load(name), None)
        assert (m.causal, m.logit_alignment, m.weight_tying, m.head_dim) == (False, "shifted", False, 128)
        assert m.mask_token_id == m.vocab_size - 1  # an AR vocabulary's last row, as import_hf takes it
    llama = from_config.model_config(load("llama3_8b"), None)
    assert (llama.family, llama.rope_theta, llama.rms_norm_eps) == ("llama", 500000.0, 1e-5)
    assert (llama.rope_scaling.rope_type, llama.rope_scaling.factor, llama.rope_scaling.high_freq_factor,
            llama.rope_scaling.original_max_position_embeddings) == ("llama3", 8.0, 4.0, 8192)
    qwen = from_config.model_config(load("qwen3_8b"), None)
    assert (qwen.family, qwen.qk_norm, qwen.rope_theta, qwen.rms_norm_eps) == ("qwen3", True, 1e6, 1e-6)
    assert qwen.rope_scaling.rope_type == "default"


def test_8b_recipe():
    c = load("llada_8b")
    assert (c.data.seq_len, c.data.batch_size, c.data.random_length_prob) == (4096, 1280, 0.01)
    assert c.optim.weight_decay == 0.1 and c.optim.schedule == "wsd"
    assert (c.model.dtype, c.model.param_dtype) == ("bfloat16", "float32")
    lr = optimizer.make_schedule(c.optim, c.train.steps)
    tokens = lambda t: int(t / (1280 * 4096))  # noqa: E731  step after t tokens
    got = [float(lr(s)) for s in (1000, 2000, tokens(1.1e12), tokens(1.3e12), tokens(1.9e12), c.train.steps)]
    assert got == pytest.approx([2e-4, 4e-4, 4e-4, 1e-4, 1e-4, 1e-5], rel=1e-4)
    assert c.train.steps == round(2.3e12 / (1280 * 4096))


def test_command_line_overrides_and_unknown_fields():
    c = load("tiny", "--config.optim.lr=3e-4", "--config.mesh.fsdp=2")
    assert c.optim.lr == 3e-4 and c.mesh.fsdp == 2
    with pytest.raises((flags.Error, KeyError, AttributeError), match="lrr"):
        load("tiny", "--config.optim.lrr=3e-4")
    # the command lines check first and name the whole field
    tiny = load("tiny")
    with pytest.raises(ValueError, match=r"unknown field config\.optim\.lrr \(config\.optim has b1, b2"):
        cli.check_overrides(tiny, ["prog", "--config.optim.lrr=3e-4"])
    with pytest.raises(ValueError, match=r"unknown field config\.optimm\.lr \(config has checkpoint, data"):
        cli.check_overrides(tiny, ["prog", "--config.optimm.lr=3e-4"])
    cli.check_overrides(tiny, ["prog", "--config.optim.lr=3e-4", "--config.model.noscan_layers"])


@pytest.mark.parametrize("overrides,devices,field", [
    ({"data.batch_size": 12}, 8, "config.data.batch_size"),
    ({"mesh.data": 2, "mesh.fsdp": 2}, 8, "config.mesh"),
    ({"mesh.data": -1, "mesh.fsdp": -1}, 8, "config.mesh"),
    ({"data.seq_len": 4097}, 8, "config.data.seq_len"),
    ({"optim.grad_accum": 3}, 1, "config.data.batch_size"),
    ({"optim.schedule": "linear"}, 1, "config.optim.schedule"),
])
def test_bad_configs_name_the_field(overrides, devices, field):
    c = load("llada_8b")
    c.unlock()
    for k, v in overrides.items():
        section, name = k.split(".")
        setattr(getattr(c, section), name, v)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        rules.train_config(c, devices)


def test_unknown_field_in_a_config_and_nothing_compiles(tmp_path):
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, *_a, **_k: compiles.append(name) if "backend_compile" in name else None)
    c = load("tiny", "--config.data.source=synthetic", "--config.data.batch_size=12")
    with pytest.raises(ValueError, match=r"config\.data\.batch_size=12"):
        loop.train_and_evaluate(c, str(tmp_path))
    assert compiles == []
    c = load("tiny")
    c.unlock()
    c.optim.momentum = 0.9
    with pytest.raises(ValueError, match=r"config\.optim\.momentum: unknown field"):
        rules.train_config(c, 1)


@pytest.mark.parametrize("overrides,field", [
    ({"data.source": "files", "data.train_files": "{tmp}/nope.txt"}, "train_files='{tmp}/nope.txt'"),
    ({"data.source": "files", "data.train_files": "{tmp}/a.txt", "data.eval_files": "{tmp}/b.txt",
      "train.eval_every": 2}, "eval_files='{tmp}/b.txt'"),
    ({"data.source": "files", "data.train_files": "{tmp}/a.txt", "train.eval_every": 2}, "eval_files=''"),
    ({"data.kind": "sft", "data.source": "jsonl", "data.train_jsonl": "{tmp}/chat.jsonl"},
     "train_jsonl='{tmp}/chat.jsonl'"),
    ({"data.kind": "sft", "data.source": "jsonl", "data.train_jsonl": "{tmp}/a.txt",
      "data.eval_jsonl": "{tmp}/held.jsonl"}, "eval_jsonl='{tmp}/held.jsonl'"),
    ({"data.source": "prepared", "data.path": "{tmp}"}, "path='{tmp}': no index.json"),
    ({"data.source": "prepared", "data.path": ""}, "path is empty"),
    ({"data.tokenizer": "{tmp}/tok.model"}, "tokenizer='{tmp}/tok.model'"),
])
def test_missing_data_paths_refused_by_the_run_validator(overrides, field, tmp_path):
    """train_run names the field and value of a data path the run would read and lacks;
    train_config (what `plan` calls, on machines without the data) does not read them."""
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from train_helper import tiny_config

    (tmp_path / "a.txt").write_text("some text\n")
    c = tiny_config(**{k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in overrides.items()})
    rules.train_config(c, 1)
    with pytest.raises(ValueError, match="config\\.data\\." + re.escape(field.format(tmp=tmp_path))):
        rules.train_run(c, 1)


def test_missing_eval_files_stop_the_run_before_a_tokenizer_is_trained(tmp_path):
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from train_helper import tiny_config

    (tmp_path / "a.txt").write_text("some text\n")
    c = tiny_config(**{"data.source": "files", "data.train_files": str(tmp_path / "a.txt"),
                       "data.eval_files": "/nonexistent", "train.eval_every": 2})
    with pytest.raises(ValueError, match="config.data.eval_files='/nonexistent': '/nonexistent' does not exist"):
        loop.train_and_evaluate(c, str(tmp_path / "wd"))
    assert not (tmp_path / "wd").exists()  # nothing written, so no tokenizer trained


def test_model_section_is_the_inverse_of_model_config():
    """An experiment's model config goes into a run config field by field (`model_section`)
    and comes back equal from `model_config`: dense, MoE (nested fields) and a bf16 causal one."""
    from llada_jax.config import base_config, set_model_field
    from llada_jax.model import LLaDAConfig
    from llada_jax.model.moe import MoEConfig

    for mcfg in (LLaDAConfig.tiny(), LLaDAConfig.tiny(scan_unroll=2, moe=MoEConfig(
                     num_experts=4, num_experts_per_tok=2, expert_hidden_size=32)),
                 LLaDAConfig.tiny(causal=True, dtype="bfloat16", rope_theta=10000.0)):
        c = base_config()
        for name, value in from_config.model_section(mcfg).items():
            set_model_field(c.model, name, value)
        assert from_config.model_config(c, None) == mcfg
