"""The special-token files of an exported tokenizer: tokenizer_config.json and
special_tokens_map.json naming BOS, EOS (= pad, as in LLaDA-8B's config), the mask token, the chat
headers and EoT, plus LLaDA-8B-Instruct's chat template, so that
`transformers.AutoTokenizer.from_pretrained(export)` knows `mask_token`, `eos_token`,
`pad_token` and `apply_chat_template` renders what `Tokenizer.chat_text` does.

Fields already in the copied files (a published tokenizer_config.json) are kept; only the
missing ones are added.
"""

from __future__ import annotations

import json
import os

from llada_jax.data import tokenizer as tokenizer_lib

# The LLaDA-8B-Instruct template as Tokenizer.chat_text renders it: BOS before the first
# message only, each message stripped, no default system prompt.
CHAT_TEMPLATE = (
    "{%- if messages %}{{ bos_token }}{% endif %}"
    "{%- for m in messages %}{{ '" + tokenizer_lib.START_HEADER + "' + m['role'] + '"
    + tokenizer_lib.END_HEADER + "\\n\\n' + m['content'] | trim + '" + tokenizer_lib.EOT + "' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '" + tokenizer_lib.START_HEADER + "assistant"
    + tokenizer_lib.END_HEADER + "\\n\\n' }}{%- endif %}")


def special_tokens(tok) -> dict:
    """The special-token fields of `tok` (a llada_jax.data.tokenizer.Tokenizer)."""
    fields = {"bos_token": tokenizer_lib.BOS, "eos_token": tokenizer_lib.EOS, "pad_token": tokenizer_lib.EOS,
              "mask_token": tokenizer_lib.MASK,
              "additional_special_tokens": [tokenizer_lib.START_HEADER, tokenizer_lib.END_HEADER, tokenizer_lib.EOT]}
    if isinstance(tok, tokenizer_lib.SentencePieceTokenizer):
        fields["unk_token"] = tok.sp.id_to_piece(tok.sp.unk_id())
    return fields


def write_special_tokens(path: str, max_length: int | None = None) -> list[str]:
    """Add the special-token fields and the chat template to the tokenizer in `path` (an
    export directory); returns the files written. A tokenizer that `load_tokenizer` cannot
    read with LLaDA's special tokens is left as copied (its tokens are not ours to name)."""
    try:
        tok = tokenizer_lib.load_tokenizer(path)
    except Exception:  # noqa: BLE001 - tokenizers raises a bare Exception for a malformed file
        return []
    fields = special_tokens(tok)
    config = dict(fields, tokenizer_class="PreTrainedTokenizerFast", chat_template=CHAT_TEMPLATE,
                  clean_up_tokenization_spaces=False)
    if max_length:
        config["model_max_length"] = int(max_length)
    written = []
    for name, want in (("tokenizer_config.json", config), ("special_tokens_map.json", fields)):
        file = os.path.join(path, name)
        have = {}
        if os.path.isfile(file):
            with open(file) as f:
                have = json.load(f)
        with open(file, "w") as f:
            json.dump({**want, **have}, f, indent=2, ensure_ascii=False)
            f.write("\n")
        written.append(name)
    return written
