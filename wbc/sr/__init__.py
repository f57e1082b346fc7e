"""Super-resolution stage: PyTorch ESPCN/EDSR, the OpenCV dnn_superres backend, in-domain training."""
