"""Part `predict`: predict.py's path (Predictor, predict_files) over PBC files against the bare model on the same
images as tensors already in the device's memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import OUT, accelerator, bare_inference, classes, clock, datamodule, sr_resolvers

CASES = (  # image size, lr_scale, SR method, network
    (64, 1, "none", "cnn"),
    (128, 1, "none", "cnn"),
    (128, 4, "espcn", "cnn"),
    (128, 1, "none", "resnet18"),
)


def checkpoint(args, size: int, scale: int, method: str, model_name: str) -> Path:
    """A checkpoint of ``model_name`` after one training step on PBC, with its SR stage: what predict.py loads."""
    import lightning as L

    from wbc.models.module import WBCClassifier
    from wbc.sr.stage import SuperResolver

    sr = sr_resolvers(args, scale)[method] if scale > 1 else SuperResolver("none", 1, device=args.device)
    dm = datamodule(args, size, scale, sr=sr, augment=False)
    dm.setup()
    model = WBCClassifier({"name": model_name}, classes(), preprocessing={"image_size": size, "lr_scale": scale})
    model.sr_state = sr.state()
    trainer = L.Trainer(
        accelerator=accelerator(args.device),
        devices=1,
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=OUT / "predict_ckpt",
    )
    trainer.fit(model, datamodule=dm)
    path = OUT / "predict_ckpt" / f"{model_name}-{size}-{method}.ckpt"
    trainer.save_checkpoint(path)
    return path


def run(args) -> dict:
    from wbc.data.decode import read_image
    from wbc.predict import Predictor, predict_files

    files = sorted(p for p in Path(args.pbc).glob("*/*.jpg") if not p.name.startswith("."))
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[: args.predict_images]]
    result = {}
    for size, scale, method, model_name in CASES:
        predictor = Predictor.from_checkpoint(checkpoint(args, size, scale, method, model_name), device=args.device)
        images = predictor.preprocessor([read_image(f, min_size=size) for f in files])
        # the bare model gets the faster of the two memory layouts (channels-last is what predict.py feeds it)
        nhwc = torch.from_numpy(images).permute(0, 3, 1, 2)
        ours, bare = [], []
        for _repeat in range(args.repeats):  # interleaved, the median of each: the machine's noise hits both
            start = clock(args.device)
            _, errors, _ = predict_files(predictor, files, batch_size=64, threads=args.decode_threads)
            ours.append(len(files) / (clock(args.device) - start))
            bare.append(max(bare_inference(predictor.model, t.to(args.device)) for t in (nhwc.contiguous(), nhwc)))
        key = f"{model_name}@{size}, sr={method} x{scale}"
        result[key] = {
            "predict_images_per_s": float(np.median(ours)),
            "bare_model_images_per_s": float(np.median(bare)),
            "ratio": float(np.median(ours) / np.median(bare)),
            "repeats_predict": [round(x, 1) for x in ours],
            "repeats_bare": [round(x, 1) for x in bare],
            "errors": len(errors),
        }
        r = result[key]
        print(
            f"predict {key}: {r['predict_images_per_s']:.0f} img/s vs bare model {r['bare_model_images_per_s']:.0f} "
            f"img/s, ratio {r['ratio']:.2f} (medians of {args.repeats})",
            flush=True,
        )
    return {
        "images": len(files),
        "batch_size": 64,
        "repeats": args.repeats,
        "decode_threads": args.decode_threads,
        "goal": ">= 0.7 (sr=none)",
        "results": result,
    }
