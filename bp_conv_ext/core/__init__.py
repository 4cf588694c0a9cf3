"""The pure functions under everything: argument handling, the dense convolution
algorithms, parameters and masks, sequences."""
