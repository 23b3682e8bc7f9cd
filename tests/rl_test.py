"""diffu-GRPO and VRPO (llada_jax.objectives.grpo / .vrpo, llada_jax.rl)."""

import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax.training import loop
from llada_jax.model import LLaDA, LLaDAConfig, init_params
from llada_jax.objectives import grpo, vrpo
from llada_jax.rl import pairs, rewards, rollout
from llada_jax.rl import step as rl_step
from llada_jax.rl.loop import train_rl
from llada_jax.sampling.params import SamplingParams
from llada_jax.data.tasks import ArithmeticTask, CummaxTask, SortTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK = 9


# ------------------------------------------------------------ the d1 log-prob estimate
def test_d1_mask_masks_the_whole_completion_and_prompt_tokens_with_probability_p():
    ids = jnp.tile(jnp.arange(8, dtype=jnp.int32), (4000, 1))
    noisy = np.asarray(grpo.d1_mask(jax.random.key(1), ids, 3, 0.25, MASK))
    assert np.all(noisy[:, 3:] == MASK)
    frac = np.mean(noisy[:, :3] == MASK)
    assert abs(frac - 0.25) < 0.02, frac
    assert np.all((noisy[:, :3] == MASK) | (noisy[:, :3] == np.arange(3)))


def test_completion_logps_against_a_hand_computation_on_a_stub_model():
    # Stub: the logits at position j are table[input token at j] + j * bias, so the
    # estimate reads log_softmax(table[MASK] + j * bias)[token] on the completion.
    rng = np.random.default_rng(0)
    table = rng.normal(size=(10, 10)).astype(np.float32)
    bias = rng.normal(size=(10,)).astype(np.float32)

    def apply_fn(params, ids):
        return params[0][ids] + jnp.arange(ids.shape[1])[None, :, None] * params[1]

    ids = np.array([[1, 2, 3, 4, 5, 6], [7, 0, 8, 3, 3, 1]], np.int32)
    got = np.asarray(grpo.completion_logps(apply_fn, (jnp.asarray(table), jnp.asarray(bias)), jnp.asarray(ids),
                                           jax.random.key(0), prompt_len=2, p_mask_prompt=0.0, mask_id=MASK))
    want = np.zeros((2, 4))
    for b in range(2):
        for j in range(2, 6):
            z = table[MASK] + j * bias
            want[b, j - 2] = z[ids[b, j]] - np.log(np.sum(np.exp(z)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ GRPO loss vs numpy
def _np_grpo(new, old, ref, adv, mask, eps, beta):
    """Loss and its gradient with respect to `new`, written out by hand."""
    ratio = np.exp(new - old)
    clipped = np.clip(ratio, 1 - eps, 1 + eps)
    a = adv[:, None]
    unclipped_branch = ratio * a <= clipped * a
    per = -np.minimum(ratio * a, clipped * a) + beta * (np.exp(ref - new) - (ref - new) - 1)
    grad = np.where(unclipped_branch, -ratio * a, 0.0) + beta * (-np.exp(ref - new) + 1)
    n = mask.sum()
    return (per * mask).sum() / n, grad * mask / n


def test_group_advantages_against_numpy():
    r = np.array([1, 0, 0, 1, 1, 1, 0, 0.5], np.float32)
    g = r.reshape(2, 4)
    np.testing.assert_allclose(grpo.group_advantages(jnp.asarray(r), 4), (g - g.mean(1, keepdims=True)).ravel(),
                               atol=1e-6)
    scaled = (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-4)
    np.testing.assert_allclose(grpo.group_advantages(jnp.asarray(r), 4, scale_rewards=True), scaled.ravel(),
                               rtol=1e-5)


def test_grpo_loss_and_gradient_against_numpy():
    rng = np.random.default_rng(3)
    new = rng.normal(-1.0, 0.6, size=(4, 5)).astype(np.float32)
    old = (new + rng.normal(0, 0.4, size=(4, 5))).astype(np.float32)  # ratios in and out of the clip range
    ref = (new + rng.normal(0, 0.3, size=(4, 5))).astype(np.float32)
    adv = np.array([1.5, -0.5, 0.0, -2.0], np.float32)
    mask = np.array([[1, 1, 1, 1, 0]] * 3 + [[1, 1, 0, 0, 0]], np.float32)
    eps, beta = 0.2, 0.04
    want_loss, want_grad = _np_grpo(new.astype(np.float64), old, ref, adv, mask, eps, beta)

    def f(x):
        return grpo.grpo_loss(x, jnp.asarray(old), jnp.asarray(ref), jnp.asarray(adv), jnp.asarray(mask),
                              epsilon=eps, beta=beta)

    (loss, m), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(new))
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-6)
    ratio = np.exp(new - old)
    clipped = (ratio * adv[:, None]) > (np.clip(ratio, 1 - eps, 1 + eps) * adv[:, None])
    assert 0 < float(m["clip_fraction"]) < 1
    np.testing.assert_allclose(float(m["clip_fraction"]), (clipped * mask).sum() / mask.sum(), rtol=1e-6)
    kl = np.exp(ref - new) - (ref - new) - 1
    np.testing.assert_allclose(float(m["kl"]), (kl * mask).sum() / mask.sum(), rtol=1e-5)


