"""varsmooth: variational learning induces adaptive label smoothing.

IVON as a drop-in PyTorch optimizer, the label noise it induces (exact for GLMs, estimated for networks), fair
comparisons with label smoothing, online label smoothing, SAM and plain training, and every figure of the paper.
"""

__version__ = "0.1.0"
