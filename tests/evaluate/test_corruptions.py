"""MNIST-C's 15 corruptions (mnist_bench.evaluate.corruptions) on hand-made 28×28 digits: the interface's
contract (shape, range, determinism, the index rule) and, per corruption, the change MNIST-C's definition and
severity make."""

import numpy as np
import pytest
from scipy import ndimage
from skimage import color, transform

from mnist_bench.evaluate.corruptions import CORRUPTION_ID, CORRUPTIONS, SEVERITY, corrupt, corrupt_all

RANDOM = {
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "rotate",
    "translate",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
}
FIXED = set(CORRUPTIONS) - RANDOM  # scale, brightness, stripe, canny_edges: no randomness at all

ROWS, COLS = np.mgrid[0:28, 0:28]


def bar() -> np.ndarray:
    """A '1': a vertical bar 3 px wide, rows 4-23, columns 12-14."""
    x = np.zeros((28, 28), np.float32)
    x[4:24, 12:15] = 1
    return x


def ring() -> np.ndarray:
    """A '0': a ring of radius 7 about the centre (13.5, 13.5), 3 px thick."""
    return (np.abs(np.hypot(ROWS - 13.5, COLS - 13.5) - 7) <= 1.5).astype(np.float32)


def ell() -> np.ndarray:
    """An 'L'."""
    x = np.zeros((28, 28), np.float32)
    x[5:22, 8:11] = 1
    x[19:22, 8:20] = 1
    return x


