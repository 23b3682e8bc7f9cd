"""Tokenizers: fixed special ids, exact round trip, and the LLaDA chat template (facts 4, 7)."""

import pytest

from llada_jax.data import documents, tokenizer

# The published LLaDA-8B-Instruct special ids.
PUBLISHED = {tokenizer.BOS: 126080, tokenizer.EOS: 126081, tokenizer.MASK: 126336,
             tokenizer.START_HEADER: 126346, tokenizer.END_HEADER: 126347, tokenizer.EOT: 126348}


@pytest.fixture(scope="module")
def spm_tok(tmp_path_factory):
    files = documents.stdlib_files("train")[:40]
    return tokenizer.train_sentencepiece(files, str(tmp_path_factory.mktemp("spm") / "tok"), 512, max_bytes=300_000)


def _bytes_to_unicode():
    """GPT-2's byte -> printable character table used by byte-level BPE."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A byte-level tokenizer.json: byte b has id b (no merges), specials at the published ids."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    vocab.update(PUBLISHED)  # in the model vocab, so the added tokens keep these ids
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(PUBLISHED))
    d = tmp_path_factory.mktemp("hf")
    tok.save(str(d / "tokenizer.json"))
    return d


TWO_TURNS = [{"role": "user", "content": "  Hi!\n"}, {"role": "assistant", "content": "Hello."},
             {"role": "user", "content": "2+2=? é"}]


def test_spm_special_ids_fixed(spm_tok, tmp_path):
    assert (spm_tok.bos_id, spm_tok.eos_id, spm_tok.pad_id, spm_tok.mask_id,
            spm_tok.start_header_id, spm_tok.end_header_id, spm_tok.eot_id) == (1, 2, 2, 3, 4, 5, 6)
    assert spm_tok.sp.id_to_piece(7) == "<0x00>" and spm_tok.sp.id_to_piece(262) == "<0xFF>"
    assert 300 < spm_tok.vocab_size <= 512
    # same ids for a different vocabulary size, and after reloading from disk
    other = tokenizer.train_sentencepiece(documents.stdlib_files("train")[:5], str(tmp_path / "b"), 400, max_bytes=50_000)
    reloaded = tokenizer.load_tokenizer(str(tmp_path / "b.model"))
    for name in tokenizer.SPECIAL_TOKENS:
        assert getattr(other, name) == getattr(reloaded, name) == getattr(spm_tok, name)


def test_spm_round_trip_exact(spm_tok):
    text = "def f(x):\n\tif x:\n        return  'é中😀'\n\n\n  # trailing   \n"
    ids = spm_tok.encode(text)
    assert spm_tok.decode(ids) == text
    assert spm_tok.decode(spm_tok.encode(" leading space")) == " leading space"


def test_plain_text_never_yields_special_ids(spm_tok):
    # held-out files, so the text was not seen in training; unk (0) must not appear either
    docs = list(documents.iter_documents(documents.stdlib_files("eval")[:8]))
    ids = {i for d in spm_tok.encode_batch(docs) for i in d}
    assert len(ids) > 100
    assert not ids & (spm_tok.special_ids | {0})


def test_special_strings_encode_to_special_ids(spm_tok):
    ids = spm_tok.encode(tokenizer.BOS + "x" + tokenizer.EOS + tokenizer.MASK + tokenizer.START_HEADER + tokenizer.END_HEADER + tokenizer.EOT)
    assert ids[0] == 1 and ids[-5:] == [2, 3, 4, 5, 6]
    specials = tokenizer.EOS + tokenizer.MASK + tokenizer.START_HEADER + tokenizer.END_HEADER + tokenizer.EOT
    assert spm_tok.decode(ids, skip_special_tokens=False) == tokenizer.BOS + "x" + specials
    assert spm_tok.decode(ids) == "x"


def test_chat_text_matches_template(spm_tok):
    assert spm_tok.chat_text(TWO_TURNS) == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2=? é<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert spm_tok.chat_text(TWO_TURNS[:1], add_generation_prompt=False).count(tokenizer.BOS) == 1
    assert not spm_tok.chat_text(TWO_TURNS, add_generation_prompt=False).endswith("\n\n")


def test_spm_render_chat_ids(spm_tok):
    e = spm_tok.encode
    want = [1, 4, *e("user"), 5, *e("\n\nHi!"), 6, 4, *e("assistant"), 5, *e("\n\nHello."), 6,
            4, *e("user"), 5, *e("\n\n2+2=? é"), 6, 4, *e("assistant"), 5, *e("\n\n")]
    assert spm_tok.render_chat(TWO_TURNS) == want


def test_hf_render_chat_published_ids(hf_dir):
    tok = tokenizer.load_tokenizer(hf_dir)
    assert isinstance(tok, tokenizer.HFTokenizer)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id, tok.start_header_id, tok.end_header_id,
            tok.eot_id) == (126080, 126081, 126081, 126336, 126346, 126347, 126348)
    assert tok.vocab_size == 126349
    b = lambda s: list(s.encode("utf-8"))  # noqa: E731  (byte b has id b in this vocabulary)
    want = ([126080, 126346] + b("user") + [126347] + b("\n\nHi!") + [126348]
            + [126346] + b("assistant") + [126347] + b("\n\nHello.") + [126348]
            + [126346] + b("user") + [126347] + b("\n\n2+2=? é") + [126348]
            + [126346] + b("assistant") + [126347] + [10, 10])
    got = tok.render_chat(TWO_TURNS)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"token {i}: got {g}, want {w}"
    assert len(got) == len(want)
    assert tok.decode(got) == "user\n\nHi!assistant\n\nHello.user\n\n2+2=? éassistant\n\n"
    assert tok.decode(got, skip_special_tokens=False) == tok.chat_text(TWO_TURNS)


def test_hf_encode_adds_no_bos(hf_dir):
    tok = tokenizer.load_tokenizer(hf_dir / "tokenizer.json")
    assert tok.encode("ab") == [97, 98]
    assert tok.decode([97, 126081, 98, 126081]) == "ab"


def test_encode_sft(spm_tok):
    convo = TWO_TURNS + [{"role": "assistant", "content": " 4 \n"}]
    ids, prompt_mask = spm_tok.encode_sft(convo)
    prompt = spm_tok.render_chat(TWO_TURNS)
    assert ids == prompt + spm_tok.encode("4") + [6, 2]
    assert prompt_mask == [True] * len(prompt) + [False] * (len(ids) - len(prompt))


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "q"}],                                    # no answer
    [{"role": "assistant", "content": "a"}],                               # nothing before it
    [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}],  # last is not assistant
    [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}],
    [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}],
])
def test_encode_sft_bad_input(spm_tok, messages):
    with pytest.raises(ValueError, match="message|answer"):
        spm_tok.encode_sft(messages)


def test_load_tokenizer_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        tokenizer.load_tokenizer(tmp_path / "nope.model")
    with pytest.raises(ValueError, match="neither"):
        tokenizer.load_tokenizer(tmp_path)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="expected a .model"):
        tokenizer.load_tokenizer(tmp_path / "x.txt")

def test_hf_tokenizer_without_specials(tmp_path):
    import tokenizers
    from tokenizers import models

    plain = tokenizers.Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    plain.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=r"<\|startoftext\|> \(bos_id\) is not in the vocabulary"):
        tokenizer.load_tokenizer(tmp_path)


def test_decode_out_of_range(spm_tok):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        spm_tok.decode([spm_tok.vocab_size])
