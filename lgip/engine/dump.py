"""`--dump-pairs PATH`: one row per scored pair and model, for looking at examples
behind the numbers. CSV, gzip-compressed CSV or Parquet, written atomically.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import importlib.util
import io

import numpy as np

from typing import TYPE_CHECKING

from lgip.io import InputError, atomic_output

if TYPE_CHECKING:  # the dump's columns are read by the torch-free report
    from lgip.engine.scores import Scores

class PairDump:
    """`--dump-pairs PATH`: one row per scored pair, for every model of the run, in one
    file: CSV (gzip when PATH ends in .gz) or Parquet (PATH ends in .parquet; needs
    pyarrow). Written to a temporary file and renamed when the run completes."""

    COLUMNS = ["model_tag", "line", "image_id", "image_path", "caption_index", "caption", "variant_kind",
               "variant_text", "base_score", "variant_score", "gap"]

    def __init__(self, path: str):
        self.path = path
        self.parquet = path.endswith(".parquet")
        if self.parquet:

            if importlib.util.find_spec("pyarrow") is None:
                raise InputError(f"--dump-pairs {path}: Parquet needs pyarrow (pip install pyarrow); "
                                 f"or name a .csv or .csv.gz file")
        self._stack = contextlib.ExitStack()
        self._writer = None

    def __enter__(self):

        handle = self._stack.enter_context(atomic_output(self.path, "wb"))
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = [pa.string(), pa.int64(), pa.string(), pa.string(), pa.int64(), pa.string(), pa.string(),
                     pa.string(), pa.float32(), pa.float32(), pa.float32()]
            self._schema = pa.schema(list(zip(self.COLUMNS, types)))
            self._writer = self._stack.enter_context(pq.ParquetWriter(handle, self._schema))
        else:
            binary = self._stack.enter_context(gzip.GzipFile(fileobj=handle, mode="wb", mtime=0)) \
                if self.path.endswith(".gz") else handle

            text = self._stack.enter_context(io.TextIOWrapper(binary, encoding="utf-8", newline=""))
            self._writer = csv.writer(text)
            self._writer.writerow(self.COLUMNS)
        return self

    def __exit__(self, *exc_info):
        return self._stack.__exit__(*exc_info)

    def write(self, scores: Scores, model_tag: str) -> int:
        """Append the model's valid pairs; returns how many rows were written."""
        plan = scores.plan
        pairs = np.flatnonzero(scores.pair_valid)
        records = scores.pair_record[pairs]
        captions = plan.pair_caption[pairs]
        texts = np.asarray(plan.texts, dtype=object)
        columns = {
            "model_tag": np.full(len(pairs), model_tag, dtype=object),
            "line": plan.record_line[records],
            "image_id": np.asarray(plan.record_image_id, dtype=object)[records],
            "image_path": np.asarray(plan.images, dtype=object)[plan.record_image[records]],
            "caption_index": plan.caption_index[captions],
            "caption": texts[plan.caption_text[captions]],
            "variant_kind": np.asarray(plan.kinds, dtype=object)[plan.pair_kind[pairs]],
            "variant_text": texts[plan.pair_text[pairs]],
            "base_score": scores.pair_base[pairs],
            "variant_score": scores.pair_score[pairs],
            "gap": scores.pair_base[pairs] - scores.pair_score[pairs],
        }
        if self.parquet:
            import pyarrow as pa

            self._writer.write_table(pa.table({name: columns[name] for name in self.COLUMNS}, schema=self._schema))
        else:
            self._writer.writerows(zip(*(columns[name].tolist() for name in self.COLUMNS)))
        return len(pairs)
