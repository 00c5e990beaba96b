"""Perceptual hashes and near-duplicate groups.

Public medical image sets contain near-duplicates (BUSI: about 19 %, Pawłowska et al. 2023).
If two copies of one image land in the training and the calibration split, coverage and
calibration estimates leak. We hash every image, link pairs whose hashes differ in at most a
few bits, and give each connected component one ``dup_group`` id that splits keep together.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medsure.validation import input_error

_CHUNK = 128  # images hashed at a time: bounds memory for large originals


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise input_error("images", f"shape {images.shape}", "shape (N, H, W) or (N, H, W, C)", raw=True)
    return images


def _thumbnails(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Grey area-averaged thumbnails (N, height, width), computed in chunks."""
    images = _as_nhwc(images)
    out = np.empty((len(images), height, width))
    for start in range(0, len(images), _CHUNK):
        grey = images[start : start + _CHUNK].astype(np.float32).mean(axis=-1)
        out[start : start + _CHUNK] = _block_resize(grey, height, width)
    return out


def _block_resize(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average (N, H, W) down to (N, height, width) with fractional box weights."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        # W[o, i] = overlap of input pixel i with output cell o, rows sum to 1
        edges = np.linspace(0.0, n_in, n_out + 1)
        lo, hi = edges[:-1, None], edges[1:, None]
        pix = np.arange(n_in)[None, :]
        overlap = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0.0, None)
        return overlap / overlap.sum(axis=1, keepdims=True)

    wr = weights(grey.shape[1], height)
    wc = weights(grey.shape[2], width)
    return np.einsum("oh,nhw,pw->nop", wr, grey, wc)


def difference_hash(images: np.ndarray, hash_size: int = 8) -> np.ndarray:
    """dHash: sign of horizontal gradients of an area-averaged (hash_size, hash_size+1) thumbnail.

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, H, W, C)
    hash_size : int
        Bits per row; the hash has ``hash_size**2`` bits.

    Returns
    -------
    ndarray of bool, shape (N, hash_size**2)
    """
    if hash_size < 2:
        raise input_error("hash_size", hash_size, "an integer >= 2")
    small = _thumbnails(images, hash_size, hash_size + 1)
    return (small[:, :, 1:] > small[:, :, :-1]).reshape(len(small), -1)


def average_hash(images: np.ndarray, hash_size: int = 8) -> np.ndarray:
    """aHash: thumbnail pixels above the thumbnail mean. Returns bool (N, hash_size**2)."""
    if hash_size < 2:
        raise input_error("hash_size", hash_size, "an integer >= 2")
    small = _thumbnails(images, hash_size, hash_size)
    flat = small.reshape(len(small), -1)
    return flat > flat.mean(axis=1, keepdims=True)


def hamming_matrix(hashes: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances of bool hashes (N, B) -> int64 (N, N)."""
    bits = np.asarray(hashes, dtype=np.int64)
    # differing bits = a.(1-b) + (1-a).b, as two matrix products instead of an N x N x B tensor
    return bits @ (1 - bits).T + (1 - bits) @ bits.T


def duplicate_groups(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Connected components of the graph linking hashes within ``max_distance`` bits.

    Parameters
    ----------
    hashes : ndarray of bool, shape (N, B)
    max_distance : int
        Largest Hamming distance counted as a near-duplicate (0 = identical hashes only).

    Returns
    -------
    ndarray of int64, shape (N,)
        Group id per image; ids are numbered in order of first appearance, so two images share an
        id exactly when a chain of near-duplicate pairs links them (union-find closure).
    """
    hashes = np.asarray(hashes, dtype=bool)
    if hashes.ndim != 2:
        raise input_error("hashes", f"shape {hashes.shape}", "shape (N, B)", raw=True)
    if max_distance < 0:
        raise input_error("max_distance", max_distance, "a number >= 0")
    n = len(hashes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    dist = hamming_matrix(hashes)
    rows, cols = np.nonzero(np.triu(dist <= max_distance, k=1))
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber by first appearance so ids do not depend on scipy's internal order
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    remap = np.empty(len(order), dtype=np.int64)
    remap[order] = np.arange(len(order))
    return remap[labels]


def near_duplicate_groups(images: np.ndarray, *, hash_size: int = 8, max_distance: int = 2) -> np.ndarray:
    """``duplicate_groups(difference_hash(images, hash_size), max_distance)``; int64 (N,)."""
    return duplicate_groups(difference_hash(images, hash_size), max_distance)


def near_duplicates_of(
    reference: np.ndarray, query: np.ndarray, *, min_correlation: float = 0.99, chunk: int = 512
) -> np.ndarray:
    """For each query image, whether some reference image has pixel correlation >= ``min_correlation``.

    Pixel correlation rather than a perceptual hash: on small grey images of one anatomy
    (e.g. 28 px chest X-rays) hashes of different patients collide, correlations do not.

    Parameters
    ----------
    reference : ndarray (M, H, W[, C]), e.g. the training images
    query : ndarray (N, H, W[, C]) of the same size, e.g. the official test images

    Returns
    -------
    ndarray of bool (N,)
    """

    def standardised(images: np.ndarray) -> np.ndarray:
        flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        flat = flat - flat.mean(axis=1, keepdims=True)
        return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)

    if np.shape(reference)[1:] != np.shape(query)[1:]:
        raise input_error(
            "query images",
            f"image shape {np.shape(query)[1:]}",
            f"the reference images' shape {np.shape(reference)[1:]} (they differ in size)",
            raw=True,
        )
    ref, qry = standardised(reference), standardised(query)
    out = np.zeros(len(qry), dtype=bool)
    if len(ref) == 0:
        return out
    for start in range(0, len(qry), chunk):  # bounds the (chunk, M) correlation block
        out[start : start + chunk] = (qry[start : start + chunk] @ ref.T).max(axis=1) >= min_correlation
    return out


def exact_duplicate_groups(images: np.ndarray) -> np.ndarray:
    """Group ids (N,) int64 shared by pixel-identical images (e.g. patches cut twice from one
    scan), numbered by first appearance."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    return remap[inverse.ravel()].astype(np.int64)


def group_label_conflict(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """True for samples whose near-duplicate group holds more than one distinct label.

    Parameters
    ----------
    groups, labels : int ndarrays (N,)

    Returns
    -------
    ndarray of bool (N,); flags probable label noise (the same lesion filed under two classes).
    """
    groups = np.asarray(groups)
    labels = np.asarray(labels)
    if groups.shape != labels.shape or groups.ndim != 1:
        raise input_error(
            "groups and labels", f"shapes {groups.shape} and {labels.shape}", "both of shape (N,)", raw=True
        )
    pairs = np.unique(np.stack([groups, labels], axis=1), axis=0)
    distinct = np.unique(pairs[:, 0], return_counts=True)
    conflicted = distinct[0][distinct[1] > 1]
    return np.isin(groups, conflicted)
