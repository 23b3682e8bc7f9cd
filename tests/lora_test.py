"""LoRA: exact identity at init, frozen base, merged == unmerged, PEFT round trip,
sampling and likelihood without merging, LoRA SFT close to full fine-tuning, the mesh."""

import json
import os
import pathlib
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llada_jax import generate  # noqa: E402
from llada_jax.checkpoint.load import merge_lora  # noqa: E402
from llada_jax.interop import export, import_hf  # noqa: E402
from llada_jax.model.adapters import lora  # noqa: E402
from llada_jax.objectives import likelihood  # noqa: E402
from llada_jax.parallel import sharding  # noqa: E402
from llada_jax.sampling import sampler  # noqa: E402
from llada_jax.training import loop, optimizer, step, train_state  # noqa: E402
from llada_jax.model import LLaDA, init_params  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import finetune, tiny_config  # noqa: E402

IDS = np.array([[3, 17, 255, 42, 9, 250, 7, 255, 1, 99, 255, 255], [5, 6, 255, 8, 200, 2, 255, 255, 11, 12, 13, 14]],
               np.int32)


def _leaves(tree):
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module")
def base(tmp_path_factory, golden_dir):
    """A workdir made by import_hf from the tiny model in the published layout."""
    workdir = str(tmp_path_factory.mktemp("base"))
    config = import_hf.import_to_workdir(str(golden_dir / "llada-tiny"), workdir)
    return workdir, config


def _config(base_workdir, config, **over):
    model = {f"model.{f}": getattr(config, f) for f in (
        "d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "vocab_size", "embedding_size",
        "max_sequence_length", "rope_theta", "mask_token_id", "eos_token_id", "pad_token_id")}
    lora_run = {"train.init_from": base_workdir, "lora.rank": 8, "lora.alpha": 16.0, "lora.base_dtype": "float32"}
    return tiny_config(**{**model, **lora_run, **over})


@pytest.fixture(scope="module")
def lora_run(base, tmp_path_factory):
    """6 SFT steps with LoRA (rank 8, dropout 0.1, 2 micro-batches, full remat)."""
    workdir = str(tmp_path_factory.mktemp("lora"))
    cfg = _config(*base, **{"data.kind": "sft", "train.steps": 6, "optim.lr": 2e-2, "lora.dropout": 0.1,
                            "optim.grad_accum": 2, "model.remat_policy": "full", "checkpoint.every": 3})
    state, _ = loop.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1])
    return workdir, cfg, state


def test_zero_b_gives_the_base_logits_exactly(golden_model):
    model, params = golden_model
    want = np.asarray(jax.jit(model.apply)({"params": params}, IDS))
    cfg = model.config.replace(lora=lora.LoRAConfig(rank=4))
    adapters, _ = lora.split(jax.jit(lambda k: init_params(cfg, k))(jax.random.key(3)))
    assert set(adapters["blocks"]) == {t + s for t in lora.TARGETS for s in (lora.SUFFIX_A, lora.SUFFIX_B)}
    assert np.abs(np.asarray(adapters["blocks"]["q_proj_lora_a"])).max() > 0  # A random, B zero
    got = np.asarray(jax.jit(LLaDA(cfg).apply)({"params": lora.combine(adapters, params)}, IDS))
    np.testing.assert_array_equal(got, want)


def test_frozen_base_bitwise_and_checkpoint_holds_adapters_only(lora_run, base):
    workdir, cfg, state = lora_run
    base_params = import_hf.load_pretrained(str(pathlib.Path(__file__).parent / "data" / "llada-tiny"))[1]
    frozen, want = _leaves(state["frozen"]), _leaves(base_params)
    assert frozen.keys() == want.keys()
    for k in want:
        assert frozen[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(frozen[k].view(np.uint32), want[k].view(np.uint32))  # bitwise
    adapters = _leaves(state["params"])
    assert all("_lora_" in k for k in adapters) and len(adapters) == 2 * len(lora.TARGETS)
    assert np.abs(adapters["['blocks']['q_proj_lora_b']"]).max() > 0  # trained away from zero
    # the optimizer state mirrors the adapters only: mu and nu of each, plus counts
    opt_sizes = sorted(x.size for x in jax.tree_util.tree_leaves(state["opt_state"]) if x.ndim)
    assert opt_sizes == sorted([x.size for x in adapters.values()] * 2)
    info = json.load(open(os.path.join(workdir, "run.json")))
    assert info["lora_base"] == {"workdir": os.path.abspath(base[0]), "step": 0}
    assert info["model"]["lora"]["rank"] == 8
    ckpt = os.path.join(workdir, "checkpoints", "6", "params")
    size = sum(f.stat().st_size for f in pathlib.Path(ckpt).rglob("*") if f.is_file())
    base_bytes = sum(x.nbytes for x in want.values())
    assert size < base_bytes / 2, (size, base_bytes)  # adapters (~25% of this tiny model), not the base
    # resuming restores the adapters from the checkpoint and the base by its reference
    again, _ = loop.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1])
    for k, v in _leaves(again["params"]).items():
        np.testing.assert_array_equal(v, adapters[k])
    assert _leaves(again["frozen"]).keys() == want.keys()