# ------------------------------------------------------------ VRPO
def _tiny_model(**kw):
    cfg = LLaDAConfig.tiny(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden_size=32, vocab_size=16,
                           embedding_size=16, mask_token_id=15, eos_token_id=14, pad_token_id=14, **kw)
    return LLaDA(cfg), init_params(cfg, jax.random.PRNGKey(0))


def test_vrpo_loss_against_numpy():
    pw, pl, rw, rl = (np.array(x, np.float32) for x in ([-3., -5.], [-4., -2.], [-3.5, -4.], [-4., -2.5]))
    loss, m = vrpo.vrpo_loss(pw, pl, rw, rl, beta=0.5)
    z = 0.5 * ((pw - rw) - (pl - rl))
    np.testing.assert_allclose(float(loss), np.mean(np.log1p(np.exp(-z))), rtol=1e-6)
    np.testing.assert_allclose(float(m["reward_margin"]), z.mean(), rtol=1e-6)


def test_vrpo_antithetic_sampling_gives_policy_and_reference_the_same_masks():
    model, params = _tiny_model()
    seqs = jnp.asarray(np.random.default_rng(0).integers(0, 10, (3, 9)), jnp.int32)
    keys = jax.random.split(jax.random.key(0), 3)
    e1 = vrpo.elbo(model, params, seqs, keys, prompt_len=4, n=4, mask_id=15)
    e2 = vrpo.elbo(model, params, seqs, keys, prompt_len=4, n=4, mask_id=15)
    np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))  # same keys: same masks, same estimate
    e3 = vrpo.elbo(model, params, seqs, jax.random.split(jax.random.key(1), 3), prompt_len=4, n=4, mask_id=15)
    assert not np.allclose(np.asarray(e1), np.asarray(e3))  # other masks: another estimate
    # In the step, a policy equal to the reference gives a margin of exactly 0, loss log 2:
    # only possible when both saw the same timesteps and masks.
    import optax
    st = rl_step.Static(model, model, optax.sgd(0.0), 4, 15, beta=0.1, vrpo_n=4)
    state = {"step": jnp.int32(0), "params": params, "opt_state": st.tx.init(params), "rng": jax.random.PRNGKey(3)}
    ref = jax.tree_util.tree_map(jnp.copy, params)
    _, m = rl_step.vrpo_step(state, ref, seqs, seqs[::-1], st)
    assert float(m["reward_margin"]) == 0.0
    np.testing.assert_allclose(float(m["loss"]), np.log(2), rtol=1e-6)


# ------------------------------------------------------------ rewards, rollouts, pairs
def test_exact_match_and_format_rewards():
    task = SortTask(n_items=3, n_values=10, vocab_size=16, seq_len=8)
    prompts = np.array([[3, 1, 2, 10], [5, 5, 0, 10]])
    good = np.array([[1, 2, 3, 14], [0, 5, 5, 14]])
    bad = np.array([[1, 3, 2, 14], [0, 5, 5, 5]])
    np.testing.assert_array_equal(rewards.REWARDS["sort_exact"](prompts, good, task), [1, 1])
    np.testing.assert_array_equal(rewards.REWARDS["sort_exact"](prompts, bad, task), [0, 0])
    np.testing.assert_allclose(rewards.REWARDS["sort_format"](prompts, bad, task), [0.1, 0])
    np.testing.assert_allclose(rewards.total_reward(rewards.parse("sort_exact,sort_format"), prompts, good, task),
                               [1.1, 1.1])
    cummax = CummaxTask(n_items=3, n_values=10, vocab_size=16, seq_len=8)  # its answer, not the sorted one
    ids, _ = cummax.rows(np.random.default_rng(0), 5)
    np.testing.assert_array_equal(rewards.REWARDS["sort_exact"](ids[:, :4], ids[:, 4:], cummax), np.ones(5))
    np.testing.assert_array_equal(rewards.REWARDS["sort_exact"](prompts, [[3, 3, 3, 14], [5, 5, 5, 14]], cummax),
                                  [1, 1])
    arith = ArithmeticTask(n_values=10, seq_len=8)
    ids, _ = arith.rows(np.random.default_rng(0), 5)
    np.testing.assert_array_equal(rewards.REWARDS["arith_exact"](ids[:, :2], ids[:, 2:], arith), np.ones(5))
    with pytest.raises(ValueError, match="rewards='nope'"):
        rewards.parse("nope")


