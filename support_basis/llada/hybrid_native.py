"""The native CPU kernel of the support-basis hybrid attention: its C source, and building, caching and loading it.

The C source computes the same weights as the torch kernel (``hybrid_attention._block_attention``), row by row in
one pass over the scores, in place, and the order statistics the thresholds need. It is plain C (no torch headers),
built on first use with the system C compiler in about a second, cached per machine by a hash of the source, the
compiler, the flags and the CPU, and loaded with ctypes. Part of the self-contained model directory: no import of
its siblings but the weight rule's constants (``hybrid_constants``), no transformers.

    native_library()       the loaded library, or None (one warning) where it cannot be built
    native_attention()     weights and output of a chunk of scores (the torch kernel's definition)
    native_thresholds()    the per-head k-th smallest / largest sampled scores
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

from .hybrid_constants import FP32_TINY, ROW_SCALE_CAP, WEIGHT_FLOOR

# The native CPU kernel: `_block_attention`'s weights, row by row in one pass over the scores, written in place.
# Plain C (no torch headers), so the system compiler builds it in well under a second; written with GCC/Clang
# vector types (16 floats per operation, whatever the CPU's vector width) and split over torch's number of
# threads with pthreads. Its `exp` (Cephes' single-precision polynomial, x <= 0 only) needs no library call.
# Measured on the 2-core EPYC: 1.1 ns per score and thread (auto-vectorised scalar C took 7-12 ns).
SOURCE = f"""
#define WEIGHT_FLOOR {WEIGHT_FLOOR!r}f
#define ROW_SCALE_CAP {ROW_SCALE_CAP!r}f
#define FP32_TINY {FP32_TINY!r}f
""" + r"""
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- a parallel loop that never waits for a thread that has not started ----
   Units are claimed one at a time from a shared counter by the calling thread and by up to threads - 1 detached
   helpers. On a busy machine a helper may get a core late or never: the caller then does its share, and waits
   only for units a helper has claimed. The shared state lives on the heap and is freed by its last user. */

typedef void (*unit_fn)(const void *args, long unit);

typedef struct {
    unit_fn fn;
    const void *args;
    long units;
    atomic_long next, done;
    atomic_int users;
} loop_t;

static void run_units(loop_t *L) {
    long u;
    while ((u = atomic_fetch_add(&L->next, 1)) < L->units) {
        L->fn(L->args, u);
        atomic_fetch_add(&L->done, 1);
    }
}

static void release(loop_t *L) {
    if (atomic_fetch_sub(&L->users, 1) == 1) free(L);
}

static void *helper(void *arg) {
    run_units((loop_t *)arg);
    release((loop_t *)arg);
    return 0;
}

static void parallel_for(unit_fn fn, const void *args, long units, int threads) {
    loop_t *L = (loop_t *)malloc(sizeof *L);
    if (!L) {
        for (long u = 0; u < units; u++) fn(args, u);
        return;
    }
    L->fn = fn;
    L->args = args;
    L->units = units;
    atomic_init(&L->next, 0);
    atomic_init(&L->done, 0);
    atomic_init(&L->users, 1);
    if (threads > units) threads = (int)units;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 1; i < threads; i++) {
        pthread_t tid;
        atomic_fetch_add(&L->users, 1);
        if (pthread_create(&tid, &attr, helper, L) != 0) atomic_fetch_sub(&L->users, 1);
    }
    pthread_attr_destroy(&attr);
    run_units(L);
    while (atomic_load(&L->done) < units) sched_yield(); /* units a helper claimed and is finishing */
    release(L);
}

/* ---- weights ---- */

/* GCC/Clang vector extensions: 16 floats per operation (one AVX-512 register; the compiler splits it where the
   CPU has narrower vectors). */
typedef float vf __attribute__((vector_size(64), aligned(4)));
typedef int32_t vi __attribute__((vector_size(64), aligned(4)));
#define LANES 16

static inline vf splat(float x) { return (vf){0} + x; }
static inline vf blend(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }
static inline vf vmax(vf a, vf b) { return blend(a > b, a, b); }

