"""Point operations: farthest point sampling, kNN, ball query and grouping.

All take batched, channels-last tensors and return int64 indices, so models can
gather whatever features they carry alongside the coordinates. On CPU they run
compiled kernels unless `set_backend("torch")` / `use_backend("torch")` says
otherwise or a graph is being traced or exported (see `backend`).
"""

from pcdistill.ops.backend import get_backend, set_backend, use_backend
from pcdistill.ops.grouping import gather
from pcdistill.ops.neighbors import ball_queries, ball_query, knn
from pcdistill.ops.sampling import farthest_point_sample, fps_order

__all__ = [
    "ball_queries",
    "ball_query",
    "farthest_point_sample",
    "fps_order",
    "gather",
    "get_backend",
    "knn",
    "set_backend",
    "use_backend",
]
