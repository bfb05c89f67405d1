"""Bind ``edgeprune_llama`` to transformers' Auto classes (called once, see ``edgeprune._autoregister``)."""

from __future__ import annotations


def register() -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from edgeprune.models.configuration_edgeprune_llama import EdgepruneLlamaConfig
    from edgeprune.models.modeling_edgeprune_llama import EdgepruneLlamaForCausalLM, EdgepruneLlamaModel

    AutoConfig.register(EdgepruneLlamaConfig.model_type, EdgepruneLlamaConfig, exist_ok=True)
    AutoModel.register(EdgepruneLlamaConfig, EdgepruneLlamaModel, exist_ok=True)
    AutoModelForCausalLM.register(EdgepruneLlamaConfig, EdgepruneLlamaForCausalLM, exist_ok=True)
    # save_pretrained copies the two source files and writes `auto_map` into config.json, so plain
    # transformers (trust_remote_code=True) loads a pruned directory without edgeprune installed.
    EdgepruneLlamaConfig.register_for_auto_class()
    EdgepruneLlamaModel.register_for_auto_class("AutoModel")
    EdgepruneLlamaForCausalLM.register_for_auto_class("AutoModelForCausalLM")