/* exp(x) for x <= 0 (x may be -inf), within 2 ulp (Cephes' expf polynomial); below -87 the result is 0 (such a
   weight vanishes in an fp32 row sum whose largest term is 1). Rounds with the 1.5 * 2^23 shifter: no floor. */
static inline vf exp_nonpositive(vf x) {
    const vf xc = vmax(x, splat(-87.0f));
    const vf z = xc * 1.44269504088896341f + 12582912.0f;
    const vf n = z - 12582912.0f;
    vf r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const vi two_n = (((vi)z - 0x4B400000) + 127) << 23;
    return (vf)(~(x < -87.0f) & (vi)(p * (vf)two_n));
}

/* The weights of 16 scores x of a row with maximum m (see _block_attention). */
static inline __attribute__((always_inline)) vf strip_weights(vf x, float m, vf al, vf be, const float *c, int g,
                                                          int clenshaw, float scale) {
    const vf one = splat(1.0f);
    const vf t = x * al + be;
    const vf tc = blend(t < -1.0f, -one, blend(t > 1.0f, one, t));
    vf q;
    if (!clenshaw) { /* Horner, monomial coefficients */
        q = splat(c[g]);
        for (int k = g - 1; k >= 0; k--) q = q * tc + c[k];
    } else { /* Clenshaw, Chebyshev coefficients */
        const vf t2 = tc + tc;
        vf b1 = splat(c[g]), b2 = splat(0.0f);
        for (int k = g - 1; k >= 1; k--) {
            const vf b0 = t2 * b1 - b2 + c[k];
            b2 = b1;
            b1 = b0;
        }
        q = tc * b1 - b2 + c[0];
    }
    q = q * scale;
    return blend(t != tc, exp_nonpositive(x - m), vmax(q, splat(WEIGHT_FLOOR)));
}

typedef struct {
    float *s;
    const float *alpha, *beta, *top, *coef;
    long lq, lk;
    int degree, clenshaw;
} weights_t;

static void weights_row(const void *args, long row) {
    const weights_t *J = (const weights_t *)args;
    const long lk = J->lk, p = row / J->lq;
    const int g = J->degree;
    float *s = J->s + row * lk;
    vf vmx = splat(-INFINITY);
    vi bad = (vi){0}; /* a NaN or +inf score: softmax of the row is NaN, as SDPA gives it */
    for (long j0 = 0; j0 < lk; j0 += LANES) {
        const long n = lk - j0 < LANES ? lk - j0 : LANES;
        vf x = splat(-INFINITY);
        memcpy(&x, s + j0, (size_t)n * sizeof(float));
        vmx = vmax(vmx, x);
        bad |= (x != x) | (x == splat(INFINITY));
    }
    float m = -INFINITY;
    int poisoned = 0;
    for (int i = 0; i < LANES; i++) {
        m = vmx[i] > m ? vmx[i] : m;
        poisoned |= bad[i];
    }
    if (poisoned) { /* the corruption reaches the output: NaN weights, NaN row */
        for (long j = 0; j < lk; j++) s[j] = NAN;
        return;
    }
    if (m == -INFINITY) { /* a fully masked row: zero weights, output 0 */
        memset(s, 0, (size_t)lk * sizeof *s);
        return;
    }
    const float d = J->top[p] - m, scale = expf(d < ROW_SCALE_CAP ? d : ROW_SCALE_CAP);
    const float *c = J->coef + p * (g + 1);
    const vf al = splat(J->alpha[p]), be = splat(J->beta[p]);
    vf acc = splat(0.0f);
    long j0 = 0;
    for (; j0 + 2 * LANES <= lk; j0 += 2 * LANES) { /* two strips at once: their dependency chains overlap */
        vf x0, x1;
        memcpy(&x0, s + j0, sizeof x0);
        memcpy(&x1, s + j0 + LANES, sizeof x1);
        const vf w0 = strip_weights(x0, m, al, be, c, g, J->clenshaw, scale);
        const vf w1 = strip_weights(x1, m, al, be, c, g, J->clenshaw, scale);
        acc += w0 + w1;
        memcpy(s + j0, &w0, sizeof w0);
        memcpy(s + j0 + LANES, &w1, sizeof w1);
    }
    for (; j0 < lk; j0 += LANES) {
        const long n = lk - j0 < LANES ? lk - j0 : LANES;
        vf x = splat(-INFINITY); /* lanes past the row end: weight exp(-inf) = 0 */
        memcpy(&x, s + j0, (size_t)n * sizeof(float));
        const vf w = strip_weights(x, m, al, be, c, g, J->clenshaw, scale);
        acc += w;
        memcpy(s + j0, &w, (size_t)n * sizeof(float));
    }
    float sum = 0.0f;
    for (int i = 0; i < LANES; i++) sum += acc[i];
    const float inv = 1.0f / (sum > FP32_TINY ? sum : FP32_TINY);
    for (long j = 0; j < lk; j++) s[j] *= inv; /* normalised rows: the product with V is the output */
}

