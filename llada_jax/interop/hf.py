"""The Hugging Face interop API in one import: `load_pretrained` (`import_hf`),
`save_pretrained` (`export`) and the config translation of `layout`. Nothing inside
llada_jax imports this module (it imports them), so it closes no import cycle."""

from llada_jax.interop.export import save_peft, save_pretrained
from llada_jax.interop.import_hf import import_to_workdir, load_pretrained
from llada_jax.interop.layout import check_hf_keys, check_params, config_from_hf, config_to_hf, hf_key_list, read_config

__all__ = ["check_hf_keys", "check_params", "config_from_hf", "config_to_hf", "hf_key_list", "import_to_workdir",
           "load_pretrained", "read_config", "save_peft", "save_pretrained"]
