"""``rnnc.data``: padding round trips, bucketed epochs (every sample once, lengths right, deterministic), layout
refusals, the vocabulary, the split and datasets on disk."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rnnc as rc
import rnnc.data as rd

lengths_st = st.lists(st.integers(1, 9), min_size=1, max_size=12)


def _sequences(lengths, features=(2,), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, *features)) for n in lengths]


@given(lengths_st, st.sampled_from([(), (2,), (2, 3)]))
def test_pad_then_unpad_gives_back_the_sequences(lengths, features):
    seqs = _sequences(lengths, features)
    x, lens = rd.pad(seqs, value=-7.0)
    assert x.shape == (max(lengths), len(lengths), *features) and lens.dtype == np.int64
    assert lens.tolist() == lengths
    assert all(np.array_equal(a, b) for a, b in zip(rd.unpad(x, lens), seqs))
    assert all((x[n:, b] == -7.0).all() for b, n in enumerate(lengths))


@given(lengths_st, st.integers(1, 5), st.integers(0, 3), st.sampled_from([None, 1, 3]), st.booleans())
def test_bucketed_epoch_has_every_sample_once_with_its_own_lengths(lengths, batch, seed, pool, shuffle):
    seqs = _sequences(lengths)
    data = {"x": seqs, "y": np.arange(len(seqs)), "z": [np.arange(n) for n in lengths]}
    seen = []
    for b in rd.batches(data, batch, seed=seed, pool=pool, shuffle=shuffle):
        assert b["x"].shape[0] == b["x_lengths"].max()          # padded to its own longest sample only
        assert set(b) == {"x", "x_lengths", "y", "z"} and len(b["y"]) <= batch
        for k, i in enumerate(b["y"]):
            assert b["x_lengths"][k] == lengths[i]
            assert np.array_equal(b["x"][: lengths[i], k], seqs[i])
            assert np.array_equal(b["z"][: lengths[i], k], np.arange(lengths[i]))
        seen += b["y"].tolist()
    assert sorted(seen) == list(range(len(lengths)))
    again = [b["y"].tolist() for b in rd.batches(data, batch, seed=seed, pool=pool, shuffle=shuffle)]
    assert sum(again, []) == seen


def test_global_bucketing_pads_less_than_random_batches():
    lengths = np.random.default_rng(0).integers(1, 60, size=200)
    data = {"x": _sequences(lengths, (1,))}
    padded = sum(b["x"].size for b in rd.batches(data, 16, pool=None))
    unsorted = sum(b["x"].size for b in rd.batches(data, 16, pool=1))
    assert padded < 0.7 * unsorted
    first = [b["x_lengths"].tolist() for b in rd.batches(data, 16, epoch=0)]
    assert first != [b["x_lengths"].tolist() for b in rd.batches(data, 16, epoch=1)]


def test_batches_feed_a_model_with_lengths():
    m = rc.Model("tagger")
    x = m.input("x", 2, lengths=True)
    W = m.param("W", (3, 2))
    m.output("o", W @ x[rc.t])
    params = m.init_params()
    seqs = _sequences([3, 1, 4])
    b = rd.collate({"x": seqs}, [0, 1, 2])
    out = rc.interpret(m, b, params).outputs["o"]
    for got, seq in zip(rd.unpad(out, b["x_lengths"]), seqs):
        assert np.allclose(got, seq @ params["W"].T)


def test_pad_refusals_name_the_array():
    with pytest.raises(ValueError, match=r"seqs\[1\]: expected steps of shape \(2,\) \(like seqs\[0\]\), got \(3,\)"):
        rd.pad([np.zeros((2, 2)), np.zeros((2, 3))], name="seqs")
    with pytest.raises(ValueError, match=r"sequences\[0\]: expected at least 1 step"):
        rd.pad([np.zeros((0, 2))])
    with pytest.raises(ValueError, match=r"sequences\[1\]: expected at most length=2 steps, got 3"):
        rd.pad([np.zeros(1), np.zeros(3)], length=2)


def test_layout_refusals_say_which_layout_was_meant():
    x = np.zeros((5, 4, 8))                             # (T, B, D)
    assert rd.check_sequence_array("x", x, 8, lengths=np.full(4, 5)) is x
    with pytest.raises(ValueError, match=r"x: expected layout \(T, B, 8\), got shape \(4, 8, 5\).*\(B, D, T\)"):
        rd.check_sequence_array("x", np.zeros((4, 8, 5)), 8)
    with pytest.raises(ValueError, match=r"no batch axis"):
        rd.check_sequence_array("x", np.zeros((5, 8)), 8)
    with pytest.raises(ValueError, match=r"x_lengths: expected 5 lengths .* got 4; .*batch-first"):
        rd.check_sequence_array("x", np.zeros((4, 5, 8)), 8, lengths=np.full(4, 5))
    with pytest.raises(ValueError, match=r"x_lengths: expected lengths in 1\.\.4 .*batch-first"):
        rd.check_sequence_array("x", np.zeros((4, 4, 8)), 8, lengths=np.full(4, 9))
    bt = np.arange(24).reshape(4, 3, 2)
    assert np.array_equal(rd.to_batch_first(rd.to_time_first(bt)), bt)
    assert rd.to_time_first(bt).shape == (3, 4, 2)


@given(st.text(alphabet="abcxyz \n", max_size=30))
def test_char_vocab_round_trips(text):
    v = rd.Vocab.build(["abc xyz\n"], level="char")
    assert v.decode(v.encode(text, end=True)) == text
    assert v.encode(text).dtype == np.int64


def test_word_vocab_unknowns_specials_and_file(tmp_path):
    v = rd.Vocab.build(["the cat sat", "the dog"], level="word")
    assert v.tokens[:4] == ["<pad>", "<unk>", "<end>", "the"] and len(v) == 7
    ids = v.encode("the  bird sat", end=True)
    assert ids.tolist() == [3, v.unk_id, v.ids["sat"], v.end_id]
    assert v.decode(ids) == "the <unk> sat" and v.decode([0, 3, 2, 4]) == "the"
    v.save(tmp_path / "v.json")
    w = rd.Vocab.load(tmp_path / "v.json")
    assert w.tokens == v.tokens and w.level == "word"
    (tmp_path / "bad.json").write_text('{"format": "rnnc-vocab", "version": 1, "level": "word", "tokens": ["a", "a"]}')
    with pytest.raises(ValueError, match=r"bad.json: tokens: expected each token once, got 'a' twice"):
        rd.Vocab.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"ids\[0\]: expected an id in 0\.\.6, got 99"):
        v.decode([99])


@given(st.integers(0, 40), st.floats(0.0, 0.9), st.integers(0, 3))
def test_split_is_deterministic_and_partitions(n, val, seed):
    data = {"x": [np.full(2, i) for i in range(n)], "y": np.arange(n)}
    train, valid = rd.split(data, val=val, seed=seed)
    assert sorted(train["y"].tolist() + valid["y"].tolist()) == list(range(n))
    assert len(valid["y"]) == round(val * n)
    assert all(x[0] == y for x, y in zip(valid["x"], valid["y"]))
    again = rd.split(data, val=val, seed=seed)
    assert np.array_equal(again[1]["y"], valid["y"])


def _write_dataset(tmp_path, lengths):
    x, lens = rd.pad(_sequences(lengths, (3,)))
    arrays = {"x": x, "x_lengths": lens, "y": np.arange(len(lengths))}
    np.savez(tmp_path / "d.npz", **arrays)
    return arrays


@pytest.mark.parametrize("kind", ["folder", "npz"])
def test_disk_dataset_reads_bucketed_batches(tmp_path, kind):
    lengths = [4, 1, 7, 2, 2, 5, 3]
    arrays = _write_dataset(tmp_path, lengths)
    source = rd.npz_to_folder(tmp_path / "d.npz", tmp_path / "d") if kind == "folder" else tmp_path / "d.npz"
    ds = rd.DiskDataset(source)
    assert len(ds) == 7 and ds.sequences == ("x",)
    if kind == "folder":
        assert isinstance(ds.arrays["x"], np.memmap)
    seen = []
    for b in ds.batches(3, seed=1):
        assert b["x"].shape[0] == b["x_lengths"].max()
        for k, i in enumerate(b["y"]):
            assert np.array_equal(b["x"][:, k], arrays["x"][: b["x"].shape[0], i])
        seen += b["y"].tolist()
    assert sorted(seen) == list(range(7))


def test_disk_dataset_refuses_mismatched_fields(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((6, 4, 2)))
    np.save(tmp_path / "x_lengths.npy", np.full(4, 6))
    np.save(tmp_path / "y.npy", np.zeros((6, 4)))
    with pytest.raises(ValueError, match=r"y: expected 4 samples .* on axis 0, got 6; .*sequences="):
        rd.DiskDataset(tmp_path)
    assert len(rd.DiskDataset(tmp_path, sequences=("x", "y"))) == 4