/* s (pairs, lq, lk) contiguous scores (-inf = masked) -> normalised weights, in place. */
void hybrid_weights_f32(float *s, long pairs, long lq, long lk, const float *alpha, const float *beta,
                        const float *top, const float *coef, int degree, int clenshaw, int threads) {
    const weights_t job = {s, alpha, beta, top, coef, lq, lk, degree, clenshaw};
    parallel_for(weights_row, &job, pairs * lq, threads);
}

/* ---- thresholds: order statistics of each head's sample ---- */

static inline uint32_t order_key(float f) { /* unsigned integers ordered as the floats are */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u ^ ((uint32_t)((int32_t)u >> 31) | 0x80000000u);
}

static int compare_floats(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Rearrange v[0..n) so that v[k] holds the value a sort would put there (quickselect with median-of-three
   pivots; past 2 log2(n) + 2 rounds it sorts what is left, so the worst case stays O(n log n)). */
static void select_kth(float *v, long n, long k) {
    long lo = 0, hi = n - 1;
    int budget = 2;
    for (long m = n; m > 1; m >>= 1) budget += 2;
    while (hi > lo) {
        if (--budget < 0) {
            qsort(v + lo, (size_t)(hi - lo + 1), sizeof *v, compare_floats);
            return;
        }
        const float a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi];
        const float pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        long i = lo, j = hi;
        while (i <= j) { /* Hoare partition around the pivot's value */
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                const float t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return; /* j < k < i: v[k] equals the pivot */
    }
}

#define BINS 2048 /* histogram of the keys' top 11 bits: the rank's bin, then a select among its values only */

typedef struct {
    const float *scores;
    const int64_t *flat;
    const uint8_t *take;
    long grid, m, flat_stride, take_stride;
    double q_lo, q_hi;
    float *lo, *hi;
} thresholds_t;

static void thresholds_row(const void *args, long r) {
    const thresholds_t *J = (const thresholds_t *)args;
    const float *x = J->scores + r * J->grid;
    const int64_t *pos = J->flat + r * J->flat_stride;
    const uint8_t *t = J->take ? J->take + r * J->take_stride : 0;
    float *vals = (float *)malloc((size_t)J->m * 2 * sizeof(float)), *cand = vals + J->m;
    uint32_t hist[BINS];
    memset(hist, 0, sizeof hist);
    long n = 0;
    for (long i = 0; i < J->m; i++) {
        const float v = x[pos[i]];
        if ((!t || t[i]) && v > -INFINITY) {
            vals[n++] = v;
            hist[order_key(v) >> 21]++;
        }
    }
    if (n == 0) {
        J->lo[r] = J->hi[r] = INFINITY;
        free(vals);
        return;
    }
    const long rank[2] = {(long)floor((double)n * J->q_lo), n - 1 - (long)floor((double)n * J->q_hi)};
    float *out[2] = {J->lo + r, J->hi + r};
    for (int e = 0; e < 2; e++) {
        const long k = rank[e] < 0 ? 0 : (rank[e] > n - 1 ? n - 1 : rank[e]);
        long below = 0, c = 0;
        uint32_t bin = 0;
        while (below + hist[bin] <= k) below += hist[bin++];
        for (long i = 0; i < n; i++)
            if ((order_key(vals[i]) >> 21) == bin) cand[c++] = vals[i];
        select_kth(cand, c, k - below);
        *out[e] = cand[k - below];
    }
    free(vals);
}

/* For each of `rows` heads: its scores start at scores + r * grid; its m sampled positions are flat + r * flat_stride
   (flat_stride 0: the same positions for every head), its take bytes take + r * take_stride (take NULL: all count).
   Among the sampled scores > -inf that count, n of them: the (floor(n q_lo) + 1)-th smallest into lo[r] and the
   (floor(n q_hi) + 1)-th largest into hi[r]; +inf where n == 0. */
void hybrid_thresholds_f32(const float *scores, long grid, const int64_t *flat, long flat_stride,
                           const uint8_t *take, long take_stride, long rows, long m, double q_lo, double q_hi,
                           float *lo, float *hi, int threads) {
    const thresholds_t job = {scores, flat, take, grid, m, flat_stride, take_stride, q_lo, q_hi, lo, hi};
    parallel_for(thresholds_row, &job, rows, threads);
}
"""
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fPIC", "-shared")
_MIN_PARALLEL = 1 << 16  # score elements below which one thread is faster than starting more
_STATE = {}


def native_library():
    """The native kernel's ctypes library, built on first use, or None (with one warning) where it cannot be."""
    if "lib" not in _STATE:
        try:
            _STATE["lib"] = _load()
        except Exception as err:  # no compiler, no writable directory, an unsupported platform: eager torch
            _STATE["lib"], _STATE["error"] = None, err
            warnings.warn(
                f"hybrid_attention: could not build the native CPU kernel ({native_error()}); using eager "
                "torch, which is slower. Fix that (a C compiler: cc; a writable HYBRID_ATTENTION_CACHE), or set "
                "hybrid_kernel=\"eager\" to skip the attempt.",
                RuntimeWarning,
            )
    return _STATE["lib"]


def native_error() -> str:
    """Why ``native_library()`` returned None, in one line (empty when it loaded or was not tried)."""
    err = _STATE.get("error")
    if err is None:
        return ""
    detail = str(getattr(err, "stderr", None) or err).strip()
    return f"{type(err).__name__}: {detail.splitlines()[0] if detail else ''}"


def _load():
    """Build (once per machine, cached by a hash of the source, compiler, flags and CPU) and load the kernel."""
    cc = shlex.split(os.environ.get("CC", "")) or [next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), "")]
    if not cc[0] or shutil.which(cc[0]) is None:  # CC="ccache gcc" is a command line: its first word must exist
        given = os.environ.get("CC")
        raise RuntimeError(f"CC={given!r}: {cc[0]!r} is not found" if given else "no cc, gcc or clang on PATH")
    key = hashlib.sha256("\0".join((SOURCE, *cc, *_FLAGS, _cpu_signature())).encode()).hexdigest()
    name = f"hybrid_weights_{key[:20]}.so"
    cached = next((d / name for d in _cache_directories() if (d / name).is_file()), None)
    lib = None
    if cached is not None:
        try:
            lib = ctypes.CDLL(str(cached))
        except OSError:  # a damaged cache file (a full disk, a copy cut short): build it again
            cached.unlink(missing_ok=True)
    if lib is None:
        directory = next((d for d in _cache_directories() if _writable(d)), None)
        if directory is None:
            raise RuntimeError(f"no writable cache directory among {', '.join(map(str, _cache_directories()))} "
                               "(set HYBRID_ATTENTION_CACHE to one)")
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            source, built = Path(tmp) / "hybrid_weights.c", Path(tmp) / name
            source.write_text(SOURCE)
            subprocess.run([*cc, *_FLAGS, str(source), "-o", str(built), "-lm", "-lpthread"],
                           check=True, capture_output=True, text=True, timeout=120)
            os.replace(built, directory / name)  # atomic: processes building at once never see half a file
        lib = ctypes.CDLL(str(directory / name))
    ptr, long_, int_ = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    lib.hybrid_weights_f32.argtypes = [ptr, long_, long_, long_, ptr, ptr, ptr, ptr, int_, int_, int_]
    lib.hybrid_weights_f32.restype = None
    double = ctypes.c_double
    lib.hybrid_thresholds_f32.argtypes = [ptr, long_, ptr, long_, ptr, long_, long_, long_, double, double, ptr, ptr,
                                          int_]
    lib.hybrid_thresholds_f32.restype = None
    return lib


