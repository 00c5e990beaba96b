"""Regenerate the embedded datasets in src/medsure/data/embedded/ from ../shared/data.

Only the folders the data README marks redistributable are embedded: PneumoniaMNIST and
BreastMNIST (MedMNIST, CC BY 4.0), BUSI downsized to 64x64 grey with near-duplicate groups
(CC BY 4.0, Al-Dhabyani et al. 2020), its lesion masks at 64x64 (``busi_masks/``, CC BY 4.0, for
``busi_joint``) and the MSD Task06 lung patches (CC BY-SA 4.0).

    python scripts/build_embedded.py [--data ../shared/data] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

import numpy as np

from medsure.data.medmnist import FLAGS, md5sum
from medsure.data.registry import EMBEDDED_DIR, load_dataset

BUSI_CITATION = (
    "Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
    "Data in Brief 28, 104863 (2020). doi:10.1016/j.dib.2019.104863"
)
MEDMNIST_CITATION = (
    "Yang J, Shi R, Wei D, et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and "
    "3D biomedical image classification. Scientific Data 10, 41 (2023)."
)
MSD_CITATION = (
    "Antonelli M, Reinke A, Bakas S, et al. The Medical Segmentation Decathlon. Nature "
    "Communications 13, 4128 (2022); Simpson AL et al., arXiv:1902.09063 (2019)."
)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Compressed npz whose bytes depend only on the arrays (fixed zip timestamps)."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--out", default=str(EMBEDDED_DIR), help="folder to write (default: the package's)")
    args = parser.parse_args()
    data = Path(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict] = {}

    for flag, n in (("pneumoniamnist", 5856), ("breastmnist", 780)):
        src = data / "medmnist" / f"{flag}.npz"
        dst = out / f"{flag}.npz"
        with np.load(src) as npz:  # re-save compressed, same MedMNIST layout
            save_npz(dst, **{k: npz[k] for k in npz.files})
        manifest[flag] = {
            "file": dst.name,
            "md5": md5sum(dst),
            "task": "classification",
            "n": n,
            "image_size": 28,
            "classes": list(FLAGS[flag].labels),
            "license": "CC BY 4.0",
            "citation": MEDMNIST_CITATION,
            "note": (
                "MedMNIST layout re-saved compressed from a public copy; its MD5 differs from the official "
                "file (official MD5s are checked on download)"
            ),
        }

    busi = load_dataset("busi", root=data / "busi", image_size=64)
    dst = out / "busi_64.npz"
    save_npz(
        dst,
        images=busi.images[..., 0],
        labels=busi.targets.astype(np.uint8),
        ids=busi.ids,
        class_names=busi.class_names,
        dup_group=busi.meta["dup_group"].astype(np.int32),
    )
    groups = np.bincount(busi.meta["dup_group"])
    manifest["busi"] = {
        "file": dst.name,
        "md5": md5sum(dst),
        "task": "classification",
        "n": len(busi),
        "image_size": 64,
        "classes": busi.class_names.tolist(),
        "license": "CC BY 4.0",
        "citation": BUSI_CITATION,
        "note": (
            f"downsized to 64x64 grey; {len(groups)} near-duplicate groups "
            f"({int((groups > 1).sum())} with >1 image) in meta['dup_group']"
        ),
    }

    # the lesion masks of the same 780 images, in busi_64.npz's order, built by busi_joint itself
    # (so they equal what ``busi_joint`` reads from busi_masks/: nearest-neighbour 256 -> 64 px,
    # the release's extra masks already merged in busi_masks/, empty masks for ``normal``); a
    # separate file so busi_64.npz and its MD5 stay as they were
    joint = load_dataset("busi_joint", root=data, image_size=64)
    if not np.array_equal(joint.ids, busi.ids):
        raise SystemExit("busi_joint and busi list the BUSI images in different orders; masks not written")
    dst = out / "busi_masks_64.npz"
    save_npz(dst, masks=joint.require_targets("BUSI masks").astype(bool), ids=joint.ids)
    lesion = joint.require_targets("BUSI masks").reshape(len(joint), -1).any(1)
    manifest["busi_joint"] = {
        "file": dst.name,
        "md5": md5sum(dst),
        "task": "segmentation",
        "n": len(joint),
        "image_size": 64,
        "classes": joint.class_names.tolist(),
        "license": "CC BY 4.0",
        "citation": BUSI_CITATION,
        "note": (
            f"lesion masks (bool) for the images of busi_64.npz, same order and ids; nearest-neighbour "
            f"resize to 64x64; {int(lesion.sum())} with a lesion, normal images' masks empty"
        ),
    }

    msd = load_dataset("msd_lung", root=data / "msd_lung")
    dst = out / "msd_lung_48.npz"
    save_npz(
        dst,
        images=msd.images[..., 0].astype(np.float32),
        labels=msd.targets.astype(np.uint8),
        ids=msd.ids,
        class_names=msd.class_names,
        source_split=msd.meta["source_split"],
    )
    manifest["msd_lung"] = {
        "file": dst.name,
        "md5": md5sum(dst),
        "task": "segmentation",
        "n": len(msd),
        "image_size": 48,
        "classes": msd.class_names.tolist(),
        "license": "CC BY-SA 4.0",
        "citation": MSD_CITATION,
        "note": "Task06 lung tumour CT, 2 mm isotropic, 48x48 patches; val and test patients disjoint",
    }
    licence = data / "msd_lung" / "LICENSE.md"
    if licence.is_file():
        shutil.copyfile(licence, out / "LICENSE-MSD-CC-BY-SA-4.0.md")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum((out / e["file"]).stat().st_size for e in manifest.values())
    print(f"wrote {len(manifest)} embedded sets to {out}, {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
