"""``rnnc.data``: variable-length sequences into rnnc's ``(T, B, ...)`` arrays and ``(B,)`` lengths, bucketed
batches, batch-first <-> time-first helpers with layout-aware refusals, a character/word vocabulary, a
deterministic train/validation split and datasets read from disk a batch at a time. See ``docs/data.md``."""
from rnnc.data.bucket import batches, bucket_indices, collate, split
from rnnc.data.disk import DiskDataset, npz_to_folder
from rnnc.data.pad import check_lengths, check_sequence_array, pad, to_batch_first, to_time_first, unpad
from rnnc.data.vocab import SPECIALS, Vocab

__all__ = ["batches", "bucket_indices", "collate", "split", "DiskDataset", "npz_to_folder", "check_lengths",
           "check_sequence_array", "pad", "to_batch_first", "to_time_first", "unpad", "SPECIALS", "Vocab"]
