"""Benchmarks of speed, memory and accuracy: `python scripts/benchmark.py --parts data,step,memory,sr,predict`.

Each part writes outputs/benchmarks/<part>.json; every run re-renders outputs/benchmarks/results.md from all the
JSON files there. Timings are quoted as ratios measured in the same run, on the same machine.

Parts:
  data      training throughput on PBC at S=64 (an epoch after the first) against a plain torchvision
            ImageFolder + transforms + DataLoader baseline training the same model with the same batch size
  step      end-to-end training step throughput (Lightning, cached data, augmentation) against the bare
            model step on tensors already in memory
  memory    peak resident memory of a PBC run at S=128
  sr        per-method SR cost (ms/image) and PSNR/SSIM on the PBC test split at S=128, x4; cached vs uncached
  sweep     wall time of a 4-method x 3-seed sweep against 12 runs of sr=none (fresh caches)
  predict   prediction throughput over 1,000 PBC images against the bare model on in-memory tensors
  accuracy  PBC four classes, split seed 0, 3 seeds: cnn and resnet18 at S=64 and 128; the SR study at 128, x4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

OUT = REPO / "outputs" / "benchmarks"
CONF = OmegaConf.load(REPO / "conf" / "data" / "pbc.yaml")
PBC_MAP = dict(CONF.source.class_map)
CLASSES = list(OmegaConf.load(REPO / "conf" / "train.yaml").class_names)


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def datamodule(args, image_size: int, lr_scale: int = 1, sr=None, augment: bool = True, **kw):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from wbc.data.datamodule import WBCDataModule
    from wbc.data.sources import FolderSource
    from wbc.sr.stage import SuperResolver

    transforms = None
    if augment:
        with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
            transforms = instantiate(compose("train").data.augment)
    return WBCDataModule(
        FolderSource(args.pbc, CLASSES, PBC_MAP, name="pbc"),
        image_size=image_size,
        lr_scale=lr_scale,
        restorer=sr or SuperResolver("none", lr_scale),
        augment=transforms,
        cache_dir=args.cache,
        **kw,
    )


def bare_steps(net: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], precision: str) -> float:
    """Images per second of forward/backward/AdamW steps on batches already in memory."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()
    n, start = 0, 0.0
    for i, (x, y) in enumerate(batches):
        if i == 2:  # warm-up: allocator and oneDNN primitive creation
            n, start = 0, time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n += len(y)
    return n / (time.perf_counter() - start)


@torch.no_grad()
def bare_inference(net: torch.nn.Module, tensors: torch.Tensor, batch_size: int = 64) -> float:
    """Images per second of the model alone (softmax included) on images already in memory."""
    net(tensors[:batch_size])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        net(tensors[i : i + batch_size]).softmax(1)
    return len(tensors) / (time.perf_counter() - start)


def lightning_epoch(args, dm, model_name: str, batches: int, precision: str) -> float:
    """Images per second of our training path (Lightning, WBCDataModule, WBCClassifier): the second epoch."""
    import lightning as L

    from wbc.callbacks import EpochTimer
    from wbc.models.module import WBCClassifier

    dm.setup()
    model = WBCClassifier({"name": model_name}, CLASSES, scheduler="none")
    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        limit_train_batches=batches,
        limit_val_batches=0,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        use_distributed_sampler=False,
    )
    trainer.fit(model, datamodule=dm)
    return batches * dm.batch_size / timer.seconds[-1]


def loader_speed(loader, batches: int) -> float:
    """Images per second of iterating a DataLoader (second pass), without a model."""
    for _pass in range(2):
        n, start = 0, time.perf_counter()
        for i, (x, *_rest) in enumerate(loader):
            if i == batches:
                break
            n += len(x)
    return n / (time.perf_counter() - start)


