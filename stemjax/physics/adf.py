"""Multislice ADF-STEM image of a periodic cell: the array-level, jittable simulator.

Layout of one simulation:

1. `plan_geometry` (host, once per shape): potential grid, occupied slices, probe window, scan
   grid (direct or Nyquist + Fourier interpolation), focal-spread quadrature. Static, hashable.
2. `adf_image(positions, numbers, mask, microscope, geometry)` (jittable, differentiable in the
   positions and every `Microscope` field): slice potentials → band-limited transmission
   functions → for each probe position, multislice of the probe through a window of the
   transmission functions around it → fraction of the incident intensity on the annular
   detector → focal-spread average → source-size blur and Fourier interpolation.

Performance lever (DESIGN.md (1)): a probe only needs a window of the transmission function
around its position, so each probe position costs FFTs of the window, not of the whole field.
Empty slices are merged into the propagation distance (exact: Fresnel propagators compose), and
the propagation after the last slice is skipped (it does not change diffraction intensities).
"""

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from stemjax.physics.energy import interaction_constant, wavelength
from stemjax.physics.potential import (
    load_parametrization,
    projected_scattering_factor,
    slice_potentials,
)
from stemjax.physics.prism import beam_indices, detector_gram, detector_indices, prism_signal
from stemjax.physics.probe import ABERRATION_ORDERS, Aberrations, probe_fourier

#: Antialiasing aperture: cutoff at 2/3 of the Nyquist frequency, cosine taper of width
#: ANTIALIAS_TAPER / sampling (1/Å) inside the cutoff (the same convention as abTEM).
ANTIALIAS_CUTOFF = 2.0 / 3.0
ANTIALIAS_TAPER = 0.01
#: An atom within this fraction of a slice below a slice boundary belongs to the upper slice
#: (half-open slices [z_i, z_i+1) robust to rounding of positions exactly on a boundary).
PLANE_TOLERANCE = 1e-5
#: Start of the cosine roll-off of the potential spectrum, as a fraction of the Nyquist frequency
#: of the phase-grating grid (see `potential_taper`).
POTENTIAL_TAPER_START = 0.5
#: Target pixel (Å) of the phase-grating grid exp(iσV). The sharp projected core of heavy atoms
#: needs it: the W/Se2 peak ratio of WSe2 (80 kV, 60–200 mrad) is 3 % low with a 0.025 Å grating,
#: 1.6 % low at 0.0125 Å, and converged (< 0.3 %) at 0.00625 Å.
PHASE_GRATING_SAMPLING = 0.00625
#: Largest phase-grating grid per axis chosen automatically (bounds memory on large fields).
MAX_PHASE_GRATING_GPTS = 8192


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Microscope:
    """Microscope parameters, a JAX pytree: every field can be traced and differentiated.

    energy: beam energy (eV). semiangle_cutoff: probe convergence semiangle (mrad).
    detector_inner / detector_outer: annular detector angles (mrad). aberrations: Krivanek
    coefficients (Å, rad). focal_spread: 1σ of the Gaussian defocus spread (Å), partial temporal
    coherence. source_size: 1σ of the Gaussian effective source (Å), partial spatial coherence.
    aperture_rolloff: width of a cosine aperture edge (mrad); 0 = one-pixel antialiased edge.
    """

    energy: float = 80e3
    semiangle_cutoff: float = 25.0
    detector_inner: float = 60.0
    detector_outer: float = 200.0
    aberrations: Aberrations = field(default_factory=Aberrations)
    focal_spread: float = 0.0
    source_size: float = 0.0
    aperture_rolloff: float = 0.0

    def astype(self, dtype) -> "Microscope":
        cast = lambda x: jnp.asarray(x, dtype)  # noqa: E731
        return Microscope(
            energy=cast(self.energy),
            semiangle_cutoff=cast(self.semiangle_cutoff),
            detector_inner=cast(self.detector_inner),
            detector_outer=cast(self.detector_outer),
            aberrations=self.aberrations.astype(dtype),
            focal_spread=cast(self.focal_spread),
            source_size=cast(self.source_size),
            aperture_rolloff=cast(self.aperture_rolloff),
        )


