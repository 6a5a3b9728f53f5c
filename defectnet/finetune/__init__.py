"""Fine-tuning data: measured spectra and the data sets that meet them."""
