"""Part `data`: our training pipeline against torchvision's ImageFolder + transforms + DataLoader training the same
model with the same batch size and number of batches, on PBC at S=64 (an epoch after the first)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from benchmarks.harness import classes, datamodule, lightning_epoch, pbc_map, timed_steps


def imagefolder_loader(args, size: int, batch: int, workers: int) -> torch.utils.data.DataLoader:
    """The plain baseline: ImageFolder on PBC with torchvision transforms like our augmentation, labels mapped onto
    the four classes."""
    from torchvision import datasets
    from torchvision import transforms as T

    folder_to_class = {f: classes().index(c) for f, c in pbc_map().items()}
    plain = datasets.ImageFolder(
        str(args.pbc),
        transform=T.Compose(
            [
                T.Resize((size, size)),
                T.RandomHorizontalFlip(),
                T.RandomVerticalFlip(),
                T.RandomAffine(15, (0.05, 0.05), (0.9, 1.1)),
                T.ColorJitter(0.15, 0.15, 0.15, 0.03),
                T.ToTensor(),
                T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        ),
        is_valid_file=lambda p: p.lower().endswith(".jpg") and not Path(p).name.startswith("."),
    )
    plain.target_transform = lambda t, names=plain.classes, to=folder_to_class: to[names[t]]
    return torch.utils.data.DataLoader(
        plain, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )


def loader_speed(loader, batches: int) -> float:
    """Images per second of iterating a DataLoader (second pass), without a model."""
    for _pass in range(2):
        n, start = 0, time.perf_counter()
        for i, (x, *_rest) in enumerate(loader):
            if i == batches:
                break
            n += len(x)
    return n / (time.perf_counter() - start)


def run(args) -> dict:
    from wbc.models.networks import create_model

    size, batch, batches, result = 64, 64, args.batches, {}
    for workers in args.workers:
        dm = datamodule(args, size, batch_size=batch, num_workers=workers)
        ours = lightning_epoch(args, dm, "cnn", batches, repeats=args.repeats)
        loader = imagefolder_loader(args, size, batch, workers)
        net = create_model("cnn", 4).to(args.device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        # an epoch to warm up, then the median of --repeats epochs, like ours
        speeds = [timed_steps(net, optimizer, loader, args.precision, limit=batches) for _ in range(1 + args.repeats)]
        plain = statistics.median(speeds[1:])
        # the loaders alone (no model): what each pipeline costs per image, apart from the model step
        ours_loader = loader_speed(dm.train_dataloader(), batches)
        plain_loader = loader_speed(loader, batches)
        result[f"workers={workers}"] = {
            "ours_images_per_s": ours,
            "imagefolder_images_per_s": plain,
            "ratio": ours / plain,
            "ours_loader_only_images_per_s": ours_loader,
            "imagefolder_loader_only_images_per_s": plain_loader,
            "loader_only_ratio": ours_loader / plain_loader,
        }
        print(
            f"data, {workers} workers: ours {ours:.0f} img/s, ImageFolder {plain:.0f} img/s, x{ours / plain:.2f}",
            flush=True,
        )
    return {
        "image_size": size,
        "batch_size": batch,
        "model": "cnn",
        "batches": batches,
        "repeats": args.repeats,
        "goal": ">= 2x",
        "results": result,
    }
