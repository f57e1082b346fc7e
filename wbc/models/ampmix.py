"""Fourier amplitude mixing of the input (the amplitude mix of FACT; Xu et al., CVPR 2021), for models meant for
other labs' images.

An image's Fourier phase carries where its edges and shapes are (the nucleus's lobes, the cell's outline, the
granules); its amplitude spectrum carries how strongly each spatial frequency shows: the overall brightness and
colour level (the zero frequency), the contrast of the stain, how much the optics blur and the camera's noise
(the high frequencies). Labs differ mostly in the second, so during training each image is, with probability
``p``, given a convex mix ``(1 - lam) A + lam A'`` of its own per-channel amplitude spectrum ``A`` and that of
another image of the batch ``A'`` (``lam ~ U(0, eta)``), its own phase kept, then clipped to the pixel range.
Works on the 0..1 images before normalisation (the zero frequency is then the mean brightness, never negative).
No effect at evaluation, prediction or batch-norm adaptation.
"""

from __future__ import annotations

import torch


def amplitude_mix(x: torch.Tensor, p: float = 0.5, eta: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) images in 0..1, each with probability ``p`` given a mix of its amplitude spectrum with that of
    a random other image of the batch (weight ~ U(0, eta)), its phase kept (see the module's text)."""
    n = x.shape[0]
    if n < 2:
        return x
    spectrum = torch.fft.fft2(x if x.dtype in (torch.float32, torch.float64) else x.float())
    amplitude, phase = spectrum.abs(), spectrum.angle()
    # a partner for each image: a random permutation without fixed points (a shift of a random order)
    order = torch.randperm(n, device=x.device)
    partner = torch.empty_like(order)
    partner[order] = order.roll(1)
    lam = torch.rand(n, 1, 1, 1, device=x.device) * eta * (torch.rand(n, 1, 1, 1, device=x.device) < p)
    lam = lam.to(amplitude.dtype)
    mixed = (1 - lam) * amplitude + lam * amplitude[partner]
    out = torch.fft.ifft2(torch.polar(mixed, phase)).real.clamp_(0, 1)
    return out.to(x.dtype)