def test_merged_equals_unmerged_and_exports_round_trip(lora_run, base, tmp_path, monkeypatch):
    import torch
    from peft import PeftModel

    from llada_jax.interop.torch_model import LLaDATorch

    workdir = lora_run[0]
    model, params, _, at = generate.load(workdir)
    assert at == 6 and model.config.lora.rank == 8
    unmerged = np.asarray(model.apply({"params": params}, IDS))
    base_logits = np.asarray(LLaDA(model.config.replace(lora=lora.LoRAConfig())).apply(
        {"params": lora.split(params)[1]}, IDS))
    assert np.abs(unmerged - base_logits).max() > 1e-2  # the adapters matter
    mcfg, merged = merge_lora(model.config, params)
    # W + AB rounds once where x W + (x A) B rounds twice: fp32 agreement, relative to logits of about 10
    np.testing.assert_allclose(np.asarray(LLaDA(mcfg).apply({"params": merged}, IDS)), unmerged, atol=1e-5, rtol=1e-5)

    monkeypatch.chdir(tmp_path)  # relative folders, as a user types them
    export.main(["--workdir", workdir, "--out", "merged", "--dtype", "float32"])
    export.main(["--workdir", base[0], "--out", "base-hf", "--dtype", "float32"])  # the base as trained: float32
    with pytest.raises(SystemExit, match="error: --peft needs --base_model=HF_DIR.*python -m llada_jax.export "
                                         f"--workdir={base[0]} --out=HF_DIR --dtype=float32"):
        export.main(["--workdir", workdir, "--out", "peft", "--peft"])
    export.main(["--workdir", workdir, "--out", "peft", "--peft", "--base_model", "base-hf"])
    cfg = json.load(open(os.path.join("peft", "adapter_config.json")))
    assert cfg["base_model_name_or_path"] == "base-hf"  # the exported folder as given, not the JAX workdir
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"]) == ("LORA", 8, 16.0)
    ids = torch.from_numpy(IDS).long()
    with torch.no_grad():
        ours = LLaDATorch.from_pretrained("merged")(ids).numpy()
        net = PeftModel.from_pretrained(LLaDATorch.from_pretrained(cfg["base_model_name_or_path"]), "peft")
        peft_logits = net(input_ids=ids).numpy()
    np.testing.assert_allclose(ours, unmerged, atol=1e-5, rtol=0)
    np.testing.assert_allclose(peft_logits, ours, atol=1e-5, rtol=0)
    adapted = [n for n, _ in net.named_modules() if n.endswith(".lora_A")]
    assert len(adapted) == 2 * len(lora.TARGETS)  # the blocks' projections, not the output head
    # a base rounded to bf16 is not what these adapters were trained on (a float32 base): refused
    export.main(["--workdir", base[0], "--out", "base-bf16", "--dtype", "bfloat16"])
    with pytest.raises(SystemExit, match=r"error: --base_model='base-bf16': its model.transformer.blocks.0.q_proj."
                                         r"weight "
                                         r"\(bfloat16\) is not the base the adapters were trained against \(float32; "
                                         r"max \|diff\| [0-9.e-]+\).*--dtype=float32 --overwrite"):
        export.main(["--workdir", workdir, "--out", "peft2", "--peft", "--base_model", "base-bf16"])
    assert not os.path.exists("peft2")