def part_data(args) -> dict:
    """Our pipeline vs ImageFolder + transforms + DataLoader, same model, batch size and number of batches."""
    from torchvision import datasets
    from torchvision import transforms as T

    from wbc.models.networks import create_model

    size, batch, batches, result = 64, 64, args.batches, {}
    for workers in args.workers:
        ours = lightning_epoch(
            args, datamodule(args, size, batch_size=batch, num_workers=workers), "cnn", batches, args.precision
        )
        folder_to_class = {f: CLASSES.index(c) for f, c in PBC_MAP.items()}
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
        loader = torch.utils.data.DataLoader(
            plain, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0
        )
        net = create_model("cnn", 4)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        speeds = []
        for _epoch in range(2):
            n, start = 0, time.perf_counter()
            for i, (x, y) in enumerate(loader):
                if i == batches:
                    break
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"):
                    loss = torch.nn.functional.cross_entropy(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n += len(y)
            speeds.append(n / (time.perf_counter() - start))
        # the loaders alone (no model): what each pipeline costs per image, apart from the model step
        dm = datamodule(args, size, batch_size=batch, num_workers=workers)
        dm.setup()
        ours_loader = loader_speed(dm.train_dataloader(), batches)
        plain_loader = loader_speed(loader, batches)
        result[f"workers={workers}"] = {
            "ours_images_per_s": ours,
            "imagefolder_images_per_s": speeds[-1],
            "ratio": ours / speeds[-1],
            "ours_loader_only_images_per_s": ours_loader,
            "imagefolder_loader_only_images_per_s": plain_loader,
            "loader_only_ratio": ours_loader / plain_loader,
        }
        print(
            f"data, {workers} workers: ours {ours:.0f} img/s, ImageFolder {speeds[-1]:.0f} img/s, "
            f"x{ours / speeds[-1]:.2f}",
            flush=True,
        )
    return {
        "image_size": size,
        "batch_size": batch,
        "model": "cnn",
        "batches": batches,
        "goal": ">= 2x",
        "results": result,
    }


def part_step(args) -> dict:
    """Our end-to-end step throughput vs the bare model step on in-memory tensors (goal >= 0.85)."""
    from wbc.models.module import IMAGENET_MEAN, IMAGENET_STD
    from wbc.models.networks import create_model

    result = {}
    for size, model_name in ((64, "cnn"), (128, "cnn"), (128, "resnet18")):
        for workers in args.workers:
            for augment in (True, False):
                dm = datamodule(args, size, batch_size=64, num_workers=workers, augment=augment)
                torch.manual_seed(0)
                mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
                batches = [
                    ((torch.rand(64, 3, size, size) - mean) / std, torch.randint(0, 4, (64,)))
                    for _ in range(args.batches + 2)
                ]
                channels_last = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
                ours, bare = [], []
                for _repeat in range(args.repeats):  # interleaved, best of each: the machine's noise hits both
                    ours.append(lightning_epoch(args, dm, model_name, args.batches, args.precision))
                    # the bare step gets the faster of the two memory layouts, as in the predict part
                    layouts = (batches, channels_last)
                    bare.append(max(bare_steps(create_model(model_name, 4), b, args.precision) for b in layouts))
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


def part_memory(args) -> dict:
    """Peak resident memory of a PBC training run at S=128 (a child process: ru_maxrss of children)."""
    cmd = [
        sys.executable,
        "train.py",
        "data=pbc",
        f"data.root={args.pbc}",
        "data.image_size=128",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.batches}",
        "logger=none",
        f"trainer.precision={args.precision}",
        f"hydra.run.dir={OUT / 'memory_run'}",
    ]
    env = {**os.environ, "WBC_CACHE_DIR": str(args.cache)}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"memory: peak RSS {peak_kb / 2**20:.2f} GiB", flush=True)
    return {
        "peak_rss_gib": peak_kb / 2**20,
        "seconds": time.perf_counter() - start,
        "goal": "< 4 GB",
        "command": " ".join(cmd[1:]),
    }


