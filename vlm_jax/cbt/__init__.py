"""CBT: masked-clip NCE over continuous features, a cross-modal score, windows, trainer."""
