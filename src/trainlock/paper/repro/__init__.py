"""The paper's tables and figures at its own settings, on offline data, beside its numbers.

`reproduce(name, out, quick, device)` runs one of REPRODUCTIONS into `out` (results.json, table.md, PNGs;
resumable). --quick sizes each for 2 CPU cores (narrower models, subsets, fewer epochs, stated in the
table's header); --full is the paper's scale, for a GPU. Both go through one code path.
"""

from .run import REPRODUCTIONS, reproduce

__all__ = ["REPRODUCTIONS", "reproduce"]
