"""The public API of `llada_jax/__init__.py`: each name is the library's object, and the
workflow it documents (load an HF directory, sample, score, save, load a workdir) runs."""

import jax
import numpy as np
import pytest

import llada_jax
from llada_jax import sampling
from llada_jax.checkpoint import load
from llada_jax.interop import export, import_hf
from llada_jax.model import transformer
from llada_jax.objectives import likelihood


def test_names_are_the_library_objects():
    assert sorted(llada_jax.__all__) == ["LLaDA", "LLaDAConfig", "build", "generate", "load_pretrained", "load_workdir",
                                         "log_likelihood", "save_pretrained"]
    assert isinstance(llada_jax.build(transformer.LLaDAConfig.tiny()), transformer.LLaDA)
    assert llada_jax.LLaDA is transformer.LLaDA and llada_jax.LLaDAConfig is transformer.LLaDAConfig
    assert llada_jax.log_likelihood is likelihood.log_likelihood
    assert llada_jax.load_pretrained is import_hf.load_pretrained
    assert llada_jax.save_pretrained is export.save_pretrained
    assert llada_jax.load_workdir is load.load_workdir
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        llada_jax.nope  # noqa: B018


def test_workflow_from_an_hf_directory_to_a_workdir(golden_dir, tmp_path):
    config, params = llada_jax.load_pretrained(str(golden_dir / "llada-tiny"), dtype="float32")
    model = llada_jax.LLaDA(config)
    prompt = np.array([[5, 9, 11]], np.int32)
    kw = dict(steps=4, gen_length=4, block_length=4)
    # llada_jax.generate, the command's module, calls the sampler
    np.testing.assert_array_equal(llada_jax.generate(model, params, prompt, **kw),
                                  sampling.generate(model, params, prompt, **kw))
    ll = llada_jax.log_likelihood(model, params, [5, 9], [11, 3], rng=jax.random.key(0), mc_num=4, batch_size=2)
    assert np.isfinite(ll) and ll < 0
    llada_jax.save_pretrained(config, params, str(tmp_path / "hf"), dtype="float32")
    import_hf.import_to_workdir(str(tmp_path / "hf"), str(tmp_path / "wd"))
    w = llada_jax.load_workdir(str(tmp_path / "wd"))
    assert w.step == 0 and w.config == config and w.tokenizer is None and w.info["kind"] == "import"
    jax.tree_util.tree_map(np.testing.assert_array_equal, w.params, params)
    mesh = jax.make_mesh((1, 2, 1), ("data", "fsdp", "tensor"))
    sharded = llada_jax.load_workdir(str(tmp_path / "wd"), mesh)
    assert sharded.params["wte"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    with pytest.raises(ValueError, match="no run.json"):
        llada_jax.load_workdir(str(tmp_path / "hf"))
