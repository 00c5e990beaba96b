"""Certified robustness: speed of medsure's randomized smoothing, and the table of a certification study.

    .venv/bin/python benchmarks/certification.py speed                   # U-Net at 128 px, JSRT images
    .venv/bin/python benchmarks/certification.py speed --device cuda     # where a GPU is present
    .venv/bin/python benchmarks/certification.py table cert1.json ...    # markdown rows from cert.json files

``speed`` measures, per image and in the same process, interleaved image by image (medians):

- *forward only*: the n0 + n noisy copies (noise drawn beforehand) through the model in batches,
  nothing else: the floor any implementation pays;
- *medsure*: :func:`medsure.certify.certify_segmentation` (noise drawn per sample from the image's
  generator, arg-max, counts, binomial tests and Holm, all vectorised);
- *reference loop*: SegCertify as the published scripts run it, written here from the algorithm:
  one noise sample per forward pass, per-class count maps in numpy, then one
  ``scipy.stats.binomtest`` per pixel and statsmodels' ``multipletests(method="holm")``.

Ratios (medsure / forward-only: the statistics overhead; reference / medsure: the speed-up) come
from the same run. The model is MONAI's U-Net as ``medsure train`` builds it for 128 px, 4 labels
(weights seeded; speed does not depend on them); images are JSRT chest X-rays from
``../shared/data`` (random images when absent). The environment is printed with the numbers
(``describe_environment``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from medsure.certify import certify_segmentation, image_seed
from medsure.certify.smoothing import first_argmax
from medsure.training.environment import describe_environment, resolve_device

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _images(size: int, count: int) -> tuple[torch.Tensor, str]:
    try:
        from medsure.data import load_dataset

        ds = load_dataset("jsrt", root=SHARED, image_size=size)
        x = torch.from_numpy(ds.images[:count]).permute(0, 3, 1, 2).float() / 255.0
        return x, "JSRT"
    except Exception as exc:  # no shared data: random images say the same about speed
        print(f"JSRT not available ({type(exc).__name__}); random images", file=sys.stderr)
        return torch.rand(count, 1, size, size, generator=torch.Generator().manual_seed(0)), "random"


def _model(size: int, device: torch.device) -> torch.nn.Module:
    from medsure.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model("unet", in_channels=1, num_classes=4, image_size=size).eval().to(device)


@torch.no_grad()
def forward_only(model, image, n_total: int, sigma: float, batch: int, device) -> float:
    noise = torch.randn((n_total, *image.shape), generator=torch.Generator().manual_seed(1))
    noisy = image.unsqueeze(0) + sigma * noise
    _sync(device)
    start = time.perf_counter()
    for s in range(0, n_total, batch):
        model(noisy[s : s + batch].to(device))
    _sync(device)
    return time.perf_counter() - start


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def reference_loop(model, image, *, n0: int, n: int, sigma: float, alpha: float, tau: float, k: int, device) -> float:
    """SegCertify as the published scripts run it: one sample per pass, per-pixel tests."""
    from scipy.stats import binomtest
    from statsmodels.stats.multitest import multipletests

    gen = torch.Generator().manual_seed(2)
    start = time.perf_counter()
    h, w = image.shape[1:]
    counts0 = np.zeros((k, h, w), dtype=np.int64)
    for _ in range(n0):
        x = image + sigma * torch.randn(image.shape, generator=gen)
        label = model(x.unsqueeze(0).to(device)).argmax(1)[0].cpu().numpy()
        for c in range(k):
            counts0[c] += label == c
    selected = counts0.argmax(0)
    count = np.zeros((h, w), dtype=np.int64)
    for _ in range(n):
        x = image + sigma * torch.randn(image.shape, generator=gen)
        label = model(x.unsqueeze(0).to(device)).argmax(1)[0].cpu().numpy()
        count += label == selected
    pvalues = [binomtest(int(c), n, tau, alternative="greater").pvalue for c in count.ravel()]
    reject = multipletests(pvalues, alpha=alpha, method="holm")[0].reshape(h, w)
    _ = np.where(reject, selected, -1)
    return time.perf_counter() - start


def speed(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    images, source = _images(args.size, args.images)
    model = _model(args.size, device)
    first_argmax(model(images[:1].to(device)))  # warm-up
    rows = {"forward": [], "medsure": [], "reference": []}
    wall = time.perf_counter()
    for i, image in enumerate(images):
        rows["forward"].append(forward_only(model, image, args.n0 + args.n, args.sigma, args.batch_size, device))
        start = time.perf_counter()
        certify_segmentation(
            model,
            image,
            n_classes=4,
            sigma=args.sigma,
            n0=args.n0,
            n=args.n,
            alpha=args.alpha,
            tau=args.tau,
            generator=torch.Generator().manual_seed(image_seed(0, i)),
            batch_size=args.batch_size,
            device=device,
        )
        _sync(device)
        rows["medsure"].append(time.perf_counter() - start)
        if i < args.reference_images:
            rows["reference"].append(
                reference_loop(
                    model,
                    image,
                    n0=args.n0,
                    n=args.n,
                    sigma=args.sigma,
                    alpha=args.alpha,
                    tau=args.tau,
                    k=4,
                    device=device,
                )
            )
    med = {key: statistics.median(v) for key, v in rows.items() if v}
    result = {
        "command": " ".join(["benchmarks/certification.py", *sys.argv[1:]]),
        "images": f"{len(images)} {source} images at {args.size} px (reference loop: first {args.reference_images})",
        "settings": {k: getattr(args, k) for k in ("sigma", "n0", "n", "alpha", "tau", "batch_size")},
        "seconds_per_image": med,
        "overhead_vs_forward": med["medsure"] / med["forward"],
        "speedup_vs_reference": med["reference"] / med["medsure"] if "reference" in med else None,
        "images_per_minute": 60.0 / med["medsure"],
        "environment": describe_environment(device, wall_time_s=time.perf_counter() - wall),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def table(args: argparse.Namespace) -> None:
    """One markdown row per cert.json: settings, certified Dice [CI], abstain rate, samples, time."""

    def fmt(entry) -> str:
        if not entry or entry.get("mean") is None:
            return "n/a"
        ci = entry.get("ci")
        return f"{entry['mean']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    print(
        "| file | sigma | denoiser | sequential | radius | certified Dice | Dice on certified px | plain Dice clean"
        " | plain Dice under noise | abstain rate | mean samples | s/image |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in args.files:
        d = json.loads(Path(path).read_text())
        print(
            f"| {Path(path).name} | {d['sigma']} | {'yes' if d.get('denoiser') else 'no'} | "
            f"{'yes' if d.get('sequential') else 'no'} | {d['radius']:.3f} | {fmt(d.get('certified_dice'))} | "
            f"{fmt(d.get('non_abstained_dice'))} | {fmt(d.get('plain_dice'))} | {fmt(d.get('plain_noisy_dice'))} | "
            f"{fmt(d.get('abstain_rate'))} | {d['samples_used']['mean']:.1f} | {d['seconds_per_image']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--images", type=int, default=5)
    s.add_argument("--reference-images", type=int, default=2)
    s.add_argument("--sigma", type=float, default=0.25)
    s.add_argument("--n0", type=int, default=10)
    s.add_argument("--n", type=int, default=100)
    s.add_argument("--alpha", type=float, default=0.001)
    s.add_argument("--tau", type=float, default=0.75)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--json", default=None, help="also write the result here")
    s.set_defaults(func=speed)
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    t.set_defaults(func=table)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