def seven() -> np.ndarray:
    """A '7': a top stroke and a slanted stem."""
    x = np.zeros((28, 28), np.float32)
    x[5:8, 7:21] = 1
    for k in range(14):
        x[8 + k, 19 - k // 2 : 22 - k // 2] = 1
    return x


DIGITS = np.stack([bar(), ring(), ell(), seven(), ring(), bar()])


def centroid(x: np.ndarray) -> np.ndarray:
    """(row, col) of the ink's centre of mass."""
    return np.array([(x * ROWS).sum(), (x * COLS).sum()]) / x.sum()


def axis_angle(x: np.ndarray) -> float:
    """The ink's principal axis as an angle from the vertical, in radians (positive: the bottom leans
    right)."""
    w = x / x.sum()
    dr, dc = ROWS - (w * ROWS).sum(), COLS - (w * COLS).sum()
    cov = np.array([[(w * dr * dr).sum(), (w * dr * dc).sum()], [(w * dr * dc).sum(), (w * dc * dc).sum()]])
    vals, vecs = np.linalg.eigh(cov)
    r, c = vecs[:, np.argmax(vals)]
    if r < 0:
        r, c = -r, -c
    return float(np.arctan2(c, r))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# ----------------------------------------------------------------------------------------------------
# interface


def test_the_fifteen_names_in_mnist_c_order_with_severities():
    assert CORRUPTIONS == (
        "shot_noise",
        "impulse_noise",
        "glass_blur",
        "motion_blur",
        "shear",
        "scale",
        "rotate",
        "brightness",
        "translate",
        "stripe",
        "fog",
        "spatter",
        "dotted_line",
        "zigzag",
        "canny_edges",
    )
    assert list(SEVERITY) == list(CORRUPTIONS) and all(isinstance(v, str) and v for v in SEVERITY.values())
    assert sorted(CORRUPTION_ID.values()) == list(range(1, 16))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_contract(name):
    images = DIGITS.copy()
    out = corrupt(images, name, seed=0)
    assert out.shape == (len(DIGITS), 28, 28) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(images, DIGITS)  # the input is not modified in place
    assert out is not images
    np.testing.assert_array_equal(out, corrupt(DIGITS, name, seed=0))  # same seed and index, same output
    other = corrupt(DIGITS, name, seed=1)
    if name in RANDOM:
        assert any(not np.array_equal(o, p) for o, p in zip(out, other, strict=True))
        # the randomness follows the index: the same images at other test-set positions are corrupted
        # otherwise
        moved = corrupt(DIGITS, name, seed=0, index=np.arange(100, 100 + len(DIGITS)))
        assert any(not np.array_equal(o, p) for o, p in zip(out, moved, strict=True))
    else:
        np.testing.assert_array_equal(out, other)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_changes_the_image_but_keeps_the_digit(name):
    out = corrupt(DIGITS, name, seed=0)
    for clean, bad in zip(DIGITS, out, strict=True):
        assert np.abs(bad - clean).mean() > 0.005
        if (
            name == "translate"
        ):  # moved by 3 px, farther than the 3-px strokes are wide: compare it moved back
            best = max(
                correlation(bad, np.roll(clean, (dr, dc), axis=(0, 1))) for dr in (-3, 3) for dc in (-3, 3)
            )
            assert best > 0.99
        else:
            assert correlation(bad, clean) > 0.1


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_an_image_is_corrupted_by_its_index_whatever_subset_holds_it(name):
    rng = np.random.default_rng(7)
    batch = np.stack([DIGITS[i % len(DIGITS)] for i in range(12)])
    batch = np.clip(batch + 0.05 * rng.random(batch.shape), 0, 1).astype(np.float32)  # every image its own
    whole = corrupt(batch, name, seed=3)
    pair = corrupt(batch[[5, 9]], name, seed=3, index=np.array([5, 9]))
    np.testing.assert_array_equal(pair, whole[[5, 9]])


def test_the_randomness_is_the_documented_generator():
    out = corrupt(DIGITS[:2], "shot_noise", seed=4, index=np.array([11, 30]))
    for x, i, got in zip(DIGITS[:2], (11, 30), out, strict=True):
        rng = np.random.default_rng([4, CORRUPTION_ID["shot_noise"], i])
        np.testing.assert_allclose(got, np.clip(rng.poisson(x * 3.0) / 3.0, 0, 1), atol=1e-7)
    grey = np.full((2, 28, 28), 0.5, np.float32)
    out = corrupt(grey, "impulse_noise", seed=4, index=np.array([11, 30]))
    for i, got in zip((11, 30), out, strict=True):
        rng = np.random.default_rng([4, CORRUPTION_ID["impulse_noise"], i])
        flipped, salted = rng.random((28, 28)) < 0.17, rng.random((28, 28)) < 0.5
        np.testing.assert_array_equal(got, np.where(flipped, salted.astype(np.float32), 0.5))


def test_unknown_name_raises_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown corruption 'gaussian_blur'") as info:
        corrupt(DIGITS, "gaussian_blur")
    assert all(name in str(info.value) for name in CORRUPTIONS)


def test_bad_shapes_and_index_are_refused():
    with pytest.raises(ValueError, match="N×28×28"):
        corrupt(DIGITS[0], "rotate")
    with pytest.raises(ValueError, match="index"):
        corrupt(DIGITS, "rotate", index=np.arange(3))


def test_corrupt_all_is_every_corruption():
    out = corrupt_all(DIGITS[:2], seed=2)
    assert list(out) == list(CORRUPTIONS)
    for name in ("zigzag", "canny_edges"):
        np.testing.assert_array_equal(out[name], corrupt(DIGITS[:2], name, seed=2))


# ---------------------------------------------------------------------------------------------------- each
# one


def test_shot_noise_is_poisson_with_3_photons():
    out = corrupt(np.tile(bar(), (8, 1, 1)), "shot_noise")
    ink = np.tile(bar(), (8, 1, 1)) == 1
    assert np.all(out[~ink] == 0)  # no photons where there is no light
    assert set(np.unique(np.round(out * 3, 5))) <= {0.0, 1.0, 2.0, 3.0}  # counts of 3 photons per unit
    # an ink pixel stays white when at least 3 photons come: P(Poisson(3) >= 3) = 1 - e^-3 (1 + 3 + 4.5) =
    # 0.577
    assert abs((out[ink] == 1).mean() - 0.577) < 0.05
    assert abs(out[ink].mean() - 0.776) < 0.04  # E[min(Poisson(3), 3)] / 3


def test_impulse_noise_flips_17_percent_of_pixels_half_to_white():
    grey = np.full((4, 28, 28), 0.5, np.float32)
    out = corrupt(grey, "impulse_noise")
    changed = out != 0.5
    assert abs(changed.mean() - 0.17) < 0.025
    assert set(np.unique(out[changed])) == {0.0, 1.0}
    assert abs((out[changed] == 1).mean() - 0.5) < 0.06


def test_glass_blur_keeps_the_ink_and_moves_it_only_locally():
    images = np.tile(bar(), (6, 1, 1))
    out = corrupt(images, "glass_blur")
    for clean, bad in zip(images, out, strict=True):
        assert abs(bad.sum() / clean.sum() - 1) < 0.03  # swaps and Gaussian blurs keep the ink
        assert np.abs(centroid(bad) - centroid(clean)).max() < 1.0
        spread = np.sqrt((bad * (COLS - centroid(bad)[1]) ** 2).sum() / bad.sum())
        # the bar is 3 px wide (sd 0.82); its blur runs down the columns, so only the swaps widen it
        assert 0.9 < spread < 2.5


def test_glass_blur_blurs_down_the_columns_as_the_original():
    def spread(profile: np.ndarray) -> float:
        w = profile / profile.sum()
        return float(np.sqrt((w * (np.arange(28) - (w * np.arange(28)).sum()) ** 2).sum()))

    across = np.zeros((8, 28, 28), np.float32)
    across[:, 14, 4:24] = 1  # a horizontal line, and the same line turned upright
    upright = np.transpose(across, (0, 2, 1)).copy()
    thick = np.mean([spread(img.sum(axis=1)) for img in corrupt(across, "glass_blur")])
    thin = np.mean([spread(img.sum(axis=0)) for img in corrupt(upright, "glass_blur")])
    # MNIST-C's gaussian(..., multichannel=True) on a 2-D image blurred down the columns only: the horizontal
    # line is blurred (sd 0.7 twice) and swapped, the upright one only swapped
    assert thick > thin + 0.15


def test_motion_blur_trails_a_dot_along_one_line_by_the_half_gaussian_kernel():
    dots = np.zeros((8, 28, 28), np.float32)
    dots[:, 14, 22] = 1
    out = corrupt(dots, "motion_blur")
    k0 = 1 / np.exp(-(np.arange(21) ** 2) / 18).sum()  # the kernel's first tap: 1 / sum exp(-i²/2σ²), σ = 3
    angles = []
    for img in out:
        assert abs(img.sum() - 1) < 1e-5  # the kernel sums to 1 and the trail stays inside
        assert abs(img[14, 22] - k0) < 1e-6
        assert not img[:, 23:].any()  # the trail runs from the dot leftwards (angles within ±45°)
        r, c = np.nonzero(img > 1e-3)
        # tap 9 weighs k0 e^(-81/18) = 0.0026 and tap 10 0.0009: the visible trail ends about 9 px away
        assert 8 < np.hypot(r - 14, c - 22).max() < 11.5  # (offsets rounded to whole pixels)
        slope = np.polyfit(c, r, 1)[0]
        assert abs(slope) <= 1.05
        angles.append(slope)
    assert len(set(np.round(angles, 2))) > 3  # a random angle per image


def test_shear_slants_the_bar_by_sin_0_4():
    images = np.tile(bar(), (8, 1, 1))
    out = corrupt(images, "shear", index=np.arange(8))
    slopes = []
    for img in out:
        rows = np.arange(8, 20)  # the bar's middle rows: the column of its ink, row by row
        cols = [(img[r] * np.arange(28)).sum() / img[r].sum() for r in rows]
        slopes.append(np.polyfit(rows, cols, 1)[0])
    np.testing.assert_allclose(np.abs(slopes), np.sin(0.4), atol=0.02)
    assert min(slopes) < 0 < max(slopes)  # either direction


def test_shear_is_the_2019_skimage_warp():
    x = ell()[None]
    out = corrupt(x, "shear")[0]
    candidates = []
    for s in (-0.4, 0.4):
        m = np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
        m[0, 2] = 13.5 * (1 - m[0, 0] - m[0, 1])
        m[1, 2] = 13.5 * (1 - m[1, 0] - m[1, 1])
        candidates.append(
            transform.warp(x[0].astype(np.float64), transform.AffineTransform(matrix=m), order=1)
        )
    assert min(np.abs(out - c).max() for c in candidates) < 1e-5


def test_scale_shrinks_the_digit_to_0_7_about_the_centre():
    square = np.zeros((28, 28), np.float32)
    square[7:21, 7:21] = 1  # 14 px, centred on (13.5, 13.5)
    out = corrupt(np.stack([square, ring()]), "scale")
    for clean, small in zip((square, ring()), out, strict=True):
        np.testing.assert_allclose(centroid(small), centroid(clean), atol=0.05)
        spread = [np.sqrt((x * (ROWS - 13.5) ** 2).sum() / x.sum()) for x in (clean, small)]
        assert abs(spread[1] / spread[0] - 0.7) < 0.03
    assert abs(out[0].sum() / square.sum() - 0.49) < 0.05  # the area by 0.7²


def test_rotate_turns_the_bar_by_0_4_rad_either_way():
    out = corrupt(np.tile(bar(), (8, 1, 1)), "rotate")
    assert abs(axis_angle(bar())) < 1e-6
    angles = np.array([axis_angle(img) for img in out])
    np.testing.assert_allclose(np.abs(angles), 0.4, atol=0.02)
    assert angles.min() < 0 < angles.max()
    for img in out:  # about the centre: the bar's centroid, 0.5 px left of it, stays 0.5 px away
        assert abs(np.hypot(*(centroid(img) - 13.5)) - 0.5) < 0.05


def _centred_rotation(a: float) -> np.ndarray:
    """skimage's rotation matrix with the translation that keeps (13.5, 13.5) fixed, as MNIST-C builds it."""
    m = transform.AffineTransform(rotation=a).params
    m[0, 2] = 13.5 * (1 - m[0, 0] - m[0, 1])
    m[1, 2] = 13.5 * (1 - m[1, 0] - m[1, 1])
    return m


def test_rotate_is_the_skimage_warp_about_the_centre():
    x = seven().astype(np.float64)
    out = corrupt(x[None], "rotate")[0]
    candidates = [
        transform.warp(x, transform.AffineTransform(matrix=_centred_rotation(a)), order=1)
        for a in (-0.4, 0.4)
    ]
    assert min(np.abs(out - c).max() for c in candidates) < 1e-5


def test_brightness_raises_the_background_to_half():
    out = corrupt(DIGITS, "brightness")
    ink = DIGITS == 1
    assert np.all(out[~ink] == 0.5) and np.all(out[ink] == 1)
    # the same as MNIST-C's grey -> RGB -> HSV, value + 0.5, back to grey, on every grey level
    levels = np.linspace(0, 1, 28 * 28).reshape(1, 28, 28).astype(np.float32)
    hsv = color.rgb2hsv(color.gray2rgb(levels[0].astype(np.float64)))
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + 0.5, 0, 1)
    np.testing.assert_allclose(
        corrupt(levels, "brightness")[0], color.rgb2gray(color.hsv2rgb(hsv)), atol=1e-6
    )


