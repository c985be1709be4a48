"""The paper's protocol beside this run's: every setting, whether it differs, and why.

``PAPER_PROTOCOL`` holds the paper's settings (name, value, where PAPER.md says so); ``protocol_rows``
compares them with a workflow config (the ``config`` dict Snakemake has) and the runs' results (each
result's stored ``train_config`` and evaluation ``protocol``, which win over the config: they are what
ran). A difference gets a reason: the config's ``report.reasons[<key>]`` if given, else a known one (the
CPU demo's scale, the captioner, ...), else none, which the report shows as unexplained. Pure: reads no
file except our own model configs (``rankclip/model_configs``), imports no torch.

The HTML report (``rankclip.report_html``) shows the rows as its "Protocol" table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankclip.config import ALL_PAIRS, TrainConfig
from rankclip.report import (
    BENCHMARK_NAMES,
    PAPER_TABLE2_BENCHMARKS,
    PAPER_TABLE3_DATASETS,
    same_benchmark,
)

__all__ = ["PAPER_PROTOCOL", "Setting", "protocol_rows"]

MODEL_CONFIGS = Path(__file__).parent / "model_configs"
# open_clip's configs of the paper's backbones (and the proposed RN101): input size, text tower
# (layers, width, heads, context, vocabulary). Ours (rankclip-tiny-*) are read from MODEL_CONFIGS.
OPEN_CLIP_MODELS = {
    name: {"image_size": 224, "text": (12, 512, 8, 77, 49408)} for name in ("ViT-B-32", "RN50", "RN101")
}
PAPER_TEXT_TOWER = (12, 512, 8, 77, 49408)
PAPER_BACKBONE = "ViT-B-32"  # open_clip's name of ViT-B/32
PAPER_BACKBONES = {"ViT-B-32", "RN50"}
PAPER_SIZES = (500_000, 750_000, 1_000_000, 3_000_000, 15_000_000)
CC3M_DOWNLOADABLE = (2_600_000, 3_320_000)  # PAPER.md: "about 2.6-3.3M pairs downloadable"
OFA = "ofa"
MIXED = ("amp",)  # the authors' code: torch.cuda.amp, fp16 autocast with a grad scaler

DEMO = "CPU demo scale (2 cores, no network)"
KNOWN_REASONS = {
    "demo": {
        "epochs": f"{DEMO}: a few epochs",
        "lr": f"{DEMO}: a larger rate for a short run",
        "warmup_steps": f"{DEMO}: 10,000 warm-up steps are more than the demo's whole run",
        "global_batch": f"{DEMO}",
        "training_data": "no network: the rendered shapes corpus (`rankclip data make-demo`)",
        "data_size": f"{DEMO}: thousands of pairs",
        "fig4_sizes": f"{DEMO}: our sizes stand for the paper's (report.data_sizes)",
        "main_backbone": f"{DEMO}: a tiny ResNet (the tiny ViT hardly learns here; README, 'Which demo "
        "setting learns')",
        "table4_backbones": f"{DEMO}: a tiny ViT and a tiny ResNet",
        "fig4_backbone": f"{DEMO}: the tiny ResNet in RN50's place",
        "text_tower": f"{DEMO}: a tiny text tower",
        "image_size": f"{DEMO}: small images",
        "captioner": "no captioning model on the CPU: the second caption is another of the corpus's "
        "caption templates",
        "zeroshot_benchmark": "no network: a rendered stand-in in the same role",
        "retrieval_benchmark": "no network: a rendered stand-in in the same role",
        "shift_benchmarks": "no network: a rendered stand-in in the same role",
        "linear_probe_sets": "no network: stand-ins (rendered textures, Debian's Fashion-MNIST)",
        "zeroshot_templates": "the stand-in set's own prompts (its zeroshot_classification_templates.txt)",
    },
    "web": {
        "captioner": "OFA is not in transformers; BLIP base instead (data.web.captions.model)",
        "data_size": "all of CC3M that downloaded (dead links); the paper's is about 3M",
        "fig4_sizes": "15M needs a YFCC15M source; the main size stands for the paper's 3M",
    },
    "cpu": {
        "precision": "no GPU for training (resources.train.gpu: 0): auto is fp32 on the CPU",
    },
}


@dataclass(frozen=True)
class Setting:
    """One setting of the paper's protocol: ``key`` (report.reasons' key), the paper's value as shown,
    and where it comes from (a PAPER.md section and quote)."""

    key: str
    name: str
    paper: str
    source: str


PAPER_PROTOCOL = (
    Setting(
        "global_batch",
        "global batch",
        "128",
        "Training protocol: the authors' code divides --batch_size (default 128) by the GPU count; the "
        "paper states no number",
    ),
    Setting("epochs", "epochs", "64", "Training protocol: '64 epochs'"),
    Setting("lr", "learning rate", "0.0005", "Training protocol: 'lr 5e-4'"),
    Setting(
        "warmup_steps", "warm-up steps", "10000", "Training protocol: '10,000 warm-up steps then cosine'"
    ),
    Setting("lr_schedule", "lr schedule", "linear warm-up, then cosine", "Training protocol"),
    Setting(
        "optimizer",
        "optimizer",
        "AdamW, betas 0.9 / 0.999, eps 1e-08",
        "Training protocol: 'AdamW (β 0.9/0.999, eps 1e-8)'",
    ),
    Setting(
        "weight_decay",
        "weight decay",
        "0.1",
        "Training protocol: 'weight decay 0.1 except norm/bias/logit_scale'",
    ),
    Setting("precision", "precision", "amp (mixed precision)", "Training protocol: 'mixed precision'"),
    Setting("augmentation", "augmentation", "none", "Training protocol: 'no augmentation'"),
    Setting(
        "image_size",
        "image size",
        "224 px (resize + centre crop)",
        "Training protocol: '224 px resize + centre crop, CLIP normalisation'",
    ),
    Setting(
        "rank_loss",
        "RankCLIP weights",
        "w(e) = clip(3(e-1)/(E-1), 0, 2) (code); each ListMLE pair / 32",
        "Losses: 'Weight schedule (code)', 'L_cross = [...] / 32'",
    ),
    Setting(
        "cyclip_lambdas", "CyCLIP lambdas (in / cross)", "0.25 / 0.25", "Losses: 'λ_in = λ_cross = 0.25'"
    ),
    Setting("alip_momentum", "ALIP running-mean momentum", "0.99", "Losses: 'E ← 0.99·E + 0.01·mean'"),
    Setting(
        "captioner",
        "ALIP captioner",
        "OFA",
        "Losses (ALIP): 'the authors generated them with the OFA captioning model'",
    ),
    Setting("training_data", "training data", "CC3M", "Training protocol: 'CC3M'"),
    Setting(
        "data_size",
        "training pairs (main runs)",
        "about 3M (2.6-3.3M downloadable)",
        "Training protocol: 'CC3M (about 2.6–3.3M pairs downloadable)'",
    ),
    Setting(
        "fig4_sizes",
        "data sizes (Fig. 4)",
        "500K, 750K, 1M, 3M, 15M",
        "Training protocol: 'Data-size ablation (Fig. 4): 500K, 750K, 1M, 3M, 15M pairs'",
    ),
    Setting("main_backbone", "main backbone", "ViT-B/32", "Training protocol: 'ViT-B/32 (Tables 1–3)'"),
    Setting("fig4_backbone", "backbone (Fig. 4)", "RN50", "Training protocol: 'RN50 (Table 4 and Fig. 4)'"),
    Setting(
        "table4_backbones",
        "backbones (Table 4)",
        "RN50, ViT-B/32",
        "Training protocol: 'RN50 (Table 4 and Fig. 4)'",
    ),
    Setting(
        "text_tower",
        "text tower",
        "12 layers, width 512, 8 heads, context 77, vocab 49408",
        "Training protocol: 'text tower 12 layers, width 512, 8 heads, context 77, vocab 49,408'",
    ),
    Setting(
        "zeroshot_benchmark",
        "zero-shot benchmark (Tables 1, 4)",
        "ImageNet1K",
        "Evaluation protocol: 'Zero-shot classification: ImageNet1K'",
    ),
    Setting(
        "shift_benchmarks",
        "distribution shift (Table 2)",
        ", ".join(PAPER_TABLE2_BENCHMARKS.values()),
        "Evaluation protocol: 'ImageNetV2 (matched-frequency, threshold-0.7, top-images), ImageNet-R'",
    ),
    Setting(
        "zeroshot_templates",
        "zero-shot prompts",
        "80 OpenAI ImageNet templates",
        "Evaluation protocol: 'mean of the [...] 80 OpenAI ImageNet prompt templates'",
    ),
    Setting(
        "retrieval_benchmark",
        "retrieval benchmark",
        "MS-COCO Karpathy 5k test, 25k captions",
        "Evaluation protocol: 'MS-COCO Karpathy 5k test split with all 25k captions'",
    ),
    Setting(
        "linear_probe_sets",
        "linear-probe sets (Table 3)",
        ", ".join(PAPER_TABLE3_DATASETS.values()),
        "Evaluation protocol: 'Linear probing (Table 3): CIFAR-10, ...'",
    ),
    Setting(
        "linear_probe_protocol",
        "linear-probe protocol",
        "a linear layer on frozen image features, top-1",
        "Evaluation protocol: 'a linear layer on frozen image features, top-1'",
    ),
)
KEYS = [setting.key for setting in PAPER_PROTOCOL]


# ------------------------------------------------------------------------------------------ this run
def _get(result: Any, name: str, default: Any = None) -> Any:
    if isinstance(result, Mapping):
        return result.get(name, default)
    return getattr(result, name, default)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _size(size: int) -> str:
    if size >= 1_000_000:
        return f"{size / 1e6:g}M"
    return f"{size / 1e3:g}K" if size % 1000 == 0 else f"{size:,}"


class _Run:
    """What one config and its results say about the run."""

    def __init__(self, config: Mapping[str, Any], results: Iterable[Any]):
        self.config = dict(config or {})
        self.results = list(results or [])
        self.train = dict(self.config.get("train") or {})
        self.runs = dict(self.config.get("runs") or {})
        self.report = dict(self.config.get("report") or {})
        self.data = dict(self.config.get("data") or {})

    @property
    def demo(self) -> bool:
        return self.data.get("source", "demo") == "demo"

    @property
    def train_gpus(self) -> int:
        return int(((self.config.get("resources") or {}).get("train") or {}).get("gpu", 0))

    def train_values(self, name: str) -> tuple[list[Any], str]:
        """Distinct values of a TrainConfig field over the runs (from their results), or the config's
        ``train:`` value, or TrainConfig's default; and where it came from."""
        stored = [tc[name] for r in self.results if name in (tc := _get(r, "train_config") or {})]
        if stored:
            return list(dict.fromkeys(stored)), "runs"
        if name in self.train:
            return [self.train[name]], "config"
        return [TrainConfig.model_fields[name].default], "default"

    def backbones(self) -> list[str]:
        main = self.runs.get("backbone")
        return list(dict.fromkeys([b for b in [main, *(self.runs.get("backbones") or [])] if b]))

    def methods(self) -> set[str]:
        keys = ("methods", "backbone_methods", "data_size_methods")
        return {m for key in keys for m in self.runs.get(key) or []}

    def eval_protocols(self, task: str, dataset: str | None = None) -> list[dict]:
        return [
            dict(_get(r, "protocol") or {})
            for r in self.results
            if _get(r, "task") == task and (dataset is None or _get(r, "dataset") == dataset)
        ]


