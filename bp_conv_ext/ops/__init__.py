"""The operations users call: the convolution and its dispatch, synaptic delays, the fused
convolution into LIF neurons."""
