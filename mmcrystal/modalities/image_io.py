"""Real micrographs from disk: a folder of PNG/TIFF (or .npy) images plus a CSV table mapping image -> record id.

Pipeline: ``read_image`` (grayscale float32, native bit depth kept: 8-bit, 16-bit, 32-bit integer and float
TIFF; RGB is reduced to luminance 0.299 R + 0.587 G + 0.114 B, ITU-R BT.601) -> ``resize_image`` to the model
size (centre crop to the target aspect ratio then antialiased bilinear resampling, or a plain stretch) ->
``normalize_image`` per image (min-max to [0, 1] or z-score). ``augment_images`` applies seeded random flips,
90° rotations, crops (resized back) and Gaussian noise to a batch, for training.

Bad files never pass silently: with ``on_error="raise"`` the first one raises ``ImageReadError`` naming the
file and the reason; with ``on_error="skip"`` each is recorded in ``LoadedImages.skipped`` as (file, reason)
so the caller can count and report them. Pillow reads PNG and TIFF; ``.npy`` arrays are read with numpy. Pixel
sizes are not read from file metadata: images are resampled to a fixed grid, so a model trained on them sees
whatever physical scale the source images had (record it in the dataset's card).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luminance weights
_PIL_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif"}


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class ImageIOConfig:
    """How real images are read and brought to the model's input.

    Attributes:
        image_size: (H, W) of the model input in pixels.
        fit: "crop" (centre crop to the target aspect ratio, then resize) or "stretch" (resize only).
        normalize: "minmax" (per image to [0, 1]), "zscore" (zero mean, unit std) or "none".
        on_error: "raise" on the first bad file, or "skip" it and record (file, reason).
        file_column: CSV column holding the image path (relative to the image folder).
        id_column: CSV column holding the record id.
    """

    image_size: tuple[int, int] = (128, 128)
    fit: Literal["crop", "stretch"] = "crop"
    normalize: Literal["minmax", "zscore", "none"] = "minmax"
    on_error: Literal["raise", "skip"] = "raise"
    file_column: str = "file"
    id_column: str = "record_id"


@dataclass
class AugmentConfig:
    """Seeded training augmentations of (B, H, W) images.

    Attributes:
        flip: Random horizontal and vertical flips (each with probability 1/2).
        rotate90: Random rotation by k * 90° (k uniform; only 0° / 180° for non-square images).
        crop_scale: Range of the crop side as a fraction of the image side; the crop is resized back.
            (1.0, 1.0) disables cropping.
        noise_std: Standard deviation of added Gaussian noise, in units of the (normalised) image.
    """

    flip: bool = True
    rotate90: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.0)
    noise_std: float = 0.0


@dataclass
class LoadedImages:
    """Images read from a table.

    Attributes:
        images: (B, H, W) float32. record_ids: B record ids. files: B source files.
        skipped: (file, reason) for every file left out under ``on_error="skip"``.
    """

    images: torch.Tensor
    record_ids: list[str]
    files: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _pil_to_array(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.seek(0)  # first frame of multi-page TIFF / animated images
            img.load()
            if img.mode in ("RGB", "RGBA", "P", "PA", "LA", "CMYK", "YCbCr", "HSV"):
                rgb = np.asarray(img.convert("RGB"), dtype=np.float32)  # (H, W, 3)
                return rgb @ _LUMA
            if img.mode == "1":
                return np.asarray(img.convert("L"), dtype=np.float32)
            return np.array(img, dtype=np.float32)  # L, I;16*, I, F keep their bit depth (a writable copy)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or malformed data
        raise ImageReadError(path, f"cannot decode image ({err})") from None


def _npy_to_array(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ImageReadError(path, f"cannot read .npy array ({err})") from None
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array[..., 0] if array.shape[-1] == 1 else array[..., :3].astype(np.float32) @ _LUMA
    if not np.issubdtype(array.dtype, np.number):
        raise ImageReadError(path, f"array dtype {array.dtype} is not numeric")
    return array.astype(np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Read one image as a grayscale float32 array (H, W) with its native intensity scale.

    Raises:
        ImageReadError: Missing, unreadable, empty, non-2-D or non-finite images.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _npy_to_array(path)
    elif suffix in _PIL_SUFFIXES:
        array = _pil_to_array(path)
    else:
        raise ImageReadError(path, f"unsupported extension {suffix!r} (use PNG, TIFF, JPEG, BMP or .npy)")
    if array.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D grayscale image, got shape {tuple(array.shape)}")
    if array.size == 0:
        raise ImageReadError(path, "empty image")
    if not np.isfinite(array).all():
        raise ImageReadError(path, "image contains NaN or infinite values")
    return array


def resize_image(image: torch.Tensor, size: tuple[int, int], fit: str = "crop") -> torch.Tensor:
    """Resize (H, W) -> size with antialiased bilinear resampling; "crop" keeps the aspect ratio."""
    if fit not in ("crop", "stretch"):
        raise ValueError(f"unknown fit {fit!r}; use 'crop' or 'stretch'")
    height, width = image.shape
    target_h, target_w = size
    if fit == "crop":  # largest centred window with the target aspect ratio
        scale = min(height / target_h, width / target_w)
        crop_h, crop_w = max(1, round(target_h * scale)), max(1, round(target_w * scale))
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        image = image[top : top + crop_h, left : left + crop_w]
    if tuple(image.shape) == (target_h, target_w):
        return image.clone()
    out = F.interpolate(image[None, None], size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0]


def normalize_image(image: torch.Tensor, mode: str = "minmax") -> torch.Tensor:
    """Per-image normalisation over the last two dims; a constant image maps to zeros."""
    if mode == "none":
        return image
    if mode == "minmax":
        lo = image.amin(dim=(-2, -1), keepdim=True)
        span = image.amax(dim=(-2, -1), keepdim=True) - lo
        return torch.where(span > 0, (image - lo) / span.clamp_min(1e-12), torch.zeros_like(image))
    if mode == "zscore":
        mean = image.mean(dim=(-2, -1), keepdim=True)
        std = image.std(dim=(-2, -1), keepdim=True)
        return torch.where(std > 0, (image - mean) / std.clamp_min(1e-12), torch.zeros_like(image))
    raise ValueError(f"unknown normalisation {mode!r}; use 'minmax', 'zscore' or 'none'")


def load_image(path: str | Path, config: ImageIOConfig | None = None) -> torch.Tensor:
    """Read, resize and normalise one image -> (H, W) float32."""
    config = config or ImageIOConfig()
    image = torch.from_numpy(read_image(path))
    return normalize_image(resize_image(image, config.image_size, config.fit), config.normalize).float()


def read_image_table(
    table: str | Path, image_dir: str | Path | None = None, config: ImageIOConfig | None = None
) -> list[tuple[str, Path]]:
    """Read the CSV mapping image files to record ids -> [(record_id, image path)].

    Args:
        table: CSV file with ``config.file_column`` and ``config.id_column``.
        image_dir: Folder the file paths are relative to (default: the CSV's folder).
        config: Column names.
    """
    import pandas as pd

    config = config or ImageIOConfig()
    table = Path(table)
    frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    missing = [c for c in (config.file_column, config.id_column) if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {missing}; found {list(frame.columns)}")
    root = Path(image_dir) if image_dir is not None else table.parent
    rows = []
    pairs = zip(frame[config.file_column], frame[config.id_column], strict=True)
    for line, (name, record_id) in enumerate(pairs, start=2):  # line 1 is the header
        if not name.strip() or not record_id.strip():
            raise ValueError(f"{table}:{line}: empty file name or record id")
        rows.append((record_id.strip(), root / name.strip()))
    return rows


def load_images(
    table: str | Path, image_dir: str | Path | None = None, config: ImageIOConfig | None = None
) -> LoadedImages:
    """Load every image listed in a CSV table, resized and normalised.

    Returns:
        ``LoadedImages`` with images (B, H, W); bad files raise or are listed in ``skipped`` (see ``on_error``).
    """
    config = config or ImageIOConfig()
    if config.on_error not in ("raise", "skip"):
        raise ValueError(f"unknown on_error {config.on_error!r}; use 'raise' or 'skip'")
    images, ids, files, skipped = [], [], [], []
    for record_id, path in read_image_table(table, image_dir, config):
        try:
            images.append(load_image(path, config))
        except ImageReadError as err:
            if config.on_error == "raise":
                raise
            skipped.append((err.path, err.reason))
            continue
        ids.append(record_id)
        files.append(str(path))
    stacked = torch.stack(images) if images else torch.zeros(0, *config.image_size)
    return LoadedImages(stacked, ids, files, skipped)


def _random_crop(image: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Crop a window of side ``scale`` x the image side at a random place and resize it back; (H, W)."""
    height, width = image.shape
    crop_h, crop_w = max(1, round(height * scale)), max(1, round(width * scale))
    top = int(torch.randint(0, height - crop_h + 1, (1,), generator=gen))
    left = int(torch.randint(0, width - crop_w + 1, (1,), generator=gen))
    return resize_image(image[top : top + crop_h, left : left + crop_w], (height, width), fit="stretch")


def augment_images(images: torch.Tensor, config: AugmentConfig | None = None, seed: int = 0) -> torch.Tensor:
    """Seeded random flips, 90° rotations, crops and noise of a batch (B, H, W); returns a new tensor."""
    config = config or AugmentConfig()
    lo, hi = config.crop_scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {config.crop_scale}")
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for image in images:
        draws = torch.rand(4, generator=gen)  # flip x, flip y, rotation, crop scale
        if config.flip and draws[0] < 0.5:
            image = image.flip(-1)
        if config.flip and draws[1] < 0.5:
            image = image.flip(-2)
        if config.rotate90:
            square = image.shape[-1] == image.shape[-2]
            k = int(draws[2] * 4) if square else 2 * int(draws[2] * 2)
            image = torch.rot90(image, k, dims=(-2, -1))
        if lo < 1:
            image = _random_crop(image, float(lo + (hi - lo) * draws[3]), gen)
        if config.noise_std > 0:
            image = image + config.noise_std * torch.randn(image.shape, generator=gen)
        out.append(image)
    return torch.stack(out) if out else images.clone()
