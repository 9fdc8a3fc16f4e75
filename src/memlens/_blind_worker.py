"""The blind baseline's classifier in a process of its own (:class:`memlens.blind.BlindJob`): reads
(texts, labels, folds, repeats, seed) pickled on stdin, writes ("ok", (scores, folds used)) or
("error", message of a BlindError) pickled on stdout. Only memlens.blind's own output is unpickled."""
from __future__ import annotations

import pickle
import sys


def _lower_priority() -> None:
    """The audit's own work (the pass, the attacks) goes first: this only has to finish before them."""
    import os

    try:
        os.nice(10)
    except (AttributeError, OSError):  # not on this platform, or not allowed
        pass


def main() -> None:
    _lower_priority()
    from memlens.blind import cross_val_scores
    from memlens.errors import BlindError

    texts, labels, folds, repeats, seed = pickle.loads(sys.stdin.buffer.read())
    try:
        out = ("ok", cross_val_scores(texts, labels, folds=folds, repeats=repeats, seed=seed))
    except BlindError as e:
        out = ("error", str(e))
    sys.stdout.buffer.write(pickle.dumps(out))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
