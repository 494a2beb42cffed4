"""Co-segmentation from dense ViT descriptors, as pure functions over arrays.

The method of Amir et al., "Deep ViT Features as Dense Visual Descriptors" (2022), which
MIQD-2.5M uses for its ROI masks (paper §4.1):

1. the descriptors of every image of a group (L2-normalised) are clustered with k-means, fitted
   on every `sample_interval`-th descriptor of each image; k grows from 1 until the mean squared
   distance of all descriptors to their centroid falls by less than a factor `elbow` (the k at
   which it stops is kept, as in the reference implementation);
2. each image votes for the clusters whose mean saliency (CLS attention) in that image exceeds
   `threshold`; a cluster is foreground when at least `votes_percentage` % of the images vote
   for it;
3. the foreground tokens, mapped to the image's pixels, seed GrabCut: the mask eroded is sure
   foreground, its complement eroded sure background, the rest probably foreground.

Differences from the reference code, all deliberate: k-means is this module's own (k-means++
seeding, Lloyd iterations, best of `restarts`) with a random stream keyed by the group, so
results do not depend on a library's threading; the token grid is mapped to pixels by token
centres at the image's own size, and GrabCut runs there (the reference runs it at the resized
size), so the mask is pixel-aligned with the source; a mask GrabCut cannot refine (no sure
foreground or no sure background) is returned unrefined and reported, not caught as an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row and the squared distance to it (ties: the lower index)."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    d = np.maximum(d, 0.0)
    labels = d.argmin(1)
    return labels, d[np.arange(len(x)), labels]


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centroids = [x[rng.integers(len(x))]]
    closest = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = closest.sum()
        i = rng.choice(len(x), p=closest / total) if total > 0 else rng.integers(len(x))
        centroids.append(x[i])
        closest = np.minimum(closest, ((x - x[i]) ** 2).sum(1))
    return np.stack(centroids)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, restarts: int = 10,
           iterations: int = 300) -> tuple[np.ndarray, float]:
    """(centroids, inertia): Lloyd's k-means from k-means++ seeds, best of `restarts`."""
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= k <= len(x):
        raise ValueError(f"k={k} needs 1..{len(x)} points")
    best, best_inertia = None, math.inf
    for _ in range(restarts):
        c = _kmeans_pp(x, k, rng)
        labels = None
        for _ in range(iterations):
            new_labels, dist = assign(x, c)
            if labels is not None and np.array_equal(new_labels, labels):
                break
            labels = new_labels
            for j in range(k):
                members = labels == j
                # an emptied cluster restarts at the point farthest from its centroid
                c[j] = x[members].mean(0) if members.any() else x[dist.argmax()]
        inertia = float(assign(x, c)[1].sum())
        if inertia < best_inertia:
            best, best_inertia = c.copy(), inertia
    return best, best_inertia


def elbow_kmeans(sampled: np.ndarray, descriptors: np.ndarray, rng: np.random.Generator,
                 elbow: float = 0.975, max_clusters: int = 14, restarts: int = 10,
                 iterations: int = 300) -> tuple[np.ndarray, int, list[float]]:
    """Labels of every descriptor, the number of clusters chosen, and the elbow curve."""
    curve: list[float] = []
    labels = np.zeros(len(descriptors), dtype=np.int64)
    k = 0
    for n in range(1, max_clusters + 1):
        if n > len(sampled):
            break
        centroids, _ = kmeans(sampled, n, rng, restarts, iterations)
        labels, dist = assign(descriptors, centroids)
        k = n
        curve.append(float(dist.mean()))
        if curve[-1] == 0.0 or (len(curve) > 1 and curve[-1] > elbow * curve[-2]):
            break
    return labels, k, curve


def vote_salient(labels: list[np.ndarray], saliency: list[np.ndarray], n_labels: int,
                 threshold: float = 0.065, votes_percentage: float = 75) -> np.ndarray:
    """Clusters that are salient (mean saliency > threshold) in enough of the images."""
    votes = np.zeros(n_labels, dtype=np.int64)
    for lab, sal in zip(labels, saliency, strict=True):
        for c in range(n_labels):
            members = lab == c
            if members.any() and sal[members].mean() > threshold:
                votes[c] += 1
    needed = math.ceil(len(labels) * votes_percentage / 100 - 1e-9)
    return np.flatnonzero(votes >= needed)


