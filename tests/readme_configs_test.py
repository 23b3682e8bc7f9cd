"""The README's configs table agrees with configs/: every config file has a row, and every
claim of a row (the model column: parameters, family, d_model, layers, experts, block size,
vocabulary, dtype; the description: task digits, batch, sequence length, mesh, peak learning
rate) is what the file sets."""

import pathlib
import re

import pytest

from configs_test import n_params  # noqa: E402
from llada_jax.config import load_config_file, unset_fields, with_model_defaults

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
SECTION = README[README.index("## The configs"):README.index("## The mesh")]
ROWS = {m[1]: (m[2].strip(), m[3].strip()) for m in re.finditer(r"^\| `([^`]+)` \|([^|]*)\|(.*)\|$", SECTION, re.M)}
CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*.py"))
DTYPES = {"float32": "float32", "bf16": "bfloat16"}
INHERITED = "the shape of `train.init_from`"


def _model_claim(claim: str, c):
    """Check one comma-separated claim of the model column; ValueError for an unknown one
    (the column holds checkable facts only)."""
    m = c.model
    if claim in DTYPES:
        return m.dtype == DTYPES[claim], m.dtype
    patterns = [
        (r"(\d+(?:\.\d+)?)([MB]) parameters", None),
        (r"family `(\w+)`", lambda g: (m.family == g[0], m.family)),
        (r"d_model (\d+)", lambda g: (m.d_model == int(g[0]), m.d_model)),
        (r"(\d+) layers", lambda g: (m.n_layers == int(g[0]), m.n_layers)),
        (r"vocabulary (\d+)", lambda g: (m.vocab_size == int(g[0]), m.vocab_size)),
        (r"blocks of (\d+)", lambda g: (m.block_size == int(g[0]), m.block_size)),
        (r"(\d+) experts \((\d+) per token\)", lambda g: (
            (m.moe.num_experts, m.moe.num_experts_per_tok) == (int(g[0]), int(g[1])),
            (m.moe.num_experts, m.moe.num_experts_per_tok))),
    ]
    for pattern, check in patterns:
        g = re.fullmatch(pattern, claim)
        if g and check is None:  # the parameter count, to the printed precision
            value, unit = g[1], {"M": 1e6, "B": 1e9}[g[2]]
            decimals = len(value.split(".")[1]) if "." in value else 0
            n = n_params(c)
            return abs(n / unit - float(value)) <= 0.5 * 10 ** -decimals, n
        if g:
            return check(g.groups())
    raise ValueError(f"unknown claim {claim!r}")


def _description_claims(text: str, c):
    """(claim, holds, actual) of the facts the description states in fixed words."""
    d, mesh = c.data, c.mesh
    for g in re.finditer(r"(\d+)-digit", text):
        yield g[0], d.task_items == int(g[1]), d.task_items
    for g in re.finditer(r"batch (\d+) x (\d+)", text):
        yield g[0], (d.batch_size, d.seq_len) == (int(g[1]), int(g[2])), (d.batch_size, d.seq_len)
    for g in re.finditer(r"at (\d+) tokens", text):
        yield g[0], d.seq_len == int(g[1]), d.seq_len
    for g in re.finditer(r"fsdp over (\d+) devices", text):
        yield g[0], mesh.fsdp == int(g[1]), mesh.fsdp
    for g in re.finditer(r"fsdp (\d+) x expert (\d+)", text):
        yield g[0], (mesh.fsdp, mesh.expert) == (int(g[1]), int(g[2])), (mesh.fsdp, mesh.expert)
    for g in re.finditer(r"(?<!x )expert (\d+)\b", text):
        yield g[0], mesh.expert == int(g[1]), mesh.expert
    for g in re.finditer(r"peak ([\d.]+e-?\d+)", text):
        yield g[0], c.optim.lr == float(g[1]), c.optim.lr


def test_every_config_file_has_a_row_and_every_row_a_file():
    listed = {name.split("/")[-1] for name in ROWS if name.startswith("configs/") and name.endswith(".py")}
    assert listed == set(CONFIGS), f"not in the README table: {set(CONFIGS) - listed}; no such file: " \
                                   f"{listed - set(CONFIGS)}"
    for name in ROWS:
        assert (ROOT / name).exists(), name


@pytest.mark.parametrize("name", CONFIGS)
def test_the_row_states_what_the_config_sets(name):
    model, description = ROWS[f"configs/{name}"]
    c = load_config_file(str(ROOT / "configs" / name))
    if model == INHERITED:  # no shape of its own: every shape field is left to train.init_from
        assert {"family", "d_model", "n_layers", "vocab_size"} <= set(unset_fields(c.model)), name
        return
    c = with_model_defaults(c)  # what a run builds where nothing is inherited (tiny: the vocabulary it trains)
    claims = [x.strip() for x in model.split(",")]
    assert {"layers", "vocabulary"} <= {w for x in claims for w in x.split()}, f"{name}: the row names no shape"
    wrong = []
    for claim in claims:
        holds, actual = _model_claim(claim, c)
        if not holds:
            wrong.append(f"{claim!r} (the file: {actual})")
    wrong += [f"{claim!r} (the file: {actual})" for claim, holds, actual in _description_claims(description, c)
              if not holds]
    assert not wrong, f"README's row of configs/{name} disagrees with the file: {'; '.join(wrong)}"


def test_a_wrong_claim_is_caught():
    c = load_config_file(str(ROOT / "configs" / "small.py"))
    assert _model_claim("8 layers", c) == (False, 10)
    assert _model_claim("50.9M parameters", c)[0] and not _model_claim("50M parameters", c)[0]
    assert [h for _, h, _ in _description_claims("SFT at 2048 tokens, fsdp over 8 devices", c)] == [False, False]
    with pytest.raises(ValueError, match="unknown claim"):
        _model_claim("32k vocabulary", c)
