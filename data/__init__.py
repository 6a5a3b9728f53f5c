"""The shipped data sets, installed with the package as defectnet.datasets."""
