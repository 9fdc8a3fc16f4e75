"""token_scores.parquet: one row per text, one list column per per-token array; written a row group at a
time, and read back a text or a column at a time.

:class:`TokenFileWriter` writes the file (``AuditResult.save`` from memory, and the audit's chunks
while the attacks run). :class:`TokenStore` is such a file written by the audit beside its cache
while the attacks run over chunks of texts (memlens.audit): the audit's token-level results then
live on disk, not in memory, and the result reads them back through :class:`StoredColumn` (a list-like
of per-text arrays: one text from its row group, or every text from one column) and ``save``
puts the file in the output directory as it is. Its rows are in the order the chunks ran (the cache
shards' order), not the texts' order: readers find a text by its ``id``.
"""
from __future__ import annotations

import os
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# texts per row group (~300 KB at 200 tokens a text and two token-level attacks): `memlens show` and the
# result's per-text reads decode one group
TOKEN_ROW_GROUP = 256

# (column, value type) before the token-level attacks' "<attack>_token" float32 columns
BASE_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("token_ids", pa.int64()), ("tokens", pa.string()), ("span_start", pa.int64()), ("span_end", pa.int64()),
    ("target_logprob", pa.float32()),
)


def token_schema(token_attacks: Sequence[str], with_reference: bool) -> pa.Schema:
    cols = list(BASE_COLUMNS) + ([("reference_logprob", pa.float32())] if with_reference else [])
    cols += [(f"{a}_token", pa.float32()) for a in token_attacks]
    return pa.schema([("id", pa.string()), ("label", pa.int64())] + [(name, pa.list_(typ)) for name, typ in cols])


class TokenFileWriter:
    """Writes token_scores.parquet a group of texts at a time (:meth:`write`); a context manager."""

    def __init__(self, path: str | os.PathLike, token_attacks: Sequence[str], with_reference: bool):
        self.schema = token_schema(token_attacks, with_reference)
        # Dictionary encoding only where values repeat (token strings and ids): on the float and span columns
        # it is tried and abandoned page by page, 4x the write time for a larger file
        self._writer = pq.ParquetWriter(path, self.schema, use_dictionary=["tokens.list.element", "token_ids.list.element"])
        self.rows = 0

    def write(self, ids: Sequence[Any], labels: Sequence[int | None], columns: dict[str, Any]) -> None:
        """One row per text: ``columns`` maps each list column of the schema to per-text arrays (or, for
        ``tokens``, lists of strings or a ready pyarrow list array), in the order of ``ids``."""
        arrays = [pa.array([str(x) for x in ids], pa.string()), pa.array(list(labels), pa.int64())]
        for f in list(self.schema)[2:]:
            col = columns[f.name]
            arrays.append(col if isinstance(col, pa.Array) else list_array(col, f.type.value_type))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows += len(ids)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TokenFileWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_array(parts: list, typ: Any) -> pa.Array:
    """A pyarrow list array of one row per text from per-text arrays (or lists of strings)."""
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int32, count=len(parts))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))
    if pa.types.is_string(typ):
        values = pa.array([x for p in parts for x in p], typ)
    else:
        dtype = typ.to_pandas_dtype()
        values = pa.array(np.concatenate([np.asarray(p, dtype=dtype).reshape(-1) for p in parts]) if parts else np.zeros(0, dtype))
    return pa.ListArray.from_arrays(offsets, values)


