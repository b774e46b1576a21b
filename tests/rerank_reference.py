"""Plain NumPy references of the re-rankers, one query at a time, written from the papers.

Independent of the TF code on purpose: loops over queries and slots, float64, no shared helpers.
"""

from __future__ import annotations

import numpy as np


def mmr(scores, sim, lam, k):
    """Carbonell & Goldstein's MMR for one query; ``sim`` is the [N, N] similarity."""
    picked = []
    for _ in range(k):
        best, best_value = None, -np.inf
        for i in range(len(scores)):
            if i in picked:
                continue
            penalty = max(sim[i, j] for j in picked) if picked else 0.0
            value = lam * scores[i] - (1 - lam) * penalty
            if value > best_value:
                best, best_value = i, value
        picked.append(best)
    return picked


def cosine(embeddings):
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return unit @ unit.T


def dpp(scores, embeddings, theta, k, eps=1e-6):
    """Chen, Zhang & Zhou 2018, Algorithm 1 on L = Diag(r) S Diag(r), r = exp(alpha s); then
    the most relevant remaining items once every gain is <= eps."""
    alpha = theta / (2 * (1 - theta))
    r = np.exp(alpha * (scores - scores.max()))
    kernel = r[:, None] * cosine(embeddings) * r[None, :]
    n = len(scores)
    c = np.zeros((k, n))
    d2 = np.diag(kernel).copy()
    picked: list[int] = []
    while len(picked) < k:
        gains = np.where(np.isin(np.arange(n), picked), -np.inf, d2)
        j = int(np.argmax(gains))
        if gains[j] <= eps:
            break
        picked.append(j)
        t = len(picked) - 1
        e = (kernel[j] - c[:t, j] @ c[:t]) / np.sqrt(d2[j])
        c[t] = e
        d2 = d2 - e ** 2
    rest = [i for i in np.argsort(-scores, kind="stable") if i not in picked]
    return picked + rest[: k - len(picked)]


def calibrated(scores, groups, target, lam, k, a=0.01):
    """Steck 2018's greedy calibration: maximise (1 - lam) sum s - lam KL(p || (1-a) q + a p)."""
    p = np.asarray(target, float) / np.sum(target)
    picked: list[int] = []
    for _ in range(k):
        best, best_value = None, -np.inf
        for i in range(len(scores)):
            if i in picked:
                continue
            members = picked + [i]
            q = np.bincount(groups[members], minlength=len(p)) / len(members)
            q = (1 - a) * q + a * p
            kl = sum(pg * np.log(pg / qg) for pg, qg in zip(p, q) if pg > 0)
            value = (1 - lam) * sum(scores[m] for m in members) - lam * kl
            if value > best_value:
                best, best_value = i, value
        picked.append(best)
    return picked
