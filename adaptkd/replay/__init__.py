"""Teacher replay: the frozen teachers' outputs computed once per training view and replayed.

``adaptkd cache-teacher CONFIG`` (:func:`build_cache`) writes, per rank, one memory-mappable file
holding every view of ``E`` epochs (sample index, augmentation parameters) and the teachers'
logits for it; a run whose config has the same ``teachers_cache`` section replays those views
(:class:`Replay`) and runs no teacher forward; a hand-written loop reads the same views and logits
with :class:`ReplayedViews`. See docs/replay.md.
"""

from adaptkd.replay.build import build_cache
from adaptkd.replay.source import Replay, ReplayedBatch
from adaptkd.replay.store import CacheFile, cache_file, decode_topk, encode_topk
from adaptkd.replay.views import ReplayedViews

__all__ = ["CacheFile", "Replay", "ReplayedBatch", "ReplayedViews", "build_cache", "cache_file", "decode_topk",
           "encode_topk"]
