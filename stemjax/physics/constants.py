"""Physical constants (CODATA 2018), the single source for the physics layer."""

#: Planck constant times speed of light, eV·Å.
HC_EV_ANGSTROM = 12398.419843320026
#: Electron rest energy m0 c², eV.
ELECTRON_REST_ENERGY_EV = 510998.95000
#: Bohr radius a0, Å.
BOHR_RADIUS_ANGSTROM = 0.529177210903
#: e / (4π ε0) expressed in V·Å (so that e²/(4πε0) = 14.3996 eV·Å).
COULOMB_V_ANGSTROM = 14.399645478425668
#: 2π a0 e: converts an electron scattering factor f_e (Å) into the 2D Fourier transform
#: of the projected potential (V·Å³), Kirkland (2010) eq. C.5/5.9.
SCATTERING_FACTOR_TO_POTENTIAL = 2.0 * 3.141592653589793 * BOHR_RADIUS_ANGSTROM * COULOMB_V_ANGSTROM
