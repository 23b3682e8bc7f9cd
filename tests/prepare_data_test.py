"""Prepared data: same rows as the in-memory packing, process sharding, byte-identical
resume of an interrupted preparation, refused corrupt/foreign shards, named bad input,
SFT, and a bitwise training resume from prepared data."""

import json
import logging
import os
import pathlib
import sys
import time

import jax
import numpy as np
import pytest

from llada_jax.data import documents, pipeline
from llada_jax.training import inputs, loop
from llada_jax.data import prepare, prepared, tokenizer
from llada_jax.config import rules

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tokenizer.train_sentencepiece(documents.stdlib_files("train")[:4], str(tmp_path_factory.mktemp("spm") / "tok"), 400,
                                 max_bytes=40_000)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A few KB: text files (one blank), then a JSONL file of 40 short documents."""
    d = tmp_path_factory.mktemp("corpus")
    for i, src in enumerate(documents.stdlib_files("train")[:3]):
        (d / f"a{i}.py").write_text(pathlib.Path(src).read_text()[:1500])
    (d / "a3.py").write_text("  \n")
    (d / "b.jsonl").write_text("".join(json.dumps({"text": f"document {i}: " + "x = 1\n" * (i % 5)}) + "\n"
                                       for i in range(40)))
    return [str(p) for p in sorted(d.iterdir())]


@pytest.fixture(scope="module")
def prep(tok, corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prep") / "out")
    prepare.prepare(corpus, out, tokenizer=tok.path, shard_bytes=1000, workers=1, progress=False)
    return out


def _it(path, tok, **kw):
    kw = dict(dict(seq_len=32, batch_size=4, seed=3, process_index=0, process_count=1, verify="full"), **kw)
    return prepared.prepared_iterator(path, tok, **kw)


def test_rows_equal_in_memory_packing_and_segment_ids(tok, corpus, prep):
    index = prepared.read_index(prep)
    assert len(index["shards"]) >= 4 and index["dtype"] == "uint16"  # several shards, JSONL cut in ranges
    rows = pipeline.pretrain_rows(corpus, tok, 32, use_cache=False)
    it = _it(prep, tok, batch_size=len(rows), shuffle=False, num_epochs=1, segment_ids=True)
    batch = next(it)
    np.testing.assert_array_equal(batch["input_ids"], rows)
    assert index["tokens"] == int((rows != tok.eos_id).sum()) + index["documents"]
    # segment ids: 1 + documents ended before the position within the row; EOS closes its document
    flat, seg = rows.reshape(-1), batch["segment_ids"]
    for r in range(len(rows)):
        row = rows[r]
        want = 1 + np.concatenate([[0], np.cumsum(row[:-1] == tok.eos_id)])
        valid = seg[r] > 0
        np.testing.assert_array_equal(seg[r][valid], want[valid])
    assert (seg.reshape(-1) == 0).sum() == rows.size - index["tokens"] and flat.size >= index["tokens"]


def test_two_processes_disjoint_union_and_restore_onto_one(tok, prep):
    single = _it(prep, tok, batch_size=6)
    halves = [_it(prep, tok, batch_size=3, process_index=i, process_count=2) for i in range(2)]
    n_rows = single.get_state()["config"]["rows"]
    for _ in range(n_rows // 6 + 2):  # into the second epoch
        whole = next(single)["input_ids"]
        parts = [next(h)["input_ids"] for h in halves]
        assert not set(map(bytes, parts[0])) & set(map(bytes, parts[1]))
        assert sorted(map(bytes, np.concatenate(parts))) == sorted(map(bytes, whole))
    # a state saved by the two-process run restores onto one process (same global batch)
    state = json.loads(json.dumps(halves[0].get_state()))
    one = _it(prep, tok, batch_size=6)
    one.set_state(state)
    np.testing.assert_array_equal(next(one)["input_ids"], next(single)["input_ids"])
    with pytest.raises(ValueError, match="global batch_size 6"):
        _it(prep, tok, batch_size=4).set_state(state)


def _snapshot(out):
    return {f: (pathlib.Path(out, f).read_bytes()) for f in sorted(os.listdir(out))}


def test_interrupted_preparation_resumes_byte_identical(tok, corpus, prep, tmp_path):
    out = str(tmp_path / "out")
    prepare.prepare(corpus, out, tokenizer=tok.path, shard_bytes=1000, workers=2, progress=False)
    want = _snapshot(out)
    assert want == _snapshot(prep)  # a process pool writes the same bytes as one worker
    # a kill: no index, shard 1 half written (tmp files, no .json), shard 2 never started
    os.remove(os.path.join(out, prepared.INDEX))
    for f in ("shard-00001.json", "shard-00001.tokens", "shard-00002.json", "shard-00002.tokens",
              "shard-00002.docs.npy"):
        os.remove(os.path.join(out, f))
    pathlib.Path(out, "shard-00001.tokens.tmp").write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="no index.json"):
        prepared.read_index(out)
    before = os.stat(os.path.join(out, "shard-00000.tokens")).st_mtime_ns
    prepare.prepare(corpus, out, tokenizer=tok.path, shard_bytes=1000, workers=1, progress=False)
    assert _snapshot(out) == want
    assert os.stat(os.path.join(out, "shard-00000.tokens")).st_mtime_ns == before  # not rewritten
    # other inputs into the same directory, or a foreign directory, are refused
    with pytest.raises(ValueError, match="prepared from other inputs"):
        prepare.prepare(corpus[:2], out, tokenizer=tok.path, shard_bytes=1000, workers=1, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not made by prepare_data"):
        prepare.prepare(corpus, str(tmp_path / "mine"), tokenizer=tok.path, progress=False)


def test_corrupt_truncated_and_foreign_shards_refused(tok, corpus, prep, tmp_path):
    out = str(tmp_path / "out")
    prepare.prepare(corpus[:2], out, tokenizer=tok.path, shard_bytes=1000, workers=1, progress=False)
    shard = pathlib.Path(out, "shard-00001.tokens")
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="shard-00001.tokens: sha256 checksum mismatch"):
        _it(out, tok)
    background = _it(out, tok, verify="background")  # the default: step 1 does not wait for the check
    with pytest.raises(ValueError, match="checksum mismatch"):
        for _ in range(200):
            next(background)
            time.sleep(0.01)
    # a new file in its place: `background`'s prefetch threads may still read the old one's
    # memory map, and truncating a mapped file under them is a SIGBUS
    shard.with_suffix(".new").write_bytes(bytes(raw[:-2]))
    os.replace(shard.with_suffix(".new"), shard)
    with pytest.raises(ValueError, match="truncated"):
        _it(out, tok, verify="size")
    other = tokenizer.train_sentencepiece(documents.stdlib_files("train")[:2], str(tmp_path / "other"), 400, max_bytes=20_000)
    with pytest.raises(ValueError, match="another tokenizer .* foreign shards refused"):
        _it(prep, other)
    with pytest.raises(ValueError, match="holds pretrain data, this run needs sft"):
        _it(prep, tok, kind="sft")


def test_bad_input_named_and_replaced_bytes_counted(tok, tmp_path, caplog):
    lines = [json.dumps({"text": f"doc {i} " * 20}) for i in range(30)]
    lines[23] = '{"text": 5}'
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    # the bad line lies in a later unit (a byte range of the file): still named by its line
    with pytest.raises(ValueError, match=r"c.jsonl:24: the text is int, expected str"):
        prepare.prepare([str(tmp_path / "c.jsonl")], str(tmp_path / "o1"), tokenizer=tok.path,
                             shard_bytes=500, workers=1, progress=False)
    lines[23] = '{"txt": "x"}'
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"c.jsonl:24: expected a JSON object with a 'text' field"):
        prepare.prepare([str(tmp_path / "c.jsonl")], str(tmp_path / "o2"), tokenizer=tok.path,
                             shard_bytes=500, workers=1, progress=False)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["hello world", "second", None]}), str(tmp_path / "p.parquet"))
    with pytest.raises(ValueError, match=r"p.parquet: row 2: the text is NoneType"):
        prepare.prepare([str(tmp_path / "p.parquet")], str(tmp_path / "o3"), tokenizer=tok.path,
                             workers=1, progress=False)
    pq.write_table(pa.table({"text": ["hello world", "second"]}), str(tmp_path / "p.parquet"))
    (tmp_path / "bin.txt").write_bytes(b"caf\xe9 ok\n\xff\xfe end\n")
    with caplog.at_level(logging.WARNING):
        index = prepare.prepare([str(tmp_path / "p.parquet"), str(tmp_path / "bin.txt")], str(tmp_path / "o4"),
                                     tokenizer=tok.path, workers=1, progress=False)
    assert index["replaced_bytes"] == 3 and index["documents"] == 3
    assert "replaced 3 bytes that are not UTF-8" in caplog.text
    with pytest.raises(ValueError, match="no index.json"):
        prepared.PreparedData(str(tmp_path / "o1"), tok, "pretrain")
    with pytest.raises(SystemExit, match="error: --inputs: '.*nothing-here' matches no file"):
        prepare.main([f"--inputs={tmp_path}/nothing-here", f"--out={tmp_path}/o5"])


def test_sft_prepared_equals_in_memory_rows(tok, tmp_path):
    convos = [[{"role": "user", "content": f"question {i}" + " pad" * (i * 3)},
               {"role": "assistant", "content": f"answer {i}"}] for i in range(12)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in convos))
    out = str(tmp_path / "sft")
    prepare.prepare([str(path)], out, tokenizer=tok.path, kind="sft", workers=1, progress=False)
    ids, mask = pipeline.sft_rows(str(path), tok, 48)  # drops the conversations over 48 tokens
    it = _it(out, tok, kind="sft", seq_len=48, batch_size=len(ids), shuffle=False, num_epochs=1)
    batch = next(it)
    np.testing.assert_array_equal(batch["input_ids"], ids)
    np.testing.assert_array_equal(batch["prompt_mask"], mask)
    with pytest.raises(ValueError, match="--tokenizer is required for --kind=sft"):
        prepare.prepare([str(path)], str(tmp_path / "x"), kind="sft", progress=False)


def test_training_resumes_bitwise_from_prepared_data(tok, prep, tmp_path):
    over = {"data.source": "prepared", "data.path": prep, "data.tokenizer": "", "data.random_length_prob": 0.5,
            "model.vocab_size": 400, "model.embedding_size": 400, "model.mask_token_id": -1,
            "model.eos_token_id": -1, "model.pad_token_id": -1, "train.steps": 4}
    one = jax.devices()[:1]
    straight, _ = loop.train_and_evaluate(tiny_config(**over), str(tmp_path / "a"), devices=one)

    def crash(step, state, m):
        if step == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):  # a crash after the step-2 checkpoint
        loop.train_and_evaluate(tiny_config(**over), str(tmp_path / "b"), devices=one, hooks=[crash])
    resumed, _ = loop.train_and_evaluate(tiny_config(**over), str(tmp_path / "b"), devices=one)
    for a, b in zip(*(jax_leaves(s["params"]) for s in (straight, resumed))):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="config.data.eval_path is empty"):
        rules.check_paths(tiny_config(**over, **{"train.eval_every": 2}))


def test_block_diffusion_trains_on_prepared_data(prep, tmp_path):
    over = {"data.source": "prepared", "data.path": prep, "data.tokenizer": "", "data.kind": "block_diffusion",
            "model.block_size": 8, "model.vocab_size": 400, "model.embedding_size": 400, "model.mask_token_id": -1,
            "model.eos_token_id": -1, "model.pad_token_id": -1, "train.steps": 2}
    state, last = loop.train_and_evaluate(tiny_config(**over), str(tmp_path), devices=jax.devices()[:1])
    assert int(state["step"]) == 2 and np.isfinite(float(last["loss"]))


def jax_leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