def test_a_rollout_batch_is_reproducible_from_its_seed():
    model, params = _tiny_model()
    prompts = np.random.default_rng(0).integers(0, 10, (2, 4))
    kw = dict(num_generations=3, sampling=SamplingParams(gen_length=4, block_length=4, steps=4, temperature=1.0))
    a = rollout.rollout(model, params, prompts, rng=jax.random.key(5), **kw)
    b = rollout.rollout(model, params, prompts, rng=jax.random.key(5), **kw)
    c = rollout.rollout(model, params, prompts, rng=jax.random.key(6), **kw)
    assert a.shape == (6, 8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a[:3, :4], np.repeat(prompts[:1], 3, 0))  # rows b*G..b*G+G-1: prompt b
    assert len({tuple(row) for row in a[:3, 4:]}) > 1  # each rollout its own seed: a group's samples differ


def test_pairs_jsonl_round_trip_and_errors(tmp_path):
    path = str(tmp_path / "p.jsonl")
    pairs.write(path, [[1, 2], [3, 4]], [[5, 6, 7], [5, 6, 7]], [[7, 6, 5], [6, 5, 7]])
    p, w, l = pairs.read(path)
    np.testing.assert_array_equal(p, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(l, [[7, 6, 5], [6, 5, 7]])
    with pytest.raises(FileExistsError):
        pairs.write(path, [[1]], [[1]], [[1]])  # never overwrites
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": [1], "chosen": [2]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected an object with keys"):
        pairs.read(str(bad))
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"prompt": [1], "chosen": [2], "rejected": [3, 4]}) + "\n")
    np.testing.assert_array_equal(pairs.read(str(short), eos_id=14)[1], [[2, 14]])


def test_pairs_from_rewards_best_over_worst_of_each_group():
    prompts = np.array([[1, 2], [3, 4], [5, 6]])
    comps = np.arange(3 * 3 * 2).reshape(3, 3, 2)  # sample (b, g) is row 3b + g
    r = np.array([[0.0, 1.0, 1.0],   # the first best (g=1) over the worst (g=0)
                  [0.5, 0.5, 0.5],   # one reward for all: no pair
                  [2.0, 0.0, 1.0]])  # best g=0 over worst g=1
    p, w, l = pairs.from_rewards(prompts, comps, r)
    np.testing.assert_array_equal(p, [[1, 2], [5, 6]])
    np.testing.assert_array_equal(w, [comps[0, 1], comps[2, 0]])
    np.testing.assert_array_equal(l, [comps[0, 0], comps[2, 1]])
    with pytest.raises(ValueError, match=r"expected \(B, G, A\) and \(B, G\)"):
        pairs.from_rewards(prompts, comps, r[:, :2])
    # a sample holding the mask id takes neither role: group 0's worst is then g=2, group 2 keeps g=0 over g=2
    p, w, l = pairs.from_rewards(prompts, comps, np.array([[0.0, 1.0, -1.0], [0.5, 0.5, 0.5], [2.0, 0.0, 1.0]]),
                                 exclude_id=int(comps[2, 1, 0]))
    np.testing.assert_array_equal(w, [comps[0, 1], comps[2, 0]])
    np.testing.assert_array_equal(l, [comps[0, 2], comps[2, 2]])


# ------------------------------------------------------------ the RL run
def _rl_config(init_from, **rl):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from train_helper import tiny_config

    c = tiny_config(**{"data.kind": "sft", "data.task": "sort", "data.task_items": 3, "data.task_values": 10,
                       "data.seq_len": 8, "data.batch_size": 8, "model.vocab_size": 16,
                       "model.embedding_size": 16, "model.n_layers": 1, "model.mlp_hidden_size": 32,
                       "optim.schedule": "constant", "optim.warmup_steps": 0, "optim.decay_steps": 0,
                       "optim.lr": 1e-3, "train.steps": 4, "checkpoint.every": 2, "checkpoint.async_save": False})
    c.rl.update(init_from=str(init_from), num_generations=2, sampler_steps=4, gen_length=4, block_length=4,
                eval_prompts=8, **rl)
    return c


@pytest.fixture(scope="module")
def sft_wd(tmp_path_factory):
    wd = tmp_path_factory.mktemp("sft")
    c = _rl_config("")
    c.train.steps = 2
    loop.train_and_evaluate(c, str(wd))
    return wd


def _params(state):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state["params"])]


