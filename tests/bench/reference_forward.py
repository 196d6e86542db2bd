#!/usr/bin/python3
"""Times the DA3 reference network (PyTorch, CPU) per view count, for `make bench`.

The reference is the public Depth Anything 3 code, read from a local copy that is never
committed (scripts/da3ref.py says how it is laid out and what it needs).

usage: reference_forward.py --ref REF --weights DIR [--model da3-small] [--views 1,4,16]
                            [--hw 378 504] [--repeats 3] [--threads N] [--seed 0]
Builds the network from the reference's own yaml config with seeded random weights and writes
them to DIR (model.safetensors with the hub's `model.` key prefix + config.json), so da3-infer
runs the very same weights; then prints one line per view count:
  reference views=N hw=HxW median_ms=... min_ms=... per_view_ms=...
"""
import argparse, os, statistics, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import da3ref  # noqa: E402

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

da3ref.import_reference(a.ref)
import torch  # noqa: E402

torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
net = da3ref.build_network(a.ref, a.model)
da3ref.write_hub_folder(net, a.weights, a.model, "random weights written by reference_forward.py")

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