@dataclass(frozen=True)
class ADFGeometry:
    """Static description of one simulation's grids (hashable: a jit static argument).

    extent: periodic cell (Å). gpts: potential grid points. species: atomic numbers present.
    slice_of_plane: for each uniform slice of thickness `slice_thickness` (Å) from z = 0, the
    index of the occupied slice it is merged into. propagation: distance (Å) propagated before
    each occupied slice. window_gpts: probe window (== gpts: whole field). scan_gpts: probe
    positions per axis, spaced extent / scan_gpts from the origin. output_gpts: image shape after
    Fourier interpolation (== scan_gpts: none). focal_nodes: Gauss–Hermite quadrature nodes for
    the focal spread. chunk: probe positions per vectorised batch (bounds memory).
    oversampling: phase-grating grid factor. method: 'multislice' or 'prism'. planned_energy
    (eV), beam_max_angle (mrad), detector_max_angle (mrad): the static PRISM beam and detector-
    pixel tables are built for these.
    """

    extent: tuple[float, float]
    gpts: tuple[int, int]
    species: tuple[int, ...]
    slice_thickness: float
    slice_of_plane: tuple[int, ...]
    propagation: tuple[float, ...]
    window_gpts: tuple[int, int]
    scan_gpts: tuple[int, int]
    output_gpts: tuple[int, int]
    focal_nodes: int = 1
    chunk: int = 256
    parametrization: str = "lobato"
    oversampling: int = 2
    method: str = "multislice"
    planned_energy: float = 80e3
    beam_max_angle: float = 0.0
    detector_max_angle: float = 0.0

    @property
    def sampling(self) -> tuple[float, float]:
        return (self.extent[0] / self.gpts[0], self.extent[1] / self.gpts[1])

    @property
    def n_slices(self) -> int:
        return len(self.propagation)

    @property
    def output_sampling(self) -> tuple[float, float]:
        return (self.extent[0] / self.output_gpts[0], self.extent[1] / self.output_gpts[1])


def band_limit_angle_mrad(sampling, energy):
    """Largest scattering angle (mrad) inside the 2/3 antialiasing aperture of a grid."""
    k_cut = ANTIALIAS_CUTOFF / (2.0 * max(sampling))
    return float(k_cut * wavelength(energy) * 1e3)


def nyquist_scan_sampling(semiangle_mrad, energy, rolloff_mrad=0.0):
    """Nyquist probe step λ / (4 α) (Å): the ADF image is band-limited to 2α/λ."""
    alpha = (semiangle_mrad + rolloff_mrad) * 1e-3
    return float(wavelength(energy) / (4.0 * alpha))