def test_grpo_resume_after_sigterm_is_bitwise(sft_wd, tmp_path):
    full, _ = train_rl(_rl_config(sft_wd), str(tmp_path / "full"))

    def term_at_2(step, state, m):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    _, last = train_rl(_rl_config(sft_wd), str(tmp_path / "cut"), hooks=(term_at_2,))
    assert last["signal"] == signal.SIGTERM and loop.exit_status(last) == loop.EXIT_PREEMPTED
    resumed, _ = train_rl(_rl_config(sft_wd), str(tmp_path / "cut"))
    for a, b in zip(_params(full), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    assert int(resumed["step"]) == 4
    logged = [json.loads(x) for x in open(tmp_path / "full" / "metrics.jsonl")]
    assert {"reward_mean", "reward_std", "kl", "clip_fraction", "accuracy"} <= set(logged[0])


def test_vrpo_run_and_lora_grpo(sft_wd, tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs.write(str(path), [[1, 2, 3, 10]] * 8, [[1, 2, 3, 14]] * 8, [[3, 2, 1, 14]] * 8)
    c = _rl_config(sft_wd, algorithm="vrpo", pairs=str(path), beta=0.1, vrpo_n=2)
    c.mesh.update(data=4, fsdp=2, rules=(("embed", None),))  # the run applies config.mesh.rules
    state, _ = train_rl(c, str(tmp_path / "vrpo"))
    assert int(state["step"]) == 4
    assert state["params"]["wte"].sharding.spec == jax.sharding.PartitionSpec()  # default: P(None, "fsdp")
    c = _rl_config(sft_wd)
    c.lora.update(rank=2, base_dtype="float32")
    c.train.steps = 1
    seen = {}
    state, _ = train_rl(c, str(tmp_path / "lora"), hooks=(lambda s, st, m: seen.update(m),))
    assert "frozen" in state and seen["kl"] >= 0  # the reference is the base (rank-0 model on "frozen")


def test_grpo_from_a_block_diffusion_policy(tmp_path):
    """A block-causal policy (block SFT, blocks of 4): its rollouts run on the engine's
    block-causal lanes, its log-probabilities are its block-causal pass, and GRPO trains it."""
    sft = _rl_config("")
    sft.data.kind, sft.model.block_size, sft.train.steps = "block_sft", 4, 2
    loop.train_and_evaluate(sft, str(tmp_path / "sft"))
    c = _rl_config(tmp_path / "sft")
    c.data.kind, c.model.block_size, c.train.steps = "block_sft", 4, 2
    seen = []
    state, last = train_rl(c, str(tmp_path / "grpo"), hooks=(lambda s, st, m: seen.append(m),))
    assert int(state["step"]) == 2 and np.isfinite(last["loss"]) and len(seen) == 2
    assert json.loads((tmp_path / "grpo" / "run.json").read_text())["model"]["block_size"] == 4


def test_config_errors_and_the_cli_error_line(sft_wd, tmp_path):
    with pytest.raises(ValueError, match="config.rl.init_from is empty"):
        train_rl(_rl_config(""), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="config.rl.algorithm='ppo'"):
        train_rl(_rl_config(sft_wd, algorithm="ppo"), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="not an RL run"):
        train_rl(_rl_config(sft_wd), str(sft_wd))
    out = subprocess.run([sys.executable, "-m", "llada_jax.rl", "--config=configs/rl_sort.py",
                          f"--workdir={tmp_path / 'b'}", "--config.rl.algorithm=vrpo",
                          f"--config.rl.init_from={sft_wd}"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: config.rl.pairs=''"), out.stderr


def test_reduced_miniature_prints_the_accuracies(tmp_path, capsys):
    from llada_jax.experiments import rl_miniature

    (line,) = rl_miniature.main([f"--out={tmp_path}", "--mode=reduced", "--seed=1", "--plot"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == line
    for k, _ in rl_miniature.COLUMNS:
        assert 0.0 <= line[k] <= 1.0
    assert line["sft_baseline_steps"] >= 1 and line["grpo_flops"] > 0
    assert (tmp_path / "rl_miniature.png").stat().st_size > 0
    assert "| 1 |" in (tmp_path / "rl_miniature.md").read_text()
    # VRPO's pairs are the SFT model's own samples: a correct answer over an incorrect one
    p, w, l = pairs.read(str(tmp_path / "pairs_seed1.jsonl"))
    assert len(p) == line["num_pairs"] >= 1
    h = rl_miniature.REDUCED
    task = SortTask(n_items=h["n_items"], n_values=h["n_values"], vocab_size=h["n_values"] + 3,
                    seq_len=h["n_items"] + 1 + h["answer_len"])
    want = rewards.expected_answer(task, p, h["answer_len"])
    np.testing.assert_array_equal(w, want)
    assert not np.any(np.all(l == want, axis=1))
