"""Compiled CPU kernels (numba) behind the point ops.

Why numba: on 32 x 1024 ModelNet40 clouds on this 2-core CPU these plain loops beat
the torch path and every wheel we measured (BENCHMARKS.md). A ball query scans the
distances once in index order and stops at k hits instead of sorting all N;
kNN keeps a k-long sorted list instead of a full top-k; FPS runs one cloud per
thread with no per-step dispatch. fpsample's only exact FPS (`fps_sampling`) was
4-5x slower and holds the GIL; its bucket variants return other indices. For 3-D kNN
pykdtree was ~2x faster on a quiet machine, but its bundled OpenMP hangs a forked
child (a DataLoader worker) once the parent has queried a tree; scipy's cKDTree was
no faster than this kernel and compares float64 distances, so near-ties could differ.

Identical indices: every kernel does the arithmetic of `distance.square_distance`
(coordinate differences, squared and summed in coordinate order, never fused) and
breaks ties towards the lower index, as torch's argmax does. torch.topk promises no
order among exactly equal distances, so there (and only there) kNN may differ.

Threads: each kernel fills a range of clouds (FPS) or queries (kNN, ball query) with
the GIL released, and `run_chunks` spreads chunks of the range over the calling thread
and a pool of torch.get_num_threads() - 1 helpers, so one knob sets both (DataLoader
workers get 1 thread and run serially). We do not use numba's own threading layer:
its default OpenMP layer is not fork-safe on Linux (numba's docs), and a forked
DataLoader worker must keep working; our pool is re-created in a forked child
(tests/test_ops.py checks it). Chunks outnumber threads, so a thread slowed by
another process hands the rest of its work to the others.
`cache=True` stores the machine code beside this file, so only the first run on a
machine pays the compile (about 20 s for all point and fused kernels).
"""

import functools
import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from torch import Tensor

from pcdistill.ops.distance import EXACT_MAX_DIM, square_distance

_jit = numba.njit(nogil=True, cache=True)

CHUNKS_PER_THREAD = 4


@_jit
def _square_distance_row(ref: np.ndarray, q: np.ndarray, d: np.ndarray) -> None:
    """d[j] = squared distance from q (C,) to ref[:, j] of ref (C, N), in coordinate order.

    Runs over 1-D rows so the loops vectorise (3x faster than indexing ref[a, j]).
    """
    x, qa = ref[0], q[0]
    for j in range(d.shape[0]):
        diff = x[j] - qa
        d[j] = diff * diff
    for a in range(1, ref.shape[0]):
        x, qa = ref[a], q[a]
        for j in range(d.shape[0]):
            diff = x[j] - qa
            d[j] += diff * diff


LANES = 16  # a float32 AVX-512 register: FPS's max runs on this many lanes at a time