def _smooth_fft_size(n: int) -> int:
    """Smallest integer ≥ n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def default_window_extent(microscope: Microscope) -> float:
    """Probe window size (Å): the probe's diffraction tails plus its geometric blur, both sides.

    Radius = 4 λ/α (the aperture's first diffraction rings) + Σ |C_nm| α^n (ray displacement of
    the aberrations at the aperture edge), plus 1.5 Å for lateral spread of the scattered wave.
    A hard-aperture probe keeps a few % of its intensity in slowly decaying tails beyond any
    window, which wrap around it: on a 13 × 17 Å WSe2 cell a 12 Å window differs from the whole
    cell by 0.8 % RMS (benchmarks/RESULTS.md). Pass `window_extent` for a tighter tolerance.
    """
    lam = float(wavelength(microscope.energy))
    alpha = (float(microscope.semiangle_cutoff) + float(microscope.aperture_rolloff)) * 1e-3
    ab = microscope.aberrations
    blur = sum(abs(float(getattr(ab, f"C{n}{m}"))) * alpha**n for n, m in ABERRATION_ORDERS)
    blur += 3.0 * abs(float(microscope.focal_spread)) * alpha
    return 2.0 * (4.0 * lam / alpha + blur + 1.5)


def plan_geometry(
    extent,
    z_positions,
    numbers,
    microscope: Microscope,
    *,
    potential_sampling: float = 0.05,
    slice_thickness: float = 1.0,
    scan_sampling: float = 0.2,
    interpolate: bool = True,
    window_extent: float | None = None,
    cell_thickness: float | None = None,
    focal_nodes: int | None = None,
    chunk: int = 256,
    parametrization: str = "lobato",
    oversampling: int | None = None,
    method: str = "auto",
) -> ADFGeometry:
    """Plan the static grids of an ADF simulation (host side, concrete values).

    extent: (Lx, Ly) periodic cell (Å). z_positions (Å) and numbers: the atoms (used to find the
    occupied slices and the species). scan_sampling (Å): output pixel size bound; the scan has
    n = ceil(L / scan_sampling) positions spaced L / n. With `interpolate`, probes are placed on
    the coarsest grid that still samples the image at Nyquist (λ/4α) and the image is Fourier-
    interpolated to n (exact: the ADF image is band-limited to 2α/λ). Raises ValueError naming
    the parameter when the detector lies outside the band limit or an input is malformed.
    """
    extent = tuple(float(x) for x in extent)
    if len(extent) != 2 or not all(np.isfinite(extent)) or min(extent) <= 0:
        raise ValueError(f"extent: expected two positive cell lengths in Å, got {extent}")
    for name, value in (
        ("potential_sampling", potential_sampling),
        ("slice_thickness", slice_thickness),
        ("scan_sampling", scan_sampling),
    ):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a positive length in Å, got {value}")
    if scan_sampling > min(extent):
        raise ValueError(
            f"scan_sampling: {scan_sampling} Å is coarser than the cell itself ({extent} Å)"
        )
    energy = float(microscope.energy)
    if not (np.isfinite(energy) and energy > 0):
        raise ValueError(f"energy: expected a positive beam energy in eV, got {energy}")
    inner, outer = float(microscope.detector_inner), float(microscope.detector_outer)
    if not (0 <= inner < outer):
        raise ValueError(f"detector: expected 0 <= inner < outer (mrad), got ({inner}, {outer})")
    if float(microscope.semiangle_cutoff) <= 0:
        raise ValueError(
            "semiangle_cutoff: expected a positive angle in mrad, got "
            f"{microscope.semiangle_cutoff}"
        )

    gpts = tuple(int(math.ceil(L / potential_sampling - 1e-9)) for L in extent)
    sampling = (extent[0] / gpts[0], extent[1] / gpts[1])
    if oversampling is None:
        oversampling = max(1, int(math.ceil(max(sampling) / PHASE_GRATING_SAMPLING - 1e-9)))
        oversampling = max(1, min(oversampling, MAX_PHASE_GRATING_GPTS // max(gpts)))
    if int(oversampling) < 1:
        raise ValueError(f"oversampling: expected a positive integer, got {oversampling}")
    limit = band_limit_angle_mrad(sampling, energy)
    if outer > limit:
        needed = ANTIALIAS_CUTOFF * float(wavelength(energy)) / (2.0 * outer * 1e-3)
        raise ValueError(
            f"detector: outer angle {outer:g} mrad exceeds the {limit:.1f} mrad band limit of "
            f"potential_sampling={potential_sampling:g} Å at {energy:g} eV (2/3 antialiasing "
            f"aperture); use potential_sampling <= {needed:.4f} Å or a smaller outer angle"
        )

    numbers = np.asarray(numbers).reshape(-1)
    z_positions = np.asarray(z_positions, dtype=np.float64).reshape(-1)
    if numbers.shape != z_positions.shape:
        raise ValueError(
            f"numbers: expected one atomic number per atom ({z_positions.shape[0]}), "
            f"got shape {numbers.shape}"
        )
    load_parametrization(parametrization).table(np.unique(numbers))  # fails on unknown Z
    species = tuple(int(z) for z in np.unique(numbers))

    # Uniform slices from z = 0 through the cell (thickness rounded so that an integer number
    # of slices divides the cell, as abTEM does); empty slices merge into the propagation.
    top = float(cell_thickness) if cell_thickness else 0.0
    top = max(top, float(z_positions.max()) + 1e-6 if z_positions.size else slice_thickness)
    n_planes = max(1, int(math.ceil(top / slice_thickness - 1e-9)))
    slice_thickness = top / n_planes
    plane = np.clip(
        np.floor(z_positions / slice_thickness + PLANE_TOLERANCE).astype(int), 0, n_planes - 1
    )
    occupied = np.unique(plane) if plane.size else np.array([0])
    # Every uniform slice maps to the nearest occupied one (robust to thermal jitter).
    centres = np.arange(n_planes)
    slice_of_plane = np.abs(centres[:, None] - occupied[None, :]).argmin(axis=1)
    propagation = np.diff(np.concatenate([[0], occupied])) * slice_thickness

    if window_extent is None:
        window_extent = default_window_extent(microscope)
    window_gpts = tuple(
        min(n, _smooth_fft_size(int(math.ceil(window_extent / d))))
        for n, d in zip(gpts, sampling, strict=True)
    )

    # (the tolerance keeps L = n × sampling from rounding up to n + 1)
    output_gpts = tuple(int(math.ceil(L / scan_sampling - 1e-9)) for L in extent)
    scan_gpts = output_gpts
    if interpolate:
        d_nyq = nyquist_scan_sampling(
            float(microscope.semiangle_cutoff), energy, float(microscope.aperture_rolloff)
        )
        # One extra position per axis keeps the band edge strictly below the scan's Nyquist bin.
        nyq_gpts = tuple(int(math.ceil(L / d_nyq)) + 1 for L in extent)
        scan_gpts = tuple(min(n, m) for n, m in zip(output_gpts, nyq_gpts, strict=True))

    if focal_nodes is None:
        focal_nodes = 7 if float(microscope.focal_spread) > 0 else 1

    # Beams: every reciprocal-grid point the probe aperture (with its antialiased edge) touches.
    # The antialiased edge is non-zero up to half a reciprocal pixel beyond the cutoff.
    edge = float(wavelength(energy)) / min(extent) * 1e3
    beam_max_angle = float(microscope.semiangle_cutoff) + float(microscope.aperture_rolloff)
    beam_max_angle += 0.75 * edge
    n_beams = len(beam_indices(gpts, sampling, energy, beam_max_angle))
    n_pixels = len(detector_indices(gpts, sampling, energy, outer))
    if method == "auto":
        n_slices = len(propagation)
        fft = lambda n: 5.0 * n * math.log2(max(n, 2))  # noqa: E731
        cost_ms = np.prod(scan_gpts) * 2 * n_slices * fft(np.prod(window_gpts))
        cost_prism = n_beams * 2 * n_slices * fft(np.prod(gpts)) + 8.0 * n_beams**2 * n_pixels
        # The Gram matrix must also fit in memory (B × K complex64 detector spectra).
        fits = n_beams * n_pixels * 8 < 4e9
        method = "prism" if (fits and cost_prism < cost_ms) else "multislice"
    if method == "prism":
        scan_gpts = output_gpts  # the quadratic form costs nothing per position
    return ADFGeometry(
        extent=extent,
        gpts=gpts,
        species=species,
        slice_thickness=float(slice_thickness),
        slice_of_plane=tuple(int(i) for i in slice_of_plane),
        propagation=tuple(float(p) for p in propagation),
        window_gpts=window_gpts,
        scan_gpts=scan_gpts,
        output_gpts=output_gpts,
        focal_nodes=int(focal_nodes),
        chunk=int(chunk),
        parametrization=parametrization,
        oversampling=int(oversampling),
        method=method,
        planned_energy=energy,
        beam_max_angle=beam_max_angle,
        detector_max_angle=outer,
    )


def antialias_aperture(gpts, sampling, dtype=jnp.float32):
    """2/3-Nyquist antialiasing aperture with a cosine taper (Fourier space, FFT order)."""
    kx = np.fft.fftfreq(gpts[0], sampling[0])[:, None]
    ky = np.fft.fftfreq(gpts[1], sampling[1])[None, :]
    k = np.sqrt(kx**2 + ky**2)
    cutoff = ANTIALIAS_CUTOFF / max(sampling) / 2.0
    taper = ANTIALIAS_TAPER / max(sampling)
    array = 0.5 * (1.0 + np.cos(np.pi * (k - cutoff + taper) / taper))
    array = np.where(k > cutoff - taper, array, 1.0)
    array = np.where(k > cutoff, 0.0, array)
    return jnp.asarray(array, dtype)


def crop_spectrum(spectrum, gpts):
    """Keep the lowest `gpts` FFT frequencies of the last two axes (FFT order in and out)."""
    out = spectrum
    for axis, m in zip((-2, -1), gpts, strict=True):
        n = out.shape[axis]
        if m == n:
            continue
        keep = np.concatenate([np.arange(0, (m + 1) // 2), np.arange(n - m // 2, n)])
        out = jnp.take(out, jnp.asarray(keep), axis=axis)
    return out


def potential_taper(k, sampling):
    """Smooth low-pass of the slice potential spectrum on the phase-grating grid.

    A spectrum cut sharply at the grid's Nyquist frequency makes the sampled potential (and so
    exp(iσV)) depend on each atom's sub-pixel position: a W atom moved by half a pixel lost 2 %
    of its signal at 2× oversampling. A cosine roll-off from POTENTIAL_TAPER_START × Nyquist to
    Nyquist makes the sampled potential smooth and the image shift-invariant (< 0.05 %).
    """
    k_nyq = 1.0 / (2.0 * max(sampling))
    start = POTENTIAL_TAPER_START * k_nyq
    x = np.clip((k - start) / (k_nyq - start), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * x))


def transmission_functions(positions, numbers, mask, energy, geometry: ADFGeometry):
    """Band-limited transmission functions exp(iσV_l) of every occupied slice, (L, nx, ny).

    The phase grating is formed on a grid `geometry.oversampling` times finer than the wave grid
    (the exponential of the sharp atomic cores generates frequencies beyond the wave grid), from
    a potential whose spectrum rolls off smoothly below that grid's Nyquist frequency
    (`potential_taper`, for shift invariance), then band-limited by the 2/3 antialiasing
    aperture of the wave grid and cropped to it.
    """
    real = positions.dtype
    complex_dtype = jnp.result_type(real, jnp.complex64)
    q = geometry.oversampling
    fine = (geometry.gpts[0] * q, geometry.gpts[1] * q)
    fine_sampling = (geometry.extent[0] / fine[0], geometry.extent[1] / fine[1])
    kx = np.fft.fftfreq(fine[0], fine_sampling[0])[:, None]
    ky = np.fft.fftfreq(fine[1], fine_sampling[1])[None, :]
    params = load_parametrization(geometry.parametrization)
    form = projected_scattering_factor(
        jnp.asarray(kx**2 + ky**2, real), params.table(geometry.species), params.name
    ).astype(real)
    form = form * jnp.asarray(potential_taper(np.sqrt(kx**2 + ky**2), fine_sampling), real)
    species = jnp.asarray(geometry.species)
    onehot = (numbers[:, None] == species[None, :]) & mask[:, None]
    plane = jnp.floor(positions[:, 2] / geometry.slice_thickness + PLANE_TOLERANCE)
    plane = jnp.clip(plane.astype(jnp.int32), 0, len(geometry.slice_of_plane) - 1)
    slice_index = jnp.asarray(geometry.slice_of_plane)[plane]
    potential = slice_potentials(
        positions[:, :2],
        onehot.astype(real),
        slice_index,
        geometry.n_slices,
        form,
        fine,
        geometry.extent,
    )
    t = jnp.exp(1j * interaction_constant(energy).astype(real) * potential).astype(complex_dtype)
    spectrum = crop_spectrum(jnp.fft.fft2(t), geometry.gpts) / (q * q)
    aperture = antialias_aperture(geometry.gpts, geometry.sampling, real)
    return jnp.fft.ifft2(spectrum * aperture)


def _gauss_hermite(n: int):
    """Nodes x_i and weights w_i (Σ w_i = 1) for averaging over a standard normal variable."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / w.sum()


