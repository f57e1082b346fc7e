"""The benchmarks package (python -m benchmarks): its command line, the accuracy experiments it composes, results.md.
The benchmarks themselves are scripts that write figures, not tests; these check the harness around them."""

import json
import shlex

import pytest
import torch

from benchmarks import accuracy
from benchmarks.__main__ import PARTS, parse_args
from benchmarks.harness import REPO, bare_inference, render, timed_steps


def test_options_and_device():
    args = parse_args(shlex.split("--parts step,predict --batches 3 --repeats 1 --workers 0,2 --predict-images 64"))
    assert (args.parts, args.batches, args.repeats, args.workers) == ("step,predict", 3, 1, [0, 2])
    assert args.predict_images == 64 and args.precision == "32-true" and args.seeds is None
    assert args.device == ("cuda" if torch.cuda.is_available() else "cpu")  # auto
    assert parse_args(["--device", "cpu"]).device == "cpu"
    with pytest.raises(SystemExit):
        parse_args(["--parts", "step,nonsense"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            parse_args(["--device", "cuda"])


def test_documented_commands_parse():
    """Every benchmark command that README.md and scripts/gpu_check.py document takes these options."""
    commands = [
        line.strip()
        for line in (REPO / "README.md").read_text().splitlines()
        if line.strip().startswith(("python -m benchmarks", "python scripts/benchmark.py"))
    ]
    assert commands
    for command in commands:
        words = shlex.split(command)
        parse_args(words[3:] if words[1] == "-m" else words[2:])
    assert '"-m", "benchmarks"' in (REPO / "scripts" / "gpu_check.py").read_text()


def test_accuracy_experiments_compose(tmp_path):
    """Each accuracy sweep is an experiment config that Hydra composes; the options of a run change its axes."""
    for name in accuracy.SWEEPS:
        assert (REPO / "conf" / "experiment" / f"{accuracy.experiment(name)}.yaml").is_file()
    args = parse_args(["--parts", "accuracy", "--pbc", str(tmp_path)])
    overrides = {name: accuracy.sweep_overrides(args, name) for name in accuracy.SWEEPS}
    assert "model=cnn,resnet18" in overrides["models64"] and "seed=0,1,2" in overrides["models64"]
    assert "sr=none,bicubic,espcn,edsr_small" in overrides["sr_study128"]
    assert not any(o.startswith("trainer.max_epochs") for o in overrides["models128"])  # the experiment's epochs
    args = parse_args(shlex.split("--parts accuracy --seeds 0,1 --epochs-128 4 --edsr edsr --device cpu"))
    study = accuracy.sweep_overrides(args, "sr_study128")
    assert {"seed=0,1", "sr=none,bicubic,espcn,edsr", "trainer.max_epochs=4", "trainer.accelerator=cpu"} <= set(study)
    assert not any(o.startswith("trainer.max_epochs") for o in accuracy.sweep_overrides(args, "models64"))


def test_render(tmp_path):
    machine = {"device": "cpu", "cores": 2}
    (tmp_path / "step.json").write_text(
        json.dumps(
            {
                "goal": ">= 0.85",
                "repeats": 1,
                "results": {"cnn@64": {"ours_images_per_s": 310.25, "ratio": 0.5}, "cnn@128": {"ratio": 0.75}},
                "machine": machine,
            }
        )
    )
    (tmp_path / "accuracy.json").write_text(
        json.dumps({"models64": {"seconds": 12.0, "table": "| model | acc |"}, "machine": machine, "wall_seconds": 1.5})
    )
    text = render(tmp_path)
    assert text == (tmp_path / "results.md").read_text()
    lines = text.splitlines()
    assert lines.index("## accuracy") < lines.index("## step")
    assert '"device": "cpu"' in text
    assert "| case | ours_images_per_s | ratio |" in lines
    assert "| cnn@64 | 310 | 0.5 |" in lines and "| cnn@128 | None | 0.75 |" in lines
    assert "- goal: >= 0.85" in lines and "- wall_seconds: 1.5" in lines
    assert lines[lines.index("### models64") + 2] == "| model | acc |"
    assert set(PARTS) == {"data", "step", "memory", "sr", "sweep", "predict", "accuracy"}


def test_bare_timings():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    batches = [(torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,))) for _ in range(5)]
    consumed = []
    optimizer = torch.optim.AdamW(net.parameters())
    speed = timed_steps(net, optimizer, (consumed.append(b) or b for b in batches), "32-true", limit=2)
    assert speed > 0 and len(consumed) == 3  # the batch that ends the count is fetched, not trained on
    assert bare_inference(net.eval(), torch.rand(20, 3, 16, 16), batch_size=8) > 0
