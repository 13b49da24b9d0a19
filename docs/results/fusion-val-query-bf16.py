"""Experiment (val only): routing queries from a bfloat16 copy of the backbone with the query
adapter merged in; documents, stored keys and everything else stay float32."""
import copy, sys, shutil
from pathlib import Path
import torch
from msa_agent.model import encoder as enc_mod
from msa_agent.model.capture import decoder_layers

ORIG = enc_mod.Encoder.query_vectors_many
CACHE = {}

def routing_copy(enc):
    key = id(enc.lm.model)
    if key not in CACHE:
        m = copy.deepcopy(enc.lm.model)
        ad = enc.router.adapter
        layers = decoder_layers(m)
        with torch.no_grad():
            for i in ad.layer_ids:
                for p in ad.dims:
                    lora = ad.lora[f"{i}_{p.replace('.', '_')}"]
                    mod = layers[i].get_submodule(p)
                    mod.weight += lora.scale * (lora.b.float() @ lora.a.float())
        CACHE[key] = m.to(torch.bfloat16)
    return CACHE[key]

def patched(self, queries):
    if self.router is None or self.router.adapter is None:
        return ORIG(self, queries)
    m = routing_copy(self)
    orig_model, orig_ad = self.lm.model, self.router.adapter
    self.lm.model, self.router.adapter = m, None
    try:
        return ORIG(self, queries)
    finally:
        self.lm.model, self.router.adapter = orig_model, orig_ad

enc_mod.Encoder.query_vectors_many = patched

if __name__ == "__main__":
    from msa_agent.bench import tune
    names = ["pools-val.json", "matched-val.json", "msa-completed-val.json"]
    dirs = [Path(f"/tmp/tune/{t}-full") for t in ("facts", "sessions", "wiki", "longmemeval")]
    for d in dirs:
        for n in names:
            if (d / n).exists():
                (d / n).rename(d / (n + ".fp32"))
    try:
        tune.main(tasks=["facts", "sessions", "wiki", "longmemeval"], mode="full", size=[],
                  work=Path("/tmp/tune"), out=Path(sys.argv[1]), chunk_size=0,
                  dtype="float32", split="val")
    finally:
        for d in dirs:
            for n in names:
                if (d / n).exists():
                    (d / n).rename(d / (n + ".qbf16"))
                if (d / (n + ".fp32")).exists():
                    (d / (n + ".fp32")).rename(d / n)
