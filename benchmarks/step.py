"""Part `step`: our end-to-end training step throughput (Lightning, cached data, augmentation) against the bare
model step on tensors already in the device's memory (goal >= 0.85)."""

from __future__ import annotations

import torch

from benchmarks.harness import datamodule, lightning_epoch, timed_steps


def memory_batches(size: int, n: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` normalised random batches of 64 images on ``device``."""
    from wbc.models.module import IMAGENET_MEAN, IMAGENET_STD

    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    batches = [((torch.rand(64, 3, size, size) - mean) / std, torch.randint(0, 4, (64,))) for _ in range(n)]
    return [(x.to(device), y.to(device)) for x, y in batches]


def bare_step(model_name: str, batches: list, args) -> float:
    """Images per second of a fresh ``model_name`` trained with AdamW on ``batches`` (two warm-up batches)."""
    from wbc.models.networks import create_model

    net = create_model(model_name, 4).to(args.device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    return timed_steps(net, optimizer, batches, args.precision, warmup=2)


def run(args) -> dict:
    result = {}
    for size, model_name in ((64, "cnn"), (128, "cnn"), (128, "resnet18")):
        for workers in args.workers:
            for augment in (True, False):
                dm = datamodule(args, size, batch_size=64, num_workers=workers, augment=augment)
                torch.manual_seed(0)
                batches = memory_batches(size, args.batches + 2, args.device)
                channels_last = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
                ours, bare = [], []
                for _repeat in range(args.repeats):  # interleaved, best of each: the machine's noise hits both
                    ours.append(lightning_epoch(args, dm, model_name, args.batches))
                    # the bare step gets the faster of the two memory layouts, as in the predict part
                    bare.append(max(bare_step(model_name, b, args) for b in (batches, channels_last)))
                key = f"{model_name}@{size}, workers={workers}, augment={augment}"
                result[key] = {
                    "ours_images_per_s": max(ours),
                    "bare_images_per_s": max(bare),
                    "ratio": max(ours) / max(bare),
                }
                print(
                    f"step {key}: ours {ours} img/s, bare {bare} img/s, ratio {max(ours) / max(bare):.2f}", flush=True
                )
    return {
        "batch_size": 64,
        "precision": args.precision,
        "repeats": args.repeats,
        "goal": ">= 0.85",
        "results": result,
    }
