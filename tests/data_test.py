"""Data pipelines: stdlib corpus split, packing, exact resume, process sharding, SFT rows."""

import json
import logging
import os

import numpy as np
import pytest

from llada_jax.data import documents, pipeline, tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    files = documents.stdlib_files("train")[:30]
    return tokenizer.train_sentencepiece(files, str(tmp_path_factory.mktemp("spm") / "tok"), 512, max_bytes=200_000)


@pytest.fixture(scope="module")
def corpus():
    return documents.stdlib_files("train")[:6]


def _stream(it, n):
    return [next(it) for _ in range(n)]


def test_stdlib_files_split(tmp_path):
    for rel in ["a.py", "pkg/b.py", "pkg/c.py", "d.py", "e.py", "f.py", "g.py", "h.py",
                "test/t.py", "pkg/tests/t.py", "site-packages/s.py", "pkg/data.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    train = documents.stdlib_files("train", 0.3, root=str(tmp_path))
    evals = documents.stdlib_files("eval", 0.3, root=str(tmp_path))
    rels = sorted(os.path.relpath(p, tmp_path) for p in train + evals)
    assert rels == ["a.py", "d.py", "e.py", "f.py", "g.py", "h.py", "pkg/b.py", "pkg/c.py"]
    assert train and evals and not set(train) & set(evals)
    assert documents.stdlib_files("train", 0.3, root=str(tmp_path)) == train  # deterministic
    # the real standard library: hundreds of files, no tests, a small held-out part
    real_train, real_eval = documents.stdlib_files("train"), documents.stdlib_files("eval")
    assert len(real_train) > 200 and 0 < len(real_eval) < len(real_train) / 5
    assert not any(f"{os.sep}test{os.sep}" in p or "site-packages" in p for p in real_train + real_eval)
    with pytest.raises(ValueError, match="split='valid'"):
        documents.stdlib_files("valid")
    with pytest.raises(ValueError, match="holdout_fraction=1.5"):
        documents.stdlib_files("train", 1.5)


def test_pack_documents_eos_between_and_nothing_lost():
    rows = pipeline.pack_documents([[5, 6, 7], [8], [9, 10, 11, 12]], eos_id=2, seq_len=4)
    np.testing.assert_array_equal(rows, [[5, 6, 7, 2], [8, 2, 9, 10], [11, 12, 2, 2]])
    assert rows.dtype == np.int32


def test_pretrain_rows_packs_every_document(tok, corpus, tmp_path):
    rows = pipeline.pretrain_rows(corpus, tok, 64, cache_dir=tmp_path)
    docs = [d for d in documents.iter_documents(corpus) if d.strip()]
    want = np.concatenate([np.array(tok.encode(d) + [tok.eos_id]) for d in docs])
    flat = rows.reshape(-1)
    np.testing.assert_array_equal(flat[:want.size], want)
    assert np.all(flat[want.size:] == tok.eos_id) and flat.size - want.size < 64
    # the cache returns the same array, and a changed file misses it
    assert len(list(tmp_path.glob("pretrain-*.npy"))) == 1
    np.testing.assert_array_equal(pipeline.pretrain_rows(corpus, tok, 64, cache_dir=tmp_path), rows)
    pipeline.pretrain_rows(corpus[:2], tok, 64, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("pretrain-*.npy"))) == 2