def fourier_resample(image, new_shape):
    """Resample a periodic, band-limited image to `new_shape` by zero-padding its spectrum.

    Exact at the original sample points when upsampling; the Nyquist bin of an even-sized input
    is split symmetrically so that a real image stays real.
    """
    spectrum = jnp.fft.fft2(image)
    for axis, m in zip((0, 1), new_shape, strict=True):
        spectrum = _resample_axis(spectrum, axis, m)
    scale = (new_shape[0] * new_shape[1]) / (image.shape[0] * image.shape[1])
    return jnp.fft.ifft2(spectrum).real * scale


def _resample_axis(spectrum, axis: int, m: int):
    n = spectrum.shape[axis]
    if m == n:
        return spectrum
    if m < n:
        raise ValueError(f"output_gpts: Fourier interpolation only upsamples ({n} -> {m})")
    take = lambda s: jax.lax.slice_in_dim(spectrum, s.start, s.stop, axis=axis)  # noqa: E731
    h = n // 2
    pad_shape = list(spectrum.shape)
    if n % 2:  # odd: no Nyquist bin
        pos, neg = take(slice(0, h + 1)), take(slice(h + 1, n))
        pad_shape[axis] = m - n
        return jnp.concatenate([pos, jnp.zeros(pad_shape, spectrum.dtype), neg], axis=axis)
    pos, nyq, neg = take(slice(0, h)), take(slice(h, h + 1)), take(slice(h + 1, n))
    pad_shape[axis] = m - n - 1
    zeros = jnp.zeros(pad_shape, spectrum.dtype)
    return jnp.concatenate([pos, nyq / 2, zeros, nyq / 2, neg], axis=axis)