@dataclass(frozen=True)
class CosegParams:
    elbow: float = 0.975
    max_clusters: int = 14
    sample_interval: int = 100
    restarts: int = 10
    iterations: int = 300
    threshold: float = 0.065
    votes_percentage: float = 75


@dataclass
class CosegResult:
    foreground: list[np.ndarray]  # per image, bool per token
    labels: list[np.ndarray]  # per image, cluster of each token
    n_clusters: int
    salient: np.ndarray  # foreground cluster ids
    curve: list[float]


def cosegment(descriptors: list[np.ndarray], saliency: list[np.ndarray], params: CosegParams,
              rng: np.random.Generator) -> CosegResult:
    """Foreground tokens of each image of a group, from (tokens, dim) descriptors and saliency."""
    if not descriptors:
        raise ValueError("a co-segmentation group needs at least one image")
    normed = [l2_normalize(d) for d in descriptors]
    everything = np.concatenate(normed)
    sampled = np.concatenate([d[:: params.sample_interval] for d in normed])
    labels, k, curve = elbow_kmeans(sampled, everything, rng, params.elbow, params.max_clusters,
                                    params.restarts, params.iterations)
    per_image = np.split(labels, np.cumsum([len(d) for d in descriptors])[:-1])
    salient = vote_salient(per_image, saliency, k, params.threshold, params.votes_percentage)
    foreground = [np.isin(lab, salient) for lab in per_image]
    return CosegResult(foreground, per_image, k, salient, curve)


def grid_to_pixels(grid: np.ndarray, image_hw: tuple[int, int], load_hw: tuple[int, int],
                   patch: int, stride: int) -> np.ndarray:
    """Per-token values (gh, gw) -> per-pixel values at the image's size, by nearest token centre.

    Token (i, j) of an image resized to `load_hw` covers load pixels [i*stride, i*stride + patch);
    a source pixel takes the value of the token whose centre is nearest its own centre.
    """
    gh, gw = grid.shape
    (h, w), (lh, lw) = image_hw, load_hw

    def index(n_pixels: int, n_load: int, n_tokens: int) -> np.ndarray:
        centre = (np.arange(n_pixels) + 0.5) * n_load / n_pixels - 0.5
        return np.clip(np.rint((centre - (patch - 1) / 2) / stride), 0, n_tokens - 1).astype(np.int64)

    return grid[index(h, lh, gh)[:, None], index(w, lw, gw)[None, :]]


def grabcut_refine(image: np.ndarray, coarse: np.ndarray, erode: int, iterations: int = 5,
                   seed: int = 0) -> tuple[np.ndarray, bool]:
    """(mask, refined): GrabCut seeded by the eroded mask and the eroded background.

    Without sure foreground or sure background pixels GrabCut has no colour model to fit; the
    coarse mask is then returned with refined=False.
    """
    coarse = np.asarray(coarse, dtype=bool)
    kernel = np.ones((erode, erode), np.uint8)
    sure_fg = cv2.erode(coarse.astype(np.uint8), kernel).astype(bool)
    sure_bg = cv2.erode((~coarse).astype(np.uint8), kernel).astype(bool)
    if iterations == 0 or not sure_fg.any() or not sure_bg.any():
        return coarse.copy(), False
    state = np.full(coarse.shape, cv2.GC_PR_FGD, np.uint8)
    state[sure_bg] = cv2.GC_BGD
    state[sure_fg] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(int(seed) % 2**31)  # GrabCut's GMM initialisation draws from OpenCV's RNG
    cv2.grabCut(np.ascontiguousarray(image, dtype=np.uint8), state, None, bgd, fgd, iterations,
                cv2.GC_INIT_WITH_MASK)
    return (state == cv2.GC_FGD) | (state == cv2.GC_PR_FGD), True