def test_translate_moves_the_ink_by_3_px_each_way():
    out = corrupt(np.tile(ring(), (16, 1, 1)), "translate")
    moves = set()
    for img in out:
        move = centroid(img) - centroid(ring())
        np.testing.assert_allclose(np.abs(move), 3, atol=1e-4)
        assert abs(img.sum() - ring().sum()) < 1e-3  # whole-pixel moves keep the ink
        moves.add(tuple(np.round(move).astype(int)))
    assert moves == {(-3, -3), (-3, 3), (3, -3), (3, 3)}


def test_stripe_inverts_the_outer_columns():
    blank = np.zeros((1, 28, 28), np.float32)
    out = corrupt(blank, "stripe")[0]
    assert np.all(out[:, :7] == 1) and np.all(out[:, 21:] == 1) and np.all(out[:, 7:21] == 0)
    x = ell()
    got = corrupt(x[None], "stripe")[0]
    np.testing.assert_array_equal(got[:, 7:21], x[:, 7:21])
    np.testing.assert_allclose(got[:, :7], 1 - x[:, :7])


def test_fog_adds_a_smooth_field_and_quarters_the_contrast():
    out = corrupt(DIGITS[:4], "fog")
    fields = []
    for clean, foggy in zip(DIGITS[:4], out, strict=True):
        # MNIST-C: (x + 3 fog) * max / (max + 3) with max = 1 and fog in [0, 1]
        fog = (4 * foggy - clean) / 3
        assert fog.min() > -1e-5 and fog.max() < 1 + 1e-5
        assert fog.std() > 0.01
        assert np.abs(np.diff(fog, axis=1)).mean() < 0.05  # a smooth field, not pixel noise
        assert foggy[clean == 0].mean() > 0.05  # the background brightens
        step, ink_step = np.diff(foggy, axis=1), np.sign(np.diff(clean, axis=1))
        assert abs((step * ink_step)[ink_step != 0].mean() - 0.25) < 0.02  # an ink edge of 1 becomes 1/(1+3)
        fields.append(fog)
    assert np.abs(fields[0] - fields[1]).max() > 0.01  # each image its own fog


