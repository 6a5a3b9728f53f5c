"""DefectNet: identify substitutional dopants and their concentrations from phonon spectra."""

__version__ = "0.1.0"
