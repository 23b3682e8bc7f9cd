"""The mesh, the logical-axis rules, sharded creation and global batches."""

import pathlib
import sys

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from llada_jax.parallel import sharding
from llada_jax.training import optimizer, train_state
from llada_jax.model import LLaDA, LLaDAConfig

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import tiny_config  # noqa: E402

CFG = LLaDAConfig.tiny(d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden_size=64, vocab_size=128,
                       embedding_size=128, mask_token_id=127, eos_token_id=126, pad_token_id=126)


def test_mesh_shape_resolution_and_errors():
    assert sharding.mesh_shape(dict(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)
    assert sharding.mesh_shape(dict(data=1, fsdp=4, tensor=2), 8) == (1, 4, 2)
    with pytest.raises(ValueError, match=r"data, fsdp are all -1"):
        sharding.mesh_shape(dict(data=-1, fsdp=-1, tensor=1), 8)
    with pytest.raises(ValueError, match=r"has 4 devices, expected the device count 8"):
        sharding.mesh_shape(dict(data=2, fsdp=2, tensor=1), 8)
    with pytest.raises(ValueError, match=r"^data=-1: the other axes multiply to 3"):
        sharding.mesh_shape(dict(data=-1, fsdp=3, tensor=1), 8)
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    assert mesh.axis_names == ("data", "fsdp", "tensor") and mesh.devices.shape == (2, 2, 2)


def test_params_and_optimizer_state_are_created_sharded():
    mesh = sharding.make_mesh(dict(data=1, fsdp=4, tensor=2))
    model = LLaDA(CFG)
    tx, _ = optimizer.make_optimizer(tiny_config().optim, 10)
    abstract, sh = train_state.state_shardings(model, tx, mesh)
    p = sh["params"]
    assert p["wte"].spec == P("tensor", "fsdp")
    assert p["ff_out"].spec == P("fsdp", "tensor")
    assert p["blocks"]["q_proj"].spec == P(None, "fsdp", "tensor", None)
    assert p["blocks"]["k_proj"].spec == P(None, "fsdp", "tensor", None)
    assert p["blocks"]["attn_out"].spec == P(None, "tensor", None, "fsdp")
    assert p["blocks"]["ff_out"].spec == P(None, "tensor", "fsdp")
    assert p["blocks"]["attn_norm"]["scale"].spec == P(None, None)
    state = train_state.init_state(model, tx, mesh, 0, sh)
    wte = state["params"]["wte"]
    assert {s.data.shape for s in wte.addressable_shards} == {(64, 8)}  # 1/8 of (128, 32) per device
    mu = state["opt_state"][1][0].mu["blocks"]["ff_proj"]  # AdamW first moment mirrors the param
    assert mu.sharding.spec == P(None, "fsdp", "tensor")
    assert state["step"].sharding.spec == P() and state["rng"].shape == (2,)


def test_global_batch_rows_are_split_over_data_and_fsdp():
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    rows = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)
    g = sharding.global_batch({"input_ids": rows}, mesh, 8)["input_ids"]
    assert g.shape == (8, 3) and g.sharding.spec == P(("data", "fsdp"), None)
    np.testing.assert_array_equal(np.asarray(g), rows)
    assert {s.data.shape for s in g.addressable_shards} == {(2, 3)}
    assert sharding.data_parallel_size(mesh) == 4


def test_config_mesh_rules_override_a_parameters_sharding():
    config = tiny_config()
    config.mesh.update(data=1, fsdp=4, tensor=2)
    assert sharding.rules_of(config.mesh) == sharding.LOGICAL_RULES  # default: the table as it is
    config.mesh.rules = (("embed", None), ("mlp", ("fsdp", "tensor")))
    rules = sharding.rules_of(config.mesh)
    assert dict(rules)["embed"] is None and dict(rules)["vocab"] == "tensor"
    mesh = sharding.make_mesh(config.mesh)
    tx, _ = optimizer.make_optimizer(config.optim, 10)
    _, sh = train_state.state_shardings(LLaDA(CFG), tx, mesh, rules=rules)
    assert sh["params"]["wte"].spec == P("tensor", None)  # default P("tensor", "fsdp")
    assert sh["params"]["blocks"]["ff_out"].spec == P(None, ("fsdp", "tensor"), None)
    for bad, match in [((("embeddings", None),), "logical axis among"), ((("embed", "model"),), "mesh axes among")]:
        config.mesh.rules = bad
        with pytest.raises(ValueError, match=match):
            sharding.rules_of(config.mesh)