def sr_resolvers(args, scale: int) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    resolvers = {}
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        for method in ("none", "bicubic", "espcn", args.edsr):
            cfg = compose("train", overrides=[f"sr={method}", f"data.lr_scale={scale}"])
            resolvers[method] = instantiate(cfg.sr)
    if (args.sr_models / f"ESPCN_x{scale}.pb").exists():
        from wbc.sr.stage import SuperResolver

        resolvers["espcn-opencv (DIV2K)"] = SuperResolver(
            "espcn", scale, backend="opencv", weights=args.sr_models / f"ESPCN_x{scale}.pb"
        )
    return resolvers


def part_sr(args) -> dict:
    """PSNR/SSIM and cost of each SR method on the PBC test split at S=128, x4 (in-domain ESPCN/EDSR)."""
    from wbc.resize import upscale
    from wbc.sr.quality import sr_quality
    from wbc.sr.report import sr_cost_ms

    size, scale, result = args.sr_size, 4, {}
    for name, resolver in sr_resolvers(args, scale).items():
        dm = datamodule(args, size, scale, sr=resolver, augment=False)
        start = time.perf_counter()
        dm.setup()  # trains (or loads) the in-domain SR model, then applies it to every image (cached)
        setup_s = time.perf_counter() - start
        start = time.perf_counter()
        again = datamodule(args, size, scale, sr=resolver, augment=False)
        again.setup()
        cached_s = time.perf_counter() - start
        rows = np.unique(dm.datasets["test"].rows)
        refs = np.asarray(dm.references[rows])
        quality = sr_quality(np.asarray(dm.datasets["test"].images[rows]), refs)
        low_res = dm.preprocessor.degrade(refs)
        bicubic = np.stack([upscale(im, size, "bicubic") for im in low_res])
        base = sr_quality(bicubic, refs)
        result[name] = {
            **quality,
            "psnr_gain_over_bicubic": quality["psnr"] - base["psnr"],
            "ssim_gain_over_bicubic": quality["ssim"] - base["ssim"],
            "ms_per_image": sr_cost_ms(dm.preprocessor.restorer, low_res),
            "sr_train_seconds": (resolver.train_stats or {}).get("seconds"),
            "setup_seconds_first": setup_s,
            "setup_seconds_cached": cached_s,
        }
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result[name].items()}
        print(f"sr {name}: {json.dumps(shown)}", flush=True)
    return {
        "image_size": size,
        "scale": scale,
        "test_images": int(len(rows)),
        "split_seed": 0,
        "anchors_set5_x4_psnr": {"bicubic": 28.42, "espcn": 30.90, "edsr": 32.46},
        "note": "PSNR on RGB 0..255 against the S x S reference, mean over test images",
        "results": result,
    }


def run_sweep(args, name: str, overrides: list[str], cache: Path | None = None) -> float:
    sweep = OUT / "sweeps" / name
    env = {**os.environ, "WBC_CACHE_DIR": str(cache or args.cache)}
    if args.jobs > 1:  # parallel jobs of one thread each share the cores better than one job of several
        env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "train.py", "-m", *overrides, f"hydra.sweep.dir={sweep}"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def part_sweep(args) -> dict:
    """A 4-method x 3-seed sweep against 12 runs of sr=none, each with a fresh cache."""
    import shutil

    for name in ("study", "plain", "study-cache", "plain-cache"):
        shutil.rmtree(OUT / "sweeps" / name, ignore_errors=True)
    common = [
        "data=pbc",
        f"data.root={args.pbc}",
        "data.image_size=64",
        "data.lr_scale=4",
        "logger=none",
        f"trainer.max_epochs={args.sweep_epochs}",
        f"trainer.precision={args.precision}",
    ]
    # fresh caches: the sweep pays for SR training and SR inference once per method, the plain runs for decoding
    study = run_sweep(
        args, "study", [*common, f"sr=none,bicubic,espcn,{args.edsr}", "seed=0,1,2"], OUT / "sweeps" / "study-cache"
    )
    plain = run_sweep(
        args, "plain", [*common, "sr=none", "seed=0,1,2,3,4,5,6,7,8,9,10,11"], OUT / "sweeps" / "plain-cache"
    )
    print(
        f"sweep: 4 methods x 3 seeds {study:.0f} s, 12 x sr=none {plain:.0f} s, ratio {study / plain:.2f}", flush=True
    )
    return {
        "study_seconds": study,
        "plain_seconds": plain,
        "ratio": study / plain,
        "goal": "< 1.3",
        "overrides": common,
    }


