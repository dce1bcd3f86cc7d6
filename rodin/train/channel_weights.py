"""How much each tri-plane channel matters to the decoder, as weights for a plane-space loss.

Fitting leaves noise in the channels the decoder barely reads: Adam moves every texel about `lr` a
step however weak its gradient, so those texels random-walk with the sampled rays (two fits of the
same subjects with different seeds differ by 30% of the planes' variance across subjects, most of it
in the least-read channels; BENCHMARKS.md). Normalised to unit variance per channel, that noise
weighs as much in a diffusion loss as the channels that make the image. These weights measure each
channel by what an error of one normalised unit in it does to the decoded colour and opacity.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rodin.triplane.decoder import TriplaneDecoder
from rodin.triplane.sampling import sample_triplane


def decoder_channel_weights(planes: Tensor, decoder: TriplaneDecoder, std: Tensor, *, points: int = 4096,
                            step: float = 2.0 / 64, generator: torch.Generator | None = None) -> Tensor:
    """(C,) weights with mean 1, for raw tri-planes (N, 3, C, H, W) and their per-channel std (C,).

    Points are drawn uniformly in the box for every subject; at each, the squared gradients of the
    decoded opacity of a `step`-long segment and of the colour it contributes (colour x opacity) with
    respect to the summed features are averaged, and scaled by std² (a normalised unit of channel c is
    std_c raw units).
    """
    n, _, channels = planes.shape[:3]
    device = planes.device
    pts = torch.rand(n * points, 3, generator=generator).to(device) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(n * points, 3, generator=generator), dim=-1).to(device)
    index = torch.arange(n, device=device).repeat_interleave(points)
    with torch.no_grad():
        features = sample_triplane(planes.float(), pts, index)
    features.requires_grad_(True)
    was_training = decoder.training
    decoder.eval()
    try:
        with torch.enable_grad():
            decoded = decoder(features, dirs if decoder.config.view_dependent else None)
            alpha = 1 - torch.exp(-decoded.density[:, 0] * step)
            outputs = torch.cat([decoded.rgb * alpha[:, None], alpha[:, None]], dim=1)
            total = torch.zeros(channels, device=device)
            for k in range(outputs.shape[1]):
                # Each point's outputs depend on its own features only: the gradient of the sum is per point.
                (grad,) = torch.autograd.grad(outputs[:, k].sum(), features, retain_graph=k < outputs.shape[1] - 1)
                total += grad.pow(2).mean(dim=0)
    finally:
        decoder.train(was_training)
    sensitivity = total * std.to(device).float().pow(2)
    if not torch.isfinite(sensitivity).all() or sensitivity.sum() <= 0:
        return torch.ones(channels, device=device)
    return sensitivity / sensitivity.mean()
