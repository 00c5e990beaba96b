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
import functools
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
def forward_only(model, image, n0: int, n: int, sigma: float, batch: int, device) -> float:
    """The n0 + n noisy copies (drawn beforehand) through the model, in the batches medsure uses
    (n0 in batches, then n in batches), nothing else: the floor of any implementation."""
    noise = torch.randn((n0 + n, *image.shape), generator=torch.Generator().manual_seed(1))
    noisy = image.unsqueeze(0) + sigma * noise
    bounds = [(s, min(s + batch, n0)) for s in range(0, n0, batch)]
    bounds += [(n0 + s, n0 + min(s + batch, n)) for s in range(0, n, batch)]
    _sync(device)
    start = time.perf_counter()
    for a, b in bounds:
        model(noisy[a:b].to(device))
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
    rows = {"forward": [], "medsure": [], "medsure_model_calls": [], "reference": [], "reference_forward": []}
    ratios, inside_ratios = [], []
    inside = [0.0]

    def timed_model(x: torch.Tensor) -> torch.Tensor:  # the model's own time inside certify_segmentation
        _sync(device)
        begin = time.perf_counter()
        out = model(x)
        _sync(device)
        inside[0] += time.perf_counter() - begin
        return out

    wall = time.perf_counter()
    for i, image in enumerate(images):
        forward = functools.partial(forward_only, model, image, args.n0, args.n, args.sigma, args.batch_size, device)
        if i % 2 == 0:  # alternate the order, so that a drift in the machine's load favours neither
            rows["forward"].append(forward())
        inside[0] = 0.0
        start = time.perf_counter()
        certify_segmentation(
            timed_model,
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
        rows["medsure_model_calls"].append(inside[0])
        inside_ratios.append(rows["medsure"][-1] / inside[0])
        if i % 2 == 1:
            rows["forward"].append(forward())
        ratios.append(rows["medsure"][-1] / rows["forward"][-1])
        if i < args.reference_images:
            # the reference's own passes alone (one copy per pass): what batching saves
            rows["reference_forward"].append(forward_only(model, image, args.n0, args.n, args.sigma, 1, device))
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
        "overhead_vs_forward_median_of_ratios": statistics.median(ratios),
        # the same run's model calls, timed inside certify_segmentation: everything else (noise,
        # arg-max, counts, tests) over the model's own time, free of load drift between runs
        "overhead_vs_own_model_calls": statistics.median(inside_ratios),
        "speedup_vs_reference": med["reference"] / med["medsure"] if "reference" in med else None,
        # the best any implementation could do against the reference here: its time over the
        # batched forward passes alone (on a CPU batching saves little, on a GPU much)
        "speedup_ceiling": med["reference"] / med["forward"] if "reference" in med else None,
        "images_per_minute": 60.0 / med["medsure"],
        "environment": describe_environment(device, wall_time_s=time.perf_counter() - wall),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def sequential(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    _cache_labels(args, device)
    if args.cache_only:
        return
    _replay(args)


def _replay_configs(n_max: int, m: int, alpha: float, tau: float, n0: int) -> list[dict]:
    """The settings compared: fixed n against sequential variants, n = 100 (Holm, BH) and n = n_max (Holm)."""
    from medsure.certify.stats import late_looks

    configs = []
    for n, correction in ((100, "holm"), (100, "bh"), (n_max // 2, "holm"), (n_max, "holm")):
        if n > n_max:
            continue
        for selection, families in (("split", m), ("union", 4 * m)):
            offset = n0 if selection == "union" else 0
            base = {"n": n, "correction": correction, "selection": selection}
            configs.append({**base, "mode": "fixed"})
            if selection == "split":
                configs.append({**base, "mode": "rounds of 10", "sequential": True, "round_size": 10})
            for n_looks in (3, 4, 5):
                late = late_looks(n, families, alpha, tau, n_looks=n_looks, offset=offset).tolist()
                for futility, tolerance in (
                    (0.0, 0.0),
                    (0.01, 0.0),
                    (0.0, 0.04),
                    (0.01, 0.02),
                    (0.01, 0.04),
                    (0.01, 0.08),
                ):
                    mode = f"looks {late}" + (f", futility {futility}" if futility else "")
                    mode += f", tolerance {tolerance}" if tolerance else ""
                    configs.append(
                        {
                            **base,
                            "mode": mode,
                            "sequential": True,
                            "looks": late,
                            "futility": futility,
                            "tolerance": tolerance,
                        }
                    )
    return configs


def _replay(args: argparse.Namespace) -> None:
    """Every setting of :func:`_replay_configs` on the cached label maps, through
    :func:`medsure.certify.smoothing.certify_labels` (the code `medsure certify` runs): the
    sequential mode consumes the cached passes in order and stops where it would stop live."""
    from medsure.certify.metrics import abstain_rate, certified_dice
    from medsure.certify.smoothing import certify_labels

    files = sorted(Path(args.cache).glob("image*.npz"))
    if args.limit is not None:
        files = files[: args.limit]
    data = [np.load(f) for f in files]
    labels = [torch.from_numpy(d["labels"].astype(np.int64)) for d in data]
    targets = np.stack([d["target"] for d in data])
    m = int(np.prod(targets.shape[1:]))
    configs = _replay_configs(args.n_max, m, args.alpha, args.tau, args.n0)
    rows = []
    for config in configs:
        certs = []
        start = time.perf_counter()
        for stream in labels:
            position = [0]

            def draw(k: int, stream=stream, position=position):
                chunk = stream[position[0] : position[0] + k]
                if chunk.shape[0] != k:
                    raise RuntimeError("the cache holds fewer passes than asked for")
                position[0] += k
                yield chunk

            options = {
                key: config[key]
                for key in ("sequential", "round_size", "looks", "futility", "tolerance")
                if key in config
            }
            certs.append(
                certify_labels(
                    draw,
                    n_classes=4,
                    n0=args.n0,
                    n=config["n"],
                    alpha=args.alpha,
                    tau=args.tau,
                    correction=config["correction"],
                    selection=config["selection"],
                    **options,
                )
            )
        certified = np.stack([c.certified for c in certs])
        dice = certified_dice(certified, targets, 4)  # (N, 3)
        per_image = np.nanmean(dice, axis=1)
        used = np.array([c.samples_used for c in certs])
        rows.append(
            {
                **config,
                "certified_dice": float(np.nanmean(np.nanmean(dice, axis=0))),
                "per_image_dice": per_image.tolist(),
                "abstain_rate": float(abstain_rate(certified).mean()),
                "mean_samples": float(used.mean()),
                "max_samples": args.n0 + config["n"],
                "images_stopped_early": int((used < args.n0 + config["n"]).sum()),
                "stats_seconds": time.perf_counter() - start,
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_image_dice"}), flush=True)
    result = {
        "command": " ".join(["benchmarks/certification.py", *sys.argv[1:]]),
        "images": len(files),
        "settings": {"sigma": args.sigma, "n0": args.n0, "alpha": args.alpha, "tau": args.tau},
        "rows": rows,
        "cache_seconds_per_image": float(np.mean([float(d["seconds"]) for d in data])),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    _print_sequential_table(result)


def _print_sequential_table(result: dict) -> None:
    print(
        "| n | correction | selection | mode | certified Dice | gap to fixed split | abstain rate "
        "| mean samples (max) | images stopped early |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    fixed = {
        (r["n"], r["correction"]): r["certified_dice"]
        for r in result["rows"]
        if r["mode"] == "fixed" and r["selection"] == "split"
    }
    for r in result["rows"]:
        gap = r["certified_dice"] - fixed[(r["n"], r["correction"])]
        print(
            f"| {r['n']} | {r['correction']} | {r['selection']} | {r['mode']} | {r['certified_dice']:.3f} "
            f"| {gap:+.3f} | {r['abstain_rate']:.3f} | {r['mean_samples']:.1f} ({r['max_samples']}) "
            f"| {r['images_stopped_early']}/{result['images']} |"
        )


def _certify_callable(run_dir: str, denoiser_dir: str | None, sigma: float, device):
    """The model callable `medsure certify` builds (U-Net, or denoiser then U-Net) and the test split."""
    from medsure.training import load_run
    from medsure.training.datasets import load_splits

    run = load_run(run_dir)
    net = run.model.to(device).eval()
    model = net
    if denoiser_dir is not None:
        from medsure.denoise import load_denoiser

        model = load_denoiser(denoiser_dir).to(device).smoothing_model(net, sigma)
    dataset = load_splits(run.config["train"].get("dataset", {}))["test"]
    return model, dataset


def _cache_labels(args: argparse.Namespace, device) -> Path:
    """Per image, the arg-max label maps of the n0 + n_max noisy passes exactly as `medsure certify`
    draws them (the image's generator, one draw per sample), stored as uint8 ``(n0 + n_max, H, W)``.
    Resumable: images already cached are skipped."""
    from medsure.certify.smoothing import noisy_labels
    from medsure.utils.io import atomic_write

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    model, dataset = _certify_callable(args.run, args.denoiser, args.sigma, device)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    x = torch.from_numpy(np.moveaxis(np.asarray(dataset.images[:count]), -1, 1).copy()).float() / 255.0
    for i in range(count):
        path = cache / f"image{i:03d}.npz"
        if path.exists():
            continue
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(image_seed(args.seed, i))
        labels = torch.cat(
            list(
                noisy_labels(
                    model,
                    x[i],
                    args.n0 + args.n_max,
                    sigma=args.sigma,
                    generator=gen,
                    batch_size=args.batch_size,
                    device=device,
                )
            )
        )
        with atomic_write(path, "wb") as handle:
            np.savez_compressed(
                handle,
                labels=labels.numpy().astype(np.uint8),
                target=np.asarray(dataset.targets[i]).astype(np.int64),
                seconds=np.asarray(time.perf_counter() - start),
            )
        print(f"cached image {i} ({time.perf_counter() - start:.1f} s)", flush=True)
    return cache


def table(args: argparse.Namespace) -> None:
    """One markdown row per cert.json: settings, certified Dice [CI], abstain rate, samples, time.

    ``--study``: one table per dataset (σ × U-Net / + denoiser / noise-trained, read from the run
    folders' config.json); ``--seeds``: mean ± sd over training seeds of the same setting."""

    def fmt(entry) -> str:
        if not entry or entry.get("mean") is None:
            return "n/a"
        ci = entry.get("ci")
        return f"{entry['mean']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    if args.study or args.seeds:
        infos = [_cert_info(path) for path in args.files]
        if args.study:
            _study_table(infos, fmt)
        if args.seeds:
            _seed_spread(infos)
        return
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


def _cert_info(path: str) -> dict:
    """A cert.json with what its run folder's config.json says: dataset, training seed, noise σ.

    ``kind`` is "plain" (U-Net as trained), "denoiser" (denoiser then U-Net) or "noise-trained"
    (a U-Net trained with ``--noise-sigma``, certified without a denoiser)."""
    d = json.loads(Path(path).read_text())
    train_cfg: dict = {}
    config = Path(d.get("run") or "") / "config.json"
    if d.get("run") and config.is_file():
        train_cfg = json.loads(config.read_text()).get("train", {})
    noise = train_cfg.get("noise_sigma", 0.0)
    noise_text = ", ".join(f"{float(v):g}" for v in noise) if isinstance(noise, list) else f"{float(noise):g}"
    noisy = any(float(v) > 0 for v in (noise if isinstance(noise, list) else [noise]))
    kind = "denoiser" if d.get("denoiser") else ("noise-trained" if noisy else "plain")
    label = {"plain": "U-Net", "denoiser": "U-Net + denoiser", "noise-trained": f"U-Net trained at σ {noise_text}"}
    return {
        "d": d,
        "name": Path(path).name,
        "dataset": train_cfg.get("dataset", {}).get("name", "?"),
        "seed": train_cfg.get("seed"),
        "kind": kind,
        "label": label[kind] + (" + denoiser" if kind == "denoiser" and noisy else ""),
    }


_KIND_ORDER = {"plain": 0, "denoiser": 1, "noise-trained": 2}


def _study_table(infos: list[dict], fmt) -> None:
    """Per dataset: one row per cert.json, σ then plain / denoiser / noise-trained."""
    for dataset in sorted({i["dataset"] for i in infos}):
        rows = sorted(
            (i for i in infos if i["dataset"] == dataset),
            key=lambda i: (i["d"]["sigma"], _KIND_ORDER[i["kind"]], i["seed"] or 0),
        )
        print(f"\n{dataset}\n")
        print(
            "| σ | radius σΦ⁻¹(τ) | model | seed | images | certified Dice | Dice on certified pixels"
            " | plain Dice under noise | abstain rate | s / image |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for i in rows:
            d = i["d"]
            print(
                f"| {d['sigma']} | {d['radius']:.3f} | {i['label']} | {i['seed']} | {d['n_images']} | "
                f"{fmt(d.get('certified_dice'))} | {fmt(d.get('non_abstained_dice'))} | "
                f"{fmt(d.get('plain_noisy_dice'))} | {fmt(d.get('abstain_rate'))} | {d['seconds_per_image']:.1f} |"
            )


def _image_mean(d: dict, key: str, ids: list[str]) -> float:
    """The summary's mean (over labels of each label's mean over images) restricted to ``ids``."""
    by_id = {row["id"]: row for row in d["per_image"]}
    rows = [by_id[i] for i in ids]
    if isinstance(rows[0][key], dict):
        labels = list(rows[0][key])
        per_label = [np.nanmean([np.nan if r[key][lab] is None else r[key][lab] for r in rows]) for lab in labels]
        return float(np.nanmean(per_label))
    return float(np.nanmean([np.nan if r[key] is None else r[key] for r in rows]))


def _seed_spread(infos: list[dict]) -> None:
    """Mean ± sd over training seeds of the same (dataset, σ, model), on the images all of them certified."""
    print(
        "\n| dataset | σ | model | seeds | images | certified Dice mean ± sd | per seed"
        " | Dice on certified pixels mean ± sd | abstain rate mean ± sd |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple, list[dict]] = {}
    for i in infos:
        groups.setdefault((i["dataset"], i["d"]["sigma"], i["label"]), []).append(i)
    for (dataset, sigma, label), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        members = sorted(group, key=lambda i: i["seed"] or 0)
        if len({i["seed"] for i in members}) < 2:
            continue
        ids = sorted(set.intersection(*({r["id"] for r in i["d"]["per_image"]} for i in members)))
        stats = {
            key: [_image_mean(i["d"], key, ids) for i in members]
            for key in ("certified_dice", "non_abstained_dice", "abstain_rate")
        }

        def ms(values: list[float]) -> str:
            return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"

        per_seed = ", ".join(
            f"seed {i['seed']}: {v:.3f}" for i, v in zip(members, stats["certified_dice"], strict=True)
        )
        print(
            f"| {dataset} | {sigma} | {label} | {len(members)} | {len(ids)} | {ms(stats['certified_dice'])} | "
            f"{per_seed} | {ms(stats['non_abstained_dice'])} | {ms(stats['abstain_rate'])} |"
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
    q = sub.add_parser("sequential", help="fixed n vs sequential certification on cached noisy label maps")
    q.add_argument("--run", required=True)
    q.add_argument("--denoiser", default=None)
    q.add_argument("--sigma", type=float, default=0.25)
    q.add_argument("--n0", type=int, default=10)
    q.add_argument("--n-max", type=int, default=500, help="estimation passes cached per image")
    q.add_argument("--alpha", type=float, default=0.001)
    q.add_argument("--tau", type=float, default=0.75)
    q.add_argument("--limit", type=int, default=None)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--cache", required=True, help="folder of the cached label maps (resumable)")
    q.add_argument("--cache-only", action="store_true", help="only fill the cache")
    q.add_argument("--json", default=None, help="also write the result here")
    q.set_defaults(func=sequential)
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    t.add_argument("--study", action="store_true", help="one table per dataset, models from the run folders")
    t.add_argument("--seeds", action="store_true", help="mean ± sd over training seeds of the same setting")
    t.set_defaults(func=table)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()


# --- bench-check hook (issue 16) ---
# ``python -m benchmarks.check`` reruns quick() and compares it with benchmarks/check_recorded.json
# (protocol: benchmarks/check.py). It uses only medsure's public API (medsure.certify, training,
# data), not this file's helpers, so that changes to the speed / study code above do not move it.

QUICK_TOLERANCE = {
    # a 2-epoch U-Net trained with bf16 autocast on one CPU and fp32 on another differs in its
    # borderline pixels; certification at n = 100 turns those into certify / abstain changes
    "seg_certified_dice": 0.1,
    "seg_non_abstained_dice": 0.1,
    "seg_plain_dice": 0.1,
    "seg_abstain_rate": 0.1,
    "seg_sequential_abstain_rate": 0.1,
    # the sequential mode stops when every pixel is decided (at most n0 + n = 110): a few rounds of 10
    "seg_sequential_samples_used_mean": 20.0,
    # a 1-epoch small CNN on 546 BreastMNIST images: a few of 20 test images can change sides
    "cls_certified_accuracy": 0.15,
    "cls_abstain_rate": 0.15,
    "cls_plain_accuracy": 0.15,
    "cls_mean_radius": 0.1,
}


def quick() -> dict[str, float]:
    """Certification of small trained models, seeded, one thread (about 30 s):

    - segmentation (SegCertify): a 2-epoch 64 px U-Net on JSRT (seed 0), the first 2 test images,
      sigma 0.12, n0 = 10, n = 100, alpha 0.001, Holm: certified Dice (abstain = wrong), Dice on certified pixels,
      plain Dice, abstain rate; and the sequential mode (rounds of 10): abstain rate and samples used;
    - classification (Cohen et al. CERTIFY): a 1-epoch small CNN on BreastMNIST (seed 0), the first
      20 test images, sigma 0.25, n0 = 20, n = 200: certified accuracy at radius 0, abstain rate,
      plain accuracy and the mean certified radius.
    """
    import tempfile

    from medsure.certify import evaluate_certification
    from medsure.data import load_dataset, official_splits
    from medsure.training import TrainConfig, train
    from medsure.training.splits import standard_splits

    def mean(summary: dict, key: str) -> float:
        value = summary[key]["mean"]  # None where undefined (e.g. Dice with no certified pixel): NaN here
        return float("nan") if value is None else float(value)

    out: dict[str, float] = {}
    jsrt = standard_splits(load_dataset("jsrt", image_size=64), seed=0)
    seg_config = TrainConfig(
        model="unet",
        epochs=2,
        batch_size=16,
        lr=3e-3,
        width=16,
        loss="ce_dice",
        patience=0,
        seed=0,
        device="cpu",
        num_threads=1,
        hflip=False,
        vflip=False,
        dataset={"name": "jsrt", "options": {"image_size": 64}, "split_seed": 0},
    )
    breast = official_splits(load_dataset("breastmnist"))
    cls_config = TrainConfig(
        model="small_cnn",
        epochs=1,
        batch_size=64,
        lr=1e-3,
        patience=0,
        seed=0,
        device="cpu",
        num_threads=1,
        dataset={"name": "breastmnist", "official_splits": True},
    )
    with tempfile.TemporaryDirectory() as tmp:
        seg_run = train(seg_config, {"train": jsrt["train"], "val": jsrt["val"]}, Path(tmp) / "seg").run
        cls_run = train(cls_config, {"train": breast["train"], "val": breast["val"]}, Path(tmp) / "cls").run
    test = jsrt["test"]
    names = [str(c) for c in test.class_names]
    common = {"task": "segmentation", "class_names": names, "sigma": 0.12, "n0": 10, "n": 100, "seed": 0}
    fixed = evaluate_certification(seg_run.model.eval(), test.images[:2], test.targets[:2], n_boot=0, **common)
    seq = evaluate_certification(
        seg_run.model.eval(), test.images[:2], test.targets[:2], n_boot=0, sequential=True, round_size=10, **common
    )
    s, q = fixed.to_dict(), seq.to_dict()
    out["seg_certified_dice"] = mean(s, "certified_dice")
    out["seg_non_abstained_dice"] = mean(s, "non_abstained_dice")
    out["seg_plain_dice"] = mean(s, "plain_dice")
    out["seg_abstain_rate"] = mean(s, "abstain_rate")
    out["seg_sequential_abstain_rate"] = mean(q, "abstain_rate")
    out["seg_sequential_samples_used_mean"] = float(q["samples_used"]["mean"])
    ctest = breast["test"]
    cls = evaluate_certification(
        cls_run.model.eval(),
        ctest.images[:20],
        ctest.targets[:20],
        task="classification",
        class_names=[str(c) for c in ctest.class_names],
        sigma=0.25,
        n0=20,
        n=200,
        seed=0,
        n_boot=0,
    ).to_dict()
    out["cls_certified_accuracy"] = float(cls["certified_accuracy"]["at_radius_0"]["mean"])
    out["cls_abstain_rate"] = mean(cls, "abstain_rate")
    out["cls_plain_accuracy"] = mean(cls, "plain_accuracy")
    radius = cls["radius"]["mean_certified"]
    out["cls_mean_radius"] = float("nan") if radius is None else float(radius)
    return out
