"""Per-image microscope prior: the `conf/microscope/` schema and a jittable sampler.

Host side: `MicroscopePriorConfig` is the typed Hydra/OmegaConf schema of `conf/microscope/*.yaml`
(one `ParamPrior` per sampled quantity, units in the field names). `MicroscopePrior.from_config`
checks it and converts it ONCE into a frozen pytree (distribution names static, numbers as
leaves), so jitted code never sees a DictConfig. Device side: `sample_microscope(key, prior)`
draws a `Microscope` and the dose (e⁻/pixel) per image; pure JAX, jittable and vmappable over keys.

Conventions:
- "X ± Y" is normal(mean X, std Y). `lognormal` takes the mean and std of the quantity itself
  (not of its log). `uniform` draws from [low, high). `fixed` is the mean.
- Normal and lognormal draws are clipped at ±`TAIL_SIGMA` standard deviations (of the normal, or
  of the log) so that the host-side bounds (`max_angles`, `required_potential_sampling`,
  `planning_microscope`) hold for every sample; then every draw is clipped into [low, high]
  (clipping, not truncation). Non-negative quantities (energy, angles, focal spread, source size,
  current, dwell) have low ≥ 0 enforced.
- C12, C21, C23 are sampled as SIGNED values with an independent azimuth, and the sign is kept:
  χ contains C_nm cos(m(φ − φ_nm)), so −|C| at φ_nm is the same probe as |C| at φ_nm + π/m. With
  a uniform azimuth the two give the same distribution of probes; keeping the sign makes the
  sampled C_nm exactly the configured normal and smooth through 0. A canonical magnitude is
  |C_nm| with azimuth φ_nm + π/m where C_nm < 0.
- `defocus_angstrom` is Δf; the probe gets C10 = −Δf. `cs_angstrom` is C30. Higher-order
  aberrations (C32, C34, 4th and 5th order) are zero.
- The simulator's grids are planned once per prior from `planning_microscope(prior)` and
  `required_potential_sampling(prior)`. Keep the energy `fixed` for the PRISM paths, whose
  beam and detector-pixel tables are planned at one energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
from omegaconf import DictConfig, OmegaConf

from stemjax.physics.adf import Microscope
from stemjax.physics.energy import wavelength
from stemjax.physics.probe import ABERRATION_SYMBOLS, Aberrations

TAIL_SIGMA = 4.0
"""Normal/lognormal draws are clipped at this many standard deviations (bounds are exact)."""
DISTRIBUTIONS = ("normal", "uniform", "lognormal", "fixed")
ELEMENTARY_CHARGE_C = 1.602176634e-19
"""Elementary charge (C, exact SI)."""
ELECTRONS_PER_PA_US = 1e-12 * 1e-6 / ELEMENTARY_CHARGE_C
"""Electrons delivered by 1 pA during 1 µs (≈ 6.2415)."""
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
"""FWHM / σ of a Gaussian (≈ 2.3548)."""


# ----------------------------------------------------------------------------------------------
# Schema (host): mutable dataclasses so that OmegaConf can merge YAML and overrides into them.
# ----------------------------------------------------------------------------------------------


@dataclass
class ParamPrior:
    """Prior of one scalar, in the units of the field it fills.

    dist: "normal" (mean ± std), "lognormal" (mean and std of the value), "uniform" on
    [low, high), or "fixed" (= mean). low/high (optional) also clip normal/lognormal draws.
    """

    mean: float = 0.0
    std: float = 0.0
    low: float | None = None
    high: float | None = None
    dist: str = "normal"


def _normal(mean: float, std: float = 0.0):
    return field(default_factory=lambda: ParamPrior(mean=mean, std=std))


def _azimuth():
    """Uniform azimuth in [0, 2π) rad."""
    return field(default_factory=lambda: ParamPrior(low=0.0, high=2.0 * math.pi, dist="uniform"))


@dataclass
class MicroscopePriorConfig:
    """Schema of `conf/microscope/*.yaml`; the YAML files set every field explicitly.

    Energies eV, angles mrad, azimuths rad, lengths Å, current pA, dwell µs. Aberrations in
    Krivanek notation (magnitudes signed, see the module docstring). focal_spread and source_size
    are 1σ (the physics' convention; a FWHM divides by 2.3548). pixel_size_angstrom is the
    output pixel size, fixed (the scan grid is planned from it), not sampled.

    A YAML entry is MERGED into the default, so keys it omits keep their default. Defaults are
    therefore plain normals (std 0 = fixed value; the seed's WSe2 means), except the azimuths,
    uniform on [0, 2π): to fix an azimuth give `{mean: φ, dist: fixed, low: null, high: null}`.
    A `std` given to a `fixed` or `uniform` prior is an error, not silently ignored.
    """

    name: str = ""
    description: str = ""
    energy_ev: ParamPrior = _normal(80e3)
    semiangle_mrad: ParamPrior = _normal(25.2)
    aperture_rolloff_mrad: ParamPrior = _normal(0.0)
    detector_inner_mrad: ParamPrior = _normal(63.0)
    detector_outer_mrad: ParamPrior = _normal(200.0)
    pixel_size_angstrom: float = 0.2074
    defocus_angstrom: ParamPrior = _normal(0.0, 10.0)
    c12_angstrom: ParamPrior = _normal(10.0, 10.0)
    phi12_rad: ParamPrior = _azimuth()
    c21_angstrom: ParamPrior = _normal(100.0, 200.0)
    phi21_rad: ParamPrior = _azimuth()
    c23_angstrom: ParamPrior = _normal(250.0, 500.0)
    phi23_rad: ParamPrior = _azimuth()
    cs_angstrom: ParamPrior = _normal(3000.0, 5000.0)
    focal_spread_angstrom: ParamPrior = _normal(0.0)
    source_size_angstrom: ParamPrior = _normal(1.0 / FWHM_PER_SIGMA, 0.2 / FWHM_PER_SIGMA)
    probe_current_pa: ParamPrior = _normal(30.0)
    dwell_time_us: ParamPrior = _normal(20.0)


SAMPLED_FIELDS = tuple(
    f.name for f in fields(MicroscopePriorConfig) if f.type in ("ParamPrior", ParamPrior)
)
"""Names of the sampled quantities, in the order their keys are split."""
NON_NEGATIVE = frozenset(
    {
        "energy_ev",
        "semiangle_mrad",
        "aperture_rolloff_mrad",
        "detector_inner_mrad",
        "detector_outer_mrad",
        "focal_spread_angstrom",
        "source_size_angstrom",
        "probe_current_pa",
        "dwell_time_us",
    }
)
"""Quantities clipped at ≥ 0."""


def conf_dir() -> Path:
    """The Hydra config root: `stemjax/conf` when installed with it, else the repo's `conf/`."""
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parent / "conf"):
        if (cand / "microscope").is_dir():
            return cand
    raise FileNotFoundError(f"no conf/microscope directory found near {here}")


def available_microscopes() -> list[str]:
    """Names of the microscope priors shipped in `conf/microscope/`."""
    return sorted(p.stem for p in (conf_dir() / "microscope").glob("*.yaml"))


def to_microscope_prior_config(
    cfg: MicroscopePriorConfig | DictConfig | dict,
) -> MicroscopePriorConfig:
    """Merge a DictConfig/dict into the schema (unknown keys and wrong types raise, naming them)."""
    if isinstance(cfg, MicroscopePriorConfig):
        return cfg
    merged = OmegaConf.merge(OmegaConf.structured(MicroscopePriorConfig), cfg)
    return OmegaConf.to_object(merged)


# ----------------------------------------------------------------------------------------------
# Frozen form (device): pytrees with static distribution names and numeric leaves.
# ----------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ParamDist:
    """Checked, frozen `ParamPrior`: low/high are ±inf when unbounded. A pytree (dist static)."""

    dist: str = field(metadata={"static": True})
    mean: float
    std: float
    low: float
    high: float

    def _log_params(self):
        s2 = jnp.log1p((self.std / self.mean) ** 2)
        return jnp.log(self.mean) - 0.5 * s2, jnp.sqrt(s2)

    def sample(self, key, dtype):
        """One draw (0-d array of `dtype`), clipped as described in the module docstring."""
        cast = lambda x: jnp.asarray(x, dtype)  # noqa: E731
        if self.dist == "fixed":
            x = cast(self.mean)
        elif self.dist == "uniform":
            x = jax.random.uniform(key, (), dtype, cast(self.low), cast(self.high))
        else:
            z = jnp.clip(jax.random.normal(key, (), dtype), -TAIL_SIGMA, TAIL_SIGMA)
            if self.dist == "normal":
                x = cast(self.mean) + cast(self.std) * z
            else:
                mu, s = self._log_params()
                x = jnp.exp(cast(mu) + cast(s) * z)
        return jnp.clip(x, cast(self.low), cast(self.high))

    def expected(self) -> float:
        """Expected value of a draw (host float): the middle of a uniform range, else the mean
        (lognormal: the mean of the value itself), before any asymmetric low/high clip."""
        if self.dist == "uniform":
            return 0.5 * (float(self.low) + float(self.high))
        return float(self.mean)

    def bounds(self) -> tuple[float, float]:
        """(lowest, highest) value a draw can take (host, concrete floats)."""
        if self.dist == "fixed":
            lo = hi = self.mean
        elif self.dist == "uniform":
            lo, hi = self.low, self.high
        elif self.dist == "normal":
            lo, hi = self.mean - TAIL_SIGMA * self.std, self.mean + TAIL_SIGMA * self.std
        else:
            mu, s = (float(v) for v in self._log_params())
            lo, hi = math.exp(mu - TAIL_SIGMA * s), math.exp(mu + TAIL_SIGMA * s)
        clip = lambda x: min(max(x, self.low), self.high)  # noqa: E731
        return float(clip(lo)), float(clip(hi))

    @classmethod
    def from_prior(cls, p: ParamPrior, name: str, non_negative: bool = False) -> ParamDist:
        """Check one `ParamPrior`; errors name the field `name`."""
        if p.dist not in DISTRIBUTIONS:
            raise ValueError(f"{name}.dist: {p.dist!r} is not one of {DISTRIBUTIONS}")
        low = -math.inf if p.low is None else float(p.low)
        high = math.inf if p.high is None else float(p.high)
        if non_negative:
            low = max(low, 0.0)
        mean, std = float(p.mean), float(p.std)
        if not (math.isfinite(mean) and math.isfinite(std) and std >= 0):
            raise ValueError(f"{name}: expected a finite mean and std >= 0, got {mean}, {std}")
        if p.dist == "uniform" and not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{name}: a uniform prior needs finite low and high, got {p}")
        if p.dist == "lognormal" and mean <= 0:
            raise ValueError(f"{name}: a lognormal prior needs mean > 0, got {mean}")
        if not low <= high:
            raise ValueError(f"{name}: expected low <= high, got low={low}, high={high}")
        if p.dist in ("fixed", "uniform") and std != 0:
            raise ValueError(
                f"{name}: std={std} is unused by dist={p.dist!r} (did you mean 'normal'?)"
            )
        if p.dist in ("fixed", "normal", "lognormal") and not low <= mean <= high:
            raise ValueError(
                f"{name}: mean {mean} lies outside [low, high] = [{low}, {high}] (inherited "
                "bounds? set low/high to null)"
            )
        return cls(dist=p.dist, mean=mean, std=std, low=low, high=high)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class MicroscopePrior:
    """Frozen, checked microscope prior (a hashable pytree): one `ParamDist` per sampled field of
    `MicroscopePriorConfig` (same names and units) and the output pixel size (Å, static)."""

    energy_ev: ParamDist
    semiangle_mrad: ParamDist
    aperture_rolloff_mrad: ParamDist
    detector_inner_mrad: ParamDist
    detector_outer_mrad: ParamDist
    defocus_angstrom: ParamDist
    c12_angstrom: ParamDist
    phi12_rad: ParamDist
    c21_angstrom: ParamDist
    phi21_rad: ParamDist
    c23_angstrom: ParamDist
    phi23_rad: ParamDist
    cs_angstrom: ParamDist
    focal_spread_angstrom: ParamDist
    source_size_angstrom: ParamDist
    probe_current_pa: ParamDist
    dwell_time_us: ParamDist
    pixel_size_angstrom: float = field(default=0.2074, metadata={"static": True})

    @classmethod
    def from_config(
        cls, cfg: MicroscopePriorConfig | DictConfig | dict, source: str = "microscope config"
    ) -> MicroscopePrior:
        """Convert a `MicroscopePriorConfig`, DictConfig or dict (once, on the host).

        OmegaConf errors name unknown keys and wrong types; ValueError names the field (and
        `source`, e.g. the YAML path) for semantic errors.
        """
        cfg = to_microscope_prior_config(cfg)
        try:
            dists = {
                name: ParamDist.from_prior(getattr(cfg, name), name, name in NON_NEGATIVE)
                for name in SAMPLED_FIELDS
            }
            prior = cls(**dists, pixel_size_angstrom=float(cfg.pixel_size_angstrom))
            prior._check()
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        return prior

    def _check(self):
        if not self.pixel_size_angstrom > 0:
            raise ValueError(f"pixel_size_angstrom: expected > 0 Å, got {self.pixel_size_angstrom}")
        for name in ("energy_ev", "semiangle_mrad", "detector_outer_mrad", "dwell_time_us"):
            lo = getattr(self, name).bounds()[0]
            if not lo > 0:
                raise ValueError(f"{name}: must stay > 0, but a draw can reach {lo}")
        inner_hi = self.detector_inner_mrad.bounds()[1]
        outer_lo = self.detector_outer_mrad.bounds()[0]
        if not inner_hi < outer_lo:
            raise ValueError(
                f"detector_inner_mrad: can reach {inner_hi:g} mrad, not below the lowest "
                f"detector_outer_mrad {outer_lo:g} mrad"
            )


def load_microscope_prior(name_or_path: str | Path) -> MicroscopePrior:
    """Load `conf/microscope/<name>.yaml` (or a YAML path) into a checked `MicroscopePrior`."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = conf_dir() / "microscope" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; available: {available_microscopes()}")
    return MicroscopePrior.from_config(OmegaConf.load(path), source=str(path))


# ----------------------------------------------------------------------------------------------
# Sampling (device) and grid planning (host).
# ----------------------------------------------------------------------------------------------


def sample_microscope(key, prior: MicroscopePrior, dtype=None):
    """Draw one image's microscope and dose: `(Microscope, dose_electrons_per_pixel)`.

    Pure JAX: jit it with the prior closed over or passed as an argument (a pytree; changing
    only its numbers does not retrace), vmap it over keys. Every leaf is a 0-d array of `dtype`
    (default: JAX's default float). Dose (e⁻/pixel) = current (pA) × dwell (µs) × 1e-18 / e;
    divide by pixel_size_angstrom² for e⁻/Å².
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    keys = jax.random.split(key, len(SAMPLED_FIELDS))
    v = {name: getattr(prior, name).sample(keys[i], dtype) for i, name in enumerate(SAMPLED_FIELDS)}
    zero = jnp.zeros((), dtype)
    coefficients = {s: zero for s in ABERRATION_SYMBOLS}
    coefficients.update(
        C10=-v["defocus_angstrom"],
        C12=v["c12_angstrom"],
        phi12=v["phi12_rad"],
        C21=v["c21_angstrom"],
        phi21=v["phi21_rad"],
        C23=v["c23_angstrom"],
        phi23=v["phi23_rad"],
        C30=v["cs_angstrom"],
    )
    microscope = Microscope(
        energy=v["energy_ev"],
        semiangle_cutoff=v["semiangle_mrad"],
        detector_inner=jnp.minimum(v["detector_inner_mrad"], v["detector_outer_mrad"]),
        detector_outer=v["detector_outer_mrad"],
        aberrations=Aberrations(**coefficients),
        focal_spread=v["focal_spread_angstrom"],
        source_size=v["source_size_angstrom"],
        aperture_rolloff=v["aperture_rolloff_mrad"],
    )
    dose = v["probe_current_pa"] * v["dwell_time_us"] * jnp.asarray(ELECTRONS_PER_PA_US, dtype)
    return microscope, dose


class MaxAngles(NamedTuple):
    """Largest values a prior can draw: energy (eV), probe semiangle and its rolloff (mrad),
    detector outer angle (mrad)."""

    energy_ev: float
    semiangle_mrad: float
    aperture_rolloff_mrad: float
    detector_outer_mrad: float


def max_angles(prior: MicroscopePrior) -> MaxAngles:
    """Upper bounds of every draw (host): mean + TAIL_SIGMA·σ, the uniform high, or the fixed
    value, after clipping. Plan the simulator's grids once from these for the whole prior."""
    return MaxAngles(
        energy_ev=prior.energy_ev.bounds()[1],
        semiangle_mrad=prior.semiangle_mrad.bounds()[1],
        aperture_rolloff_mrad=prior.aperture_rolloff_mrad.bounds()[1],
        detector_outer_mrad=prior.detector_outer_mrad.bounds()[1],
    )


def required_potential_sampling(prior: MicroscopePrior) -> float:
    """Coarsest potential sampling (Å) whose 2/3 antialiasing band limit holds the detector's
    outer angle for every draw: (2/3) λ_min / (2 α_outer,max), λ_min at the highest energy."""
    bounds = max_angles(prior)
    lam = float(wavelength(float(bounds.energy_ev)))
    return (2.0 / 3.0) * lam / (2.0 * bounds.detector_outer_mrad * 1e-3)


def planning_microscope(prior: MicroscopePrior) -> Microscope:
    """A worst-case `Microscope` (Python floats) for `plan_geometry` over the whole prior.

    Highest energy, semiangle, rolloff and outer angle (band limit, Nyquist scan step, PRISM
    beams), lowest inner angle, largest |C_nm| and focal spread (probe window blur). The
    window's 4λ/α diffraction term uses the highest energy and semiangle, which is exact when
    both are fixed (as in the shipped configs).
    """
    bounds = max_angles(prior)
    magnitude = lambda p: max(abs(x) for x in p.bounds())  # noqa: E731
    return Microscope(
        energy=bounds.energy_ev,
        semiangle_cutoff=bounds.semiangle_mrad,
        detector_inner=prior.detector_inner_mrad.bounds()[0],
        detector_outer=bounds.detector_outer_mrad,
        aberrations=Aberrations(
            C10=magnitude(prior.defocus_angstrom),
            C12=magnitude(prior.c12_angstrom),
            C21=magnitude(prior.c21_angstrom),
            C23=magnitude(prior.c23_angstrom),
            C30=magnitude(prior.cs_angstrom),
        ),
        focal_spread=prior.focal_spread_angstrom.bounds()[1],
        source_size=prior.source_size_angstrom.bounds()[1],
        aperture_rolloff=bounds.aperture_rolloff_mrad,
    )


def mean_microscope(prior: MicroscopePrior) -> Microscope:
    """The prior's mean microscope (Python floats): each sampled field at its expected value
    (`ParamDist.expected`; Δf → C10 = −Δf, signed C12/C21/C23 means with zero azimuth, Cs =
    C30). The starting and fixed probe of a calibration (`stemjax.calibrate`)."""
    mean = lambda name: getattr(prior, name).expected()  # noqa: E731
    return Microscope(
        energy=mean("energy_ev"),
        semiangle_cutoff=mean("semiangle_mrad"),
        detector_inner=mean("detector_inner_mrad"),
        detector_outer=mean("detector_outer_mrad"),
        aberrations=Aberrations(
            C10=-mean("defocus_angstrom"),
            C12=mean("c12_angstrom"),
            C21=mean("c21_angstrom"),
            C23=mean("c23_angstrom"),
            C30=mean("cs_angstrom"),
        ),
        focal_spread=mean("focal_spread_angstrom"),
        source_size=mean("source_size_angstrom"),
        aperture_rolloff=mean("aperture_rolloff_mrad"),
    )