class RowGroups:
    """A Parquet file's rows by number: :meth:`row` decodes the row group holding a row (``columns`` of it), passes
    it through ``convert`` and keeps the last ``keep`` of them, so that reading rows in order decodes each group
    once and reading a few rows decodes a few groups, whatever the file's size. Safe from several threads (the
    output files are written on threads at once, and a pyarrow ParquetFile is not): one read at a time."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str] | None = None, keep: int = 4, convert=None):
        self.file = pq.ParquetFile(path)
        md = self.file.metadata
        self.starts = np.concatenate([[0], np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)],
                                                     dtype=np.int64)])
        self._columns = None if columns is None else list(columns)
        self._keep, self._convert = keep, convert
        self._groups: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def row(self, r: int) -> tuple[Any, int]:
        """(the converted row group holding row ``r``, ``r``'s place in it)."""
        g = int(np.searchsorted(self.starts, r, side="right") - 1)
        with self._lock:
            group = self._groups.get(g)
            if group is None:
                table = self.file.read_row_group(g, columns=self._columns)
                group = self._groups[g] = table if self._convert is None else self._convert(table)
                while len(self._groups) > self._keep:
                    self._groups.popitem(last=False)
            else:
                self._groups.move_to_end(g)
        return group, r - int(self.starts[g])


class TokenStore:
    """A token_scores.parquet the audit writes while its attacks run over chunks of texts (see the module
    docstring), in ``directory`` (the cache's, on disk: a temporary file there is not memory, as one
    in a RAM-backed /tmp would be). Removed when the store is garbage-collected or the process exits;
    ``AuditResult.save`` links or copies it into the output directory first."""

    def __init__(self, directory: str | os.PathLike, n_texts: int, token_attacks: Sequence[str], with_reference: bool):
        from memlens._io import TMP_PREFIX

        name = f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.parquet"
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.path = Path(directory) / name
            self._writer: TokenFileWriter | None = TokenFileWriter(self.path, token_attacks, with_reference)
        except OSError as e:  # a read-only cache (a shared one, for `memlens attack`): the system's temporary directory
            import logging
            import tempfile

            logging.getLogger("memlens").info("token rows cannot go beside the cache (%s); writing them to %s", e, tempfile.gettempdir())
            self.path = Path(tempfile.gettempdir()) / name
            self._writer = TokenFileWriter(self.path, token_attacks, with_reference)
        self._finalizer = weakref.finalize(self, _remove, str(self.path))
        self.n_texts = n_texts
        self.row_of = np.full(n_texts, -1, dtype=np.int64)  # text position -> row of the file
        self._rows: RowGroups | None = None  # per-text reads, once the file is complete

    def write(self, positions: np.ndarray, ids, labels, columns: dict[str, Any]) -> None:
        """The rows of the texts at ``positions`` (in that order), written in row groups of TOKEN_ROW_GROUP."""
        assert self._writer is not None, "the store is closed"
        positions = np.asarray(positions, dtype=np.int64)
        for lo in range(0, len(positions), TOKEN_ROW_GROUP):
            hi = min(lo + TOKEN_ROW_GROUP, len(positions))
            part = {k: (v.slice(lo, hi - lo) if isinstance(v, pa.Array) else v[lo:hi]) for k, v in columns.items()}
            self.row_of[positions[lo:hi]] = np.arange(self._writer.rows, self._writer.rows + hi - lo)
            self._writer.write(ids[lo:hi], labels[lo:hi], part)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if (self.row_of < 0).any():
            raise RuntimeError(f"token store: {int((self.row_of < 0).sum())} of {self.n_texts} texts were never written")
        self._rows = RowGroups(self.path)

    def columns(self) -> list[str]:
        return [f.name for f in pq.read_schema(self.path)]

    def column(self, name: str) -> list[np.ndarray]:
        """Every text's array of one list column, in the texts' order (one read of that column; the arrays are
        views of one buffer)."""
        col = pq.read_table(self.path, columns=[name]).column(0).combine_chunks()
        if pa.types.is_string(col.type.value_type):
            return [col[r].as_py() for r in self.row_of.tolist()]
        offsets = col.offsets.to_numpy()
        values = col.values.to_numpy(zero_copy_only=False)
        return [values[offsets[r]:offsets[r + 1]] for r in self.row_of.tolist()]

    def cell(self, name: str, i: int):
        """One text's value of one column (its row group decoded, a few kept)."""
        table, j = self._rows.row(int(self.row_of[i]))
        cell = table.column(name)[j]
        if pa.types.is_string(table.schema.field(name).type.value_type):
            return cell.as_py()
        return cell.values.to_numpy(zero_copy_only=False)

    def save_as(self, path: str | os.PathLike) -> None:
        """Put the file at ``path``: a hard link where the file system allows one (no copy), else a copy."""
        import shutil

        try:
            os.link(self.path, path)
        except OSError:
            shutil.copyfile(self.path, path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class ReadOnDemand(Sequence):
    """A list-like of per-text values read when asked for: ``x[i]`` reads one text (:meth:`_one`), iterating
    reads them all at once (:meth:`_all`), which is far cheaper than one read per text."""

    def __len__(self) -> int:
        raise NotImplementedError

    def _one(self, i: int):
        raise NotImplementedError

    def _all(self) -> list:
        raise NotImplementedError

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._one(i)

    def __iter__(self):
        return iter(self._all())


class StoredColumn(ReadOnDemand):
    """One column of a :class:`TokenStore` as a list-like of per-text arrays: ``col[i]`` reads one text (its
    row group), iterating reads the whole column once."""

    def __init__(self, store: TokenStore, name: str):
        self.store, self.name = store, name

    def __len__(self) -> int:
        return self.store.n_texts

    def _one(self, i: int):
        return self.store.cell(self.name, i)

    def _all(self) -> list:
        return self.store.column(self.name)