def part_predict(args) -> dict:
    """predict.py's path over 1,000 PBC files against the bare model on the same images as in-memory tensors."""
    import lightning as L

    from wbc.data.decode import read_image
    from wbc.models.module import WBCClassifier
    from wbc.predict import Predictor, predict_files
    from wbc.sr.stage import SuperResolver

    files = sorted(p for p in Path(args.pbc).glob("*/*.jpg") if not p.name.startswith("."))
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[: args.predict_images]]
    result = {}
    for size, scale, method, model_name in (
        (64, 1, "none", "cnn"),
        (128, 1, "none", "cnn"),
        (128, 4, "espcn", "cnn"),
        (128, 1, "none", "resnet18"),
    ):
        cfg_sr = sr_resolvers(args, scale)[method] if scale > 1 else SuperResolver("none", 1)
        dm = datamodule(args, size, scale, sr=cfg_sr, augment=False)
        dm.setup()
        model = WBCClassifier({"name": model_name}, CLASSES, preprocessing={"image_size": size, "lr_scale": scale})
        model.sr_state = cfg_sr.state()
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=1,
            limit_val_batches=0,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=OUT / "predict_ckpt",
        )
        trainer.fit(model, datamodule=dm)
        ckpt = OUT / "predict_ckpt" / f"{model_name}-{size}-{method}.ckpt"
        trainer.save_checkpoint(ckpt)
        predictor = Predictor.from_checkpoint(ckpt, device="cpu")
        start = time.perf_counter()
        probs, errors, _ = predict_files(predictor, files, batch_size=64, threads=args.decode_threads)
        ours = len(files) / (time.perf_counter() - start)
        images = predictor.preprocessor([read_image(f, min_size=size) for f in files])
        # the bare model gets the faster of the two memory layouts (channels-last is what predict.py feeds it)
        nhwc = torch.from_numpy(images).permute(0, 3, 1, 2)
        bare = max(bare_inference(predictor.model, t) for t in (nhwc.contiguous(), nhwc))
        key = f"{model_name}@{size}, sr={method} x{scale}"
        result[key] = {
            "predict_images_per_s": ours,
            "bare_model_images_per_s": bare,
            "ratio": ours / bare,
            "errors": len(errors),
        }
        print(f"predict {key}: {ours:.0f} img/s vs bare model {bare:.0f} img/s, ratio {ours / bare:.2f}", flush=True)
    return {
        "images": len(files),
        "batch_size": 64,
        "decode_threads": args.decode_threads,
        "goal": ">= 0.7 (sr=none)",
        "results": result,
    }


def part_accuracy(args) -> dict:
    """PBC, split seed 0, seeds 0-2 (--seeds): cnn and resnet18 at S=64 and 128, and the SR study at S=128, x4."""
    from wbc.reports.compare import compare

    common = [
        "data=pbc",
        f"data.root={args.pbc}",
        "logger=none",
        f"trainer.precision={args.precision}",
        f"seed={args.seeds}",
        *args.accuracy_overrides,
    ]
    # cnn at S=128 is the f=1 reference of the SR study: it runs there, not twice
    sweeps = {
        "models64": [*common, "model=cnn,resnet18", "data.image_size=64", f"trainer.max_epochs={args.epochs_64}"],
        "models128": [*common, "model=resnet18", "data.image_size=128", f"trainer.max_epochs={args.epochs_128}"],
        "sr_study128": [
            *common,
            "model=cnn",
            "data.image_size=128",
            "data.lr_scale=1,4",
            f"sr=none,bicubic,espcn,{args.edsr}",
            f"trainer.max_epochs={args.epochs_128}",
        ],
    }
    previous = OUT / "accuracy.json"  # sweeps run one at a time add to what earlier ones wrote
    result = {k: v for k, v in json.loads(previous.read_text()).items() if k in sweeps} if previous.exists() else {}
    for name, overrides in sweeps.items():
        if args.accuracy_only and name not in args.accuracy_only:
            continue
        if args.jobs > 1:
            overrides = [*overrides, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]
        seconds = run_sweep(args, f"accuracy-{name}", overrides)
        table = compare(OUT / "sweeps" / f"accuracy-{name}")
        result[name] = {"seconds": seconds, "overrides": overrides, "table": table}
        print(table, flush=True)
    return result


