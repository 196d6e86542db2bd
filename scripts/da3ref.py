"""Shared by the scripts that run DA3's reference network (PyTorch, CPU) beside da3-server.

The reference code is read from a local copy that is never committed, laid out as for
../shared/tools/da3_golden.py: REF/src/depth_anything_3, REF/einops, REF/addict. Needs Debian's
python3-torch, python3-omegaconf and python3-numpy.
"""
import json
import math
import os
import struct
import sys


def import_reference(ref):
    """Puts the reference on sys.path and gives torch 1.13 the attention call the code makes."""
    src = os.path.join(ref, "src")
    if not os.path.isdir(os.path.join(src, "depth_anything_3")):
        sys.exit(f"no DA3 reference code under {src}/depth_anything_3")
    sys.path[:0] = [src, ref]
    import torch
    import torch.nn.functional as F
    if not hasattr(F, "scaled_dot_product_attention"):
        # torch < 2.0 (Debian's 1.13): plain softmax attention, in query chunks so that the score
        # matrix of many views stays small.
        def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
            s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
            out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=v.dtype)
            step = max(1, (1 << 24) // (q.shape[:-2].numel() * k.shape[-2]))
            for i in range(0, q.shape[-2], step):
                w = (q[..., i:i + step, :] @ k.transpose(-2, -1)) * s
                out[..., i:i + step, :] = w.softmax(-1) @ v
            return out
        F.scaled_dot_product_attention = sdpa
    # Giant's Gaussian-splatting adapter imports evo (pose alignment) at import time; nothing here
    # runs it, so a stand-in that refuses to be used is enough when evo is not installed.
    try:
        import evo.core.trajectory  # noqa: F401
    except ImportError:
        import types
        class Unavailable:
            def __init__(self, *args, **kw):
                raise RuntimeError("evo is not installed (a stand-in from scripts/da3ref.py)")
        for name in ("evo", "evo.core", "evo.core.trajectory"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["evo.core.trajectory"].PosePath3D = Unavailable
    return src


def build_network(ref, model_name):
    """DepthAnything3Net as the reference's own yaml config for model_name builds it."""
    src = import_reference(ref)
    from depth_anything_3.cfg import create_object, load_config
    path = os.path.join(src, "depth_anything_3", "configs", model_name + ".yaml")
    if not os.path.isfile(path):
        sys.exit(f"no reference config {path}")
    return create_object(load_config(path)).eval()


def write_safetensors(path, tensors, meta=None):
    """The safetensors layout: u64 header size, JSON header, raw little-endian float32 data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if meta:
        header["__metadata__"] = meta
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def write_hub_folder(net, out, model_name, note):
    """The hub's layout: model.safetensors with the `model.` key prefix, config.json by name."""
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"), {"model." + k: v for k, v in net.state_dict().items()})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"model_name": model_name, "note": note}, f)
