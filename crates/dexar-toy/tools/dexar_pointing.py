"""Pointing game of DEX-AR, raw attention and gradient x attention on a toy
checkpoint, re-implemented in PyTorch: an independent check of `dexar eval`
and a probe of *why* a map points where it does. Not run by CI.

    python3 -m venv venv && venv/bin/pip install torch transformers tokenizers pillow numpy
    dexar toy export model && dexar toy data data --n 30
    venv/bin/python crates/dexar-toy/tools/dexar_pointing.py model data

For the description of each scene (teacher forced) and each linked colour or
shape word it computes g^{l,t,i} = d lens_l[y] / d A_l[q,:] by autograd
(DEXAR.md), the maps, and where their argmax patch lands: on the named
object, on another object, or on background. Variants: the final norm's scale
held constant ("const_norm"), the gradient of the log-probability instead of
the logit ("log_prob"), of the logit minus the mean logit of the words of the
same role, colours or shapes ("role_centred"), and single layers. A patch counts as on an object
when the object covers more than half of it or its centre pixel (`dexar eval`
upsamples bilinearly instead, so numbers differ slightly).
"""
import json
import sys

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer
from transformers import LlavaForConditionalGeneration

torch.set_num_threads(1)
model_dir, data_dir = sys.argv[1], sys.argv[2]
model = LlavaForConditionalGeneration.from_pretrained(
    model_dir, torch_dtype=torch.float32, attn_implementation="eager"
).eval()
tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
lm, head = model.model.language_model, model.lm_head
layers, norm = lm.layers, lm.norm
L = len(layers)
cfg = model.config
side = cfg.vision_config.image_size // cfg.vision_config.patch_size
patch = cfg.vision_config.patch_size
records = [json.loads(line) for line in open(f"{data_dir}/data.jsonl")]
records = [r for r in records if r["prompt"] == "describe the image"]


def pixels(path):
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.tensor((a - 0.5) / 0.5).permute(2, 0, 1)[None]


def mask(path):
    return np.asarray(Image.open(path)) > 127


def dexar(g, s, e):
    """g [L', H, P] -> DEX-AR map over the image span (k = 1)."""
    gv = np.maximum(g[:, :, s:e], 0)
    gt = np.maximum(np.concatenate([g[:, :, :s], g[:, :, e:]], -1), 0)
    w = np.maximum(gv.max(-1) - gt.max(-1), 0)
    return (w[..., None] * gv).sum((0, 1))


# Words of each role (colour, shape), for the centred variants.
role_ids = {}
for r in records:
    for o in r["objects"]:
        word = r["answer"].split(" ")[o["word"]]
        role_ids.setdefault(o["role"], set()).add(tok.token_to_id(word))
role_ids = {k: sorted(v) for k, v in role_ids.items()}

counts, words = {}, 0
for r in records:
    text = f"USER: {'<image>' * side * side}\n{r['prompt']} ASSISTANT: {r['answer']}"
    ids = tok.encode(text).ids
    if ids[0] != cfg.text_config.bos_token_id:
        ids = [cfg.text_config.bos_token_id] + ids
    image_pos = [i for i, t in enumerate(ids) if t == cfg.image_token_index]
    s, e = image_pos[0], image_pos[-1] + 1
    caps = {}
    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(layer.self_attn.register_forward_hook(
            lambda m, a, k, o, i=i: caps.__setitem__(("attn", i), o[1]), with_kwargs=True))
        hooks.append(layer.register_forward_hook(
            lambda m, a, k, o, i=i: caps.__setitem__(("h", i), o[0] if isinstance(o, tuple) else o),
            with_kwargs=True))
    ids_t = torch.tensor([ids])
    model(input_ids=ids_t, pixel_values=pixels(f"{data_dir}/{r['image']}"),
          attention_mask=torch.ones_like(ids_t), use_cache=False, output_attentions=True)
    for h in hooks:
        h.remove()
    n_answer = len(r["answer"].split(" "))
    masks = {o["mask"]: mask(f"{data_dir}/{o['mask']}") for o in r["objects"]}
    for obj in r["objects"]:
        target = len(ids) - n_answer + obj["word"]
        q, y = target - 1, ids[target]
        grads = {k: [] for k in ("lens", "const_norm", "log_prob", "role_centred")}
        for kind in grads:
            for l in range(L):
                h = caps[("h", l)][0, q]
                if kind == "const_norm":
                    rms = h.pow(2).mean().add(norm.variance_epsilon).sqrt().detach()
                    logits = head(norm.weight * (h / rms))
                else:
                    logits = head(norm(h))
                if kind == "log_prob":
                    score = torch.log_softmax(logits, -1)[y]
                elif kind == "role_centred":
                    score = logits[y] - logits[role_ids[obj["role"]]].mean()
                else:
                    score = logits[y]
                (g,) = torch.autograd.grad(score, caps[("attn", l)], retain_graph=True)
                grads[kind].append(g[0, :, q, :].double().numpy())
        g = np.stack(grads["lens"])
        attn = np.stack([caps[("attn", l)][0, :, q, :].detach().double().numpy() for l in range(L)])
        maps = {
            "dexar": dexar(g, s, e),
            "dexar_const_norm": dexar(np.stack(grads["const_norm"]), s, e),
            "dexar_log_prob": dexar(np.stack(grads["log_prob"]), s, e),
            "dexar_role_centred": dexar(np.stack(grads["role_centred"]), s, e),
            "raw_attention": attn[:, :, s:e].mean((0, 1)),
            "grad_x_attn": np.maximum(g * attn, 0)[:, :, s:e].sum((0, 1)),
        }
        for l in range(L):
            maps[f"dexar_layer{l}"] = dexar(g[l:l + 1], s, e)
        for name, m in maps.items():
            row, col = np.unravel_index(np.argmax(m.reshape(side, side)), (side, side))
            cell = (slice(row * patch, (row + 1) * patch), slice(col * patch, (col + 1) * patch))

            def on(mk):
                return mk[cell].mean() > 0.5 or mk[row * patch + patch // 2, col * patch + patch // 2]

            where = "target" if on(masks[obj["mask"]]) else (
                "other" if any(on(mk) for p, mk in masks.items() if p != obj["mask"]) else "background")
            for key in (name, f"{name} {obj['role']}"):
                counts.setdefault(key, {}).setdefault(where, 0)
                counts[key][where] += 1
        words += 1

print(f"{words} object words of {len(records)} descriptions; share of argmax patches on")
print(f"{'map':28} {'target':>8} {'other':>8} {'background':>11} {'n':>5}")
for key in sorted(counts):
    c = counts[key]
    n = sum(c.values())
    print(f"{key:28} {c.get('target', 0) / n:8.3f} {c.get('other', 0) / n:8.3f} "
          f"{c.get('background', 0) / n:11.3f} {n:5d}")
