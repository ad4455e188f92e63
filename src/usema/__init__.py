"""usema: medical image segmentation with SEMA attention (window softmax + global mean)."""

__version__ = "0.1.0"