def _shift_kernel(gpts, sampling, dtype):
    """Spatial frequencies (1/Å) of a grid, as column/row vectors in the given dtype."""
    kx = jnp.asarray(np.fft.fftfreq(gpts[0], sampling[0])[:, None], dtype)
    ky = jnp.asarray(np.fft.fftfreq(gpts[1], sampling[1])[None, :], dtype)
    return kx, ky


def scan_positions(geometry: ADFGeometry, dtype=jnp.float32):
    """Probe positions (P, 2) in Å: scan_gpts per axis, spaced extent / scan_gpts from 0."""
    xs = jnp.arange(geometry.scan_gpts[0], dtype=dtype) * (
        geometry.extent[0] / geometry.scan_gpts[0]
    )
    ys = jnp.arange(geometry.scan_gpts[1], dtype=dtype) * (
        geometry.extent[1] / geometry.scan_gpts[1]
    )
    return jnp.stack(jnp.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)


def adf_signal(
    transmission, probes_k, focal_weights, positions, microscope: Microscope, geometry: ADFGeometry
):
    """ADF signal (fraction of incident intensity) at probe `positions` (P, 2) Å.

    transmission: (L, nx, ny) band-limited transmission functions. probes_k: (F, wx, wy) probe
    spectra on the window grid (one per focal-spread node), each Σ|ψ̂|² = 1.
    """
    real = positions.dtype
    nx, ny = geometry.gpts
    wx, wy = geometry.window_gpts
    dx, dy = geometry.sampling
    lam = wavelength(microscope.energy).astype(real)
    kx, ky = _shift_kernel((wx, wy), (dx, dy), real)
    k2 = kx**2 + ky**2
    propagators = _propagators(microscope, geometry, (wx, wy), probes_k.dtype)
    alpha = jnp.sqrt(k2) * lam * 1e3
    detector = ((alpha >= microscope.detector_inner) & (alpha < microscope.detector_outer)).astype(
        real
    )
    # Periodic padding so that every window is one contiguous dynamic slice.
    padded = jnp.pad(transmission, ((0, 0), (0, wx), (0, wy)), mode="wrap")
    full_x, full_y = wx >= nx, wy >= ny

    def one_position(r):
        # Window origin (pixels, unwrapped) and the probe's position inside the window (Å).
        ox = (
            jnp.zeros((), jnp.int32) if full_x else jnp.floor(r[0] / dx).astype(jnp.int32) - wx // 2
        )
        oy = (
            jnp.zeros((), jnp.int32) if full_y else jnp.floor(r[1] / dy).astype(jnp.int32) - wy // 2
        )
        shift_x, shift_y = r[0] - ox * dx, r[1] - oy * dy
        ox, oy = ox % nx, oy % ny
        ramp = jnp.exp(-2j * jnp.pi * (kx * shift_x + ky * shift_y)).astype(probes_k.dtype)
        psi_k = probes_k * ramp * propagators[0]
        psi = jnp.fft.ifft2(psi_k)

        def step(psi, xs):
            t_full, propagator = xs
            t = jax.lax.dynamic_slice(t_full, (ox, oy), (wx, wy))
            psi = jnp.fft.ifft2(jnp.fft.fft2(psi * t) * propagator)
            return psi, None

        if geometry.n_slices > 1:
            psi, _ = jax.lax.scan(step, psi, (padded[:-1], propagators[1:]))
        t_last = jax.lax.dynamic_slice(padded[-1], (ox, oy), (wx, wy))
        intensity = jnp.abs(jnp.fft.fft2(psi * t_last)) ** 2
        signal = jnp.sum(intensity * detector, axis=(-2, -1))  # (F,)
        return jnp.sum(signal * focal_weights)

    chunk = min(geometry.chunk, positions.shape[0])
    n = positions.shape[0]
    n_pad = -n % chunk
    padded_positions = jnp.concatenate([positions, jnp.zeros((n_pad, 2), real)])
    batched = padded_positions.reshape(-1, chunk, 2)
    out = jax.lax.map(jax.vmap(one_position), batched).reshape(-1)
    return out[:n]


