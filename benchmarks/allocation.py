"""Rank allocation across layers: uniform, spectrum and sensitivity at the same parameter budget.

Run: OMP_NUM_THREADS=1 python benchmarks/allocation.py --data DIR [--nets cifar10_resnet20]
         [--factors 2,4,8] [--methods ht2,tucker2] [--allocations uniform,spectrum,sensitivity]
         [--finetune-factors 4] [--data-aware refit --data-aware-images 512]
         [--refine-sweeps 10] [--device cpu] [--threads 1] [--out benchmarks/results] [--tag NAME]

DIR is the CIFAR-10 JPEG tree (train/, test/). For each network, method, allocation and
parameter-reduction factor: compress the shared weights (seconds, allocation included), top-1
on the test split zero-shot, after BatchNorm re-estimation on --bn-images training images,
and (only for --finetune-factors, off by default) after one fine-tuning epoch (`ht2 finetune`:
SGD Nesterov, one-cycle max lr 0.01, wd 3e-4, batch 128); with --data-aware, also after
compressing with the same allocation and `--data-aware MODE` on --data-aware-images training
images (no gradient step; its seconds in their own column). Sensitivity measures on
--calib-images training images, once per network and method, reused across factors (its
seconds are counted in the first factor's row). --refine-sweeps N refines every HT-2/Tucker-2
layer's factors (ALS/HOOI) in all of these. Each compression is one compress_with_recipe call
(the `paper` recipe with these choices laid over it), as `ht2 compress` makes it. Prints a
Markdown table and writes allocation-<nets>.json after every row.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch
from paths import portable  # benchmarks/ is on sys.path when run as a script
from shared_weights import WEIGHTS

import ht2
from ht2.cli.main import main as ht2_main
from ht2.data import eval_dataset, make_loader, train_dataset
from ht2.metrics.accuracy import evaluate_accuracy
from ht2.recipes import Recipe, compress_with_recipe, get_recipe
from ht2.surgery.targets import Target
from ht2.train import recalibrate_batchnorm

RECIPE = ["--lr", "0.01", "--wd", "3e-4", "--batch-size", "128", "--schedule", "onecycle"]


def _list(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def finetune_top1(model, report, data: str, device: str, workers: int) -> float:
    """Top-1 after one epoch of `ht2 finetune` (which calibrates BN first)."""
    with tempfile.TemporaryDirectory() as folder:
        source, out = Path(folder) / "model", Path(folder) / "ft"
        ht2.save(model, source, report)
        args = ["finetune", str(source), "--data", data, "--epochs", "1", *RECIPE, "--nesterov"]
        args += ["--workers", str(workers), "--device", device, "--out", str(out)]
        if ht2_main(args) != 0:
            raise SystemExit("ht2 finetune failed")
        lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [line["top1"] for line in lines if line.get("epoch") == 1][0]


def row_recipe(
    args, allocation: str, data_aware: str | None = None, images: int | None = None
) -> Recipe:
    """The `paper` recipe with this row's allocation, sweeps and image counts (and, for the
    data-aware column, the fit on `images` images); its other choices are the library's."""
    return get_recipe("paper").with_choices(
        allocate=allocation,
        refine_sweeps=args.refine_sweeps,
        sensitivity_images=args.calib_images,
        data_aware=data_aware,
        data_aware_images=images,
        refit=args.refit if data_aware else None,
    )


def data_aware_top1(args, method, allocation, factor, original, loaders, cache) -> tuple:
    """Top-1 and seconds after the allocation's ranks with --data-aware fitting on top."""
    test, _, _, pool = loaders
    example = torch.zeros(1, *pool.shape[1:], device=args.device)
    model = copy.deepcopy(original)
    measured = len(cache)
    start = time.perf_counter()
    compress_with_recipe(
        model,
        row_recipe(args, allocation, args.data_aware, len(pool)),
        target=Target("params", float(factor)),
        data=pool.split(256),
        method=method,
        example_input=example,
        allocation_cache=cache,
    )
    seconds = time.perf_counter() - start
    if len(cache) != measured:  # sensitivity must come from the zero-shot row's images
        raise SystemExit("the data-aware column measured sensitivity again, on other images")
    return evaluate_accuracy(model, test, args.device, False)["top1"], seconds


def calibrate(model, calib, args) -> None:
    """BatchNorm re-estimation on the BN-cal images, seeded: the same crops and flips for every
    model under --bn-augment."""
    torch.manual_seed(0)
    recalibrate_batchnorm(model, calib, args.bn_images, args.device, False)


