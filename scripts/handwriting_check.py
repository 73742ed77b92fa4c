"""How well predict reads digits that are not MNIST's: the font set of ``tests/handwriting.py`` (handwriting
fonts from Debian's archive, pen to fat marker, 20% to 95% fill, plain, lined and squared paper) and MNIST
test digits dilated by 1 to 4 px, each as a clean scan and through the photo synthesizer of
``tests/photos.py``, read by one checkpoint through this checkout's preparation and through an earlier
commit's, side by side; and rows of 2 to 8 digits (fonts and MNIST digits, some touching) read as numbers by
``predict --number``'s segmentation.

    .venv/bin/python scripts/handwriting_check.py --ckpt_path lightning_logs/cnn/version_0 \
        [--baseline e5acb0d]

Writes results/handwriting.md and results/handwriting.json (the accuracy by kind)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnist_bench.benchmark.report.stats import mcnemar_exact  # noqa: E402
from mnist_bench.inference import images as current  # noqa: E402
from mnist_bench.inference.checkpoints import class_probabilities, load_trained  # noqa: E402
from mnist_bench.provenance import cpu_name, git_sha  # noqa: E402
from tests import handwriting  # noqa: E402
from tests.photos import photograph  # noqa: E402


def preparation_at(rev: str):
    """The preparation (mnist_bench/inference/images.py, mnist_bench/use/images.py before the rename) as it
    was at ``rev``, imported on its own."""
    for where in ("inference", "use"):
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:mnist_bench/{where}/images.py"],
            capture_output=True,
            text=True,
        )
        if shown.returncode == 0:
            break
    else:
        raise SystemExit(
            f"handwriting_check: no mnist_bench/inference/images.py at {rev}: {shown.stderr.strip()}"
        )
    text = shown.stdout
    path = Path(tempfile.mkdtemp()) / f"images_{rev}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"images_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare(module, gray: np.ndarray) -> np.ndarray | None:
    try:
        return module.mnist_digit(module.light_ink_on_dark(gray))
    except module.ImageError:
        return None


def read(model, prepared: list[np.ndarray | None]) -> np.ndarray:
    """The predicted digit of each prepared image (-1 where the preparation refused it)."""
    out = np.full(len(prepared), -1)
    ok = [i for i, p in enumerate(prepared) if p is not None]
    for start in range(0, len(ok), 512):
        idx = ok[start : start + 512]
        x = torch.from_numpy(np.stack([prepared[i] for i in idx]))[:, None]
        with torch.no_grad():
            out[idx] = class_probabilities(model, model.dataset.normalize(x)).argmax(1).numpy()
    return out


def read_numbers(model, test, used: np.ndarray, per_length: int) -> list[dict]:
    """Exact-string and per-digit accuracy of rows of 2 to 8 digits, from the fonts and from MNIST test digits
    (not those of the single-digit set)."""
    from mnist_bench.inference.number import segment

    def probabilities(batch: list[np.ndarray]) -> torch.Tensor:
        return class_probabilities(model, model.dataset.normalize(torch.from_numpy(np.stack(batch))[:, None]))

    rest = np.setdiff1d(np.arange(len(test)), used)
    results = []
    for source in ("fonts", "mnist"):
        for length in (2, 4, 6, 8):
            rows = (
                handwriting.font_rows(length, per_length, seed=100 + length)
                if source == "fonts"
                else handwriting.mnist_rows(
                    test.data.numpy()[rest], test.targets.numpy()[rest], length, per_length, seed=100 + length
                )
            )
            exact = count = right = 0
            start = time.perf_counter()
            for truth, gray in rows:
                digits = segment(gray, lambda batch: probabilities(batch).max(dim=1).values.numpy())
                read = "".join(
                    str(k) for k in probabilities([d.image for d in digits]).argmax(dim=1).tolist()
                )
                exact += read == truth
                if len(read) == len(truth):
                    count += 1
                    right += sum(a == b for a, b in zip(read, truth, strict=True))
            results.append(
                {
                    "source": source,
                    "length": length,
                    "rows": len(rows),
                    "exact": exact / len(rows),
                    "count": count / len(rows),
                    "per_digit": right / (length * len(rows)),
                    "seconds_per_row": (time.perf_counter() - start) / len(rows),
                }
            )
            print(results[-1], flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--baseline", default="e5acb0d", help="the commit whose preparation is compared")
    parser.add_argument(
        "--per_kind", type=int, default=25, help="font-set images per (width, fill, paper) kind"
    )
    parser.add_argument("--mnist", type=int, default=200, help="MNIST test digits per dilation")
    parser.add_argument("--rows", type=int, default=50, help="rows per length and source for the numbers")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--output", default="results/handwriting")
    args = parser.parse_args()
    if not handwriting.font_files():
        print(f"handwriting_check: {handwriting.FONTS_MISSING}", file=sys.stderr)
        return 2
    torch.set_grad_enabled(False)
    model = load_trained(args.ckpt_path, "cpu")
    preparations = {"this checkout": current, f"at {args.baseline}": preparation_at(args.baseline)}
    rng = np.random.default_rng(1)

    items: list[tuple[dict, int, np.ndarray]] = []  # (kind, truth, gray image 1 = white)
    for s in handwriting.font_set(per_kind=args.per_kind):
        kind = {"set": "fonts", "width": s.width, "fill": f"{s.fill:.0%}", "paper": s.paper, "font": s.font}
        items.append(({**kind, "look": "scan"}, s.digit, s.image))
        photo = photograph(1.0 - s.image, rng, quality=int(rng.choice([30, 60, 90])))
        items.append(({**kind, "look": "photo"}, s.digit, current.to_gray(photo)))
    from torchvision.datasets import MNIST

    test = MNIST(args.data_dir, train=False)
    pick = np.random.default_rng(0).choice(len(test), args.mnist, replace=False)
    images, labels = test.data.numpy()[pick], test.targets.numpy()[pick]
    for radius in (0, 1, 2, 3, 4):
        for label, gray in handwriting.bold_mnist(images, labels, radius):
            kind = {
                "set": "mnist",
                "width": f"dilated {radius} px",
                "fill": "60%",
                "paper": "plain",
                "font": "mnist",
            }
            items.append(({**kind, "look": "scan"}, label, gray))
            photo = photograph(1.0 - gray, rng, quality=int(rng.choice([30, 60, 90])))
            items.append(({**kind, "look": "photo"}, label, current.to_gray(photo)))

    truth = np.array([t for _, t, _ in items])
    right: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name, module in preparations.items():
        start = time.perf_counter()
        prepared = [prepare(module, gray) for _, _, gray in items]
        seconds[name] = time.perf_counter() - start
        right[name] = read(model, prepared) == truth
        print(f"{name}: {right[name].mean():.1%} of {len(items)} in {seconds[name]:.0f} s", flush=True)

    numbers = read_numbers(model, test, pick, args.rows)

    tables: dict[str, dict[str, dict[str, list[float]]]] = {}
    for axis in ("set", "width", "fill", "paper", "font"):
        groups: dict[str, list[int]] = defaultdict(list)
        for i, (kind, _, _) in enumerate(items):
            groups[f"{kind['set']}: {kind[axis]}, {kind['look']}"].append(i)
        tables[axis] = {
            g: {name: [float(right[name][idx].mean()), len(idx)] for name in preparations}
            for g, idx in sorted(groups.items())
        }
        # the same images read both ways: McNemar's exact test on those only one preparation reads right
        for g, idx in groups.items():
            ours, theirs = (right[name][idx] for name in preparations)
            only_ours, only_theirs, p = mcnemar_exact(ours, theirs)
            tables[axis][g]["paired"] = [only_ours, only_theirs, p]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    env = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "git": git_sha(ROOT),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    record = {
        "environment": env,
        "checkpoint": str(args.ckpt_path),
        "baseline": args.baseline,
        "per_kind": args.per_kind,
        "mnist_per_dilation": args.mnist,
        "images": len(items),
        "preparation_s": seconds,
        "tables": tables,
        "numbers": numbers,
    }
    (out / "handwriting.json").write_text(json.dumps(record, indent=1))
    names = list(preparations)
    run = Path(args.ckpt_path)
    trained = ""
    if (run / "metrics.json").is_file():
        m = json.loads((run / "metrics.json").read_text())
        trained = (
            f" ({m.get('model', 'model')}, {m.get('precision')}, {m.get('test/acc', 0):.2%} on the MNIST test"
            f" set, trained at git {str(m.get('git_sha', '?'))[:7]})"
        )
        record["checkpoint_metrics"] = {k: m.get(k) for k in ("model", "precision", "test/acc", "git_sha")}
        (out / "handwriting.json").write_text(json.dumps(record, indent=1))
    lines = [
        "# Reading digits that are not MNIST's",
        "",
        (
            "p: McNemar's exact test on the kind's images, paired (each image read through both"
            " preparations), from the images only one of them reads right; not corrected for the number of"
            " kinds."
        ),
        "",
        f"Checkpoint {args.ckpt_path}{trained}; {len(items)} images; made by `scripts/handwriting_check.py`. "
        f"Ran on {env['cpu']}, {env['threads']} threads, git {env['git']}, {env['date']}; preparation time: "
        + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items())
        + ".",
        "",
    ]
    for axis, rows in tables.items():
        lines += [
            f"## By {axis}",
            "",
            "| kind | images | " + " | ".join(names) + f" | right only {names[0]} / only {names[1]} | p |",
            "|---|---:|" + "---:|" * len(names) + "---:|---:|",
        ]
        for group, cells in rows.items():
            n = cells[names[0]][1]
            only_ours, only_theirs, p = cells["paired"]
            lines.append(
                f"| {group} | {n} | "
                + " | ".join(f"{cells[name][0]:.1%}" for name in names)
                + f" | {only_ours} / {only_theirs} | {p:.2g} |"
            )
        lines.append("")
    lines += [
        "## Numbers (`predict --number`)",
        "",
        (
            f"Rows of digits scanned dark on light paper, {args.rows} per length and source; gaps of 0.05 to"
            " 0.35 of a digit's height, 30% of them closed to touch. Exact: the whole string right; per"
            " digit: the digits right in rows cut into the right number of digits, over all digits."
        ),
        "",
        "| source | digits | rows | exact string | right count | per digit | s per row |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in numbers:
        lines.append(
            f"| {r['source']} | {r['length']} | {r['rows']} | {r['exact']:.1%} | {r['count']:.1%} | "
            f"{r['per_digit']:.1%} | {r['seconds_per_row']:.2f} |"
        )
    lines.append("")
    (out / "handwriting.md").write_text("\n".join(lines))
    print(f"wrote {out / 'handwriting.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
