"""Support-basis hybrid attention (Aliakbarpour, Braverman, Yin, Zhang; arXiv 2510.01643): the op.

Softmax attention whose largest and smallest scores are weighted exactly with ``exp`` and whose dense middle is
weighted by a low-degree Chebyshev approximation of ``exp``. This file holds the contract (``hybrid_attention``'s
docstring), the dispatch to a kernel, the chunking with its workspace, the thresholds and the torch kernel; its
siblings hold the knobs (``configuration_llada``), the fit of ``exp`` (``hybrid_fit``), masks and the sample of
score positions (``hybrid_sample``), the native CPU kernel (``hybrid_native``) and the fused GPU kernel
(``hybrid_triton``). It ships inside the self-contained ``LLaDA-8B-Instruct-BS`` model directory and is the one op
used by the model, by the transformers attention backend and by the benchmarks; the float64 reference the tests
hold it to is ``support_basis.reference``.

    hybrid_attention     the op (chunked, sync-free, bounded memory), kernel chosen by ``kernel=``
    hybrid_thresholds    the per-head thresholds the op uses (for tests and analysis)
    select_kernel        which kernel ``kernel="auto"`` (or a named one) runs for given inputs
"""

from __future__ import annotations

import math
import numbers
import threading
import warnings

import torch
import torch.fx.experimental._config  # noqa: F401  (use_duck_shape, see _compiled_kernel)
import torch.nn.functional as F

from .configuration_llada import (
    DEFAULT_EXACT_SPLIT,
    DEFAULT_FIT,
    DEFAULT_KERNEL,
    DEFAULT_NUM_SAMPLES,
    FITS,
    KERNELS,
    MAX_CHEBYSHEV_DEGREE,
    validate_chebyshev_degree,
    validate_exact_ratio,
    validate_exact_split,
    validate_fit,
    validate_kernel,
    validate_num_samples,
)
from .hybrid_constants import (
    HORNER_MAX_DEGREE,
    INTERVAL_MIN_HALF,
    INTERVAL_PAD,
    ROW_SCALE_CAP,
    WEIGHT_FLOOR,
)
from .hybrid_fit import evaluation_coefficients, fit_chebyshev, fit_empirical
from .hybrid_native import native_attention, native_error, native_library, native_thresholds
from .hybrid_sample import MASKED_BIAS, SamplePlan, prepare_mask
from .hybrid_triton import interpreted, triton_attention, triton_error

__all__ = [
    "hybrid_attention",
    "hybrid_thresholds",
    "select_kernel",
    "validate_exact_ratio",
    "validate_chebyshev_degree",
    "validate_num_samples",
    "validate_exact_split",
    "validate_fit",
    "validate_kernel",
    "DEFAULT_NUM_SAMPLES",
    "DEFAULT_EXACT_SPLIT",
    "DEFAULT_FIT",
    "DEFAULT_KERNEL",
    "FITS",
    "KERNELS",
    "MAX_CHEBYSHEV_DEGREE",
    "MASKED_BIAS",
]

# Scores materialised per chunk of (batch, head) pairs, and per row block handed to the torch kernels, in elements,
# per (device, kernel). CPU: 64 MB of fp32 scores per chunk for the native and the compiled kernel, processed whole:
# each chunk costs a few multi-threaded regions (two matmuls, the kernel), and where the cores are shared each
# region can wait a scheduler time slice for its threads, so fewer, larger chunks win (interleaved runs at L = 1024
# on the 2-core EPYC with other jobs running: 1.33x SDPA with 64 MB chunks, 1.64x with 16 MB, 5.2x with 4 MB).
# The eager torch kernel materialises ~7 block-sized temporaries: 16 MB chunks, 1 MB blocks. GPU: 1 GB chunks
# processed whole, so a forward launches a few kernels per layer.
_BUDGETS = {
    ("cpu", "native"): (1 << 24, 1 << 24),
    ("cpu", "compiled"): (1 << 24, 1 << 24),
    ("cpu", "eager"): (1 << 22, 1 << 18),
    ("gpu", "compiled"): (1 << 28, 1 << 28),
    ("gpu", "eager"): (1 << 28, 1 << 28),
}


def _compute_dtype(query: torch.Tensor) -> torch.dtype:
    """Scores and weights are fp32 for fp32/bf16/fp16 inputs; float64 inputs keep float64 (for references)."""
    return torch.float64 if query.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------------------------
# The fast op
# ----------------------------------------------------------------------------------------------------------------


