#!/usr/bin/python3
"""Times the DA3 reference network (PyTorch, CPU) per view count, for `make bench`.

The reference is the public Depth Anything 3 code, read from a local copy that is never
committed (the layout ../shared/tools/da3_golden.py uses: REF/src/depth_anything_3, REF/einops,
REF/addict). Needs Debian's python3-torch, python3-omegaconf and python3-numpy.

usage: reference_forward.py --ref REF --weights DIR [--model da3-small] [--views 1,4,16]
                            [--hw 378 504] [--repeats 3] [--threads N] [--seed 0]
Builds the network from the reference's own yaml config with seeded random weights and writes
them to DIR (model.safetensors with the hub's `model.` key prefix + config.json), so da3-infer
runs the very same weights; then prints one line per view count:
  reference views=N hw=HxW median_ms=... min_ms=... per_view_ms=...
"""
import argparse, json, math, os, statistics, struct, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--ref", required=True)
ap.add_argument("--weights", required=True)
ap.add_argument("--model", default="da3-small")
ap.add_argument("--views", default="1,4")
ap.add_argument("--hw", type=int, nargs=2, default=[378, 504])
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()

src = os.path.join(a.ref, "src")
if not os.path.isdir(os.path.join(src, "depth_anything_3")):
    sys.exit(f"reference_forward.py: no DA3 reference code under {src}/depth_anything_3")
sys.path[:0] = [src, a.ref]

import torch
import torch.nn.functional as F
from depth_anything_3.cfg import create_object, load_config

torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

if not hasattr(F, "scaled_dot_product_attention"):
    # torch < 2.0 (Debian's 1.13): the plain softmax attention the reference calls, in query chunks
    # so the score matrix of many views stays small.
    def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
        s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
        out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=v.dtype)
        step = max(1, (1 << 24) // (q.shape[:-2].numel() * k.shape[-2]))
        for i in range(0, q.shape[-2], step):
            w = (q[..., i:i + step, :] @ k.transpose(-2, -1)) * s
            out[..., i:i + step, :] = w.softmax(-1) @ v
        return out
    F.scaled_dot_product_attention = _sdpa

cfg_path = os.path.join(src, "depth_anything_3", "configs", a.model + ".yaml")
net = create_object(load_config(cfg_path)).eval()


def write_safetensors(path, tensors):
    """The safetensors layout: u64 header size, JSON header, raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


os.makedirs(a.weights, exist_ok=True)
write_safetensors(os.path.join(a.weights, "model.safetensors"),
                  {"model." + k: v for k, v in net.state_dict().items()})
with open(os.path.join(a.weights, "config.json"), "w") as f:
    json.dump({"model_name": a.model, "note": "random weights written by reference_forward.py"}, f)

h, w = a.hw
for views in [int(v) for v in a.views.split(",")]:
    x = torch.randn(1, views, 3, h, w)
    times = []
    with torch.no_grad():
        net(x)  # warm-up
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            net(x)
            times.append((time.perf_counter() - t0) * 1e3)
    med = statistics.median(times)
    print(f"reference views={views} hw={h}x{w} median_ms={med:.1f} min_ms={min(times):.1f} "
          f"per_view_ms={med / views:.1f} threads={torch.get_num_threads()}", flush=True)
