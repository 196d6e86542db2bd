#!/usr/bin/python3
"""Makes a golden fixture in the hub's own layout from DA3's reference code (run only to make one).

usage: make_hub_fixture.py OUT --ref REF [--model da3-large] [--views 3] [--hw 70 98] [--seed 0]
                           [--with-poses]
The network is built by the reference's yaml config for --model (the topology a published
checkpoint of that name has), filled with seeded random weights of non-trivial scale, and run on
smooth random images. OUT gets config.json ({"model_name": ...}, as the hub's), model.safetensors
(`model.` keys) and io.safetensors (input, optional known cameras, outputs, backbone outputs), so
`build/tests/test_da3_golden OUT` checks da3-server's loader and network for that topology.
REF as in scripts/da3ref.py.
"""
import argparse, json, math, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import da3ref  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--ref", required=True)
ap.add_argument("--model", default="da3-large")
ap.add_argument("--views", type=int, default=3)
ap.add_argument("--hw", type=int, nargs=2, default=[70, 98])
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--with-poses", action="store_true")
a = ap.parse_args()

da3ref.import_reference(a.ref)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.manual_seed(a.seed)
model = da3ref.build_network(a.ref, a.model)

# Default initialisation leaves LayerScale at 1e-5 and biases at 0: blocks would barely change
# their input and a wrong block could pass. Give every parameter a scale that makes it count.
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith(("pos_embed", "cls_token", "camera_token")):
            p.normal_(0, 0.5)
        elif p.dim() >= 2:
            p.normal_(0, 1.0 / math.sqrt(p[0].numel()))
        elif "ls" in name or "gamma" in name:
            p.uniform_(0.05, 0.3)
        elif name.endswith("weight"):
            p.uniform_(0.8, 1.2)
        else:
            p.normal_(0, 0.05)

n, (h, w) = a.views, a.hw
g = torch.Generator().manual_seed(a.seed + 1)
base = torch.rand(n, 3, h // 7 + 1, w // 7 + 1, generator=g)
img = F.interpolate(base, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
x = ((img - mean) / std)[None]

in_ext = in_ixt = None
if a.with_poses:  # random rotations (unit quaternions), translations, pinhole intrinsics
    q = torch.randn(n, 4, generator=g)
    q = q / q.norm(dim=-1, keepdim=True)
    qw, qx, qy, qz = q.unbind(-1)
    rot = torch.stack([1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw),
                       2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw),
                       2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)], -1).view(n, 3, 3)
    in_ext = torch.eye(4).repeat(n, 1, 1)
    in_ext[:, :3, :3] = rot
    in_ext[:, :3, 3] = torch.randn(n, 3, generator=g)
    in_ixt = torch.zeros(n, 3, 3)
    in_ixt[:, 0, 0] = in_ixt[:, 1, 1] = 0.8 * w
    in_ixt[:, 0, 2], in_ixt[:, 1, 2], in_ixt[:, 2, 2] = w / 2, h / 2, 1
    in_ext, in_ixt = in_ext[None], in_ixt[None]

import depth_anything_3.model.dinov2.vision_transformer as vt  # noqa: E402
picked = []
select = vt.select_reference_view
vt.select_reference_view = lambda *args, **kw: picked.append(select(*args, **kw).clone()) or picked[-1]
with torch.no_grad():
    out = model(x, extrinsics=in_ext, intrinsics=in_ixt)
    cam_token = model.cam_enc(in_ext, in_ixt, x.shape[-2:]) if a.with_poses else None
    feats, _ = model.backbone(x, cam_token=cam_token, export_feat_layers=[])

da3ref.write_hub_folder(model, a.out, a.model, "random weights, made by scripts/make_hub_fixture.py")
io = {"image": img[None], "input": x, "depth": out.depth, "depth_conf": out.depth_conf,
      "extrinsics": out.extrinsics, "intrinsics": out.intrinsics}
if a.with_poses:
    io["in_extrinsics"], io["in_intrinsics"] = in_ext, in_ixt
for i, f in enumerate(feats):
    io[f"backbone.{i}.tokens"], io[f"backbone.{i}.cam"] = f[0], f[1]
da3ref.write_safetensors(os.path.join(a.out, "io.safetensors"), io)
cfg = json.load(open(os.path.join(a.out, "config.json")))
cfg["fixture"] = {"views": n, "height": h, "width": w, "seed": a.seed, "torch": torch.__version__,
                  "reference_view": int(picked[0][0]) if picked else 0, "with_poses": a.with_poses}
json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=1)
print(a.model, "params", sum(p.numel() for p in model.parameters()), "depth", tuple(out.depth.shape),
      "depth range", float(out.depth.min()), float(out.depth.max()))
