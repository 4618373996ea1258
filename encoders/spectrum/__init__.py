"""Encoders of 1-D spectra (XRD, DOS)."""

from encoders.spectrum.encoder import SpectrumConfig, SpectrumEncoder, dos_config, xrd_config

__all__ = ["SpectrumConfig", "SpectrumEncoder", "dos_config", "xrd_config"]
