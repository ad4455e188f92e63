"""USEMA inside other frameworks' pipelines (nnU-Net v2), without forking them."""