def _cache_directories() -> list[Path]:
    """Where the built kernel is kept: ``$HYBRID_ATTENTION_CACHE``, else the user's cache, else a temp dir."""
    if os.environ.get("HYBRID_ATTENTION_CACHE"):
        return [Path(os.environ["HYBRID_ATTENTION_CACHE"])]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hybrid_attention"
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return [cache, Path(tempfile.gettempdir()) / f"hybrid_attention-{user}"]


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)  # a path that is a file: FileExistsError
        return directory.is_dir() and os.access(directory, os.W_OK)
    except OSError:
        return False


def _cpu_signature() -> str:
    """The instruction sets ``-march=native`` builds for (a cache shared by different CPUs must not mix them)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return platform.machine() + line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def native_attention(scores, values, alpha, beta, top, coef, degree: int, clenshaw: bool,
                     out: torch.Tensor) -> None:
    """The torch kernel's weights (``hybrid_attention._block_attention``) for a whole chunk, in C: ``scores
    (hc, Lq, Lk)`` contiguous fp32 (overwritten with the normalised weights), ``values (hc, Lk, Dv)`` fp32;
    ``clenshaw`` says which basis ``coef`` is in (see ``hybrid_fit``); writes the output into ``out (hc, Lq, Dv)``."""
    hc, lq, lk = scores.shape
    assert scores.is_contiguous() and scores.dtype == torch.float32
    params = [x.reshape(hc, -1).to(torch.float32).contiguous() for x in (alpha, beta, top, coef)]
    _STATE["lib"].hybrid_weights_f32(
        scores.data_ptr(), hc, lq, lk, *(p.data_ptr() for p in params), degree, int(clenshaw),
        _threads(scores.numel()),
    )
    if out.dtype == torch.float32 and out.is_contiguous():
        torch.bmm(scores, values, out=out)
    else:
        out.copy_(torch.bmm(scores, values))


def native_thresholds(scores: torch.Tensor, flat: torch.Tensor, take, q_lo: float, q_hi: float):
    """``hybrid_attention._chunk_thresholds``' order statistics with the native kernel, reading the sample straight from
    ``scores (hc, Lq, Lk)`` contiguous fp32 at the positions ``flat`` (``(hc, M)`` or ``(1, M)``): among the sampled
    scores ``> -inf`` that ``take`` (same shapes, or None) keeps, ``n`` per head, the ``(floor(n q_lo) + 1)``-th
    smallest and ``(floor(n q_hi) + 1)``-th largest (+inf where ``n == 0``). A histogram of the top bits finds each
    rank's bin, then a select runs on that bin's values only: ~7x less CPU than two ``kthvalue`` calls."""
    hc = scores.shape[0]
    assert scores.is_contiguous() and scores.dtype == torch.float32
    flat = flat.reshape(-1, flat.shape[-1]).contiguous()
    m = flat.shape[1]
    if take is not None:
        take = take.reshape(-1, m).contiguous()
    lo, hi = torch.empty(hc, dtype=torch.float32), torch.empty(hc, dtype=torch.float32)
    _STATE["lib"].hybrid_thresholds_f32(
        scores.data_ptr(), scores[0].numel(), flat.data_ptr(), m if flat.shape[0] > 1 else 0,
        None if take is None else take.data_ptr(), 0 if take is None or take.shape[0] == 1 else m, hc, m, q_lo, q_hi,
        lo.data_ptr(), hi.data_ptr(), _threads(hc * m),
    )
    return lo, hi


def _threads(work: int) -> int:
    """torch's thread count, or 1 where the work is too small to share."""
    return torch.get_num_threads() if work >= _MIN_PARALLEL else 1
