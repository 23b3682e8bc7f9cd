"""Tokenizers with LLaDA's special tokens and chat template (those of LLaDA-8B-Instruct).

One interface, two backends:
- `SentencePieceTokenizer`: our own small vocabularies, trained by `train_sentencepiece`.
- `HFTokenizer`: a Hugging Face `tokenizer.json` (e.g. the published LLaDA-8B one), whose
  special ids are looked up by their token strings (BOS 126080, EOS 126081, mask 126336,
  start_header 126346, end_header 126347, eot 126348 there).

Our sentencepiece vocabularies reserve the special tokens at the BOTTOM of the vocabulary,
at ids that do not depend on the vocabulary size (`SPM_IDS`):
  0 <unk> (never produced: byte fallback covers every character), 1 BOS, 2 EOS (= pad),
  3 mask, 4 start_header, 5 end_header, 6 eot, then the 256 byte-fallback pieces (7..262),
  then the learned pieces.
They are sentencepiece "user defined" symbols: the literal strings are matched as single
tokens when they appear in text (so the rendered chat string encodes to exactly these ids,
like the published tokenizer), and no learned piece can contain or produce them.
"""

from __future__ import annotations

import abc
import hashlib
import os
from typing import Iterable, Sequence

from llada_jax.data import documents

BOS, EOS, MASK = "<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
# attribute name -> token string; EOS doubles as the pad token, as in LLaDA-8B's config.
SPECIAL_TOKENS = {"bos_id": BOS, "eos_id": EOS, "mask_id": MASK,
                  "start_header_id": START_HEADER, "end_header_id": END_HEADER, "eot_id": EOT}
SPM_IDS = {"bos_id": 1, "eos_id": 2, "mask_id": 3, "start_header_id": 4, "end_header_id": 5, "eot_id": 6}
ROLES = ("system", "user", "assistant")


