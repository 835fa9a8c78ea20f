"""Corruption priors: frozen, hashable dataclasses that double as Hydra structured-config schemas.

Every numeric field is a prior range (or a fixed value) that `corrupt` samples per image; units
are in the field name (`_A` Å, `_px` output pixels, `_pA`, `_us` µs, `_e` electrons, `_rel`
relative, `_frac` dimensionless). Setting a range to zero switches the effect off exactly.
Defaults are realistic for WSe2(2-2x)Te(2x) at 80 kV, 0.2074 Å/px (`conf/corruption/default.yaml`
repeats them; `conf/corruption/none.yaml` switches everything but normalisation off).

Load a YAML file with `OmegaConf.merge(OmegaConf.structured(CorruptionConfig), yaml)` and turn
it into the frozen object with `OmegaConf.to_object(...)`; jitted code only sees the dataclass.
"""

import copy
import dataclasses
from dataclasses import field


def _schema_dataclass(cls):
    """`@dataclass(frozen=True)` that OmegaConf/Hydra can still merge YAML into.

    OmegaConf makes configs built from frozen dataclasses read-only, so neither a YAML file nor
    a command-line override could be merged into the schema. Instances stay immutable and
    hashable (usable as a `jax.jit` static argument); only the flag OmegaConf reads is cleared.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    params = copy.copy(cls.__dataclass_params__)
    params.frozen = False
    cls.__dataclass_params__ = params
    return cls


@_schema_dataclass
class WarpConfig:
    """Scan-distortion priors. The probe for output pixel q sat at q + d(q); d is the sum of:

    - linear drift: d = s·(τ − τ₀) with τ = row + col/W the slow-scan time in line pitches and
      s = (s_row, s_col) each ~ U(−`linear_drift_max_frac`, +max). s_row scales the slow axis,
      s_col shears the scan. Dimensionless (Å of drift per Å of slow-axis scan).
    - non-linear drift: a smooth random function of τ (`nonlinear_drift_modes` low-order Fourier
      modes with a 1/k spectrum, both components), rescaled to an rms over the frame
      ~ U(0, `nonlinear_drift_rms_max_A`) Å and centred to zero mean.
    - scan jitter: an independent fast-axis offset per scan line, N(0, σ²) with σ ~
      U(`jitter_rms_min_A`, `jitter_rms_max_A`) Å; linearly interpolated between lines.
    - flyback: fast-axis displacement A·exp(−col/λ) at the start of every line, with A ~
      U(−`flyback_amp_max_A`, +max) Å and λ ~ U(`flyback_decay_min_px`, `flyback_decay_max_px`)
      px (pixels along the line = dwell times after the flyback).

    interp_order: 1 bilinear or 3 Catmull-Rom cubic sampling of the clean image (both exact at
    integer positions). inverse_iterations: fixed-point iterations for the label map.
    """

    linear_drift_max_frac: float = 0.02
    nonlinear_drift_rms_max_A: float = 0.3
    nonlinear_drift_modes: int = 4
    jitter_rms_min_A: float = 0.0
    jitter_rms_max_A: float = 0.1
    flyback_amp_max_A: float = 0.5
    flyback_decay_min_px: float = 3.0
    flyback_decay_max_px: float = 20.0
    interp_order: int = 3
    inverse_iterations: int = 12


@_schema_dataclass
class NoiseConfig:
    """Beam-current, counting and detector priors.

    Dose: electrons per pixel = probe current × dwell / e, current log-uniform in
    [`probe_current_min_pA`, `probe_current_max_pA`] pA, dwell uniform in
    [`dwell_min_us`, `dwell_max_us`] µs (30 pA × 20 µs ≈ 3745 e⁻/px); `corrupt` takes an explicit
    dose instead when the microscope prior provides one.
    Probe-current variation: one factor per image, 1 + `current_image_rel_rms`·N(0,1), times one
    per scan line, 1 + `current_line_rel_rms`·N(0,1) (clipped at 0).
    poisson: draw the detected electrons from Poisson(signal × electrons); off = the expectation.
    Detector: output = gain·(electrons + N(0, σ²)) + offset with gain ~ U(`gain_min`, `gain_max`)
    detector units per e⁻, offset ~ U(`offset_min`, `offset_max`) detector units and σ ~
    U(`detector_noise_rms_min_e`, `detector_noise_rms_max_e`) e⁻ (Gaussian read-out noise).
    """

    probe_current_min_pA: float = 20.0
    probe_current_max_pA: float = 45.0
    dwell_min_us: float = 20.0
    dwell_max_us: float = 20.0
    current_image_rel_rms: float = 0.05
    current_line_rel_rms: float = 0.02
    poisson: bool = True
    gain_min: float = 0.5
    gain_max: float = 2.0
    offset_min: float = 0.0
    offset_max: float = 100.0
    detector_noise_rms_min_e: float = 0.0
    detector_noise_rms_max_e: float = 3.0


@_schema_dataclass
class ContaminationConfig:
    """Surface contamination: a smooth, non-negative scattering background added to the clean
    signal before the warp and the counting (it is on the specimen and scatters electrons).

    Field = a·⟨clean⟩·max(0, 1 + g) with g unit-variance white noise smoothed by a Gaussian of
    1σ = ℓ ~ U(`corr_length_min_A`, `corr_length_max_A`) Å (autocorrelation exp(−r²/4ℓ²)) and
    a ~ U(`amp_min_rel`, `amp_max_rel`), ≈ its mean (1.08·a) relative to the mean clean signal.
    """

    amp_min_rel: float = 0.0
    amp_max_rel: float = 0.3
    corr_length_min_A: float = 5.0
    corr_length_max_A: float = 30.0


@_schema_dataclass
class CorruptionConfig:
    """All corruption priors; `normalise` applies `normalise_image` (as `predict` does)."""

    warp: WarpConfig = field(default_factory=WarpConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    contamination: ContaminationConfig = field(default_factory=ContaminationConfig)
    normalise: bool = True


def clean_config() -> CorruptionConfig:
    """Every effect off (identity warp, expected counts, no background): normalisation only.

    The same as `conf/corruption/none.yaml`.
    """
    return CorruptionConfig(
        warp=WarpConfig(
            linear_drift_max_frac=0.0,
            nonlinear_drift_rms_max_A=0.0,
            jitter_rms_min_A=0.0,
            jitter_rms_max_A=0.0,
            flyback_amp_max_A=0.0,
        ),
        noise=NoiseConfig(
            current_image_rel_rms=0.0,
            current_line_rel_rms=0.0,
            poisson=False,
            gain_min=1.0,
            gain_max=1.0,
            offset_min=0.0,
            offset_max=0.0,
            detector_noise_rms_min_e=0.0,
            detector_noise_rms_max_e=0.0,
        ),
        contamination=ContaminationConfig(amp_min_rel=0.0, amp_max_rel=0.0),
        normalise=True,
    )
