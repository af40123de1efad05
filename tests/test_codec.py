"""The codec: round trips, edge-case tensors, determinism, exact nearest-point search, error bounds."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.codec import WindingConfig, bitpack, winding

WINDING_PRESETS = sorted(p for p, c in hyperonnx.PRESETS.items() if isinstance(c, hyperonnx.WindingConfig))

DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16]


def sqnr_db(x, y):
    x = x.astype(np.float64)
    return 10 * np.log10(np.sum(x * x) / np.sum((x - y.astype(np.float64)) ** 2))


@pytest.mark.parametrize("shape", [(1001,), (37, 29), (3, 5, 7), (8, 3, 3, 3), (1, 1, 1, 33)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_keeps_shape_dtype_and_quality(shape, dtype):
    rng = np.random.default_rng(0)
    array = (0.05 * rng.standard_normal(shape)).astype(dtype)
    seed = hyperonnx.encode(array, "paper")
    out = hyperonnx.decode(seed)
    assert seed.codec == "winding"
    assert out.shape == array.shape and out.dtype == array.dtype
    assert sqnr_db(array, out) > 15  # the paper preset gives ~20 dB on Gaussian weights
    # the decoded dtype is the float32 decode, rounded to nearest even
    flat = winding.decode(seed.payload, seed.attrs, seed.num_elements)
    assert out.tobytes() == flat.astype(dtype).reshape(shape).tobytes()


@pytest.mark.parametrize("preset", WINDING_PRESETS)
def test_presets_reach_the_bit_widths_of_their_settings(preset):
    rng = np.random.default_rng(1)
    array = (0.05 * rng.standard_normal(20000)).astype(np.float32)
    array[::997] *= 20  # some outliers, so rings are used
    seed = hyperonnx.encode(array, preset)
    config = hyperonnx.PRESETS[preset]
    if seed.codec == "raw":
        assert config.max_mean_abs_error is not None
        return
    n, rings = seed.attrs["points"], seed.attrs["rings"]
    assert n in config.points and rings == config.max_rings
    indices = bitpack.unpack(seed.payload, seed.attrs["bits"], fmt.num_pairs(array.size))
    assert seed.attrs["bits"] == int(indices.max()).bit_length()
    assert seed.payload.size == (10000 * seed.attrs["bits"] + 7) // 8


def test_odd_length_drops_the_padding():
    array = np.arange(7, dtype=np.float32) / 10
    out = hyperonnx.decode(hyperonnx.encode(array, "paper", min_elements=1))
    assert out.shape == (7,)
    assert np.abs(out - array).max() < 0.03


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_zero_and_all_equal_tensors_are_exact(dtype):
    for value in (0.0, 0.3125, -7.5):
        array = np.full((16, 16), value, dtype=dtype)
        seed = hyperonnx.encode(array, "paper")
        assert seed.codec == "winding"
        assert hyperonnx.decode(seed).tobytes() == array.tobytes()  # every pair is the centroid


def test_single_outlier_stays_within_its_ring_bound_and_others_keep_quality():
    rng = np.random.default_rng(2)
    array = (0.02 * rng.standard_normal(4096)).astype(np.float32)
    array[1234] = 50.0
    seed = hyperonnx.encode(array, "paper")
    out = hyperonnx.decode(seed)
    book = winding.Codebook.from_attrs(seed.attrs)
    assert seed.attrs["rings"] == 4
    assert abs(out[1234] - 50.0) <= book.covering_radius() * book.scales[-1]
    assert np.isfinite(out).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_values_are_kept_exactly(bad, dtype):
    array = np.linspace(-1, 1, 256).astype(dtype)
    array[17] = bad
    seed = hyperonnx.encode(array)
    assert seed.codec == "raw" and seed.attrs["reason"] == "non-finite"
    assert hyperonnx.decode(seed).tobytes() == array.tobytes()


def test_small_tensors_stay_raw():
    seed = hyperonnx.encode(np.ones(5, np.float32), min_elements=16)
    assert seed.codec == "raw" and seed.nbytes == 20


def test_float16_overflow_falls_back_to_raw():
    # a huge range with side 0.8 and no rings is impossible: rings stretch far, so check the guard
    array = np.array([65504.0, -65504.0] * 32, dtype=np.float16)
    seed = hyperonnx.encode(array)
    out = hyperonnx.decode(seed)
    assert np.isfinite(out.astype(np.float32)).all()


def test_error_budget_sends_misses_to_raw_and_keeps_hits():
    rng = np.random.default_rng(3)
    small = (0.001 * rng.standard_normal(4096)).astype(np.float32)
    wide = rng.standard_normal(4096).astype(np.float32)
    config = WindingConfig(side=0.1, points=(225, 1600), max_rings=3, max_mean_abs_error=0.006)
    hit, miss = hyperonnx.encode(small, config), hyperonnx.encode(wide, config)
    assert hit.codec == "winding" and hit.attrs["points"] == 225  # the first n that meets it
    assert np.mean(np.abs(hyperonnx.decode(hit) - small)) <= 0.006
    assert miss.codec == "raw" and miss.attrs["reason"] == "error budget"


def test_same_input_gives_the_same_bytes():
    rng = np.random.default_rng(4)
    array = (0.05 * rng.standard_normal((300, 301))).astype(np.float32)
    a, b = hyperonnx.encode(array), hyperonnx.encode(array.copy())
    assert a.payload.tobytes() == b.payload.tobytes() and a.attrs == b.attrs


def test_bad_configs_and_inputs_are_refused():
    with pytest.raises(ValueError, match="preset"):
        hyperonnx.encode(np.ones(64, np.float32), "nope")
    with pytest.raises(TypeError, match="float32"):
        hyperonnx.encode(np.ones(64, np.int32))
    with pytest.raises(ValueError):
        WindingConfig(side=-1)
    with pytest.raises(ValueError):
        WindingConfig(points=(0,))
    with pytest.raises(ValueError, match="24 bits"):
        WindingConfig(points=(1 << 20,), max_rings=64)


@pytest.mark.parametrize("points", [1, 2, 3, 5, 24, 25, 26, 99, 225, 1000, 1600, 1601])
def test_nearest_point_is_the_true_nearest(points):
    rng = np.random.default_rng(points)
    side = np.float32(rng.uniform(0.05, 2.0))
    book = winding.Codebook(points, 0, np.zeros(2, np.float32), side, np.ones(1, np.float32))
    all_x, all_y = book.trajectory(np.arange(points + 1))
    # targets across the square and a little beyond it, where clamping matters
    targets = rng.uniform(-0.55 * side, 0.55 * side, size=(4000, 2))
    j = book.nearest(targets[:, 0], targets[:, 1])
    brute = ((all_x[None] - targets[:, :1]) ** 2 + (all_y[None] - targets[:, 1:]) ** 2).min(axis=1)
    got_x, got_y = book.trajectory(j)
    assert np.array_equal((got_x - targets[:, 0]) ** 2 + (got_y - targets[:, 1]) ** 2, brute)


@settings(max_examples=60, deadline=None)
@given(array=hnp.arrays(np.float32, st.integers(2, 3000),
                        elements=st.floats(-100, 100, width=32, allow_subnormal=True)),
       preset=st.sampled_from(WINDING_PRESETS))
def test_every_pair_lies_within_the_covering_radius_times_its_class_scale(array, preset):
    seed = hyperonnx.encode(array, preset, min_elements=1)
    out = hyperonnx.decode(seed)
    if seed.codec == "raw":
        assert out.tobytes() == array.tobytes()
        return
    book = winding.Codebook.from_attrs(seed.attrs)
    indices = bitpack.unpack(seed.payload, seed.attrs["bits"], fmt.num_pairs(array.size))
    bound = book.covering_radius() * book.scales[indices // (book.points + 1)].astype(np.float64)
    padded = np.resize(array, 2 * indices.size).astype(np.float64)
    padded[array.size:] = out[-1] if array.size % 2 else 0  # the dropped coordinate: ignore it
    decoded = np.resize(out, 2 * indices.size).astype(np.float64)
    decoded[array.size:] = padded[array.size:]
    distance = np.hypot(*(decoded - padded).reshape(-1, 2).T)
    rounding = 4 * np.finfo(np.float32).eps * (np.abs(padded).reshape(-1, 2).max(axis=1) + 1e-30)
    assert np.all(distance <= bound + rounding)