def test_spatter_paints_mud_of_grey_63():
    blank = np.zeros((6, 28, 28), np.float32)
    out = corrupt(blank, "spatter")
    mud = out > 0
    assert 0.01 < mud.mean() < 0.6
    # mud intensity 63/255 times the mask, and the mask is kept only from 0.8
    assert out[mud].min() >= 0.8 * 63 / 255 - 1e-6 and out[mud].max() <= 63 / 255 + 1e-6
    on_ink = corrupt(np.tile(bar(), (6, 1, 1)), "spatter")
    hit = (np.tile(bar(), (6, 1, 1)) == 1) & (on_ink < 1)
    assert hit.any() and on_ink[hit].max() < 0.41  # ink under mud: 1 - (1 - 63/255) m with m >= 0.8


def test_dotted_line_adds_2_px_dashes_across():
    blank = np.zeros((8, 28, 28), np.float32)
    out = corrupt(blank, "dotted_line")
    dashes = [2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26]
    for img in out:
        inked = np.flatnonzero(img.any(axis=0))
        assert list(inked) == dashes
    on_digit = corrupt(DIGITS, "dotted_line")
    assert np.all(on_digit >= DIGITS) and (on_digit > DIGITS).sum() > 30 * len(DIGITS)


def test_zigzag_adds_teeth_between_columns_2_and_25():
    blank = np.zeros((8, 28, 28), np.float32)
    out = corrupt(blank, "zigzag")
    for img in out:
        inked = np.flatnonzero(img.any(axis=0))
        assert inked.min() >= 2 and inked.max() <= 25 and len(inked) >= 22
        cols = np.arange(3, 24)
        height = np.array([(img[:, c] * np.arange(28)).sum() / img[:, c].sum() for c in cols])
        turns = np.sum(np.diff(np.sign(np.diff(height))) != 0)
        assert turns >= 4  # up and down: teeth every 4 px
    on_digit = corrupt(DIGITS, "zigzag")
    assert np.all(on_digit >= DIGITS) and (on_digit > DIGITS).sum() > 30 * len(DIGITS)


def test_canny_edges_of_a_filled_square_keep_its_outline():
    square = np.zeros((1, 28, 28), np.float32)
    square[0, 8:20, 8:20] = 1
    edges = corrupt(square, "canny_edges")[0]
    assert set(np.unique(edges)) == {0.0, 1.0}
    inside = ndimage.binary_erosion(square[0] > 0, iterations=1)
    near = ndimage.binary_dilation(square[0] > 0, iterations=1)
    assert not edges[inside].any() and not edges[~near].any()  # only within a pixel of the square's border
    for side in (edges[8, 8:20], edges[19, 8:20], edges[8:20, 8], edges[8:20, 19]):
        assert side.sum() >= 8
    assert 36 <= edges.sum() <= 50  # the perimeter is 44 px