def focal_probes(microscope: Microscope, geometry: ADFGeometry, gpts, dtype):
    """Probe spectra on a grid of `gpts` (cell sampling) for each focal-spread node, and weights.

    Gauss–Hermite nodes shift C10 by x·focal_spread (Å); the weights sum to 1. The aperture edge
    width follows the whole cell (`edge_extent`), so a window samples the same probe as the cell.
    """
    real = jnp.zeros((), dtype).real.dtype
    complex_dtype = jnp.result_type(real, jnp.complex64)
    lam = wavelength(microscope.energy).astype(real)
    nodes, weights = _gauss_hermite(geometry.focal_nodes)
    ab = microscope.aberrations
    probes = [
        probe_fourier(
            gpts,
            geometry.sampling,
            lam,
            microscope.semiangle_cutoff,
            Aberrations(**{**ab.__dict__, "C10": ab.C10 + x * microscope.focal_spread}),
            microscope.aperture_rolloff,
            dtype=complex_dtype,
            edge_extent=geometry.extent,
        )
        for x in nodes
    ]
    return jnp.stack(probes), jnp.asarray(weights, real)


def adf_image(positions, numbers, mask, microscope: Microscope, geometry: ADFGeometry):
    """ADF image of a periodic cell, (output_gpts) in fraction of incident intensity.

    positions: (N, 3) Å (x, y in the cell, z from its entrance surface); numbers: (N,) atomic
    numbers; mask: (N,) bool, False for padding atoms. Axis 0 of the image runs along x.
    Jittable with `geometry` static; differentiable in positions and every microscope field.
    """
    positions = jnp.asarray(positions)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions: expected shape (N, 3) in Å, got {positions.shape}")
    if numbers.shape != positions.shape[:1] or mask.shape != positions.shape[:1]:
        raise ValueError(
            f"numbers/mask: expected shape ({positions.shape[0]},), got "
            f"{numbers.shape} and {mask.shape}"
        )
    real = positions.dtype
    microscope = microscope.astype(real)
    transmission = transmission_functions(positions, numbers, mask, microscope.energy, geometry)
    scan = scan_positions(geometry, real)
    if geometry.method == "prism":
        image = _prism_image(transmission, scan, microscope, geometry)
    else:
        probes, weights = focal_probes(
            microscope, geometry, geometry.window_gpts, transmission.dtype
        )
        image = adf_signal(transmission, probes, weights, scan, microscope, geometry)
    image = image.reshape(geometry.scan_gpts)
    return finish_image(image, microscope.source_size, geometry)


