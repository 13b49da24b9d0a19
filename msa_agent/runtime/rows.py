"""A growable tensor of rows: appends copy only the new rows, amortised.

The resident routing index appends every memory's chunk keys as it is remembered. Growing a
tensor with ``torch.cat`` copies every row already there on each append (O(N) per memory);
this buffer keeps spare capacity (growing it by a quarter when full), so an append copies
the new rows and, once in a while, the whole buffer: O(new rows) amortised, for at most a
quarter more memory than the rows hold.
"""

from __future__ import annotations

import torch

GROWTH = 1.25  # capacity factor when full: spare memory at most 25%, copies amortised O(1)


class GrowableRows:
    """Rows ``[n, *shape]`` in a buffer ``[capacity, *shape]``; :meth:`view` is the filled
    part (a view, no copy: valid until the next :meth:`append` or :meth:`replace`)."""

    def __init__(self, empty: torch.Tensor) -> None:
        self._buf, self._n = empty, int(empty.shape[0])

    def view(self) -> torch.Tensor:
        return self._buf[: self._n]

    def __len__(self) -> int:
        return self._n

    def append(self, new: torch.Tensor) -> None:
        """Append ``new`` (same trailing shape, dtype and device as the rows held, or any
        shape while empty)."""
        need = self._n + int(new.shape[0])
        if self._n == 0 and self._buf.shape[1:] != new.shape[1:]:
            self._buf = new.new_empty((0, *new.shape[1:]))
        if need > self._buf.shape[0]:
            grown = self._buf.new_empty((max(need, int(self._buf.shape[0] * GROWTH)),
                                         *self._buf.shape[1:]))
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : need] = new
        self._n = need

    def reserve(self, rows: int, row_shape: tuple[int, ...]) -> None:
        """Make room for ``rows`` rows of ``row_shape`` in all (one copy of the rows held,
        if any, growing by at least ``GROWTH`` then, as :meth:`append` does), so that appends
        up to that many copy only their own rows."""
        if self._n == 0 and tuple(self._buf.shape[1:]) != tuple(row_shape):
            self._buf = self._buf.new_empty((0, *row_shape))
        if rows > self._buf.shape[0]:  # exact when empty (a bulk load), else amortised
            size = rows if self._n == 0 else max(rows, int(self._buf.shape[0] * GROWTH))
            grown = self._buf.new_empty((size, *self._buf.shape[1:]))
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown

    def replace(self, rows: torch.Tensor) -> None:
        """Hold exactly ``rows`` (no spare capacity), e.g. after dropping some."""
        self._buf, self._n = rows, int(rows.shape[0])