def render(out: Path) -> str:
    """results.md from every <part>.json in ``out``."""
    lines = ["# Benchmark results", ""]
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        lines += [f"## {path.stem}", "", f"Machine: {json.dumps(data.get('machine'))}", ""]
        results = data.get("results")
        if isinstance(results, dict) and results and all(isinstance(v, dict) for v in results.values()):
            keys = list(next(iter(results.values())))
            lines.append("| case | " + " | ".join(keys) + " |")
            lines.append("|" + "---|" * (len(keys) + 1))
            for case, row in results.items():
                cells = [f"{row.get(k):.3g}" if isinstance(row.get(k), float) else str(row.get(k)) for k in keys]
                lines.append(f"| {case} | " + " | ".join(cells) + " |")
        for key, value in data.items():
            if key not in ("results", "machine", "table") and not isinstance(value, dict):
                lines.append(f"- {key}: {value:.3g}" if isinstance(value, float) else f"- {key}: {value}")
        for name, sweep in data.items() if path.stem == "accuracy" else []:
            if isinstance(sweep, dict) and "table" in sweep:
                lines += ["", f"### {name}", "", sweep["table"]]
        lines.append("")
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text


PARTS = {
    "data": part_data,
    "step": part_step,
    "memory": part_memory,
    "sr": part_sr,
    "sweep": part_sweep,
    "predict": part_predict,
    "accuracy": part_accuracy,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="data,step,memory,sr,predict", help=f"comma-separated: {','.join(PARTS)}")
    parser.add_argument("--pbc", type=Path, default=REPO.parent / "shared" / "data" / "pbc")
    parser.add_argument("--sr-models", type=Path, default=REPO.parent / "shared" / "sr_models")
    parser.add_argument("--cache", type=Path, default=REPO / "outputs" / "cache", help="shared with train.py runs")
    parser.add_argument("--batches", type=int, default=40, help="training batches timed per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of the step part (best is kept)")
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[0, 2])
    parser.add_argument("--precision", default="32-true", help="32-true or bf16-mixed")
    parser.add_argument("--predict-images", type=int, default=1000)
    parser.add_argument("--decode-threads", type=int, default=2)
    parser.add_argument("--sr-size", type=int, default=128)
    parser.add_argument("--sweep-epochs", type=int, default=3)
    parser.add_argument("--epochs-64", type=int, default=12, help="max epochs of the accuracy runs at S=64")
    parser.add_argument("--epochs-128", type=int, default=8, help="max epochs of the accuracy runs at S=128")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of the accuracy sweeps")
    parser.add_argument("--jobs", type=int, default=1, help="parallel jobs of the accuracy sweeps (joblib)")
    parser.add_argument(
        "--accuracy-only", type=lambda s: s.split(","), default=None, help="models64,models128,sr_study128"
    )
    parser.add_argument("--accuracy-overrides", type=lambda s: s.split(), default=[], help="extra train.py overrides")
    parser.add_argument("--edsr", default="edsr_small", help="the sr option used for EDSR (edsr: the baseline)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for part in args.parts.split(","):
        started = time.perf_counter()
        try:
            data = PARTS[part](args)
        except subprocess.CalledProcessError as err:  # a failed part is reported, the others still run
            print(f"part {part} failed: {err}\n{(err.stderr or b'')[-3000:].decode(errors='replace')}", flush=True)
            continue
        data["machine"] = machine()
        data["wall_seconds"] = time.perf_counter() - started
        (OUT / f"{part}.json").write_text(json.dumps(data, indent=2))
    print(render(OUT))


if __name__ == "__main__":
    main()
