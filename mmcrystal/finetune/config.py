"""Typed configs of property fine-tuning: targets, head, freezing/LoRA recipe, backbone source, resolved model.

`BackboneConfig`, `TargetConfig`, `HeadConfig` and `TuningConfig` are what a recipe (``configs/finetune/*.yaml``)
sets. `PropertyModelConfig` is the *resolved* architecture (encoder configs read from the pretrained source, head,
targets, tuning, normalisation): it is what checkpoints and ``save_pretrained`` folders store, so a fine-tuned model
rebuilds with no reference to the alignment folder it started from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from encoders import CHGNetConfig, CSPNetConfig, RadiusGraphConfig, SpectrumConfig, TextConfig
from mmcrystal.config import register_config
from mmcrystal.fusion.cross_attention import FusionConfig

__all__ = [
    "TARGET_KINDS",
    "REGRESSION_LOSSES",
    "TUNING_MODES",
    "EXTRA_INPUTS",
    "TargetConfig",
    "HeadConfig",
    "TuningConfig",
    "BackboneConfig",
    "PropertyModelConfig",
    "parse_target",
]

TARGET_KINDS = ("regression", "binary", "multiclass")
REGRESSION_LOSSES = ("mae", "huber", "mse")
TUNING_MODES = ("full", "frozen", "partial", "lora")
EXTRA_INPUTS = ("text", "xrd")


@register_config
@dataclass
class TargetConfig:
    """One property task.

    Attributes:
        name: Property column of the prepared data (the manifest's ``property_names``), e.g. ``band_gap``.
        kind: ``regression``, ``binary`` (BCE on one logit) or ``multiclass`` (CE over ``num_classes`` logits).
        loss: Regression loss on the normalised target: ``mae`` (L1), ``huber`` (delta 1 in units of the train
            std) or ``mse``.
        threshold: Binary tasks from a continuous column: label = value > threshold (``band_gap`` with threshold
            0 is "not a metal"). None: the column already holds 0/1 labels.
        num_classes: Multiclass tasks: labels are the integers 0 .. num_classes - 1.
        weight: Weight of this task in the total loss.
        label: Name used in metrics, predictions and CSV columns; default ``name`` (``name>threshold`` for a
            thresholded binary task, so one column can feed a regression and a classification task).
    """

    name: str
    kind: str = "regression"
    loss: str = "mae"
    threshold: float | None = None
    num_classes: int = 2
    weight: float = 1.0
    label: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("TargetConfig.name must name a property column")
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"target {self.name!r}: kind must be one of {TARGET_KINDS}, got {self.kind!r}")
        if self.kind == "regression" and self.loss not in REGRESSION_LOSSES:
            raise ValueError(f"target {self.name!r}: loss must be one of {REGRESSION_LOSSES}, got {self.loss!r}")
        if self.kind == "multiclass" and self.num_classes < 2:
            raise ValueError(f"target {self.name!r}: num_classes must be >= 2, got {self.num_classes}")

    @property
    def key(self) -> str:
        """Name of the task in metrics and outputs."""
        if self.label:
            return self.label
        if self.kind == "binary" and self.threshold is not None:
            return f"{self.name}>{self.threshold:g}"
        return self.name

    @property
    def num_outputs(self) -> int:
        """Logits / values the head emits for this task."""
        return self.num_classes if self.kind == "multiclass" else 1


def parse_target(text: str | TargetConfig) -> TargetConfig:
    """``"band_gap"`` -> regression (MAE); ``"band_gap>0"`` -> binary task ``band_gap > 0``; a config passes."""
    if isinstance(text, TargetConfig):
        return text
    name, sep, threshold = str(text).partition(">")
    if sep:
        return TargetConfig(name=name.strip(), kind="binary", threshold=float(threshold))
    return TargetConfig(name=name.strip())


@register_config
@dataclass
class HeadConfig:
    """The MLP on the pooled embedding (shared trunk, one linear output per task).

    Attributes:
        hidden_dims: Widths of the trunk's hidden layers; empty for a linear head (a linear probe when frozen).
        dropout: Dropout after each hidden layer (also what MC-dropout samples at prediction time).
        activation: ``silu``, ``gelu`` or ``relu``.
        input_norm: LayerNorm on the pooled embedding first (features of different backbones differ in scale).
    """

    hidden_dims: list[int] = field(default_factory=lambda: [256])
    dropout: float = 0.1
    activation: str = "silu"
    input_norm: bool = True


@register_config
@dataclass
class TuningConfig:
    """Which backbone weights train, and how fast.

    The backbone is the crystal encoder, the XRD encoder and the fusion when present. A text encoder keeps its own
    ``TextConfig`` settings (``freeze``, ``trainable_last_layers``, ``lora``): MiniLM is too big to fine-tune by
    default on the CPU.

    Attributes:
        mode: ``full`` (everything trains), ``frozen`` (backbone fixed and in eval mode: a linear/MLP probe),
            ``partial`` (only the last ``trainable_blocks`` blocks of each backbone tower train) or ``lora``
            (low-rank adapters on the backbone's linear layers, Hu et al. 2022; needs peft, the ``lora`` extra).
        trainable_blocks: ``partial``: how many final blocks (message-passing / transformer layers; the final norm
            and pooling count with the last) train.
        layer_lr_decay: Layer-wise learning-rate decay (ELECTRA, Clark et al. 2020; BEiT, Bao et al. 2022): block at
            depth d of D gets ``lr * layer_lr_decay ** (D + 1 - d)``; the head gets ``lr``. 1.0 disables it.
        backbone_lr_scale: Extra learning-rate multiplier on every backbone parameter.
        lora_rank: LoRA rank r.
        lora_alpha: LoRA scaling numerator (update scaled by alpha / r).
        lora_dropout: Dropout on the adapters' input.
        lora_targets: Names (or name suffixes) of the linear layers that get adapters; None: every ``nn.Linear``
            inside the crystal encoder's message-passing layers.
    """

    mode: str = "full"
    trainable_blocks: int = 1
    layer_lr_decay: float = 1.0
    backbone_lr_scale: float = 1.0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None

    def __post_init__(self) -> None:
        if self.mode not in TUNING_MODES:
            raise ValueError(f"tuning.mode must be one of {TUNING_MODES}, got {self.mode!r}")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ValueError(f"tuning.layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.mode == "partial" and self.trainable_blocks < 1:
            raise ValueError("tuning.mode 'partial' needs trainable_blocks >= 1 (use mode 'frozen' for none)")


@register_config
@dataclass
class BackboneConfig:
    """Where the encoder comes from.

    Attributes:
        source: ``scratch`` (the encoder in ``crystal``, random init), ``chgnet`` (pretrained CHGNet features,
            `CHGNetConfig` in ``crystal`` or the default) or a path: an alignment export folder
            (``<run>/pretrained``, `AlignmentPretraining.save_pretrained`) or an alignment Lightning checkpoint
            (``.ckpt``; it also holds the cross-attention fusion, which the export folder does not).
        pretrained: With a path: load its weights (True) or take only its architecture with random weights (False,
            the fair from-scratch baseline of the same size).
        crystal: Crystal encoder for ``scratch`` (default ``CSPNetConfig()``) or ``chgnet``; ignored for a path.
        inputs: Inputs besides the crystal: ``text`` (captions) and/or ``xrd``. They enter through cross-attention
            fusion (crystal tokens attend to them); samples without them attend to a null token.
        text: Text encoder when the source has none (default: ``TextConfig()``, MiniLM).
        xrd: XRD encoder when the source has none (default: ``xrd_config(num_bins)`` from the data).
        fusion: Fusion when the source has none (default: ``FusionConfig(dim=crystal width)``), randomly initialised.
    """

    source: str = "scratch"
    pretrained: bool = True
    crystal: CSPNetConfig | RadiusGraphConfig | CHGNetConfig | None = None
    inputs: list[str] = field(default_factory=list)
    text: TextConfig | None = None
    xrd: SpectrumConfig | None = None
    fusion: FusionConfig | None = None

    def __post_init__(self) -> None:
        unknown = set(self.inputs) - set(EXTRA_INPUTS)
        if unknown:
            raise ValueError(f"backbone.inputs may hold {EXTRA_INPUTS} (the crystal is always used); got {unknown}")


@register_config
@dataclass
class PropertyModelConfig:
    """The resolved architecture of a fine-tuned property model (what checkpoints and export folders store).

    Attributes:
        crystal: Crystal encoder config.
        inputs: Extra inputs (``text``, ``xrd``) fused into the crystal tokens.
        text: Text encoder config when ``text`` is an input.
        xrd: XRD encoder config when ``xrd`` is an input.
        fusion: Cross-attention fusion config when there are extra inputs.
        head: The MLP head.
        targets: The tasks, in output order.
        tuning: The freezing / LoRA recipe (LoRA changes the module structure, so it is part of the architecture).
        normalization: ``{name: {"mean", "std"}}`` of regression targets on the training split (physical units).
        source: Where the backbone weights came from (provenance only; never read back).
    """

    crystal: CSPNetConfig | RadiusGraphConfig | CHGNetConfig
    targets: list[TargetConfig]
    inputs: list[str] = field(default_factory=list)
    text: TextConfig | None = None
    xrd: SpectrumConfig | None = None
    fusion: FusionConfig | None = None
    head: HeadConfig = field(default_factory=HeadConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    normalization: dict | None = None
    source: str = "scratch"

    @property
    def target_keys(self) -> list[str]:
        return [t.key for t in self.targets]
