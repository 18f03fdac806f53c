#!/usr/bin/env bash
# Issue 12's method table (BENCHMARKS.md): every recipe of configs/distill at one budget,
# 10 epochs, seeds 0 1 2 (FitNet and DKD seed 0), on ModelNet40 with the shipped teacher.
# Resumable as a whole: rerun it after an interruption and it finishes the K=10 records,
# resumes interrupted runs and skips finished ones (benchmarks/results keeps those even when
# runs/ is gone). Two one-thread workers at the lowest priority; the records, which the
# offline rows need, are made first, on both threads.
#   setsid nohup bash benchmarks/method_table.sh > runs/method_table.log 2>&1 &
# then: python benchmarks/distill_table.py table <recipes> --tag e10 --seeds 0 1 2
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo 19 > "/proc/$$/autogroup" 2>/dev/null || true  # this session's processes, lowest priority
table() {
    .venv/bin/python benchmarks/distill_table.py run "$@" --tag e10 --set train.epochs=10 --threads 1
}
records=runs/distill/records_ssg20_k10  # what the offline recipes name
if [ ! -f "$records/records-00000-of-00001.h5" ]; then
    .venv/bin/pcdistill record --teacher pointnet2_ssg.modelnet40 \
        --data ../shared/data/modelnet40_hdf5_1024 --copies 10 --out "$records"
fi
# seed 0 of every row first, so a stopped table still has one seed of each
table scratch offline_kd offline_kd_nwsd offline_kd_nwsd_copy t3dnet kd fad fitnet dkd --seeds 0 --workers 2
table scratch offline_kd offline_kd_nwsd offline_kd_nwsd_copy t3dnet kd fad --seeds 1 2 --workers 2