def test_peft_on_the_bf16_base_export_gives_the_merged_logits(golden_model, tmp_path):
    """Adapters trained on a bf16 base (the default lora.base_dtype): on the base exported
    in bf16 and loaded in float32 they give the merged float32 export's logits to float32
    rounding; on a float32 export of the base they are off by the base's bf16 rounding
    (refused by the export's check). The numbers are the README's (run with -s)."""
    import torch
    from peft import PeftModel

    from llada_jax.interop import hf, peft_base
    from llada_jax.interop.torch_model import LLaDATorch

    model, params = golden_model
    cfg = model.config.replace(lora=lora.LoRAConfig(rank=4, alpha=8.0), param_dtype="bfloat16")
    rng = np.random.default_rng(0)
    shapes = lora.split(jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(3)))[0]
    adapters = jax.tree_util.tree_map(lambda x: rng.normal(0, 0.03, x.shape).astype(np.float32), shapes)
    base16 = jax.tree_util.tree_map(lambda x: np.asarray(x).astype(jnp.bfloat16), params)
    trained = lora.combine(adapters, base16)
    out = {name: str(tmp_path / name) for name in ("merged", "base-bf16", "base-fp32", "peft")}
    hf.save_pretrained(*merge_lora(cfg, trained, dtype="float32"), out["merged"], dtype="float32")
    hf.save_pretrained(model.config.replace(param_dtype="bfloat16"), base16, out["base-bf16"], dtype="bfloat16")
    hf.save_pretrained(model.config, params, out["base-fp32"], dtype="float32")
    export.save_peft(cfg, trained, out["peft"], base_model=out["base-bf16"])
    ids = torch.from_numpy(IDS).long()

    def logits(path, peft=True, dtype=torch.float32):
        net = LLaDATorch.from_pretrained(out[path], dtype=dtype)
        with torch.no_grad():
            return (PeftModel.from_pretrained(net, out["peft"]) if peft else net)(input_ids=ids).float().numpy()

    merged = logits("merged", peft=False)
    diff = {"peft on base-bf16, float32 compute": np.abs(logits("base-bf16") - merged).max(),
            "peft on base-bf16, bf16 compute": np.abs(logits("base-bf16", dtype=torch.bfloat16) - merged).max(),
            "peft on base-fp32": np.abs(logits("base-fp32") - merged).max(),
            "adapters' effect": np.abs(logits("base-bf16", peft=False) - merged).max()}
    print(f"max |logits| {np.abs(merged).max():.1f};", {k: f"{v:.2e}" for k, v in diff.items()})
    assert diff["peft on base-bf16, float32 compute"] < 3e-5  # float32 rounding of logits up to ~10
    assert diff["adapters' effect"] > 1 and diff["peft on base-fp32"] > 1e-2
    assert diff["peft on base-bf16, bf16 compute"] < 0.2 * diff["adapters' effect"]
    gather = export.gatherer(np.float32)
    peft_base.check_weights(cfg, trained, out["base-bf16"], None, gather)  # the base the adapters saw
    with pytest.raises(ValueError, match=r"base-fp32'.*\(float32\) is not the base the adapters were trained "
                                         r"against \(bfloat16; max \|diff\|"):
        peft_base.check_weights(cfg, trained, out["base-fp32"], None, gather)


@pytest.mark.parametrize("attention", ["chunked", "splash"])  # cudnn needs a GPU
def test_adapters_work_with_every_attention_implementation(lora_run, attention):
    model, params, _, _ = generate.load(lora_run[0])
    want = np.asarray(model.apply({"params": params}, IDS))
    got = np.asarray(LLaDA(model.config.replace(attention=attention)).apply({"params": params}, IDS))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_sampling_and_likelihood_without_merging(lora_run):
    model, params, _, _ = generate.load(lora_run[0])
    mcfg, merged = merge_lora(model.config, params)
    plain = LLaDA(mcfg)
    prompt = IDS[:1, :4]
    kw = dict(steps=8, gen_length=8, block_length=8, mask_id=255, eos_id=250)
    np.testing.assert_array_equal(np.asarray(sampler.generate(model, params, prompt, **kw)),
                                  np.asarray(sampler.generate(plain, merged, prompt, **kw)))
    ll = [likelihood.log_likelihood(m, p, IDS[0, :4], IDS[0, 4:9], rng=jax.random.PRNGKey(0), mc_num=8,
                                   batch_size=4, mask_id=255) for m, p in ((model, params), (plain, merged))]
    assert abs(ll[0] - ll[1]) < 1e-4 * abs(ll[1]), ll


