"""``medsure datasets``: list embedded and downloadable datasets; fetch MedMNIST files."""

from __future__ import annotations

import argparse
import json

from medsure.data.medmnist import FLAGS, SIZES, fetch_medmnist
from medsure.data.registry import EMBEDDED_DIR, LOADERS, embedded_manifest


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "datasets",
        help="list embedded datasets and downloadable MedMNIST files; download one",
        description="Without options: list the datasets shipped inside medsure (name, task, size, "
        "classes, licence), the other names load_dataset reads from a data folder, and the "
        "MedMNIST files that can be downloaded (with official MD5 check).",
    )
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    p.add_argument("--download", metavar="FLAG", help="download the official MedMNIST file FLAG (e.g. dermamnist)")
    p.add_argument("--size", type=int, default=28, choices=SIZES, help="MedMNIST image size to download")
    p.add_argument(
        "--root", help="folder to download into (default ~/.cache/medsure/medmnist or $MEDSURE_CACHE_DIR/medmnist)"
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="accept a local MedMNIST file whose MD5 differs from the official one (recorded as "
        "unverified in the provenance of everything made from it)",
    )
    p.set_defaults(func=run)


def listing() -> dict:
    manifest = embedded_manifest()
    embedded = [
        {
            "name": name,
            "task": e["task"],
            "n": e["n"],
            "image_size": e["image_size"],
            "classes": e.get("classes", []),
            "file_mb": round((EMBEDDED_DIR / e["file"]).stat().st_size / 1e6, 2),
            "license": e["license"],
        }
        for name, e in manifest.items()
    ]
    own = {
        "folder": "classification: ROOT/<class>/<image>",
        "segfolder": "segmentation: ROOT/images + ROOT/masks, paired by name (options images=, masks=, "
        "mask_suffix=, image_pattern=, mask_pattern=, value_map=, threshold=, class_names=)",
        "jointfolder": "class label and mask: ROOT/images/<class> + ROOT/masks/<class> (segfolder options, classes=)",
        "manifest": "--root FILE.csv with columns image and label and/or mask, optional group and split",
    }
    folder_sets = sorted(set(LOADERS) - set(manifest) - set(own))
    medmnist = [
        {
            "flag": f.flag,
            "task": f.task,
            "classes": len(f.labels),
            "channels": f.n_channels,
            "n": sum(f.n_samples),
            "sizes": list(SIZES),
            "license": f.license,
            "loadable": not f.task.startswith("multi-label"),
        }
        for f in FLAGS.values()
    ]
    return {
        "embedded": embedded,
        "from_data_root": folder_sets,
        "your_own_data": own,
        "medmnist_download": medmnist,
    }


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())


def run(args: argparse.Namespace) -> int:
    if args.download:
        path, provenance = fetch_medmnist(
            args.download, args.size, root=args.root, download=True, verify=not args.no_verify
        )
        state = "official, verified" if provenance.get("verified") else "NOT verified against the official MD5"
        print(f"{path}  md5 {provenance['md5']} ({state})")
        return 0
    info = listing()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print("Embedded (load_dataset(name), no download needed):")
    _print_table(
        [
            [
                e["name"],
                e["task"],
                e["n"],
                f"{e['image_size']}x{e['image_size']}",
                ", ".join(e["classes"]),
                f"{e['file_mb']} MB",
                e["license"],
            ]
            for e in info["embedded"]
        ],
        ["name", "task", "N", "size", "classes", "file", "licence"],
    )
    print("\nRead from a data folder (root=, $MEDSURE_DATA_ROOT or ../shared/data):")
    print("  " + ", ".join(info["from_data_root"]))
    print("\nYour own data (--dataset NAME --root ROOT; every one also takes groups=FILE.csv, group_pattern=REGEX,")
    print("dedup=true; see docs/own-data.md):")
    for name, what in info["your_own_data"].items():
        print(f"  {name:<12} {what}")
    print("\nMedMNIST, downloadable with official MD5 check (medsure datasets --download FLAG --size S):")
    _print_table(
        [
            [m["flag"], m["task"], m["classes"], m["channels"], m["n"], "/".join(map(str, m["sizes"])), m["license"]]
            for m in info["medmnist_download"]
        ],
        ["flag", "task", "classes", "channels", "N", "sizes", "licence"],
    )
    return 0