def test_pretrain_jsonl_and_max_bytes(tok, tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["ab", "cd", "ef"]) + "\n")
    rows = pipeline.pretrain_rows([str(path)], tok, 4, max_bytes=4, use_cache=False)
    e = tok.encode
    want = e("ab") + [2] + e("cd") + [2]  # stops after the document reaching 4 bytes
    assert rows.reshape(-1)[:len(want)].tolist() == want and rows.size - len(want) < 4
    path.write_text('{"text": "ok"}\n{"txt": "bad"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2: expected a JSON object with a 'text' field"):
        pipeline.pretrain_rows([str(path)], tok, 4, use_cache=False)


def test_pretrain_iterator_epochs_and_exact_resume(tok, corpus, tmp_path):
    kw = dict(seq_len=32, batch_size=4, seed=7, process_index=0, process_count=1, cache_dir=tmp_path)
    rows = pipeline.pretrain_rows(corpus, tok, 32, cache_dir=tmp_path)
    n = len(rows)
    it = pipeline.pretrain_iterator(corpus, tok, **kw)
    first = _stream(it, 3)
    state = json.loads(json.dumps(it.get_state()))  # must survive JSON
    steps = n // 4 + 3  # enough to cross into the second epoch
    rest = _stream(it, steps)
    resumed = pipeline.pretrain_iterator(corpus, tok, **kw)
    resumed.set_state(state)
    for a, b in zip(rest, _stream(resumed, steps)):
        assert a["input_ids"].dtype == np.int32 and a["input_ids"].shape == (4, 32)
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    # the first epoch is a shuffled permutation of all rows; the second is shuffled differently
    stream = np.concatenate([b["input_ids"] for b in first + rest])
    key = lambda a: sorted(map(bytes, a))  # noqa: E731
    assert key(stream[:n]) == key(rows)
    assert not np.array_equal(stream[:n], rows)
    assert not np.array_equal(stream[n:n + 8], stream[:8])
    other = pipeline.pretrain_iterator(corpus, tok, **dict(kw, seed=8))
    assert not np.array_equal(next(other)["input_ids"], first[0]["input_ids"])
    unshuffled = pipeline.pretrain_iterator(corpus, tok, **dict(kw, shuffle=False))
    np.testing.assert_array_equal(next(unshuffled)["input_ids"], rows[:4])
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.pretrain_iterator(corpus, tok, **dict(kw, batch_size=8)).set_state(state)


def test_process_sharding_disjoint_and_complete(tok, corpus, tmp_path):
    kw = dict(seq_len=32, seed=1, cache_dir=tmp_path)
    single = pipeline.pretrain_iterator(corpus, tok, batch_size=6, process_index=0, process_count=1, **kw)
    shards = [pipeline.pretrain_iterator(corpus, tok, batch_size=3, process_index=i, process_count=2, **kw)
              for i in range(2)]
    for _ in range(5):
        whole = next(single)["input_ids"]
        parts = [next(s)["input_ids"] for s in shards]
        assert all(p.shape == (3, 32) for p in parts)
        rows0, rows1 = set(map(bytes, parts[0])), set(map(bytes, parts[1]))
        assert not rows0 & rows1
        assert sorted(map(bytes, np.concatenate(parts))) == sorted(map(bytes, whole))
    with pytest.raises(ValueError, match="process_index=2"):
        pipeline.pretrain_iterator(corpus, tok, batch_size=3, process_index=2, process_count=2, **kw)


def _write_chat(path, convos):
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in convos))
    return str(path)


def test_sft_rows_prompt_mask_and_eos_padding(tok, tmp_path):
    convo = [{"role": "user", "content": "What is 2+2? "}, {"role": "assistant", "content": "4"}]
    path = _write_chat(tmp_path / "chat.jsonl", [convo])
    ids, prompt_mask = pipeline.sft_rows(path, tok, seq_len=40)
    e = tok.encode
    # <BOS><sh>user<eh>\n\nWhat is 2+2?<eot><sh>assistant<eh>\n\n | 4<eot><EOS><EOS>...
    prompt = [1, 4, *e("user"), 5, *e("\n\nWhat is 2+2?"), 6, 4, *e("assistant"), 5, *e("\n\n")]
    answer = [*e("4"), 6, 2]
    assert ids.shape == prompt_mask.shape == (1, 40) and ids.dtype == np.int32 and prompt_mask.dtype == bool
    assert ids[0].tolist() == prompt + answer + [2] * (40 - len(prompt) - len(answer))
    assert prompt_mask[0].tolist() == [True] * len(prompt) + [False] * (40 - len(prompt))


def test_sft_too_long_dropped_with_warning(tok, tmp_path, caplog):
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    long = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "yo"}]
    path = _write_chat(tmp_path / "chat.jsonl", [short, long, short])
    with caplog.at_level(logging.WARNING):
        ids, _ = pipeline.sft_rows(path, tok, seq_len=32)
    assert ids.shape == (2, 32) and "dropped 1 of 3" in caplog.text
    with pytest.raises(ValueError, match="no conversation fits in seq_len=8"):
        pipeline.sft_rows(path, tok, seq_len=8)
    bad = _write_chat(tmp_path / "bad.jsonl", [short, [{"role": "robot", "content": "x"}, short[1]]])
    with pytest.raises(ValueError, match=r"bad.jsonl:2: message 0"):
        pipeline.sft_rows(bad, tok, seq_len=32)