@numba.njit(nogil=True, cache=True, fastmath={"nnan", "nsz"})
def _farthest_point_sample(points: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """FPS from index 0 of clouds lo..hi-1 of points (B, 3, N) into out (B, m).

    A step is two vectorised passes over the cloud: distances to the last pick folded
    into each point's distance to the picked set (arithmetic of `square_distance`: no
    contraction is allowed here), then the max of those, then a search for its first
    index, as argmax picks. The max runs out of place on LANES lanes, two buffers in
    turn: numba's float max does not vectorise as a reduction, and as one it was most of
    FPS's time. No NaNs are assumed (readers refuse them); the scan is bounded in case.
    """
    n = points.shape[2]
    m = out.shape[1]
    nearest = np.empty(n, points.dtype)  # squared distance to the picked set
    lanes = np.empty((2, LANES), points.dtype)
    for i in range(lo, hi):
        x, y, z = points[i, 0], points[i, 1], points[i, 2]
        nearest[:] = np.inf
        last = 0
        if m > 0:
            out[i, 0] = 0
        for s in range(1, m):
            px, py, pz = x[last], y[last], z[last]
            for j in range(n):
                dx, dy, dz = x[j] - px, y[j] - py, z[j] - pz
                nearest[j] = min(nearest[j], dx * dx + dy * dy + dz * dz)
            last = _first_equal(nearest, _max_of(nearest, lanes))
            out[i, s] = last


@numba.njit(nogil=True, cache=True, fastmath={"nnan", "nsz"})
def _first_equal(x: np.ndarray, v) -> int:
    """The first index of v in x (the last index if none): blocks of 4 * LANES are
    tested with a vectorised count of equal entries and only the block holding v is
    scanned; a plain scan was one compare and branch per entry up to v, which at FPS's
    uniformly placed maxima is half the cloud per step."""
    n = x.shape[0]
    q = 0
    while q + 4 * LANES <= n:
        hits = 0
        for t in range(4 * LANES):
            hits += x[q + t] == v
        if hits:
            break
        q += 4 * LANES
    while q < n - 1 and x[q] != v:
        q += 1
    return q


@numba.njit(nogil=True, cache=True, fastmath={"nnan", "nsz"})
def _max_of(x: np.ndarray, lanes: np.ndarray):
    """max(x) through lanes (2, LANES): an elementwise running max, then the lanes."""
    b0, b1 = lanes[0], lanes[1]
    b0[:] = -np.inf
    q = 0
    while q + 2 * LANES <= x.shape[0]:
        for t in range(LANES):
            b1[t] = max(b0[t], x[q + t])
        for t in range(LANES):
            b0[t] = max(b1[t], x[q + LANES + t])
        q += 2 * LANES
    best = b0[0]
    for t in range(1, LANES):
        best = max(best, b0[t])
    for j in range(q, x.shape[0]):
        best = max(best, x[j])
    return best


@_jit
def _ball_query_multi(
    query: np.ndarray, ref: np.ndarray, r2s: np.ndarray, outs, lo: int, hi: int
) -> None:
    """First k_r ref (B, C, N) indices with d² <= r2s[r], for each radius r (outs: one
    (B, M, k_r) array each), for flat queries lo..hi-1 of query (B, M, C).

    Each query's N distances are computed once, in one vectorised pass; one branch-free
    pass keeps the points inside the largest ball (in index order, with their
    distances), and each radius scans only those. Balls are small against the cloud (a
    ModelNet40 query of PointNet++ MSG's first level holds 0.5%, 2% and 9% of the points
    at radii 0.1/0.2/0.4) and a scan rarely fills up before the end, so scanning all N
    once per radius did most of the work again for every radius.
    """
    m, n = query.shape[1], ref.shape[2]
    d = np.empty(n, ref.dtype)
    inside = np.empty(n, np.int64)
    inside_d = np.empty(n, ref.dtype)
    r2max = r2s.max()
    for t in range(lo, hi):
        i, q = t // m, t % m
        _square_distance_row(ref[i], query[i, q], d)
        count = 0
        for j in range(n):  # branch-free: write j, keep it only if inside
            inside[count] = j
            inside_d[count] = d[j]
            count += d[j] <= r2max
        for r in range(len(outs)):
            _scan_ball(inside, inside_d, count, r2s[r], outs[r][i, q])


@_jit
def _scan_ball(index: np.ndarray, d: np.ndarray, count: int, r2: float, hits: np.ndarray) -> None:
    """The first len(hits) of index[:count] with d <= r2, padded with the first (0 if none)."""
    k = hits.shape[0]
    found = 0
    for c in range(count):  # branch-free, as above: the test is a coin flip per candidate
        hits[min(found, k - 1)] = index[c]
        found += d[c] <= r2
        if found == k:
            return
    first = hits[0] if found else 0
    for s in range(found, k):
        hits[s] = first


@_jit
def _smallest_k_row(d: np.ndarray, out: np.ndarray) -> None:
    """Write into out (k,) the indices of the k smallest of d (N,), ascending, ties by index."""
    k = out.shape[0]
    best = np.full(k, np.inf, d.dtype)
    for j in range(d.shape[0]):
        dj = d[j]
        if dj < best[k - 1]:
            s = k - 1
            while s > 0 and best[s - 1] > dj:
                best[s] = best[s - 1]
                out[s] = out[s - 1]
                s -= 1
            best[s] = dj
            out[s] = j


@_jit
def _knn_exact(query: np.ndarray, ref: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """k nearest of ref (B, C, N), C <= 3, for flat queries lo..hi-1 of query (B, M, C)."""
    m = query.shape[1]
    d = np.empty(ref.shape[2], ref.dtype)
    for t in range(lo, hi):
        i, q = t // m, t % m
        _square_distance_row(ref[i], query[i, q], d)
        _smallest_k_row(d, out[i, q])


@_jit
def _smallest_k(d: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """Indices of the k smallest of each flat row lo..hi-1 of d (B, M, N), ascending."""
    m = d.shape[1]
    for t in range(lo, hi):
        _smallest_k_row(d[t // m, t % m], out[t // m, t % m])


_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (owner pid, threads, pool)


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """A pool of `threads` workers owned by this process: a forked child makes its own."""
    global _pool
    if _pool is None or _pool[:2] != (os.getpid(), threads):
        if _pool is not None and _pool[0] == os.getpid():
            _pool[2].shutdown(wait=False)
        _pool = (os.getpid(), threads, ThreadPoolExecutor(threads, "pcdistill-ops"))
    return _pool[2]


def run_chunks(kernel: Callable[..., None], total: int, *args: object) -> None:
    """Call kernel(*args, lo, hi) over 0..total-1, in chunks spread over torch's threads.

    The calling thread works too, and every thread claims the next chunk from a shared
    counter: one wake-up per extra thread per call (a future per chunk cost ~0.2 ms a
    call here, which doubled a batch-1 forward on 2 threads).
    """
    threads = min(torch.get_num_threads(), total)
    if threads <= 1:
        kernel(*args, 0, total)
        return
    bounds = np.linspace(0, total, min(total, threads * CHUNKS_PER_THREAD) + 1).astype(int)
    lows, highs = bounds[:-1].tolist(), bounds[1:].tolist()
    claim = itertools.count()  # next() on it is atomic under the GIL

    def work() -> None:
        while (i := next(claim)) < len(lows):
            kernel(*args, lows[i], highs[i])

    pool = _thread_pool(torch.get_num_threads() - 1)
    helpers = [pool.submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:  # never return (or raise) while a helper still writes the outputs
        for job in helpers:
            job.result()


def _channels_first(x: Tensor) -> np.ndarray:
    """(B, N, C) tensor -> contiguous (B, C, N) array, so inner loops run over points."""
    return np.ascontiguousarray(x.detach().transpose(1, 2).numpy())


def _numpy(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().numpy())


def farthest_point_sample(xyz: Tensor, m: int) -> Tensor:
    """CPU kernel for `sampling.farthest_point_sample`."""
    out = np.empty((xyz.shape[0], m), np.int64)
    run_chunks(_farthest_point_sample, xyz.shape[0], _channels_first(xyz), out)
    return torch.from_numpy(out)


def ball_query(query: Tensor, ref: Tensor, radius: float, k: int) -> Tensor:
    """CPU kernel for `neighbors.ball_query`; coordinates only (C <= 3)."""
    return ball_queries(query, ref, (radius,), (k,))[0]


def ball_queries(
    query: Tensor, ref: Tensor, radii: tuple[float, ...], ks: tuple[int, ...]
) -> list[Tensor]:
    """CPU kernel for `neighbors.ball_queries`."""
    b, m, _ = query.shape
    r2s = _squared_radii(tuple(radii), ref.dtype)
    outs = tuple(np.empty((b, m, k), np.int64) for k in ks)
    run_chunks(_ball_query_multi, b * m, _numpy(query), _channels_first(ref), r2s, outs)
    return [torch.from_numpy(out) for out in outs]


@functools.cache
def _squared_radii(radii: tuple[float, ...], dtype: torch.dtype) -> np.ndarray:
    """radius² rounded to the data's dtype, as torch compares (in that dtype: no
    conversions); the same few radii come every call."""
    # left writeable: a read-only array is another numba signature to compile
    return np.array([float(torch.tensor(r * r, dtype=dtype)) for r in radii],
                    np.float32 if dtype == torch.float32 else np.float64)  # fmt: skip


def knn(query: Tensor, ref: Tensor, k: int) -> Tensor:
    """CPU kernel for `neighbors.knn`: fused for coordinates, selection only for features."""
    b, m, _ = query.shape
    out = np.empty((b, m, k), np.int64)
    if query.shape[-1] <= EXACT_MAX_DIM:
        run_chunks(_knn_exact, b * m, _numpy(query), _channels_first(ref), out)
    else:
        with torch.no_grad():
            d = square_distance(query, ref)
        run_chunks(_smallest_k, b * m, d.numpy(), out)
    return torch.from_numpy(out)
