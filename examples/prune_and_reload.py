"""Load the embedded default model, cut random widths per layer, save, and reload it with plain
transformers (trust_remote_code) — the way an app without edgeprune would.

    python examples/prune_and_reload.py dist/smaller
"""

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from edgeprune.compress.structured.cut import cut_widths, random_keep
from edgeprune.models import load, to_per_layer, tokenizer_record

out = sys.argv[1] if len(sys.argv) > 1 else "dist/smaller"
loaded = load("smollm2-135m")
model, tokenizer = loaded
per_layer = to_per_layer(model)
smaller = cut_widths(per_layer, random_keep(per_layer.config, attn_keep=0.8, mlp_keep=0.8, seed=0))
smaller.save_pretrained(out)
tokenizer.save_pretrained(out)
tokenizer_record.write(out, loaded.source_gguf)  # the GGUF's own tokenizer, for `edgeprune export gguf --model OUT`
print(f"saved {sum(p.numel() for p in smaller.parameters()) / 1e6:.1f}M parameters to {out}")

app_model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
app_tok = AutoTokenizer.from_pretrained(out)
ids = app_tok("Small models on phones", return_tensors="pt")["input_ids"]
with torch.no_grad():
    print(app_tok.decode(app_model.generate(ids, max_new_tokens=20, do_sample=False)[0]))