def _prism_image(transmission, scan, microscope: Microscope, geometry: ADFGeometry):
    """ADF signal at the scan positions through the detector Gram matrix (exact, periodic)."""
    gram = prism_gram(transmission, microscope, geometry)
    coefficients, beam_k = prism_probe_coefficients(microscope, geometry, transmission.dtype)
    return prism_signal(gram, coefficients, beam_k, scan, geometry.chunk)


def _propagators(microscope: Microscope, geometry: ADFGeometry, gpts, dtype):
    """Fresnel propagators (with antialias aperture) before each occupied slice, (L, *gpts)."""
    real = jnp.zeros((), dtype).real.dtype
    lam = wavelength(microscope.energy).astype(real)
    kx, ky = _shift_kernel(gpts, geometry.sampling, real)
    k2 = kx**2 + ky**2
    antialias = antialias_aperture(gpts, geometry.sampling, real)
    return jnp.stack(
        [jnp.exp(-1j * jnp.pi * lam * dz * k2) * antialias for dz in geometry.propagation]
    ).astype(dtype)


def prism_beams(geometry: ADFGeometry):
    """Static FFT indices (B, 2) of the plane waves of the PRISM path."""
    return beam_indices(
        geometry.gpts, geometry.sampling, geometry.planned_energy, geometry.beam_max_angle
    )