def test_sft_iterator_resume_and_sharding(tok, tmp_path):
    convos = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"answer {i}"}]
              for i in range(10)]
    path = _write_chat(tmp_path / "chat.jsonl", convos)
    kw = dict(seq_len=48, seed=0, process_index=0, process_count=1)
    it = pipeline.sft_iterator(path, tok, batch_size=4, **kw)
    _stream(it, 2)
    state = it.get_state()
    rest = _stream(it, 6)
    again = pipeline.sft_iterator(path, tok, batch_size=4, **kw)
    again.set_state(state)
    for a, b in zip(rest, _stream(again, 6)):
        assert set(a) == {"input_ids", "prompt_mask"} and a["prompt_mask"].dtype == bool
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["prompt_mask"], b["prompt_mask"])
    whole = next(pipeline.sft_iterator(path, tok, batch_size=4, **kw))
    halves = [next(pipeline.sft_iterator(path, tok, batch_size=2, **dict(kw, process_index=i, process_count=2)))
              for i in range(2)]
    # process i holds global elements i, i + 2, ...: interleaving the halves gives the whole
    for k in ("input_ids", "prompt_mask"):
        np.testing.assert_array_equal(np.concatenate([h[k] for h in halves])[[0, 2, 1, 3]], whole[k])


def test_defaults_finite_epochs_and_cache_location(tok, corpus, tmp_path):
    convos = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}] for i in range(10)]
    path = _write_chat(tmp_path / "chat.jsonl", convos)
    # one process (jax's defaults on this machine); 10 rows, 1 epoch, batch 4 -> 2 full batches
    it = pipeline.sft_iterator(path, tok, seq_len=48, batch_size=4, seed=0, shuffle=False, num_epochs=1)
    assert it.get_state()["config"]["process_count"] == 1
    ids, _ = pipeline.sft_rows(path, tok, 48)
    batches = list(it)
    assert len(batches) == 2
    np.testing.assert_array_equal(np.concatenate([b["input_ids"] for b in batches]), ids[:8])
    with pytest.raises(ValueError, match="less than one global batch"):
        pipeline.sft_iterator(path, tok, seq_len=48, batch_size=11, seed=0, num_epochs=1)
    # without cache_dir the packed rows are cached next to the tokenizer file
    pipeline.pretrain_rows(corpus[:1], tok, 16)
    cache = os.path.join(os.path.dirname(tok.path), "data_cache")
    assert any(f.startswith("pretrain-") for f in os.listdir(cache))


def test_training_data_mistakes_refused_or_reported(tok, tmp_path, caplog):
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from train_helper import tiny_config

    from llada_jax.config import rules
    from llada_jax.training import inputs

    empty = tmp_path / "empty.txt"
    empty.write_text(" \n")
    with pytest.raises(ValueError, match="no text in the training files .*empty.txt"):
        pipeline.pretrain_rows([str(empty)], tok, 16, use_cache=False)
    empty.write_text("")
    with pytest.raises(ValueError, match="no text to train the tokenizer on"):
        tokenizer.train_sentencepiece([str(empty)], str(tmp_path / "t0"), 400)
    # random bytes: sentencepiece's internal error becomes one naming the file and line
    rng = np.random.default_rng(0)
    (tmp_path / "rand.txt").write_bytes(b"plain text\n" + rng.integers(0, 256, 60_000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"rand.txt:\d+: the tokenizer's training text holds \d+ distinct"):
        tokenizer.train_sentencepiece([str(tmp_path / "rand.txt")], str(tmp_path / "t1"), 400)
    # a line longer than sentencepiece's sentence limit is cut, not dropped
    (tmp_path / "long.txt").write_text("ab" * 50_000 + "\n")
    long_tok = tokenizer.train_sentencepiece([str(tmp_path / "long.txt")], str(tmp_path / "t2"), 400)
    assert long_tok.decode(long_tok.encode("abab")) == "abab"
    # non-UTF-8 bytes are replaced, and how many is said once
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1") * 3)
    with caplog.at_level(logging.WARNING):
        docs = list(documents.iter_documents([str(tmp_path / "latin1.txt"), str(tmp_path / "latin1.txt")]))
    assert docs[0] == "caf\ufffd\n" * 3
    assert caplog.text.count("replaced 6 bytes that are not UTF-8 with U+FFFD in 2 file(s)") == 1
    c = tiny_config(**{"data.source": "files", "data.train_files": str(tmp_path / "latin1.txt"),
                       "data.max_bytes": -1})
    with pytest.raises(ValueError, match="config.data.max_bytes=-1: expected >= 0"):
        rules.train_config(c, 1)
    # no held-out files needed while evaluation is off
    c.data.max_bytes, c.train.eval_every = 0, 0
    train, _ = inputs.iterators(c, tok, process_index=0, process_count=1)
    assert next(train)["input_ids"].shape == (8, 32)
    c.train.eval_every = 2
    with pytest.raises(ValueError, match="config.data.eval_files=''"):
        rules.check_paths(c)
