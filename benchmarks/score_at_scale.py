"""Benchmark: ``vaekit score`` on a table of 10 million rows, streamed in chunks: peak memory and rows per second.

1. A synthetic transactions table is written chunk by chunk (never whole): ``--rows`` rows (10,000,000), eight
   numeric columns (log-normal amounts, integer counts, a mostly-zero flag, Gaussian features) and one string column
   (``channel``, 4 categories), as ``--format`` ``parquet`` or ``csv`` (``--format csv.gz`` too); a tenth of a
   percent of the rows are shifted (anomalies, column ``label``).
2. A model is trained on the first 100,000 rows with ``vaekit train --preset tabular ... data.scaling=robust
   data.label_column=label`` (``--train-epochs`` 3; training is not what is measured).
3. ``vaekit score MODEL --data TABLE --method M --k K --out scores.csv --quiet`` runs in its own process; its peak
   resident memory comes from ``wait4`` (the kernel's maximum RSS of that process), its wall time from the clock:
   rows per second = rows / wall seconds (reading, encoding, scoring and writing included). The scores file is
   checked to hold one row per table row, and the AUROC of the shifted rows is printed as a sanity check.

Target (issue 16): peak RSS under 2 GiB.

``--detector``: the same with a saved :class:`vaekit.AnomalyDetector` (its defaults, ``random_state=0``) instead
of a trained model: the table has the eight numeric columns only (the detector takes numbers; the labels go to a
``.npy`` file beside it), the detector is fitted on the first 100,000 rows of the training table and saved
(``AnomalyDetector.save``), and ``vaekit score DETECTOR --data TABLE --out scores.csv --quiet`` gives the detector's
own score (``--method`` and ``--k`` are the detector's).

    OMP_NUM_THREADS=1 python benchmarks/score_at_scale.py [--rows 10000000] [--format parquet|csv|csv.gz]
        [--method iwae --k 10] [--detector] [--work /tmp/vaekit-scale] [--keep]

The work folder (default: a temporary folder) holds the table (about 0.5 GB as Parquet, 1.3 GB as CSV for 10
million rows), the run and the scores; it is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import save

CHUNK = 500_000
CHANNELS = np.array(["web", "shop", "phone", "mail"])


def table_chunk(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """One chunk of the synthetic table (columns as numpy arrays)."""
    label = (rng.random(n) < 0.001).astype(np.int64)
    shift = 3.0 * label
    base = rng.normal(size=(n, 4))
    return {
        "amount": rng.lognormal(3.0, 1.0, n) * (1 + 4 * label),
        "items": rng.poisson(3, n).astype(np.int64),
        "refunds": (rng.random(n) < 0.02).astype(np.int64),
        "f1": base[:, 0] + shift, "f2": base[:, 0] * 0.8 + 0.6 * base[:, 1], "f3": base[:, 2],
        "f4": base[:, 2] - base[:, 3] + shift, "f5": rng.gamma(2.0, 1.0, n),
        "channel": CHANNELS[rng.choice(4, n, p=[0.5, 0.3, 0.15, 0.05])], "label": label,
    }


def write_table(path: Path, rows: int, fmt: str, seed: int = 0, numeric: bool = False) -> None:
    """Write ``rows`` rows chunk by chunk with pyarrow (bounded memory); ``numeric``: without the ``channel`` and
    ``label`` columns, the labels written to ``path`` + ``.labels.npy``."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer, labels = None, []
    with pa.OSFile(str(path), "wb") if fmt != "csv.gz" else pa.CompressedOutputStream(str(path), "gzip") as sink:
        for start in range(0, rows, CHUNK):
            columns = table_chunk(rng, min(CHUNK, rows - start))
            if numeric:
                labels.append(columns.pop("label"))
                del columns["channel"]
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(sink, table.schema) if fmt == "parquet" else pacsv.CSVWriter(sink,
                                                                                                        table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
    if numeric:
        np.save(f"{path}.labels.npy", np.concatenate(labels))


def run_measured(argv: list[str]) -> tuple[float, float, int]:
    """Run a command; (wall seconds, peak RSS in GiB, exit code) of that process alone."""
    start = time.perf_counter()
    process = subprocess.Popen(argv)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / (1 << 20), process.returncode  # ru_maxrss: KiB on Linux


def fit_detector(train: Path, out: Path) -> None:
    """The default AnomalyDetector fitted on the training table's rows and saved to ``out``."""
    import pandas as pd

    from vaekit.apps.estimators import AnomalyDetector

    AnomalyDetector(random_state=0).fit(pd.read_csv(train)).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--format", choices=("parquet", "csv", "csv.gz"), default="parquet")
    parser.add_argument("--method", default="iwae")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--work", default="")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--detector", action="store_true", help="score with a saved AnomalyDetector (see above)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="vaekit-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    vaekit = [sys.executable, "-m", "vaekit"]
    try:
        table, train = work / f"table.{args.format}", work / "train.csv"
        start = time.perf_counter()
        write_table(table, args.rows, args.format, numeric=args.detector)
        write_table(train, 100_000, "csv", seed=1, numeric=args.detector)
        print(f"wrote {args.rows:,} rows to {table} ({table.stat().st_size / 2**30:.2f} GiB) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        run = work / "run"
        shutil.rmtree(run, ignore_errors=True)
        scoring = ["--method", args.method, "--k", str(args.k)]
        if args.detector:
            fit_detector(train, run)
            scoring = []  # the detector's own
        else:
            subprocess.run([*vaekit, "train", "--preset", "tabular", "--data", str(train), "--out", str(run),
                            "--epochs", str(args.train_epochs), "--quiet", "data.scaling=robust",
                            "data.label_column=label"], check=True)
        out = work / "scores.csv"
        wall, rss, code = run_measured([*vaekit, "score", str(run), "--data", str(table), *scoring, "--out", str(out),
                                        "--quiet"])
        if code != 0:
            raise SystemExit(f"vaekit score failed with exit code {code}")
        import pandas as pd
        from sklearn.metrics import roc_auc_score

        scores = pd.read_csv(out, usecols=["score"] if args.detector else ["label", "score"])
        if args.detector:
            scores["label"] = np.load(f"{table}.labels.npy")
        if len(scores) != args.rows:
            raise SystemExit(f"{out} holds {len(scores):,} rows, not {args.rows:,}")
        auroc = float(roc_auc_score(scores["label"], scores["score"]))
        result = {"rows": args.rows, "format": args.format, "table_gib": table.stat().st_size / 2**30,
                  "scorer": "AnomalyDetector (defaults), saved" if args.detector else "tabular preset",
                  "method": args.method, "k": args.k, "wall_s": wall, "rows_per_s": args.rows / wall,
                  "peak_rss_gib": rss, "auroc_shifted_rows": auroc,
                  "threads": os.environ.get("OMP_NUM_THREADS", "unset")}
        print(f"vaekit score: {args.rows:,} rows in {wall:.0f} s ({args.rows / wall:,.0f} rows/s), peak RSS "
              f"{rss:.2f} GiB (target < 2 GiB: {'met' if rss < 2 else 'missed'}); AUROC of the shifted rows "
              f"{auroc:.4f}")
        name = "score_at_scale" if args.rows == 10_000_000 else f"score_at_scale_{args.rows}"
        name += "" if args.format == "parquet" else "_" + args.format.replace(".", "")  # one file per format
        name += "_detector" if args.detector else ""
        print(f"results: {save(name, result)}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