@pytest.fixture(scope="module")
def pretrained(golden_model):
    """The tiny model pre-trained briefly (full) on the arithmetic task: a base whose head
    and norms have grown, as a real pre-trained model's have (LoRA leaves them frozen)."""
    model, params = golden_model
    return model.config, finetune(model.config, params, rank=0, lr=3e-3, steps=60, kind="pretrain",
                                   task="arith")[2]


def test_lora_sft_reaches_full_finetuning_loss(pretrained):
    """SFT on the sort task, same data and steps: LoRA rank 16 (alpha 32) on all
    seven projections against full fine-tuning, both at lr 3e-3."""
    cfg, params = pretrained
    start, full, _ = finetune(cfg, params, rank=0, lr=3e-3, steps=60)
    _, low_rank, _ = finetune(cfg, params, rank=16, lr=3e-3, steps=60)
    assert full < 0.7 * start, (full, start)  # the task was learned
    assert low_rank <= 1.1 * full, (low_rank, full)


def test_mesh_bf16_base_pretrain_matches_one_device(golden_model):
    """fsdp=4 x tensor=2 with a bf16 base and fp32 adapters (pretraining objective, 2
    micro-batches) gives the loss and adapters of one device."""
    model, params = golden_model
    cfg = model.config.replace(lora=lora.LoRAConfig(rank=4, targets=("q_proj", "v_proj", "ff_out")),
                               param_dtype="bfloat16")
    lmodel = LLaDA(cfg)
    optim = tiny_config(**{"optim.lr": 1e-2, "optim.warmup_steps": 0, "optim.grad_accum": 2}).optim
    tx, _ = optimizer.make_optimizer(optim, 10)
    st = step.Static(lmodel, tx, "pretrain", 255, 1e-3, 0.0, 2)
    ids = np.random.default_rng(1).integers(0, 250, (8, 16)).astype(np.int32)
    out = {}
    for name, shape, devices in (("one", (1, 1, 1), jax.devices()[:1]), ("mesh", (1, 4, 2), jax.devices())):
        mesh = sharding.make_mesh(dict(zip(("data", "fsdp", "tensor"), shape)), devices)
        _, sh = train_state.state_shardings(lmodel, tx, mesh)
        frozen = jax.device_put(jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), lora.split(params)[1]),
                                sh["frozen"])
        state = train_state.init_state(lmodel, tx, mesh, 0, sh, frozen=frozen)
        step_fn = step.compile_step(st, mesh, sh, {"input_ids": 2})
        for _ in range(2):
            state, m = step_fn(state, sharding.global_batch({"input_ids": ids}, mesh, 8))
        out[name] = (float(m["loss"]), _leaves(state["params"]), state)
    state = out["mesh"][2]
    assert state["params"]["blocks"]["q_proj_lora_a"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", None)
    assert state["frozen"]["blocks"]["q_proj"].dtype == jnp.bfloat16
    assert {x.dtype for x in jax.tree_util.tree_leaves((state["params"], state["opt_state"])) if x.ndim} == {
        jnp.dtype(jnp.float32)}
    assert abs(out["one"][0] - out["mesh"][0]) < 1e-5 * abs(out["one"][0])
    for k, v in out["one"][1].items():
        np.testing.assert_allclose(out["mesh"][1][k], v, atol=1e-5, rtol=0)


def test_bad_lora_configs_fail_with_the_field_name(base, tmp_path):
    cases = [({"lora.targets": "q_proj,gate"}, "config.lora.targets='q_proj,gate'"),
             ({"lora.rank": -1}, "config.lora.rank=-1"),
             ({"lora.dropout": 1.0}, "config.lora.dropout=1.0"),
             ({"lora.base_dtype": "int8"}, "config.lora.base_dtype='int8'"),
             ({"train.init_from": ""}, "expected config.train.init_from")]
    for over, msg in cases:
        with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(".", r"\.")):
            loop.train_and_evaluate(_config(*base, **over), str(tmp_path / "w"), devices=jax.devices()[:1])
    assert not os.path.exists(tmp_path / "w")  # refused before anything was written


def test_init_from_a_lora_workdir_is_refused(lora_run, base, tmp_path):
    with pytest.raises(ValueError, match="is itself a LoRA run"):
        loop.train_and_evaluate(_config(*base, **{"train.init_from": lora_run[0]}), str(tmp_path / "w"),
                                devices=jax.devices()[:1])