def measure_row(args, net, method, allocation, factor, original, loaders, cache) -> dict:
    """Compress a copy of `original` for one row and measure it."""
    test, calib, sense, _ = loaders
    example = torch.zeros(1, *ht2.models.get_entry(net).input_size, device=args.device)
    model = copy.deepcopy(original)
    start = time.perf_counter()
    report = compress_with_recipe(
        model,
        row_recipe(args, allocation),
        target=Target("params", float(factor)),
        data=sense,
        method=method,
        example_input=example,
        allocation_cache=cache,
    )
    row = {
        "net": net,
        "method": method,
        "allocation": allocation,
        "factor": float(factor),
        "reached": report.param_reduction,
        "mac_reduction": report.mac_reduction,
        "seconds": time.perf_counter() - start,
        "zero_shot": evaluate_accuracy(model, test, args.device, False)["top1"],
    }
    calibrate(model, calib, args)
    row["bn_calibrated"] = evaluate_accuracy(model, test, args.device, False)["top1"]
    row["finetuned_1"] = None
    if factor in args.finetune_factors:
        row["finetuned_1"] = finetune_top1(
            model.cpu(), report, args.data, args.device, args.workers
        )
    row["data_aware"] = row["data_aware_seconds"] = None
    if args.data_aware:
        row["data_aware"], row["data_aware_seconds"] = data_aware_top1(
            args, method, allocation, factor, original, loaders, cache
        )
    row["layer_energies"] = {layer.name: layer.energy for layer in report.layers}
    row["layer_ranks"] = {layer.name: layer.ranks for layer in report.layers}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--nets", type=_list, default=["cifar10_resnet20"])
    parser.add_argument("--factors", type=_list, default=["2", "4", "8"])
    parser.add_argument("--methods", type=_list, default=["ht2", "tucker2"])
    parser.add_argument("--allocations", type=_list, default=["uniform", "spectrum", "sensitivity"])
    parser.add_argument("--finetune-factors", type=_list, default=[])
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--data-aware", choices=("whiten", "refit", "both"))
    parser.add_argument("--data-aware-images", type=int, default=512)
    parser.add_argument(
        "--refit", choices=("last", "all", "blocks"), help="the data-aware refit (default: all)"
    )
    parser.add_argument(
        "--bn-augment",
        action="store_true",
        help="BN-cal column: the calibration images get the training augmentation",
    )
    parser.add_argument("--refine-sweeps", type=int, default=0, help="ALS/HOOI rounds")
    parser.add_argument("--tag", default="", help="added to the JSON file's name")
    parser.add_argument("--bn-images", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    nets = "-".join(n.split("_")[-1] for n in args.nets)
    path = args.out / f"allocation-{nets}{'-' + args.tag if args.tag else ''}.json"
    settings = {k: portable(v) if isinstance(v, Path) else str(v) for k, v in vars(args).items()}
    settings["data"] = portable(args.data)
    result = {"settings": settings, "baseline": {}, "rows": []}
    result["settings"]["torch_threads"] = torch.get_num_threads()
    header = "| net | method | allocation | target | reached | zero-shot | BN-cal | 1 epoch | s |"
    header += " data-aware | s (data-aware) |"
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for net in args.nets:
        entry = ht2.models.get_entry(net)
        weights = args.shared / "weights" / WEIGHTS[net]
        original = ht2.models.create(net, weights=weights).to(args.device).eval()
        test = make_loader(eval_dataset(args.data, entry, cache=True), 256, args.workers)
        calib = make_loader(
            train_dataset(args.data, entry, augment=args.bn_augment, limit=args.bn_images),
            256,
            args.workers,
        )
        sense = make_loader(
            train_dataset(args.data, entry, augment=False, limit=args.calib_images), 256, 0
        )
        base = evaluate_accuracy(original, test, args.device, progress=False)["top1"]
        result["baseline"][net] = base
        if args.bn_augment:  # the uncompressed model calibrated the same way, like for like
            calibrated = copy.deepcopy(original)
            calibrate(calibrated, calib, args)
            top1 = evaluate_accuracy(calibrated, test, args.device, progress=False)["top1"]
            result.setdefault("baseline_bn", {})[net] = top1
        pool = None
        if args.data_aware:
            limit = args.data_aware_images
            images = train_dataset(args.data, entry, augment=False, limit=limit)
            pool = torch.cat([x for x, _ in make_loader(images, 256, 0)]).to(args.device)
        loaders = (test, calib, sense, pool)
        for method in args.methods:
            cache: dict = {}
            for allocation in args.allocations:
                for factor in args.factors:
                    row = measure_row(
                        args, net, method, allocation, factor, original, loaders, cache
                    )
                    seconds = row["seconds"]
                    result["rows"].append(row)
                    path.write_text(json.dumps(result, indent=1) + "\n")
                    tuned = "-" if row["finetuned_1"] is None else f"{row['finetuned_1']:.2f}"
                    fitted = "-" if row["data_aware"] is None else f"{row['data_aware']:.2f}"
                    fit_s = row["data_aware_seconds"]
                    lines.append(
                        f"| {net} | {method} | {allocation} | {float(factor):g}x | "
                        f"{row['reached']:.2f}x | {row['zero_shot']:.2f} | "
                        f"{row['bn_calibrated']:.2f} | {tuned} | {seconds:.1f} | {fitted} | "
                        + ("-" if fit_s is None else f"{fit_s:.1f}")
                        + " |"
                    )
                    print(lines[-1], flush=True)
    print(f"\nbaseline top-1: {result['baseline']}\n")
    print("\n".join(lines))
    result["table"] = "\n".join(lines)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