def prism_gram(transmission, microscope: Microscope, geometry: ADFGeometry):
    """Detector Gram matrix M (B, B) of the cell's transmission functions (see prism.py)."""
    gpts, sampling = geometry.gpts, geometry.sampling
    real = transmission.real.dtype
    lam = wavelength(microscope.energy).astype(real)
    propagators = _propagators(microscope, geometry, gpts, transmission.dtype)
    pixels = detector_indices(gpts, sampling, geometry.planned_energy, geometry.detector_max_angle)
    kx, ky = _shift_kernel(gpts, sampling, real)
    alpha = jnp.sqrt(kx**2 + ky**2).reshape(-1)[pixels] * lam * 1e3
    weight = (alpha >= microscope.detector_inner) & (alpha < microscope.detector_outer)
    beam_chunk = max(1, min(256, (1 << 22) // (gpts[0] * gpts[1])))
    return detector_gram(
        transmission, propagators, prism_beams(geometry), pixels, weight, beam_chunk
    )


def prism_probe_coefficients(microscope: Microscope, geometry: ADFGeometry, dtype):
    """Probe spectrum at the PRISM beams, (F, B), one row per focal-spread node.

    Rows carry sqrt(weight) of their Gauss–Hermite node and the propagation from the entrance
    surface to the first slice. Also returns the beams' spatial frequencies (B, 2) in 1/Å.
    """
    gpts, sampling = geometry.gpts, geometry.sampling
    real = jnp.zeros((), dtype).real.dtype
    beams = prism_beams(geometry)
    kx, ky = _shift_kernel(gpts, sampling, real)
    first = _propagators(microscope, geometry, gpts, dtype)[0]
    probes, weights = focal_probes(microscope, geometry, gpts, dtype)
    probes = (probes * first)[:, beams[:, 0], beams[:, 1]]
    coefficients = probes * jnp.sqrt(weights).astype(probes.dtype)[:, None]
    beam_k = jnp.stack([kx[beams[:, 0], 0], ky[0, beams[:, 1]]], axis=1)
    return coefficients, beam_k


def source_blur(image, source_size, sampling):
    """Gaussian source-size blur of a periodic image: σ = `source_size` (Å), pixels `sampling` (Å).

    Partial spatial coherence: the image convolved with the Gaussian effective source, applied
    in Fourier space as exp(−2π² σ² k²).
    """
    kx, ky = _shift_kernel(image.shape, sampling, image.dtype)
    envelope = jnp.exp(-2.0 * jnp.pi**2 * source_size**2 * (kx**2 + ky**2))
    return jnp.fft.ifft2(jnp.fft.fft2(image) * envelope).real


def finish_image(image, source_size, geometry: ADFGeometry):
    """Gaussian source-size blur (σ in Å) and Fourier interpolation to the output grid."""
    scan_sampling = (
        geometry.extent[0] / geometry.scan_gpts[0],
        geometry.extent[1] / geometry.scan_gpts[1],
    )
    return fourier_resample(source_blur(image, source_size, scan_sampling), geometry.output_gpts)
