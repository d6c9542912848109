"""Loads an adapter PEFT Lab exported onto the unmodified base with Hugging Face PEFT and compares
logits with the run's own (`<run>/adapter_check.safetensors`, written at the end of every run);
causal LMs, sequence classifiers (SEQ_CLS adapters, with the spec's numLabels) and image
classifiers (ViT: no task type, pixel_values in the check).

Needs torch, transformers and peft (the lent GPU machine has them; run it on the CPU as well).
Usage: python3 scripts/check_peft_export.py BASE_MODEL_DIR RUN_DIR
Prints one JSON line; exits 1 when max|Δ|/max|ref| exceeds 1e-4.
"""
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForImageClassification, AutoModelForSequenceClassification

base_dir, run_dir = sys.argv[1], sys.argv[2]
check = load_file(f"{run_dir}/adapter_check.safetensors")
with open(f"{run_dir}/adapter/adapter_config.json") as f:
    classifier = json.load(f).get("task_type") == "SEQ_CLS"
image = "pixel_values" in check
if image or classifier:
    # The run's head size (its spec's numLabels), as PEFT needs the base built with it.
    with open(f"{run_dir}/spec.json") as f:
        labels = json.load(f).get("numLabels")
    extra = {"num_labels": labels, "ignore_mismatched_sizes": True} if labels is not None else {}
    auto = AutoModelForImageClassification if image else AutoModelForSequenceClassification
    model = auto.from_pretrained(base_dir, torch_dtype=torch.float32, attn_implementation="eager", **extra)
else:
    model = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32, attn_implementation="eager")
model = PeftModel.from_pretrained(model, f"{run_dir}/adapter").eval()
with torch.no_grad():
    kwargs = {"pixel_values": check["pixel_values"].float()} if image else {"input_ids": check["input_ids"].long()}
    if "attention_mask" in check:
        kwargs["attention_mask"] = check["attention_mask"].long()
    logits = model(**kwargs).logits.float()
ref = check["logits"].float()
mask = kwargs.get("attention_mask")
# A causal LM's padded positions are not compared (the two frameworks may treat them differently);
# a classifier's logits are one row per sequence.
valid = mask.bool().unsqueeze(-1).expand_as(ref) if mask is not None and not classifier and not image else torch.ones_like(ref, dtype=torch.bool)
err = ((logits - ref).abs()[valid].max() / ref.abs()[valid].max()).item()
print(json.dumps({"run": run_dir, "max_rel_err": err, "ok": err <= 1e-4}))
sys.exit(0 if err <= 1e-4 else 1)