def _check_inputs(query, key, value, exact_ratio, chebyshev_degree, num_samples, exact_split, fit,
                  kernel=DEFAULT_KERNEL, mask=None, scaling=None):
    """The op's argument checks: scalar knobs through their one validator each (``configuration_llada``), then
    shapes, dtypes, devices and ``scaling``. A few microseconds per call, nothing that reads a tensor's data (so a
    NaN in the inputs is not refused: it reaches the output where SDPA's would, see the contract)."""
    if isinstance(exact_ratio, bool) or not isinstance(exact_ratio, numbers.Real) or not exact_ratio >= 0:
        raise ValueError(f"exact_ratio must be a number >= 0 (>= 1 means exact attention); got {exact_ratio!r}")
    validate_chebyshev_degree(chebyshev_degree, "chebyshev_degree")
    validate_num_samples(num_samples, "num_samples")
    validate_exact_split(exact_split, "exact_split")
    validate_fit(fit, "fit")
    validate_kernel(kernel, "kernel")
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(
            "query, key and value must be 4-D (B, H, L, D); got shapes "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    dtypes, devices = (query.dtype, key.dtype, value.dtype), (query.device, key.device, value.device)
    if not query.is_floating_point() or len(set(dtypes)) > 1:
        raise ValueError(f"query, key and value must share one floating dtype (fp32, bf16, fp16 or float64); got "
                         f"{', '.join(str(t).replace('torch.', '') for t in dtypes)}")
    if len(set(devices)) > 1 or (mask is not None and mask.device != query.device):
        raise ValueError(f"query, key, value and the mask must be on one device; got "
                         f"{', '.join(str(d) for d in devices + ((mask.device,) if mask is not None else ()))}")
    if query.shape[-1] == 0:
        raise ValueError(f"the head dimension must be at least 1; got shapes {tuple(query.shape)}")
    if scaling is not None and (isinstance(scaling, bool) or not isinstance(scaling, numbers.Real)
                                or not math.isfinite(scaling) or scaling <= 0):
        raise ValueError(f"scaling must be a finite number > 0 (default 1/sqrt(D)); got {scaling!r}")
    bq, h, _, d = query.shape
    bk, hkv, lk, dk = key.shape
    if (bk, hkv, lk) != tuple(value.shape[:3]) or bk != bq or dk != d:
        raise ValueError(
            f"incompatible shapes: query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
        )
    if hkv == 0 or h % hkv:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({hkv})")


def hybrid_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    exact_ratio: float,
    chebyshev_degree: int,
    scaling: float | None = None,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    exact_split: float = DEFAULT_EXACT_SPLIT,
    fit: str = DEFAULT_FIT,
    kernel: str = DEFAULT_KERNEL,
) -> torch.Tensor:
    """Support-basis hybrid softmax attention.

    Shapes: ``query (B, H, Lq, D)``, ``key (B, Hkv, Lk, D)``, ``value (B, Hkv, Lk, Dv)`` with ``H % Hkv == 0``
    (grouped heads share key/value head ``h // (H // Hkv)``). ``attention_mask`` is ``None``, boolean
    (True = attend) or an additive float bias, broadcastable to ``(B, H, Lq, Lk)``; a bias ``<= MASKED_BIAS``
    (``-inf``, ``finfo.min``) masks its pair. Returns ``(B, H, Lq, Dv)`` in ``query.dtype``; an empty batch or
    ``Lq = 0`` gives the empty result and ``Lk = 0`` zeros, as SDPA does.

    Contract, per (b, h) over the VALID scores ``s = scaling * q.k + bias`` only (masked pairs never take part):

    - of the ``n`` valid scores, the ``floor((1 - exact_split) * exact_ratio * n)`` smallest and the
      ``floor(exact_split * exact_ratio * n)`` largest get exact weights ``exp(s - c)`` (``exact_split = 0.5``,
      the default, is the paper's ``floor(exact_ratio / 2 * n)`` at each end); every other score gets
      ``max(p(s), 0)``, where ``p`` is a degree-``chebyshev_degree`` least-squares approximation of ``exp(s - c)``
      on the interval ``[lo, hi]`` spanned by that head's approximated scores. ``c`` is a per-row stabilising
      shift (the row maximum) that cancels in the normalisation. The interval's half-width is padded by 1e-5 of
      itself (so rounding never pushes its endpoints out) and floored at ``1e-6 * max(1, |mid|)`` (so a
      degenerate interval stays usable).
    - the fit: ``fit="chebyshev"`` (default, the paper) is least squares on Chebyshev nodes of ``[lo, hi]``,
      i.e. uniform in the Chebyshev sense over the interval; ``fit="empirical"`` is least squares on the head's
      own sampled approximated scores (the sample below), so the polynomial is accurate where the head's scores
      actually lie, plus ``1e-6`` times the Chebyshev-norm distance to ``exp`` (which keeps it well posed; a
      head without approximated scores gets the paper's fit).
    - the polynomial is evaluated in fp32 with Horner's rule (monomial basis of the interval mapped to [-1, 1])
      up to degree 8 and with Clenshaw's recurrence in the Chebyshev basis above: stable at every accepted
      degree (1 ... ``MAX_CHEBYSHEV_DEGREE``).
    - a NaN or ``+inf`` score (from q, k, the bias or ``scaling``'s product) makes its row's output NaN, as in
      SDPA, and a NaN or ``inf`` in v reaches every row that weighs it; other rows of the head keep a finite
      output (the head's interval, read from a sample that may hold the NaN, stays usable). Inputs must share
      one floating dtype and one device (``ValueError`` naming them); ``scaling`` must be finite and > 0.
    - rows are normalised to sum to 1; weights are never negative. If every weight of a row clamps to 0 (a
      polynomial <= 0 on all its scores) the row's approximated pairs share a tiny positive floor weight
      (``1e-30`` of the row scale) instead of dividing 0 by 0. Fully masked rows output 0.
    - ``exact_ratio >= 1`` is exact softmax attention (dispatched to ``scaled_dot_product_attention``);
      ``exact_ratio == 0`` approximates every score, on the exact ``[min, max]`` of each head's valid scores.
    - thresholds: the k-th smallest / largest values are read from a deterministic sample of
      ``M = num_samples`` score positions per (b, h), drawn on the grid of valid rows x valid columns by rank.
      When that grid has at most ``M`` cells it is enumerated evenly and the k-th values are exact; otherwise
      the sample is stratified (one jittered position per run of ``G / M`` consecutive cells) and the realised
      exact fraction has a standard deviation of about ``sqrt(exact_ratio * (1 - exact_ratio) / M)`` (0.0044
      at ratio 0.2 with the default ``M = 8192``; tested to stay within four of them). Padding a sequence
      inside a batch changes neither its sample nor its output.
    - scores and weights are fp32 whatever the input dtype (float64 inputs stay float64); no host
      synchronisation (no ``.item()``, no NumPy); polynomial coefficients are computed on the input's device.
    - autograd: gradients flow through every weight (exact and polynomial) and the values; the thresholds, the
      interval and the fit they define are treated as constants (a selection, like top-k), as in the reference.
    - memory: fp32 scores are materialised for a chunk of (batch, head) pairs at a time (64 MB on CPU, kept
      between calls per thread; 1 GB on GPU; at least one head: 256 MB at Lq = Lk = 8192), never as a full
      ``(B, H, Lq, Lk)`` tensor.
    - speed: ``kernel`` names what computes the weights; every kernel has the same definition (the torch kernel,
      ``_block_attention``) and is held to the float64 reference by the same tests. ``"triton"``: one fused
      kernel that streams key/value tiles and never materialises the scores (extra memory O(B H Lq); CUDA, or the
      CPU under ``TRITON_INTERPRET=1``; no autograd); its online form differs from the definition only in how a
      weight floored at 1e-30 is rescaled, which moves an output only in a row whose every weight is floored
      (``hybrid_triton``'s docstring). ``"native"``: a C kernel (CPU, fp32 scores, no autograd; built on first
      use with the system C compiler in about a second and cached: one pass over the scores, row by row);
      ``"compiled"``: ``torch.compile`` of the torch kernel (Triton on a GPU, C++ on a CPU: 20-40 s to build per
      process); ``"eager"``: plain torch (any device, float64, autograd). ``"auto"`` (default) picks per call,
      see ``select_kernel``. A named kernel that cannot run on the inputs raises ``ValueError`` saying why.
    """
    _check_inputs(query, key, value, exact_ratio, chebyshev_degree, num_samples, exact_split, fit, kernel,
                  attention_mask, scaling)
    b, h, lq, d = query.shape
    lk = key.shape[2]
    scale = 1.0 / math.sqrt(d) if scaling is None else float(scaling)
    if b * h * lq * lk == 0:  # nothing to attend to: SDPA's result (empty, or zeros for Lk = 0)
        return torch.zeros(b, h, lq, value.shape[-1], dtype=query.dtype, device=query.device)
    if exact_ratio >= 1:
        return _exact_attention(query, key, value, attention_mask, scale)
    mask, plan = _setup(query, key, attention_mask, num_samples)
    out = torch.empty(b, h, lq, value.shape[-1], dtype=query.dtype, device=query.device)
    # a float bias that requires grad takes part in autograd too (the scores depend on it)
    track = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (query, key, value, mask))
    kernel = select_kernel(kernel, query.device, _compute_dtype(query), track)
    if kernel == "triton":
        _triton_forward(query, key, value, mask, plan, scale, exact_ratio, exact_split, chebyshev_degree, fit, out)
        return out
    out_pairs = out.view(b * h, lq, -1)
    values_pairs = value.flatten(0, 1)
    for pairs, scores, kv_pairs, batch_ids, head_ids in _score_chunks(query, key, mask, scale, kernel):
        lo, hi, sample, taken = _chunk_thresholds(
            scores, *plan.for_pairs(batch_ids, head_ids), exact_ratio, exact_split, fit == "empirical",
            native=kernel == "native",
        )
        poly = _polynomial(lo, hi, chebyshev_degree, scores.dtype, fit, sample, taken)
        values = (values_pairs[pairs] if key.shape[1] == h else values_pairs.index_select(0, kv_pairs))
        values = values.to(scores.dtype)
        if kernel == "native":
            native_attention(scores, values, *poly, chebyshev_degree, chebyshev_degree > HORNER_MAX_DEGREE,
                             out_pairs[pairs])
            continue
        block = _compiled_kernel() if kernel == "compiled" else _block_attention
        hc, _, lk = scores.shape
        rows = max(1, min(lq, _budgets(query.device, kernel)[1] // (hc * lk)))
        for r0 in range(0, lq, rows):
            r1 = min(lq, r0 + rows)
            out_pairs[pairs, r0:r1] = block(scores[:, r0:r1], values, *poly, chebyshev_degree)
    return out


def hybrid_thresholds(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    exact_ratio: float,
    scaling: float | None = None,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    exact_split: float = DEFAULT_EXACT_SPLIT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-head interval ``(lo, hi)``, each ``(B, H)`` fp32, that ``hybrid_attention`` approximates on.

    Valid scores ``< lo`` or ``> hi`` are the exact ones. Same estimator, same chunking as the op.
    """
    _check_inputs(query, key, key, exact_ratio, 1, num_samples, exact_split, DEFAULT_FIT, mask=attention_mask,
                  scaling=scaling)
    b, h, lq, d = query.shape
    scale = 1.0 / math.sqrt(d) if scaling is None else float(scaling)
    lo = torch.zeros(b * h, dtype=_compute_dtype(query), device=query.device)
    hi = torch.zeros_like(lo)
    if b * h * lq * key.shape[2] == 0:
        return lo.view(b, h), hi.view(b, h)
    mask, plan = _setup(query, key, attention_mask, num_samples)
    for pairs, scores, _, batch_ids, head_ids in _score_chunks(query, key, mask, scale):
        plan_pairs = plan.for_pairs(batch_ids, head_ids)
        lo[pairs], hi[pairs] = _chunk_thresholds(scores, *plan_pairs, min(exact_ratio, 1.0), exact_split, False)[:2]
    return lo.view(b, h), hi.view(b, h)


def _setup(query, key, attention_mask, num_samples):
    """The prepared mask and the sample plan of one call (shared by the op and ``hybrid_thresholds``)."""
    shape = (query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    mask = prepare_mask(attention_mask, shape, _compute_dtype(query))
    return mask, SamplePlan(mask, shape, num_samples, query.device)


def _exact_attention(query, key, value, attention_mask, scale):
    """Exact softmax attention via SDPA. Float biases are normalised first (``<= MASKED_BIAS`` -> ``-inf``) so a
    fully masked row outputs 0, as it does for a boolean mask."""
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        shape = tuple(query.shape[:3]) + (key.shape[2],)
        attention_mask = prepare_mask(attention_mask, shape).to(query.dtype)
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=scale, enable_gqa=key.shape[1] != query.shape[1]
    )


def _budgets(device: torch.device, kernel: str) -> tuple[int, int]:
    """(score elements per chunk, weight elements per row block) for this device and kernel."""
    return _BUDGETS[("cpu" if device.type in ("cpu", "meta") else "gpu", kernel)]


def _score_chunks(query, key, mask, scale, kernel: str = "eager"):
    """Yield fp32 scores for chunks of (batch, head) pairs, with what each chunk needs.

    Pairs are flattened (``pair = b * H + h``) so that a chunk may span several sequences of a batch: the work per
    chunk (sampling, selection, the kernel launch) is then shared by a whole small batch. Yields
    ``(pairs: slice, scores (P, Lq, Lk), kv_pairs (P,), batch_ids (P,), head_ids (P,))``; ``kv_pairs`` index the
    flattened key/value pairs (grouped heads share theirs). Without autograd the scores are a contiguous buffer
    that the consumer may overwrite (the native kernel turns it into the weights in place).
    """
    b, h, lq, _ = query.shape
    hkv, lk = key.shape[1], key.shape[2]
    group = h // hkv
    compute = _compute_dtype(query)
    # one pair at least: a head's scores are needed whole to place its thresholds (64 MB at L = 4096)
    chunk = max(1, min(b * h, _budgets(query.device, kernel)[0] // max(1, lq * lk)))
    queries = query.flatten(0, 1)
    keys = key.flatten(0, 1)
    pair_ids = torch.arange(b * h, device=query.device)
    # one buffer for every chunk: a fresh allocation per chunk costs page faults comparable to the matmul itself
    # (only without autograd: a matmul into a preallocated `out=` cannot be differentiated)
    track = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (query, key, mask))
    buffer = None if track else _workspace(min(chunk, b * h), lq, lk, compute, query.device)
    for p0 in range(0, b * h, chunk):
        pairs = slice(p0, min(b * h, p0 + chunk))
        batch_ids = torch.div(pair_ids[pairs], h, rounding_mode="floor")
        head_ids = pair_ids[pairs] - batch_ids * h
        kv_pairs = batch_ids * hkv + torch.div(head_ids, group, rounding_mode="floor")
        q = queries[pairs].to(compute)
        k = (keys[pairs] if group == 1 else keys.index_select(0, kv_pairs)).to(compute)  # a view where possible
        out = {} if buffer is None else {"out": buffer[: q.shape[0]]}
        # the scale rides on the matmul (alpha): no scaled copy of q, no pass over the scores
        if mask is None or mask.dtype == torch.bool:
            if buffer is None:
                scores = torch.bmm(q * scale, k.transpose(1, 2))
            else:  # beta = 0: the buffer's old contents are ignored, NaN included
                scores = out["out"].baddbmm_(q, k.transpose(1, 2), beta=0.0, alpha=scale)
            if mask is not None:
                scores = scores.masked_fill_(~_rows_for_pairs(mask, batch_ids, head_ids), -math.inf)
        else:
            chunk_bias = _rows_for_pairs(mask, batch_ids, head_ids).expand(q.shape[0], lq, lk)
            scores = torch.baddbmm(chunk_bias, q, k.transpose(1, 2), alpha=scale, **out)
        yield pairs, scores, kv_pairs, batch_ids, head_ids


_WORKSPACE = threading.local()
_WORKSPACE_MAX = 1 << 24  # elements kept between calls, per thread (64 MB of fp32)


def _workspace(n: int, lq: int, lk: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised ``(n, Lq, Lk)`` buffer for the scores. On a CPU it is kept between calls (per thread, up
    to 64 MB): freshly allocated pages cost a page fault each, ~6 ms per call at L = 256 (as much as the whole
    weight computation). Elsewhere (the CUDA caching allocator already reuses memory) and above 64 MB, a fresh
    tensor."""
    numel = n * lq * lk
    if device.type != "cpu" or numel > _WORKSPACE_MAX:
        return torch.empty(n, lq, lk, dtype=dtype, device=device)
    cached = getattr(_WORKSPACE, "buffers", None)
    if cached is None:
        cached = _WORKSPACE.buffers = {}
    buffer = cached.get(dtype)
    if buffer is None or buffer.numel() < numel:
        buffer = cached[dtype] = torch.empty(numel, dtype=dtype)
    return buffer[:numel].view(n, lq, lk)


def _rows_for_pairs(mask: torch.Tensor, batch_ids: torch.Tensor, head_ids: torch.Tensor) -> torch.Tensor:
    """The rows ``(P or 1, Lq or 1, Lk or 1)`` of a broadcast mask ``(Bm, Hm, ., .)`` for the given pairs."""
    if mask.shape[0] == 1 and mask.shape[1] == 1:
        return mask[0]
    bi = batch_ids if mask.shape[0] > 1 else torch.zeros_like(batch_ids)
    hi = head_ids if mask.shape[1] > 1 else torch.zeros_like(head_ids)
    return mask[bi, hi]


def _chunk_thresholds(scores, flat, take, exact_ratio, exact_split, need_sample, native=False):
    """Per-head ``(lo, hi, sample, taken)`` for a chunk of scores ``(hc, Lq, Lk)`` with -inf at masked pairs.

    ``sample (hc, M)`` holds the sampled scores and ``taken (hc, M)`` (or None: all) which of them count; both
    are None when neither the thresholds nor the fit need them. ``native``: the order statistics come from the
    native kernel (same values). Nothing here is differentiated (see the op).
    """
    scores = scores.detach()
    hc = scores.shape[0]
    sample = taken = None
    if need_sample or (exact_ratio > 0 and not native):  # the native selection reads the scores itself
        sample = scores.reshape(hc, -1).gather(1, flat.expand(hc, -1))
        if take is not None:
            taken = take & (sample > -math.inf)  # non-rectangular masks: drop samples that landed on masked pairs
    if exact_ratio == 0:  # approximate everything: the interval is the exact range of the valid scores
        lo, hi = _score_range(scores)
    elif native:
        lo, hi = native_thresholds(scores, flat, take, (1.0 - exact_split) * exact_ratio, exact_split * exact_ratio)
    else:
        lo, hi = _sample_thresholds(sample, taken, exact_ratio, exact_split)
    return *_usable(lo, hi), sample, taken


def _usable(lo, hi):
    """``(lo, hi)`` with a fully masked head's infinite interval replaced by [0, 0]: any interval will do there."""
    empty = ~torch.isfinite(hi) | ~torch.isfinite(lo)
    return lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)


def _sample_thresholds(sample, taken, exact_ratio, exact_split):
    """Per row of ``sample (hc, M)``, the ``(floor(n q_lo) + 1)``-th smallest and ``(floor(n q_hi) + 1)``-th largest
    of the ``n`` taken entries (``taken`` None: all M), ``q_lo, q_hi`` the exact budget's two shares."""
    q_lo, q_hi = (1.0 - exact_split) * exact_ratio, exact_split * exact_ratio
    if taken is None:
        # no mask: all M samples count, the ranks are plain ints and quickselect is cheapest
        n = sample.shape[-1]
        lo = torch.kthvalue(sample, min(n, math.floor(n * q_lo) + 1), dim=-1).values
        hi = torch.kthvalue(sample, max(1, n - math.floor(n * q_hi)), dim=-1).values
        return lo, hi
    return _kth_smallest_taken(sample, taken, q_lo), -_kth_smallest_taken(-sample, taken, q_hi)


def _kth_smallest_taken(x: torch.Tensor, take: torch.Tensor, q: float) -> torch.Tensor:
    """Per row of ``x (P, M)``, the ``(r + 1)``-th smallest of the taken entries, ``r = floor(n_taken * q)``.

    The rank differs per row and lives on the device; one ``kthvalue`` with a fixed rank does it: untaken entries
    become ``+inf`` and each row gets ``r_max - r`` extra ``-inf`` entries in front (``r_max = floor(M q)``), so
    its ``(r_max + 1)``-th smallest is the wanted one. A row with nothing taken gives ``+inf``.
    """
    r_max = math.floor(x.shape[-1] * q)
    r = torch.floor(take.sum(-1, keepdim=True).double() * q).long()
    x = x.masked_fill(~take, math.inf)
    if r_max:
        front = torch.arange(r_max, device=x.device) < (r_max - r)
        x = torch.cat([x, torch.where(front, -math.inf, math.inf).to(x.dtype)], -1)
    return torch.kthvalue(x, r_max + 1, dim=-1).values


def _interval(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and half-width of the approximation interval ``[lo, hi]``.

    The half-width is padded by ``INTERVAL_PAD`` of itself so that rounding never pushes the endpoints (which
    are approximated by definition) out of the interval, and floored so that a degenerate interval stays usable.
    """
    mid = (lo + hi) * 0.5
    half = torch.maximum((hi - lo) * (0.5 * (1.0 + INTERVAL_PAD)), INTERVAL_MIN_HALF * mid.abs().clamp_min(1.0))
    return mid, half


def _polynomial(lo, hi, degree: int, dtype, fit: str = DEFAULT_FIT, sample=None, taken=None):
    """Per-head constants of the weight kernels, each shaped ``(hc, 1, 1)`` (``coef``: ``(hc, 1, degree + 1)``).

    ``t = alpha * s + beta`` maps the interval to [-1, 1]; ``p(t) ~= exp(s - top)`` on it, with ``coef`` in the
    basis the kernels evaluate (``_evaluation_coefficients``).
    """
    hc = lo.shape[0]
    mid, half = _interval(lo, hi)
    if fit == "empirical":
        t = (sample.double() - mid.double()[:, None]) / half.double()[:, None]
        inside = t.abs() <= 1.0
        c = fit_empirical(half, t.clamp(-1.0, 1.0), inside if taken is None else inside & taken, degree)
    else:
        c = fit_chebyshev(half, degree)
    coef = evaluation_coefficients(c, degree).to(dtype)
    alpha = (1.0 / half).view(hc, 1, 1)
    beta = (-mid / half).view(hc, 1, 1)
    top = (mid + half).view(hc, 1, 1)
    return alpha, beta, top, coef.view(hc, 1, degree + 1)


# ----------------------------------------------------------------------------------------------------------------
# The weight kernels: one definition (`_block_attention`), run eagerly or compiled, and its native CPU twin
# ----------------------------------------------------------------------------------------------------------------


def _evaluate(a: torch.Tensor, t: torch.Tensor, degree: int) -> torch.Tensor:
    """The polynomial with coefficients ``a (..., g+1)`` (see ``_evaluation_coefficients``) at ``t`` in [-1, 1]."""
    if degree <= HORNER_MAX_DEGREE:  # Horner, monomial basis
        p = a[..., degree:]
        for k in range(degree - 1, -1, -1):
            p = p * t + a[..., k : k + 1]
        return p
    t2 = t + t  # Clenshaw, Chebyshev basis: b_k = a_k + 2 t b_{k+1} - b_{k+2}; p = a_0 + t b_1 - b_2
    b1, b2 = a[..., degree:], 0.0
    for k in range(degree - 1, 0, -1):
        b1, b2 = t2 * b1 - b2 + a[..., k : k + 1], b1
    return t * b1 - b2 + a[..., :1]


def _block_attention(scores, values, alpha, beta, top, coef, degree: int):
    """Hybrid attention for a block of rows: ``scores (hc, R, Lk)`` (-inf = masked), ``values (hc, Lk, Dv)``.

    Returns the normalised output ``(hc, R, Dv)``. Per element: ``t = alpha * s + beta``; the pair is exact iff
    ``|t| > 1``; exact weight ``exp(s - m)`` with ``m`` the row max; approximated weight
    ``max(p(t) * exp(top - m), floor)``, the row factor folded into the coefficients. Rows without a valid
    pair have zero weights and output 0. This is the definition of the weights: it runs eagerly or compiled
    (one fused pass on CPU and GPU); ``hybrid_native`` computes the same in C.
    """
    row_max = scores.amax(-1, keepdim=True)
    row_max = torch.where(row_max == -math.inf, 0.0, row_max)
    t = scores * alpha + beta
    tc = t.clamp(-1.0, 1.0)
    p = _evaluate(coef * torch.exp((top - row_max).clamp_max(ROW_SCALE_CAP)), tc, degree)
    weights = torch.where(t != tc, torch.exp(scores - row_max), p.clamp_min(WEIGHT_FLOOR))
    row_sums = weights.sum(-1, keepdim=True)
    return torch.bmm(weights, values) / row_sums.clamp_min(torch.finfo(weights.dtype).tiny)


def select_kernel(kernel: str, device: torch.device, compute_dtype: torch.dtype, track_grad: bool) -> str:
    """The kernel that computes the weights: ``"triton"``, ``"native"``, ``"compiled"`` or ``"eager"``.

    ``kernel="auto"``: on CUDA the fused Triton kernel for fp32 scores without autograd where Triton imports, else
    ``torch.compile`` (Triton fuses the block in seconds); on a CPU the native kernel for fp32 scores (fp32, bf16
    and fp16 inputs) without autograd (built once per machine in about a second; where it cannot be built, one
    warning and eager torch), else eager torch. A named kernel runs as named; ``"triton"`` and ``"native"`` raise
    ``ValueError`` for inputs they cannot compute and ``RuntimeError`` where they cannot run here. Inside a
    ``torch.compile``-d caller every kernel is the eager definition, which the caller traces.
    """
    if torch.compiler.is_compiling():
        return "eager"
    plain = compute_dtype == torch.float32 and not track_grad
    if kernel == "triton":
        if not plain or (device.type != "cuda" and not (device.type == "cpu" and interpreted())):
            raise _cannot("triton", "on CUDA (or on the CPU under TRITON_INTERPRET=1)", device, compute_dtype,
                          track_grad, "'auto'")
        if triton_error():
            raise RuntimeError(f"kernel 'triton': {triton_error()}; pip install triton, or use kernel 'auto'")
        return "triton"
    if kernel == "native":
        if device.type != "cpu" or not plain:
            raise _cannot("native", "on the CPU", device, compute_dtype, track_grad, "'auto' or 'eager'")
        if native_library() is None:
            raise RuntimeError(f"kernel 'native': the native CPU kernel could not be built "
                               f"({native_error()}); install a C compiler (cc) or use kernel 'auto'")
        return "native"
    if kernel != "auto":
        return kernel
    if device.type == "cuda":
        return "triton" if plain and not triton_error() else "compiled"
    if device.type == "cpu" and plain and native_library() is not None:
        return "native"
    return "eager"


def kernel_problem(kernel: str, device_type: str) -> str:
    """Why a named ``kernel`` cannot run on ``device_type`` ("cpu", "cuda") in this process, in one sentence ending
    with what to do; empty when it can (``auto`` and the torch kernels always can). For command lines, which check
    a ``--kernel`` before loading a model; builds the native kernel (about a second, once per machine)."""
    if kernel == "native":
        if device_type != "cpu":
            return "kernel 'native' runs on the CPU; use kernel 'auto' on a GPU"
        with warnings.catch_warnings():  # the reason is this function's answer, not a warning besides it
            warnings.simplefilter("ignore", RuntimeWarning)
            built = native_library()
        if built is None:
            return (f"kernel 'native': the native CPU kernel could not be built ({native_error()}); install a C "
                    "compiler (cc, or set CC), or use kernel 'auto'")
    if kernel == "triton":
        if triton_error():
            return f"kernel 'triton': {triton_error()}; pip install triton, or use kernel 'auto'"
        if device_type != "cuda" and not interpreted():
            return "kernel 'triton' runs on CUDA (or on the CPU under TRITON_INTERPRET=1); use kernel 'auto'"
    return ""


def _cannot(kernel, where, device, compute_dtype, track_grad, instead) -> ValueError:
    """The error for a named kernel given inputs it cannot compute, saying what it takes and what came."""
    return ValueError(f"kernel '{kernel}' runs {where} for fp32/bf16/fp16 inputs without autograd; got a "
                      f"{device.type} device, {'float64' if compute_dtype == torch.float64 else 'fp32'} scores"
                      f"{', autograd' if track_grad else ''}: use kernel {instead}")


def _triton_forward(query, key, value, mask, plan, scale, exact_ratio, exact_split, degree, fit, out):
    """The op with the fused kernel: per chunk of (batch, head) pairs, the sampled scores alone (``M`` per head,
    never the score matrix) give the thresholds and the fit; then one launch over every pair writes ``out``."""
    b, h, lq, d = query.shape
    hkv, lk = key.shape[1], key.shape[2]
    group = h // hkv
    queries, keys = query.flatten(0, 1), key.flatten(0, 1)
    alpha = torch.empty(b * h, dtype=torch.float32, device=query.device)
    beta, top = torch.empty_like(alpha), torch.empty_like(alpha)
    coef = torch.empty(b * h, degree + 1, dtype=torch.float32, device=query.device)
    pair_ids = torch.arange(b * h, device=query.device)
    # gathered rows of q and k for the sample: (pairs, M, D) each, 64 MB of fp32 per chunk (at least one pair)
    samples = plan.flat.shape[-1]
    chunk = max(1, (1 << 24) // max(1, samples * d))
    for p0 in range(0, b * h, chunk):
        pairs = slice(p0, min(b * h, p0 + chunk))
        batch_ids = torch.div(pair_ids[pairs], h, rounding_mode="floor")
        head_ids = pair_ids[pairs] - batch_ids * h
        kv_pairs = batch_ids * hkv + torch.div(head_ids, group, rounding_mode="floor")
        flat, take = plan.for_pairs(batch_ids, head_ids)
        flat = flat.expand(len(batch_ids), -1)
        rows, cols = torch.div(flat, lk, rounding_mode="floor"), flat % lk
        q = queries[pairs].float().gather(1, rows[..., None].expand(-1, -1, d))
        k = keys.index_select(0, kv_pairs).float().gather(1, cols[..., None].expand(-1, -1, d))
        sample = (q * k).sum(-1) * scale
        if mask is not None:  # the mask at the sampled pairs, read through its broadcast dims (never expanded)
            bi = batch_ids[:, None] if mask.shape[0] > 1 else 0
            hi_ = head_ids[:, None] if mask.shape[1] > 1 else 0
            m = mask[bi, hi_, rows if mask.shape[2] > 1 else 0, cols if mask.shape[3] > 1 else 0]
            sample = sample.masked_fill(~m, -math.inf) if m.dtype == torch.bool else sample + m
        taken = None if take is None else take & (sample > -math.inf)
        if exact_ratio == 0:
            lo, hi = _valid_range(queries[pairs], keys.index_select(0, kv_pairs), mask, batch_ids, head_ids, scale)
        else:
            lo, hi = _sample_thresholds(sample, taken, exact_ratio, exact_split)
        lo, hi = _usable(lo, hi)
        a, bt, tp, c = _polynomial(lo, hi, degree, torch.float32, fit, sample, taken)
        alpha[pairs], beta[pairs], top[pairs], coef[pairs] = a.flatten(), bt.flatten(), tp.flatten(), c[:, 0]
    triton_attention(query, key, value, mask, alpha, beta, top, coef, degree, scale, out)


def _valid_range(q, k, mask, batch_ids, head_ids, scale):
    """Per pair, the smallest and largest valid score of ``q (P, Lq, D)`` against ``k (P, Lk, D)``, in row blocks
    of at most 16M scores (the ratio-0 interval, without the score matrix)."""
    lq, lk = q.shape[1], k.shape[1]
    lo = torch.full((q.shape[0],), math.inf, device=q.device)
    hi = torch.full_like(lo, -math.inf)
    rows = max(1, (1 << 24) // max(1, q.shape[0] * lk))
    for r0 in range(0, lq, rows):
        s = torch.bmm(q[:, r0 : r0 + rows].float(), k.float().transpose(1, 2)) * scale
        if mask is not None:
            m = _rows_for_pairs(mask, batch_ids, head_ids)
            m = m[:, r0 : r0 + rows] if m.shape[1] > 1 else m
            s = s.masked_fill(~m, -math.inf) if m.dtype == torch.bool else s + m
        block_lo, block_hi = _score_range(s)
        lo, hi = torch.minimum(lo, block_lo), torch.maximum(hi, block_hi)
    return lo, hi


def _score_range(scores):
    """Per pair of ``scores (P, R, Lk)`` (-inf at masked pairs), the smallest and largest valid score (+inf and
    -inf where there is none)."""
    return scores.masked_fill(scores == -math.inf, math.inf).amin(dim=(1, 2)), scores.amax(dim=(1, 2))


_COMPILED = {}


def _compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "torch.compile could not build the kernel" (a missing C++ compiler or Triton, an
    unsupported graph): only these fall back to eager. An error of the kernel itself (out of memory, a bad input)
    is not one of them and keeps its traceback."""
    import torch._dynamo.exc as dynamo_exc
    import torch._inductor.exc as inductor_exc

    names = ("CppCompileError", "CUDACompileError")
    return (dynamo_exc.BackendCompilerFailed,) + tuple(getattr(inductor_exc, n) for n in names
                                                        if hasattr(inductor_exc, n))


def _compiled_kernel():
    """``_block_attention`` compiled with ``torch.compile`` (once per process); a failed compilation warns once
    and falls back to the identical eager definition."""
    if "fn" not in _COMPILED:
        compiled = torch.compile(_block_attention, dynamic=True)

        def run(*args):
            if "failed" in _COMPILED:
                return _block_attention(*args)
            try:
                # no "duck sizing": equal sizes in one block (e.g. 32 heads x 32 rows) must not specialise the kernel
                with torch.fx.experimental._config.patch(use_duck_shape=False):
                    return compiled(*args)
            except _compile_errors() as err:  # no C++ compiler / Triton: the eager definition computes the same
                _COMPILED["failed"] = err
                warnings.warn(
                    f"hybrid_attention: torch.compile failed ({type(err).__name__}: {err}); using eager torch, "
                    "which is several times slower. Set hybrid_kernel=\"eager\" to skip the attempt.",
                    RuntimeWarning,
                )
                return _block_attention(*args)

        _COMPILED["fn"] = run
    return _COMPILED["fn"]

