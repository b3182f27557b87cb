"""Statistics of the entries against sqrt(log n) and a Gaussian of the same variance."""

from __future__ import annotations

import math

import numpy as np
import torch


def gaussian_abs_tail(t: float, mean: float, std: float) -> float:
    """``P(|X| > t)`` for ``X ~ N(mean, std^2)`` (two-sided, t >= 0); a point mass when ``std == 0``."""
    if std <= 0:
        return float(abs(mean) > t)
    s = std * math.sqrt(2.0)
    return 0.5 * math.erfc((t - mean) / s) + 0.5 * math.erfc((t + mean) / s)


def subgaussian_variance_proxy(
    y: torch.Tensor, std: float, *, num_lambdas: int = 20, lambda_max_std: float | None = None,
    chunk: int = 1 << 16,
) -> tuple[float, float, float]:
    """Empirical sub-Gaussian variance proxy of CENTRED entries ``y`` (any shape; see the module docstring).

    Returns ``(var_proxy, lambda_star_std, lambda_max_std)``: ``max_l 2 log mean(exp(l y)) / l^2`` over the grid
    ``l = +-c/std``, ``c in (0, lambda_max_std]`` (``num_lambdas`` evenly spaced per sign, default ``c_max =
    clip(sqrt(ln N / 2), 1, 4)``), the maximising ``l * std`` (signed) and the ``c_max`` used. float64, exact
    log-sum-exp shift (``l * max y`` or ``l * min y``), memory ``O(num_lambdas * chunk)``.
    """
    y = y.reshape(-1).to(torch.float64)
    n = y.numel()
    if n == 0 or not std > 0:
        return 0.0, 0.0, 0.0
    c_max = lambda_max_std if lambda_max_std is not None else min(4.0, max(1.0, math.sqrt(math.log(n) / 2)))
    c = torch.linspace(c_max / num_lambdas, c_max, num_lambdas, dtype=torch.float64)
    lam = torch.cat([-c.flip(0), c]) / std
    # exact log-sum-exp shift: l * y_i - max_i(l * y_i) = l * (y_i - max y) for l > 0, l * (y_i - min y) for l < 0
    ymax, ymin = float(y.max()), float(y.min())
    sums = []
    for lam_side, ref in ((lam[:num_lambdas], ymin), (lam[num_lambdas:], ymax)):
        acc = torch.zeros(num_lambdas, dtype=torch.float64)
        for part in (y - ref).split(chunk):
            acc += torch.outer(lam_side, part).exp_().sum(dim=1)
        sums.append(acc.log() + lam_side * ref)
    phi = torch.cat(sums) - math.log(n)
    ratio = 2.0 * phi / lam.square()
    i = int(torch.argmax(ratio))
    return float(ratio[i]), float(lam[i] * std), float(c_max)


def _safe_ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return math.nan if a == 0 else math.inf


def entry_statistics(x: torch.Tensor | np.ndarray, n: int, *, lambda_max_std: float | None = None) -> dict:
    """Statistics of the entries ``x`` (any shape, flattened, computed in float64) against ``sqrt(ln n)``.

    Keys: ``count``, ``n``, ``sqrt_ln_n``, ``mean``, ``std`` (population), ``skewness``, ``excess_kurtosis`` (0 for a
    Gaussian), ``frac_gt_sqrt_ln_n`` = mean(|x| > sqrt(ln n)) and ``gauss_frac_gt_sqrt_ln_n`` = P(|X| > sqrt(ln n))
    for ``X ~ N(mean, std^2)``, ``frac_gt_3std`` / ``frac_gt_4std`` = mean(|x - mean| > 3 / 4 std) and their Gaussian
    values, the ``tail_ratio_*`` (empirical / Gaussian), ``max_abs``, ``max_abs_over_sqrt_ln_n``, ``abs_q999`` (the
    99.9 % quantile of |x|), ``var_proxy`` / ``var_proxy_ratio`` (proxy / variance) / ``var_proxy_lambda_std`` /
    ``var_proxy_lambda_max_std`` (see ``subgaussian_variance_proxy``). Empty input gives NaNs and count 0.
    """
    t = torch.as_tensor(x).reshape(-1).to(torch.float64)
    count = t.numel()
    thr = math.sqrt(math.log(n)) if n >= 1 else math.nan
    out = {"count": count, "n": int(n), "sqrt_ln_n": thr}
    keys = ("mean std skewness excess_kurtosis frac_gt_sqrt_ln_n gauss_frac_gt_sqrt_ln_n tail_ratio_sqrt_ln_n "
            "frac_gt_3std gauss_frac_gt_3std tail_ratio_3std frac_gt_4std gauss_frac_gt_4std max_abs "
            "max_abs_over_sqrt_ln_n abs_q999 var_proxy var_proxy_ratio var_proxy_lambda_std "
            "var_proxy_lambda_max_std").split()
    if count == 0:
        return {**out, **{k: math.nan for k in keys}}
    mean = float(t.mean())
    d = t - mean
    d2 = d.square()
    m2 = float(d2.mean())
    std = math.sqrt(m2)
    m3 = float((d2 * d).mean())
    m4 = float(d2.square().mean())
    absx = t.abs()
    absd = d.abs()
    frac_thr = float((absx > thr).double().mean())
    g_thr = gaussian_abs_tail(thr, mean, std)
    frac3 = float((absd > 3 * std).double().mean()) if std > 0 else 0.0
    frac4 = float((absd > 4 * std).double().mean()) if std > 0 else 0.0
    g3, g4 = math.erfc(3 / math.sqrt(2)), math.erfc(4 / math.sqrt(2))
    max_abs = float(absx.max())
    k999 = max(1, min(count, math.ceil(0.999 * count)))
    q999 = float(torch.kthvalue(absx, k999).values)
    proxy, lam_star, c_max = subgaussian_variance_proxy(d, std, lambda_max_std=lambda_max_std)
    del d, d2, absx, absd
    out.update(
        mean=mean,
        std=std,
        skewness=m3 / m2**1.5 if m2 > 0 else math.nan,
        excess_kurtosis=m4 / m2**2 - 3.0 if m2 > 0 else math.nan,
        frac_gt_sqrt_ln_n=frac_thr,
        gauss_frac_gt_sqrt_ln_n=g_thr,
        tail_ratio_sqrt_ln_n=_safe_ratio(frac_thr, g_thr),
        frac_gt_3std=frac3,
        gauss_frac_gt_3std=g3,
        tail_ratio_3std=_safe_ratio(frac3, g3),
        frac_gt_4std=frac4,
        gauss_frac_gt_4std=g4,
        max_abs=max_abs,
        max_abs_over_sqrt_ln_n=_safe_ratio(max_abs, thr),
        abs_q999=q999,
        var_proxy=proxy,
        var_proxy_ratio=_safe_ratio(proxy, m2),
        var_proxy_lambda_std=lam_star,
        var_proxy_lambda_max_std=c_max,
    )
    return out


def deterministic_subsample(x: torch.Tensor, k: int, seed: int = 0) -> np.ndarray:
    """At most ``k`` entries of ``x`` (flattened) as float64 numpy; the same ``(x, k, seed)`` gives the same draw."""
    flat = x.reshape(-1)
    if flat.numel() <= k:
        return flat.to(torch.float64).numpy().copy()
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(flat.numel(), generator=g)[:k]
    return flat[idx].to(torch.float64).numpy()


