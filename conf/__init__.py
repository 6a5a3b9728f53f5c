"""DefectNet's Hydra configuration, installed with the package as defectnet.conf."""