def _model(name: str) -> dict | None:
    """Input size and text tower of a backbone, or None if unknown."""
    if name in OPEN_CLIP_MODELS:
        return OPEN_CLIP_MODELS[name]
    path = MODEL_CONFIGS / f"{name}.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    text = config["text_cfg"]
    return {
        "image_size": config["vision_cfg"]["image_size"],
        "text": tuple(text.get(k) for k in ("layers", "width", "heads", "context_length", "vocab_size")),
    }


# Each setting: (this run's value as shown, differs: True / False / None (unknown), where it came from).
Check = tuple[str, bool | None, str]


def _numbers(run: _Run, name: str, paper: float) -> Check:
    values, origin = run.train_values(name)
    same = all(isinstance(v, int | float) and math.isclose(v, paper, rel_tol=1e-9) for v in values)
    return ", ".join(_show(v) for v in values), not same, origin


def _optimizer(run: _Run) -> Check:
    parts, origins, differs = [], set(), False
    for name, paper in (("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8)):
        value, differ, origin = _numbers(run, name, paper)
        parts.append(value)
        origins.add(origin)
        differs |= differ
    return f"AdamW, betas {parts[0]} / {parts[1]}, eps {parts[2]}", differs, "/".join(sorted(origins))


def _precision(run: _Run) -> Check:
    values, origin = run.train_values("precision")
    shown, resolved = [], []
    for value in values:
        if value == "auto":
            actual = "amp" if run.train_gpus > 0 else "fp32"
            shown.append(f"auto ({actual}: {'GPU' if run.train_gpus > 0 else 'CPU'})")
        else:
            actual = value
            shown.append(value)
        resolved.append(actual)
    return ", ".join(shown), not all(v in MIXED for v in resolved), origin


def _augmentation(run: _Run) -> Check:
    values, origin = run.train_values("augment")
    return ", ".join("open_clip's train augmentation" if v else "none" for v in values), any(values), origin


def _image_size(run: _Run) -> Check:
    models = {b: _model(b) for b in run.backbones()}
    if not models or any(m is None for m in models.values()):
        return ", ".join(b for b, m in models.items() if m is None) + ": unknown model", None, "config"
    sizes = {b: m["image_size"] for b, m in models.items()}
    shown = ", ".join(f"{b}: {s} px" for b, s in sizes.items())
    stored = (run.data.get("demo") or {}).get("image_size") if run.demo else None
    if stored:
        shown += f" (data rendered at {stored} px)"
    return shown, any(s != 224 for s in sizes.values()), "config"


def _rank_loss(run: _Run) -> Check:
    schedule, origin = run.train_values("rank_weight_schedule")
    scale, _ = run.train_values("list_scale")
    shown = f"schedule {', '.join(map(str, schedule))}; each pair x {', '.join(_show(s) for s in scale)}"
    same = schedule == ["code"] and all(math.isclose(s, 1 / 32) for s in scale)
    return shown, not same, origin


def _cyclip(run: _Run) -> Check:
    a, differ_a, origin = _numbers(run, "cyclip_lambda_in", 0.25)
    b, differ_b, _ = _numbers(run, "cyclip_lambda_cross", 0.25)
    return f"{a} / {b}", differ_a or differ_b, origin


def _captioner(run: _Run) -> Check:
    if "alip" not in run.methods():
        return "not used (no ALIP run)", None, "config"
    if run.demo:
        return "none: the demo corpus's second caption (syn.txt) is another caption template", True, "config"
    captions = dict((run.data.get("web") or {}).get("captions") or {})
    source = captions.get("source", "none")
    if source == "model":
        model = str(captions.get("model", "Salesforce/blip-image-captioning-base"))
        return model, OFA not in model.lower(), "config"
    if source == "file":
        return f"captions from a file: {captions.get('file', '?')}", None, "config"
    return "none: ALIP sees c = t (degenerates to 2 x CLIP)", True, "config"


def _training_data(run: _Run) -> Check:
    if run.demo:
        return "the rendered shapes corpus (data.source: demo)", True, "config"
    web = dict(run.data.get("web") or {})
    where = str(web.get("url_list_url") or web.get("url_list") or "?")
    is_cc3m = "gcc-training" in where.lower() or "cc3m" in where.lower()
    return f"web: {where}", not is_cc3m, "config"


def _main_pairs(run: _Run) -> int | None:
    """The count of pairs behind ``data_size: all``, from the results of runs trained on them."""
    counts = {
        int(_get(result, "data_size"))
        for result in run.results
        if f"__n{ALL_PAIRS}__" in str(_get(result, "run_id", "")) and _get(result, "data_size")
    }
    return max(counts) if counts else None


def _data_size(run: _Run) -> Check:
    size = run.runs.get("data_size")
    if size is None:
        return "-", None, "config"
    low, high = CC3M_DOWNLOADABLE
    if size == ALL_PAIRS:
        pairs = _main_pairs(run)
        if pairs is None:
            return "all that downloaded (counted by the subset stage)", False, "config"
        return f"all that downloaded: {pairs:,}", not (low <= pairs <= high), "config, subset manifest"
    return f"{int(size):,}", not (low <= int(size) <= high), "config"


def _fig4_sizes(run: _Run) -> Check:
    main = run.runs.get("data_size")
    # the main size counts as 3M when it is all of CC3M (as _data_size judges it)
    as_paper = 3_000_000 if _data_size(run)[1] is False else None
    main_pairs = (_main_pairs(run) or as_paper) if main == ALL_PAIRS else main
    sizes = sorted({int(s) for s in [main_pairs, *(run.runs.get("data_sizes") or [])] if s})
    mapped = {
        (main_pairs if k == ALL_PAIRS else int(k)): v for k, v in (run.report.get("data_sizes") or {}).items()
    }
    shown = ", ".join(
        _size(s) + (f" (as {_size(mapped[s])})" if mapped.get(s) and mapped[s] != s else "") for s in sizes
    )
    counted = {as_paper if s == main_pairs and as_paper else s for s in sizes}
    return shown, counted != set(PAPER_SIZES), "config"


def _main_backbone(run: _Run) -> Check:
    backbone = run.runs.get("backbone", "?")
    return str(backbone), backbone != PAPER_BACKBONE, "config"


def _fig4_backbone(run: _Run) -> Check:
    backbone = run.runs.get("data_size_backbone") or run.runs.get("backbone", "?")
    return str(backbone), backbone != "RN50", "config"


def _table4_backbones(run: _Run) -> Check:
    backbones = run.backbones()
    return ", ".join(backbones), set(backbones) != PAPER_BACKBONES, "config"


def _text_tower(run: _Run) -> Check:
    models = {b: _model(b) for b in run.backbones()}
    if not models or any(m is None for m in models.values()):
        return ", ".join(b for b, m in models.items() if m is None) + ": unknown model", None, "config"
    towers = {b: m["text"] for b, m in models.items()}
    shown = "; ".join(
        f"{b}: {t[0]} layers, width {t[1]}, {t[2]} heads, context {t[3]}, vocab {t[4]}"
        for b, t in towers.items()
    )
    return shown, any(t != PAPER_TEXT_TOWER for t in towers.values()), "config"


def _role(run: _Run, role: str, benchmark: str) -> Check:
    ours = run.report.get(role)
    if not ours:
        return "-", None, "config"
    if same_benchmark(ours, benchmark):
        return str(ours), False, "config"
    return f"{ours} (stand-in for {BENCHMARK_NAMES[benchmark]})", True, "config"


def _mapped(run: _Run, role: str, paper: dict[str, str]) -> Check:
    mapping = dict(run.report.get(role) or {})
    if not mapping:
        return "none", True, "config"

    def label(ours: str, key: str | None) -> str:
        if key is None:
            return f"{ours} (no counterpart)"
        return ours if same_benchmark(ours, key) else f"{ours} (stand-in for {paper[key]})"

    shown = ", ".join(label(ours, key) for ours, key in mapping.items())
    same = {key for ours, key in mapping.items() if same_benchmark(ours, key)}
    return shown, not (same == set(paper) and len(mapping) == len(paper)), "config"


def _templates(run: _Run) -> Check:
    dataset = run.report.get("zeroshot")
    protocols = run.eval_protocols("zeroshot", dataset)
    if not protocols:
        return "- (no zero-shot result yet)", None, "runs"
    found = list(dict.fromkeys((p.get("templates", "?"), p.get("num_templates")) for p in protocols))
    shown = ", ".join(f"{source} ({count} templates)" for source, count in found)
    # an ImageNet set's own template file is OpenAI's 80 (rankclip.evalsets.imagenet)
    imagenet_file = same_benchmark(dataset, "imagenet1k")
    same = all(
        count == 80 and (source == "openai_imagenet" or (source == "dataset" and imagenet_file))
        for source, count in found
    )
    return shown, not same, "runs"


def _linear_probe(run: _Run) -> Check:
    protocols = run.eval_protocols("linear_probe")
    configured = run.config.get("eval", {}).get("probe")
    methods = list(dict.fromkeys(p.get("method", "linear") for p in protocols)) or [configured or "linear"]
    described = {
        "linear": "nn.Linear on frozen raw image features, top-1 (the authors' code: AdamW lr 0.005, "
        "32 epochs, batch 16)",
        "logistic": "L-BFGS logistic regression with C searched on a held-out part (the CLIP paper's)",
    }
    shown = "; ".join(described.get(m, str(m)) for m in methods)
    return shown, methods != ["linear"], "runs" if protocols else "config" if configured else "default"


CHECKS: dict[str, Callable[[_Run], Check]] = {
    "global_batch": lambda run: _numbers(run, "batch_size", 128),
    "epochs": lambda run: _numbers(run, "epochs", 64),
    "lr": lambda run: _numbers(run, "lr", 5e-4),
    "warmup_steps": lambda run: _numbers(run, "warmup_steps", 10_000),
    "lr_schedule": lambda run: ("linear warm-up, then cosine to 0 (rankclip/optim.py)", False, "code"),
    "optimizer": _optimizer,
    "weight_decay": lambda run: _numbers(run, "weight_decay", 0.1),
    "precision": _precision,
    "augmentation": _augmentation,
    "image_size": _image_size,
    "rank_loss": _rank_loss,
    "cyclip_lambdas": _cyclip,
    "alip_momentum": lambda run: _numbers(run, "alip_momentum", 0.99),
    "captioner": _captioner,
    "training_data": _training_data,
    "data_size": _data_size,
    "fig4_sizes": _fig4_sizes,
    "main_backbone": _main_backbone,
    "fig4_backbone": _fig4_backbone,
    "table4_backbones": _table4_backbones,
    "text_tower": _text_tower,
    "zeroshot_benchmark": lambda run: _role(run, "zeroshot", "imagenet1k"),
    "shift_benchmarks": lambda run: _mapped(run, "shift", PAPER_TABLE2_BENCHMARKS),
    "zeroshot_templates": _templates,
    "retrieval_benchmark": lambda run: _role(run, "retrieval", "mscoco"),
    "linear_probe_sets": lambda run: _mapped(run, "linear_probe", PAPER_TABLE3_DATASETS),
    "linear_probe_protocol": _linear_probe,
}
assert list(CHECKS) == KEYS


def _known_reason(run: _Run, key: str, value: str) -> str:
    if key == "precision" and run.train_gpus == 0 and "fp32: CPU" in value:
        return KNOWN_REASONS["cpu"]["precision"]
    if key == "captioner" and not run.demo and "blip" not in value.lower():
        return ""  # another captioner, or none: the user's choice, to be explained in report.reasons
    return KNOWN_REASONS["demo" if run.demo else "web"].get(key, "")


def protocol_rows(config: Mapping[str, Any], results: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """One row per setting of ``PAPER_PROTOCOL``: ``key``, ``setting``, ``paper``, ``ours`` (this run's
    value), ``ours_from`` (runs: the results' stored train_config / protocol; config; default:
    TrainConfig's; code), ``differs`` (True, False, or None: not known yet), ``reason`` (for a difference:
    ``report.reasons[key]``, else a known reason, else "") and ``paper_source`` (PAPER.md).

    ``config``: the workflow config dict; ``results``: EvalResult objects or their JSON dicts."""
    run = _Run(config, results)
    given = dict(run.report.get("reasons") or {})
    unknown = set(given) - set(KEYS)
    if unknown:
        raise ValueError(f"report.reasons: unknown settings {sorted(unknown)}; valid: {', '.join(KEYS)}")
    rows = []
    for setting in PAPER_PROTOCOL:
        ours, differs, origin = CHECKS[setting.key](run)
        reason = ""
        if differs is not False:
            reason = given.get(setting.key) or (_known_reason(run, setting.key, ours) if differs else "")
        rows.append(
            {
                "key": setting.key,
                "setting": setting.name,
                "paper": setting.paper,
                "ours": ours,
                "ours_from": origin,
                "differs": differs,
                "reason": reason,
                "paper_source": setting.source,
            }
        )
    return rows
