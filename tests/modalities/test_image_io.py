"""Real-image reading: formats, table, resizing, normalisation, bad files, seeded augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcrystal.modalities.image_io import (
    AugmentConfig,
    ImageIOConfig,
    ImageReadError,
    augment_images,
    load_images,
    normalize_image,
    read_image,
    read_image_table,
    resize_image,
)

Image = pytest.importorskip("PIL.Image")


def _gradient(height: int = 40, width: int = 40) -> np.ndarray:
    """Values increase along columns (x) and, less, along rows (y); (H, W)."""
    return np.add.outer(np.arange(height) * 0.5, np.arange(width, dtype=np.float64))


@pytest.fixture()
def image_folder(tmp_path):
    grad = _gradient()
    Image.fromarray((grad / grad.max() * 255).astype(np.uint8), mode="L").save(tmp_path / "gray.png")
    rgb = np.repeat((grad / grad.max() * 255).astype(np.uint8)[..., None], 3, axis=2)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    Image.fromarray((grad / grad.max() * 60000).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(grad.astype(np.float32), mode="F").save(tmp_path / "float.tif")
    np.save(tmp_path / "array.npy", grad.astype(np.float32))
    (tmp_path / "broken.png").write_text("this is not a PNG")
    rows = ["file,record_id", "gray.png,mp-1", "rgb.png,mp-2", "deep.png,mp-3", "float.tif,mp-4", "array.npy,mp-5"]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_formats_keep_bit_depth_and_orientation(image_folder):
    grad = _gradient()
    assert read_image(image_folder / "deep.png").max() == pytest.approx(60000)  # 16-bit kept
    assert np.allclose(read_image(image_folder / "float.tif"), grad)  # float TIFF exact
    assert np.allclose(read_image(image_folder / "array.npy"), grad)
    gray, rgb = read_image(image_folder / "gray.png"), read_image(image_folder / "rgb.png")
    assert gray.shape == (40, 40) and np.allclose(gray, rgb, atol=0.5)  # luminance of a gray RGB = gray


def test_load_table_resizes_and_normalises(image_folder):
    loaded = load_images(image_folder / "table.csv", config=ImageIOConfig(image_size=(32, 32)))
    assert loaded.images.shape == (5, 32, 32) and loaded.images.dtype == torch.float32
    assert loaded.record_ids == ["mp-1", "mp-2", "mp-3", "mp-4", "mp-5"] and not loaded.skipped
    for image in loaded.images:
        assert float(image.min()) == pytest.approx(0.0) and float(image.max()) == pytest.approx(1.0)
        assert torch.all(image[:, 1:] >= image[:, :-1] - 1e-6)  # still increasing along x after resizing
        assert torch.all(image[1:, :] >= image[:-1, :] - 1e-6)
    assert torch.allclose(loaded.images[3], loaded.images[4], atol=1e-5)  # same data, TIFF vs npy


def test_bad_files_raise_with_name_or_are_counted(image_folder):
    rows = "file,record_id\ngray.png,a\nbroken.png,b\nmissing.tif,c\nfloat.tif,d\n"
    (image_folder / "bad.csv").write_text(rows)
    with pytest.raises(ImageReadError, match=r"broken\.png.*not a readable image"):
        load_images(image_folder / "bad.csv")
    loaded = load_images(image_folder / "bad.csv", config=ImageIOConfig(image_size=(16, 16), on_error="skip"))
    assert loaded.record_ids == ["a", "d"] and len(loaded.images) == 2
    reasons = dict(loaded.skipped)
    assert len(reasons) == 2 and "not found" in reasons[str(image_folder / "missing.tif")]
    np.save(image_folder / "nan.npy", np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ImageReadError, match=r"nan\.npy.*NaN"):
        read_image(image_folder / "nan.npy")
    (image_folder / "notes.txt").write_text("x")
    with pytest.raises(ImageReadError, match="unsupported extension"):
        read_image(image_folder / "notes.txt")


def test_table_errors_name_the_problem(image_folder):
    (image_folder / "cols.csv").write_text("path,id\ngray.png,a\n")
    with pytest.raises(ValueError, match=r"cols\.csv.*missing column"):
        read_image_table(image_folder / "cols.csv")
    custom = ImageIOConfig(file_column="path", id_column="id")
    assert read_image_table(image_folder / "cols.csv", config=custom) == [("a", image_folder / "gray.png")]


def test_crop_keeps_aspect_ratio_and_stretch_does_not():
    wide = torch.arange(80, dtype=torch.float32).repeat(40, 1)  # (40, 80), value = x
    cropped = resize_image(wide, (20, 20), fit="crop")  # centre 40x40 window: x in 20..59
    stretched = resize_image(wide, (20, 20), fit="stretch")
    assert 19 < float(cropped.min()) < 22 and 57 < float(cropped.max()) < 60
    assert float(stretched.min()) < 2 and float(stretched.max()) > 77


def test_normalisation_modes():
    image = torch.randn(16, 16, generator=torch.Generator().manual_seed(0)) * 3 + 7
    z = normalize_image(image, "zscore")
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-5) and float(z.std()) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(normalize_image(torch.full((4, 4), 2.0), "minmax"), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_image(image, "l2")


def test_augmentation_is_seeded_and_geometric_ops_preserve_values():
    images = torch.rand(6, 24, 24, generator=torch.Generator().manual_seed(1))
    geometric = AugmentConfig(flip=True, rotate90=True, crop_scale=(1.0, 1.0), noise_std=0.0)
    a, b = augment_images(images, geometric, seed=5), augment_images(images, geometric, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, augment_images(images, geometric, seed=6))
    for src, out in zip(images, a, strict=True):  # a dihedral transform of the source, values untouched
        candidates = [torch.rot90(t, k, dims=(0, 1)) for t in (src, src.flip(1)) for k in range(4)]
        assert any(torch.equal(out, c) for c in candidates)
    assert not torch.equal(a, images)  # something moved


def test_augmentation_crop_and_noise():
    images = torch.zeros(4, 32, 32)
    noisy = augment_images(images, AugmentConfig(flip=False, rotate90=False, noise_std=0.1), seed=0)
    assert noisy.shape == images.shape and float(noisy.std()) == pytest.approx(0.1, rel=0.1)
    ramp = torch.arange(32, dtype=torch.float32).repeat(32, 1)[None]  # value = x
    crop = augment_images(ramp, AugmentConfig(flip=False, rotate90=False, crop_scale=(0.5, 0.5)), seed=0)[0]
    assert float(crop.max() - crop.min()) < 17  # a half-width window, resized back to 32 px
    with pytest.raises(ValueError, match="crop_scale"):
        augment_images(ramp, AugmentConfig(crop_scale=(0.0, 1.0)))
