"""Per-node seeds: a child's sample depends only on the run seed and the child's path.

``child_seed(seed, path)`` hashes with BLAKE2b (stable across processes and Python versions,
unlike ``hash``), so two runs that expand the same node draw the same children whatever else
is in the batch, and two siblings draw from independent streams.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["child_seed", "child_seeds"]


def child_seed(seed: int, path: Sequence[int]) -> int:
    """The sampling seed of the node at ``path`` (child indices from the root), in [0, 2**63)."""
    text = f"{int(seed)}:" + ",".join(str(int(i)) for i in path)
    digest = hashlib.blake2b(text.encode(), digest_size=8, person=b"rewind-seed").digest()
    return int.from_bytes(digest, "big") >> 1


def child_seeds(seed: int, parent_path: Sequence[int], first: int, count: int) -> tuple[int, ...]:
    """Seeds of children ``first .. first+count-1`` of the node at ``parent_path``."""
    return tuple(child_seed(seed, (*parent_path, i)) for i in range(first, first + count))