class Tokenizer(abc.ABC):
    """encode/decode plus the special ids and the LLaDA chat template, shared by both backends."""

    path: str | None = None
    bos_id: int
    eos_id: int
    mask_id: int
    start_header_id: int
    end_header_id: int
    eot_id: int

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; literal special-token strings become their special ids. No BOS/EOS added."""

    @abc.abstractmethod
    def _decode(self, ids: list[int]) -> str: ...

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """1 + the largest id the tokenizer can produce (the minimum model vocabulary)."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    @property
    def pad_id(self) -> int:
        return self.eos_id

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(getattr(self, name) for name in SPECIAL_TOKENS)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`. With skip_special_tokens (default) BOS/EOS/pad/mask/headers/eot are
        dropped, which is what you want for a generated answer followed by EOS padding;
        otherwise they are rendered as their literal strings."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"decode: ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        if skip_special_tokens:
            specials = self.special_ids
            ids = [i for i in ids if i not in specials]
        return self._decode(ids)

    @property
    def fingerprint(self) -> str:
        """sha256 of the tokenizer file: part of the data cache key."""
        if self.path is None:
            raise ValueError("this tokenizer was not loaded from a file, so it has no fingerprint")
        if not hasattr(self, "_fingerprint"):
            with open(self.path, "rb") as f:
                self._fingerprint = hashlib.sha256(f.read()).hexdigest()
        return self._fingerprint

    def refuse_mask(self, ids, where: str, text: str | None = None, first_line: int = 1) -> None:
        """ValueError naming `where` (a file, or file:line) when the token ids `ids` of training
        or preference data hold the mask id: the literal mask token in the data would teach
        the model to predict it. With `text` (the document `ids` encode, starting at line
        `first_line` of the file) the error names the line of the first mask token."""
        if self.mask_id not in ids:
            return
        at = text.find(MASK) if isinstance(text, str) else -1
        if at >= 0:
            where = f"{where}:{first_line + text.count(chr(10), 0, at)}"
        raise ValueError(f"{where}: the data holds the mask token {MASK} (id {self.mask_id}); training data must "
                         f"not contain it: remove or escape that text")

    # --- chat template (LLaDA-8B-Instruct's) ----------------------------------------------

    def chat_text(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The LLaDA-8B-Instruct chat template as a string: BOS before the first message only,
        each message `<start_header>{role}<end_header>\\n\\n{content stripped}<eot>`,
        no default system prompt."""
        _check_messages(messages)
        parts = [BOS] if messages else []
        for m in messages:
            parts.append(f"{START_HEADER}{m['role']}{END_HEADER}\n\n{m['content'].strip()}{EOT}")
        if add_generation_prompt:
            parts.append(f"{START_HEADER}assistant{END_HEADER}\n\n")
        return "".join(parts)

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of `chat_text`; the special strings become the special ids."""
        return self.encode(self.chat_text(messages, add_generation_prompt))

    def encode_sft(self, messages: Sequence[dict]) -> tuple[list[int], list[bool]]:
        """(ids, prompt_mask) for SFT: the last message is the answer (role assistant).

        ids = render_chat(messages[:-1]) + encode(answer stripped) + [eot, EOS]; prompt_mask is
        True on the prompt part. The answer is encoded on its own, exactly as the sampler
        will see it appended to the rendered prompt (a piece can never straddle the
        `\\n\\n` that ends the prompt). Callers right-pad with EOS (SFT trains on that padding).
        """
        _check_messages(messages)
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ValueError(f"encode_sft: expected at least one message followed by an assistant "
                             f"answer, got roles {[m['role'] for m in messages]}")
        prompt = self.render_chat(messages[:-1], add_generation_prompt=True)
        answer = self.encode(messages[-1]["content"].strip()) + [self.eot_id, self.eos_id]
        return prompt + answer, [True] * len(prompt) + [False] * len(answer)


def _check_messages(messages) -> None:
    if not isinstance(messages, (list, tuple)):
        raise ValueError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} is {m!r}: expected {{'role': one of {ROLES}, 'content': str}}")


class SentencePieceTokenizer(Tokenizer):
    def __init__(self, model_path: str):
        import sentencepiece as spm

        self.path = str(model_path)
        self.sp = spm.SentencePieceProcessor(model_file=self.path)
        for name, token in SPECIAL_TOKENS.items():
            found = self.sp.piece_to_id(token)
            if found != SPM_IDS[name] or self.sp.id_to_piece(found) != token:
                raise ValueError(f"{self.path}: {token} has id {found}, expected {SPM_IDS[name]}; "
                                 "was this model made by train_sentencepiece?")
            setattr(self, name, found)

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts), num_threads=os.cpu_count() or 1)

    def _decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)


class HFTokenizer(Tokenizer):
    def __init__(self, tokenizer_json: str):
        import tokenizers

        self.path = str(tokenizer_json)
        self.tok = tokenizers.Tokenizer.from_file(self.path)
        for name, token in SPECIAL_TOKENS.items():
            found = self.tok.token_to_id(token)
            if found is None:
                raise ValueError(f"{self.path}: special token {token} ({name}) is not in the vocabulary")
            setattr(self, name, found)
        self._vocab_size = max(self.tok.get_vocab(with_added_tokens=True).values()) + 1

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    # add_special_tokens=False: the chat template already carries BOS; a post-processor
    # adding another would double it.
    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """A sentencepiece `.model` file, a `tokenizer.json`, or a directory holding either
    (`tokenizer.json` preferred, as in a Hugging Face model directory)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("tokenizer.json", "tokenizer.model"):
            if os.path.isfile(os.path.join(path, name)):
                return load_tokenizer(os.path.join(path, name))
        raise ValueError(f"{path}: directory holds neither tokenizer.json nor tokenizer.model")
    if not os.path.isfile(path):
        raise ValueError(f"tokenizer path {path} does not exist")
    if path.endswith(".json"):
        return HFTokenizer(path)
    if path.endswith(".model"):
        return SentencePieceTokenizer(path)
    raise ValueError(f"tokenizer path {path}: expected a .model file, a tokenizer.json or a directory")


def _training_chunks(files: Sequence[str], max_bytes: int, seen: dict, chunk_chars: int = 2000):
    """Documents cut at line ends into pieces of about `chunk_chars` characters (a longer
    line is cut too: sentencepiece skips over-long sentences), up to `max_bytes` in all.
    Chunks (not lines) keep the newlines, so pieces such as ':\\n' or '\\n\\n' can be
    learned, which matters for code. `seen["chars"]` collects the distinct characters and
    `seen["first"]` each one's first "file:line", to name the input when there are too many."""
    total, chars, first = 0, seen.setdefault("chars", set()), seen.setdefault("first", {})
    for path, line_no, doc in documents.iter_documents(files, with_source=True):
        cur = ""
        for i, line in enumerate(doc.splitlines(keepends=True)):
            new = set(line) - chars
            if new:
                chars.update(new)
                first.update(dict.fromkeys(new, f"{path}:{line_no if path.endswith('.jsonl') else i + 1}"))
            for j in range(0, len(line), chunk_chars):
                piece = line[j:j + chunk_chars]
                if cur and len(cur) + len(piece) > chunk_chars:
                    yield cur
                    cur = ""
                cur += piece
            total += len(line.encode("utf-8"))
            if total >= max_bytes:
                break
        if cur:
            yield cur
        if total >= max_bytes:
            return


def train_sentencepiece(files: Sequence[str], out_prefix: str, vocab_size: int, *,
                        max_bytes: int = 4_000_000, model_type: str = "bpe",
                        character_coverage: float = 0.99995) -> SentencePieceTokenizer:
    """Train a byte-fallback sentencepiece model on the first `max_bytes` of `files` (text or
    `{"text": ...}` JSONL, in the given order) and save it to `out_prefix.model`.

    Normalisation is the identity and whitespace is kept as is (no dummy prefix, no
    collapsing), so decode(encode(text)) == text, indentation included.
    """
    import io

    import sentencepiece as spm

    if vocab_size < 300:
        raise ValueError(f"vocab_size={vocab_size}: expected >= 300 (7 special + 256 byte pieces + merges)")
    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"model_type={model_type!r}: expected 'bpe' or 'unigram'")
    if not files:
        raise ValueError("train_sentencepiece: no training files given")
    specials = [SPECIAL_TOKENS[name] for name in sorted(SPM_IDS, key=SPM_IDS.get)]
    model, seen = io.BytesIO(), {}
    try:
        _train(spm, _training_chunks(files, max_bytes, seen), model, vocab_size, model_type, specials,
               character_coverage)
    except RuntimeError as e:  # sentencepiece's internal errors: say what in the input causes them
        if not seen.get("chars"):
            raise ValueError(f"no text to train the tokenizer on in {list(files)[:3]}: the files are empty") from e
        if "required_chars" in str(e):
            budget = vocab_size - len(SPM_IDS) - 257
            over = list(seen["first"].values())[budget] if len(seen["first"]) > budget else "?"
            raise ValueError(
                f"{over}: the tokenizer's training text holds {len(seen['chars'])} distinct characters (character "
                f"{budget + 1} first appears here), "
                f"more than vocab_size={vocab_size} can cover (binary or random bytes?); clean the input, lower "
                f"character_coverage or raise the vocabulary size") from e
        raise ValueError(f"sentencepiece could not train on {list(files)[:3]}: {e}") from e
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
    # write then rename, so a concurrent reader never sees half a file
    tmp = f"{out_prefix}.model.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(model.getvalue())
    os.replace(tmp, f"{out_prefix}.model")
    return SentencePieceTokenizer(f"{out_prefix}.model")


def _train(spm, chunks, model, vocab_size, model_type, specials, character_coverage):
    spm.SentencePieceTrainer.train(
        sentence_iterator=chunks, model_writer=model,
        vocab_size=vocab_size, model_type=model_type, byte_fallback=True,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, user_defined_symbols=specials,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        allow_whitespace_only_pieces=True, split_digits=True, character_coverage=character_coverage,
        max_sentence_length=1 << 16, num_threads=os.cpu_count() or 1,
        # a tiny corpus may not support vocab_size pieces: take what it supports
        hard_vocab_limit=False, minloglevel=2)
