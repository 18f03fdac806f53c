"""The offline teacher store (DESIGN.md "Records are small and safe").

A shard holds, per augmented copy, only the sample index, the copy index, the
shape-augmentation parameters and the teacher's float16 logits (optionally a
float16 global feature) — never points. Its header names the teacher, the
dataset and the augmentation, so records cannot be replayed against anything else.
"""

from pcdistill.records.reader import RecordSet, read_records
from pcdistill.records.schema import SCHEMA_VERSION, RecordHeader, model_fingerprint, row_dtype
from pcdistill.records.writer import write_shard

__all__ = [
    "SCHEMA_VERSION",
    "RecordHeader",
    "RecordSet",
    "model_fingerprint",
    "read_records",
    "row_dtype",
    "write_shard",
]
