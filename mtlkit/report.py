"""Reports over a sweep's finished cells: statistics, paired tests, Delta_m and plots.

:func:`collect` reads the cells (from a sweep spec, a sweep directory's ``sweep.json``, or any
folder of run directories); :func:`build_report` computes, per method and test metric, the mean,
standard deviation and 95% t interval over folds and seeds, paired comparisons on the same
(fold, seed) with an exact sign test and a Wilcoxon signed-rank test, and Delta_m against the
single-task cells; :func:`write_report` writes ``report.md``, ``report.json`` and PNG plots
(without matplotlib: a notice and no PNGs).

The t quantile, the sign test and the Wilcoxon test come from :mod:`scipy.stats` where SciPy is
installed (the optional extra ``mtlkit[stats]``): ``t.ppf``, ``binomtest`` and ``wilcoxon``.
Without it, the same numbers are computed here by hand (a table and the Cornish-Fisher
expansion, binomial tails, counting the signed-rank distribution), so a report never needs
SciPy. One case stays ours even with SciPy: the exact Wilcoxon test with tied magnitudes.
SciPy's exact distribution assumes untied ranks, and its permutation method enumerates all
``2^n`` sign assignments one by one (minutes for 20 pairs); accuracy differences on one test
fold tie often (they are multiples of ``1/n``), and counting the distribution of the average
ranks gives the exact answer in a millisecond. The tests check both paths against hand values
and against each other.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlkit.errors import ConfigError
from mtlkit.notices import notice

if TYPE_CHECKING:
    from mtlkit.task import MetricSpec

TIES = 1e-12
"""Paired differences with ``|d| <= TIES * max(1, |reference|)`` count as ties."""

_T975 = (
    12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851,
    2.364624252, 2.306004135, 2.262157163, 2.228138852, 2.200985160, 2.178812830,
    2.160368656, 2.144786688, 2.131449546, 2.119905299, 2.109815578, 2.100922040,
    2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.068657610, 2.063898562,
    2.059538553, 2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456,
)  # fmt: skip
"""The 0.975 quantile of Student's t for 1..30 degrees of freedom."""

_Z975 = 1.959963984540054


def _scipy_stats() -> Any:
    """:mod:`scipy.stats`, or None where SciPy is not installed (then: by hand)."""
    try:
        from scipy import stats
    except ImportError:
        return None
    return stats


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t: ``scipy.stats.t.ppf``, else by hand."""
    if df < 1:
        raise ValueError("degrees of freedom must be >= 1")
    stats = _scipy_stats()
    if stats is not None:
        return float(stats.t.ppf(0.975, df))
    return _t_quantile_975_by_hand(df)


def _t_quantile_975_by_hand(df: int) -> float:
    """A table for df <= 30, beyond it the Cornish-Fisher expansion around the normal quantile
    (error below 1e-7 in probability)."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def describe(
    values: Sequence[float], bounds: tuple[float, float] | None = None
) -> dict[str, Any]:
    """``n``, ``mean``, sample ``std`` and the 95% t interval of the mean (None below 2 values).

    With ``bounds`` (the range the metric cannot leave, e.g. ``(0, 1)`` for an accuracy) the
    interval is cut to that range. The true mean lies in the range, so the cut interval holds
    it whenever the t interval does: the same 95% coverage, without impossible values such as
    an accuracy of 1.03 from two folds. A cut end marks an interval too wide to say much (with
    n = 2 the t quantile is 12.7); mean, std and n never change.
    """
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    mean = math.fsum(values) / n
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci95": None}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"n": n, "mean": mean, "std": std, "ci95": [lo, hi]}


def interval_cut(stats: dict[str, Any], bounds: Sequence[float] | None) -> bool:
    """Whether :func:`describe` cut this interval at an end of ``bounds``."""
    if bounds is None or not stats.get("ci95"):
        return False
    lo, hi = stats["ci95"]
    return lo <= bounds[0] or hi >= bounds[1]


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial sign test (ties left out): ``2 P(X <= min)``, at most 1
    (``scipy.stats.binomtest``, else by hand)."""
    n = wins + losses
    if n == 0:
        return 1.0
    stats = _scipy_stats()
    if stats is not None:
        return min(1.0, float(stats.binomtest(wins, n, 0.5).pvalue))
    return _sign_test_by_hand(wins, losses)


def _sign_test_by_hand(wins: int, losses: int) -> float:
    n = wins + losses
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def _average_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def wilcoxon(diffs: Sequence[float], exact_max: int = 20) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zeros left out).

    Up to ``exact_max`` non-zero differences: the exact distribution of ``W+`` over all ``2^n``
    sign assignments of the observed (average, for tied magnitudes) ranks, by counting. Beyond:
    the normal approximation with the tie correction of the variance, no continuity correction.
    ``scipy.stats.wilcoxon`` where SciPy is installed, except the exact test with tied
    magnitudes (see the module's docstring); else by hand.
    """
    d = [x for x in diffs if x != 0]
    n = len(d)
    if n == 0:
        return 1.0
    mags = [float(f"{abs(x):.12g}") for x in d]  # magnitudes equal to 12 digits are tied
    stats = _scipy_stats()
    tied = len(set(mags)) < n
    if stats is not None and n >= 2 and not (tied and n <= exact_max):
        signed = [math.copysign(m, x) for m, x in zip(mags, d)]
        method = "exact" if n <= exact_max else "asymptotic"
        res = stats.wilcoxon(signed, zero_method="wilcox", correction=False, method=method)
        return min(1.0, float(res.pvalue))
    return _wilcoxon_by_hand(d, mags, exact_max)


def _wilcoxon_by_hand(d: Sequence[float], mags: Sequence[float], exact_max: int) -> float:
    n = len(d)
    ranks = _average_ranks(mags)
    w_plus = sum(r for r, x in zip(ranks, d) if x > 0)
    if n <= exact_max:
        doubled = [round(2 * r) for r in ranks]  # average ranks are multiples of 1/2
        counts = [0] * (sum(doubled) + 1)
        counts[0] = 1
        for r in doubled:
            for s in range(len(counts) - 1, r - 1, -1):
                counts[s] += counts[s - r]
        w = round(2 * w_plus)
        lower, upper = sum(counts[: w + 1]), sum(counts[w:])
        return min(1.0, 2 * min(lower, upper) / 2**n)
    mean = n * (n + 1) / 4
    groups: dict[float, int] = defaultdict(int)
    for m in mags:
        groups[m] += 1
    var = n * (n + 1) * (2 * n + 1) / 24 - sum(t**3 - t for t in groups.values()) / 48
    if var <= 0:
        return 1.0
    z = (w_plus - mean) / math.sqrt(var)
    return min(1.0, math.erfc(abs(z) / math.sqrt(2)))


# --- collecting cells ----------------------------------------------------------------------


@dataclass
class Record:
    """A finished cell: where it is, its coordinates in the sweep and its test metrics."""

    name: str
    dir: Path
    label: str
    kind: str  # base, weighter, static, single
    task: str | None
    weight: float | None
    fold: Any
    seed: Any
    context: str
    test: dict[str, dict[str, Any]]
    tasks: list[str]
    config: dict[str, Any]
    seconds: float | None = None
    """What the cell cost: its epochs (across resumes) plus the final evaluation."""
    val: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The validation metrics at the selected step (empty without a validation split): what
    may choose among methods, such as the best static weight, without looking at test."""
    timing: dict[str, Any] = field(default_factory=dict)
    """``results.json``'s ``timing``."""
    epochs: list[dict[str, Any]] | None = None
    """The per-epoch rows of a packed cell (:mod:`mtlkit.cellpack`); None: read the folder's."""

    @property
    def pair_key(self) -> tuple[str, str]:
        return (json.dumps(self.fold), json.dumps(self.seed))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _label_of(config: dict[str, Any]) -> tuple[str, str, str | None, float | None]:
    """Label, kind, task and weight of a run not made by a sweep (no ``cell.json``)."""
    w = config.get("weighter") or {}
    name = str(w.get("name", "?"))
    weights = w.get("weights")
    if name == "static" and isinstance(weights, dict) and weights:
        nonzero = [t for t, v in weights.items() if v]
        if len(nonzero) == 1:
            return f"single:{nonzero[0]}", "single", nonzero[0], None
        first = next(iter(weights))
        return f"static:{first}={weights[first]:g}", "static", first, float(weights[first])
    return name, "weighter", None, None


def _record(run_dir: Path, cell: dict[str, Any] | None) -> Record | None:
    return _record_of(run_dir, _read_json(run_dir / "results.json"), cell)


def _packed_record(
    root: Path, packed: dict[str, Any], cell: dict[str, Any] | None = None
) -> Record | None:
    """A record from a packed line (:mod:`mtlkit.cellpack`); its folder need not exist."""
    cell = cell if cell is not None else packed.get("cell")
    rec = _record_of(root / packed["name"], packed["results"], cell)
    if rec is not None:
        rec.epochs = list(packed.get("epochs") or [])
    return rec


def _record_of(run_dir: Path, results: Any, cell: dict[str, Any] | None) -> Record | None:
    if not isinstance(results, dict):
        return None
    config = results.get("config") or {}
    test = (results.get("metrics") or {}).get("test")
    if not isinstance(test, dict):
        return None
    val = (results.get("metrics") or {}).get("val")
    tasks = [t.get("id") or t.get("name") for t in config.get("tasks", [])] or list(test)
    if cell is None:
        label, kind, task, weight = _label_of(config)
        fold = _fold_of(config)
        seed = config.get("seed")
        context = ""
    else:
        method = cell.get("method") or {}
        label, kind = cell["label"], method.get("kind", "weighter")
        task, weight = method.get("task"), method.get("weight")
        fold, seed, context = cell.get("fold"), cell.get("seed"), cell.get("context", "")
    return Record(
        name=run_dir.name, dir=run_dir, label=label, kind=kind, task=task, weight=weight,
        fold=fold, seed=seed, context=context, test=test, tasks=tasks, config=config,
        seconds=_cost(results.get("timing")), val=val if isinstance(val, dict) else {},
        timing=results.get("timing") if isinstance(results.get("timing"), dict) else {},
    )


def _fold_of(config: dict[str, Any]) -> Any:
    """A run's fold, from the option its data plugin declares (``DataModule.fold_option``);
    None without one, or where the plugin does not load here."""
    data = config.get("data") or {}
    try:
        from mtlkit.plugins import get_plugin_manager

        key = get_plugin_manager().datasets.resolve(data["name"]).fold_option
    except Exception:  # no data section, an unknown or broken plugin: no fold
        return None
    return data.get(key) if key else None


def _cost(timing: Any) -> float | None:
    """Seconds a run took: ``epoch_seconds`` (every epoch, across resumes) or, for runs from
    before it was kept, ``train_seconds``; plus ``eval_seconds``."""
    if not isinstance(timing, dict):
        return None
    train = timing.get("epoch_seconds", timing.get("train_seconds"))
    if not _is_number(train):
        return None
    evals = timing.get("eval_seconds")
    return float(train) + (float(evals) if _is_number(evals) else 0.0)


def collect(source: str | Path) -> tuple[list[Record], Path, list[str]]:
    """The finished cells of a spec file, a sweep directory, a packed file (``<dir>.jsonl``,
    :mod:`mtlkit.cellpack`) or a folder of run directories; also the folder they are under and
    the names of cells without results. A cell folder with results wins over its packed line;
    a cell whose folder is absent or unfinished is taken from the sweep folder's packed file."""
    from mtlkit.cellpack import SUFFIX, pack_path, read_pack

    src = Path(source)
    if src.is_file() and src.suffix == SUFFIX:
        root = src.parent / src.stem
        packed = read_pack(src)
        records = [r for r in (_packed_record(root, packed[k]) for k in packed) if r is not None]
        return records, root, []
    if src.is_file():
        from mtlkit.sweep import load_sweep

        sweep = load_sweep(src)
        cells: list[dict[str, Any]] | None = [c.record() for c in sweep.cells]
        root = sweep.output_dir
    elif src.is_dir():
        root = src
        listed = _read_json(src / "sweep.json")
        cells = listed.get("cells") if isinstance(listed, dict) else None
        if cells is not None:
            _note_unlisted(src, cells, listed)
    else:
        raise ConfigError(
            f"report: {src} is neither a sweep spec, a packed file nor a folder of runs"
        )
    packed = read_pack(pack_path(root))
    if cells is None:
        return _collect_folder(src, packed), root, []
    missing: list[str] = []
    records: list[Record] = []
    for cell in cells:
        given = Path(cell["dir"])  # a spec's cell may reuse a line packed under another name
        run_dir = given if given.is_dir() else root / cell["name"]
        rec = _record(run_dir, cell)
        line = packed.get(given.name) or packed.get(cell["name"])
        if rec is None and line is not None:
            rec = _packed_record(root, line, cell)
        if rec is None:
            missing.append(cell["name"])
        else:
            records.append(rec)
    return records, root, missing


def _collect_folder(src: Path, packed: dict[str, dict[str, Any]]) -> list[Record]:
    """Every run under ``src`` with results, and the packed cells without a folder here."""
    records = []
    for results in sorted(src.rglob("results.json")):
        run_dir = results.parent
        cell = _read_json(run_dir / "cell.json")
        rec = _record(run_dir, cell if isinstance(cell, dict) else None)
        if rec is not None:
            records.append(rec)
    names = {r.name for r in records}
    for name in sorted(set(packed) - names):
        rec = _packed_record(src, packed[name])
        if rec is not None:
            records.append(rec)
    return records


def _note_unlisted(folder: Path, cells: list[dict[str, Any]], listed: Any) -> None:
    """Specs that share an output folder share one ``sweep.json``: the last spec run there.
    Finished runs it does not list are named in a notice, never dropped silently."""
    names = {c.get("name") for c in cells}
    dirs = {Path(c["dir"]).name for c in cells if c.get("dir")}
    other = [
        p.parent.name for p in folder.glob("*/results.json")
        if p.parent.name not in names and p.parent.name not in dirs
    ]
    if other:
        notice(
            f"report: {folder / 'sweep.json'} lists the cells of {listed.get('spec', '?')};"
            f" {len(other)} other finished run(s) in the folder are left out (another spec"
            " sharing the folder, or cells an edited spec no longer has). Report a spec with"
            " 'mtlkit report SPEC.yaml'."
        )


def metric_specs(records: Sequence[Record]) -> dict[str, dict[str, MetricSpec]]:
    """Per task id, the metrics its plugin declares (``metrics()``), by name. A task whose
    plugin does not load: a notice, and no declared metrics."""
    from mtlkit.plugins import get_plugin_manager

    host = get_plugin_manager()
    out: dict[str, dict[str, MetricSpec]] = {}
    for rec in records:
        for spec in rec.config.get("tasks", []):
            tid = spec.get("id") or spec.get("name")
            if tid in out:
                continue
            options = {k: v for k, v in spec.items() if k not in ("name", "id", "target")}
            try:
                cls = host.tasks.resolve(spec["name"])
                opts = cls.Options.model_validate(options)
                out[tid] = {m.name: m for m in cls(tid, opts).metrics()}
            except Exception as exc:  # a plugin missing here: still report, with a guess
                notice(
                    f"report: task {tid!r} ({spec.get('name')}): cannot load its plugin ({exc});"
                    " taking every metric but loss as higher-is-better, with no bounds"
                )
                out[tid] = {}
    return out


def metric_directions(
    records: Sequence[Record], specs: dict[str, dict[str, MetricSpec]] | None = None
) -> dict[str, dict[str, bool]]:
    """Per task id, the declared metrics and whether higher is better (``loss``: lower); a task
    whose plugin does not load counts every metric but ``loss`` as higher-is-better."""
    specs = specs if specs is not None else metric_specs(records)
    return {
        tid: {**{n: m.higher_is_better for n, m in declared.items()}, "loss": False}
        for tid, declared in specs.items()
    }


FRACTION_WORDS = frozenset({"accuracy", "auc", "f1", "precision", "recall", "tar"})
"""Words of a metric name that make it a fraction in [0, 1] (``verification_auc``,
``tar_at_far_1e-2``) when its plugin gives no bounds: an older run's metric the plugin no longer
declares, or a plugin from before :attr:`MetricSpec.bounds`."""


def metric_bounds(
    specs: dict[str, dict[str, MetricSpec]], metrics: Sequence[str]
) -> dict[str, tuple[float, float] | None]:
    """Each ``task/metric``'s range: the declared :attr:`MetricSpec.bounds`, else ``(0, 1)``
    for a name holding one of :data:`FRACTION_WORDS`, else None (no bound)."""
    out: dict[str, tuple[float, float] | None] = {}
    for metric in metrics:
        task, _, name = metric.partition("/")
        spec = specs.get(task, {}).get(name)
        declared = spec.bounds if spec is not None else None
        fraction = not FRACTION_WORDS.isdisjoint(name.lower().split("_"))
        out[metric] = declared or ((0.0, 1.0) if fraction else None)
    return out


def _default_metrics(
    records: Sequence[Record], directions: dict[str, dict[str, bool]]
) -> list[str]:
    seen: list[str] = []
    tasks = list(dict.fromkeys(t for r in records for t in r.tasks))
    for task in tasks:
        declared = [m for m, _ in directions.get(task, {}).items() if m != "loss"]
        present = {
            m for r in records for m, v in r.test.get(task, {}).items() if _is_number(v)
        }
        names = [m for m in declared if m in present] or sorted(
            m for m in present if m != "loss" and m != "count" and not m.startswith("num_")
        )
        seen += [f"{task}/{m}" for m in names]
    return seen


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _value(rec: Record, metric: str, split: str = "test") -> float | None:
    task, _, name = metric.partition("/")
    v = (rec.test if split == "test" else rec.val).get(task, {}).get(name)
    return float(v) if _is_number(v) else None


def pick_best_static(
    by_label: dict[str, list[Record]], metric: str, higher: bool
) -> tuple[str | None, str]:
    """The static weight with the best mean ``metric``, and the split that picked it.

    Validation when every static cell recorded the metric there (the choice never sees the
    test numbers it is then compared on); else test, which makes the pick an upper bound for
    static weighting rather than a tuning a user could have done.
    """
    statics = {k: v for k, v in by_label.items() if v[0].kind == "static"}
    cells = [r for rs in statics.values() for r in rs]
    split = "val" if cells and all(_value(r, metric, "val") is not None for r in cells) else "test"
    scored = []
    for label, rs in statics.items():
        vals = [v for v in (_value(r, metric, split) for r in rs) if v is not None]
        if vals:
            scored.append((math.fsum(vals) / len(vals), label))
    if not scored:
        return None, split
    pick = max if higher else min
    return pick(scored, key=lambda x: x[0])[1], split


def best_static_why(metric: str, split: str) -> str:
    """How the best static weight was picked, as the report's headings say it."""
    if split == "val":
        return f"best static weight by validation {metric}"
    return f"best static weight by test {metric}: a test-set upper bound, not a tuning"


# --- the report ----------------------------------------------------------------------------


def _higher(directions: dict[str, dict[str, bool]], metric: str) -> bool:
    task, _, name = metric.partition("/")
    return directions.get(task, {}).get(name, name != "loss")


def compare(
    method: Sequence[Record], reference: Sequence[Record], metric: str, higher: bool
) -> dict[str, Any]:
    """Wins, ties and losses of ``method`` against ``reference`` on the same (fold, seed), and
    the sign-test and Wilcoxon p-values of the paired differences (positive: ``method`` better)."""
    ref = {r.pair_key: _value(r, metric) for r in reference}
    diffs: list[float] = []
    for r in method:
        a, b = _value(r, metric), ref.get(r.pair_key)
        if a is None or b is None:
            continue
        d = (a - b) if higher else (b - a)
        diffs.append(0.0 if abs(d) <= TIES * max(1.0, abs(b)) else d)
    wins = sum(d > 0 for d in diffs)
    losses = sum(d < 0 for d in diffs)
    return {
        "pairs": len(diffs),
        "wins": wins,
        "ties": len(diffs) - wins - losses,
        "losses": losses,
        "mean_diff": math.fsum(diffs) / len(diffs) if diffs else None,
        "sign_p": sign_test(wins, losses) if diffs else None,
        "wilcoxon_p": wilcoxon(diffs) if diffs else None,
    }


def delta_m(
    method: Sequence[Record],
    singles: dict[str, Sequence[Record]],
    metrics: Sequence[str],
    higher: dict[str, bool],
) -> dict[str, Any]:
    """Delta_m% per (fold, seed) against the single-task cells of the same (fold, seed):
    ``100/K sum_k (-1)^{l_k} (M_k - B_k) / B_k`` over the K metrics (``l_k = 1`` when lower is
    better), then described over the pairs. None when a task has no single-task cells."""
    tasks = {m.partition("/")[0] for m in metrics}
    if not metrics or not tasks <= set(singles):
        return {**describe([]), "values": []}
    base = {t: {r.pair_key: r for r in singles[t]} for t in tasks}
    values = []
    for r in method:
        terms = []
        for m in metrics:
            b_rec = base[m.partition("/")[0]].get(r.pair_key)
            mv, bv = _value(r, m), (_value(b_rec, m) if b_rec else None)
            if mv is None or bv is None or bv == 0:
                break
            sign = 1.0 if higher[m] else -1.0
            terms.append(sign * (mv - bv) / bv)
        else:
            values.append(100.0 * math.fsum(terms) / len(terms))
    return {**describe(values), "values": values}


def _epoch_rows(rec: Record) -> list[dict[str, Any]]:
    """The training means per epoch from ``epochs.jsonl`` (its ``train`` entries), else the
    per-step rows of ``steps.jsonl``/``steps.csv`` (runs from before the epoch means were kept,
    or a folder whose per-step log was left out to save space)."""
    from mtlkit.runlog import read_steps

    try:
        epochs = rec.dir / "epochs.jsonl"
        rows = rec.epochs
        if rows is None and epochs.is_file():
            rows = [json.loads(line) for line in epochs.read_text().splitlines() if line.strip()]
        if rows:
            train = [{"epoch": r["epoch"], **r["train"]} for r in rows if r.get("train")]
            if train:
                return train
        path = next((p for p in (rec.dir / "steps.jsonl", rec.dir / "steps.csv") if p.is_file()),
                    None)
        return read_steps(path) if path is not None else []
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _trajectory(rec: Record) -> dict[str, list[float]] | None:
    """Per-epoch mean of each task's logged weight (and diagnostic, if logged)."""
    rows = _epoch_rows(rec)
    by_epoch: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if _is_number(row.get("epoch")):
            by_epoch[int(row["epoch"])].append(row)
    if not by_epoch:
        return None
    out: dict[str, list[float]] = {"epoch": sorted(by_epoch)}
    # task weights, and the task-conflict diagnostic where the run logged it (trainer.diagnostics)
    keys = [f"weight/{t}" for t in rec.tasks]
    if any(_is_number(r.get("diag/cos_mean")) for r in rows):
        keys.append("diag/cos_mean")
    for key in keys:
        col = []
        for e in out["epoch"]:
            vals = [r[key] for r in by_epoch[e] if _is_number(r.get(key))]
            col.append(math.fsum(vals) / len(vals) if vals else math.nan)
        out[key] = col
    return out


def _mean_trajectory(records: Sequence[Record]) -> dict[str, list[float | None]] | None:
    trajs = [t for t in (_trajectory(r) for r in records) if t]
    if not trajs:
        return None
    epochs = sorted({e for t in trajs for e in t["epoch"]})
    keys = [k for k in trajs[0] if k != "epoch"]
    out: dict[str, list[float | None]] = {"epoch": list(epochs)}
    for k in keys:
        col: list[float | None] = []
        for e in epochs:
            vals = [
                t[k][t["epoch"].index(e)] for t in trajs
                if e in t["epoch"] and k in t and not math.isnan(t[k][t["epoch"].index(e)])
            ]
            col.append(math.fsum(vals) / len(vals) if vals else None)
        out[k] = col
    return out


@dataclass
class _Plan:
    """What every context of a report is computed with: the metrics, their directions and
    ranges, the baseline and whether to average weight trajectories."""

    metrics: list[str]
    higher: dict[str, bool]
    bounds: dict[str, tuple[float, float] | None]
    baseline: str | None
    trajectories: bool


def build_report(
    records: Sequence[Record],
    metrics: Sequence[str] | None = None,
    baseline: str | None = None,
    directions: dict[str, dict[str, bool]] | None = None,
    trajectories: bool = True,
    specs: dict[str, dict[str, MetricSpec]] | None = None,
) -> dict[str, Any]:
    """Everything ``report.json`` holds, per context (a value of the sweep's override axes).

    ``specs`` (default: from the task plugins, unless ``directions`` is given) supplies each
    metric's bounds, to which intervals are cut (:func:`describe`). The pieces: :func:`_plan`
    (metrics, directions, bounds, checked), then per context :func:`_context_report` (the
    methods' statistics, the references, the paired comparisons, Delta_m, trajectories)."""
    plan = _plan(records, metrics, baseline, directions, trajectories, specs)
    contexts = [
        _context_report(context, [r for r in records if r.context == context], plan)
        for context in dict.fromkeys(r.context for r in records)
    ]
    return {
        "metrics": plan.metrics,
        "higher_is_better": plan.higher,
        "bounds": {m: list(b) if b is not None else None for m, b in plan.bounds.items()},
        "baseline": baseline,
        "cells": len(records),
        "contexts": contexts,
    }


def _plan(
    records: Sequence[Record],
    metrics: Sequence[str] | None,
    baseline: str | None,
    directions: dict[str, dict[str, bool]] | None,
    trajectories: bool,
    specs: dict[str, dict[str, MetricSpec]] | None,
) -> _Plan:
    """The metrics to report (given, else the tasks' declared ones), checked against the
    cells' test metrics, with their directions and ranges; the baseline checked too."""
    if not records:
        raise ConfigError("report: no finished cells (no results.json) to report on")
    if specs is None:
        specs = metric_specs(records) if directions is None else {}
    directions = directions if directions is not None else metric_directions(records, specs)
    chosen = list(metrics) if metrics else _default_metrics(records, directions)
    known = sorted({f"{t}/{m}" for r in records for t, ms in r.test.items() for m in ms})
    bad = [m for m in chosen if m not in known]
    if bad or not chosen:
        raise ConfigError(f"report: --metrics {bad or chosen}: not among the test metrics {known}")
    labels = list(dict.fromkeys(r.label for r in records))
    if baseline is not None and baseline not in labels:
        raise ConfigError(
            f"report: --baseline {baseline!r} is not a method here; methods: {labels}"
        )
    higher = {m: _higher(directions, m) for m in chosen}
    return _Plan(chosen, higher, metric_bounds(specs, chosen), baseline, trajectories)


def _context_report(context: str, recs: Sequence[Record], plan: _Plan) -> dict[str, Any]:
    """One context: each method's statistics, the paired comparisons against the baseline and
    the best static weight, Delta_m against the single-task cells, mean trajectories."""
    by_label: dict[str, list[Record]] = defaultdict(list)
    for r in recs:
        by_label[r.label].append(r)
    first = plan.metrics[0]
    best_static, static_split = pick_best_static(by_label, first, plan.higher[first])
    refs = []
    if plan.baseline is not None and plan.baseline in by_label:
        refs.append((plan.baseline, "baseline"))
    if best_static is not None and best_static != plan.baseline:
        refs.append((best_static, best_static_why(first, static_split)))
    singles = {
        rs[0].task: rs for rs in by_label.values() if rs[0].kind == "single" and rs[0].task
    }
    traj = (
        {label: _mean_trajectory(rs) for label, rs in by_label.items()}
        if plan.trajectories else {}
    )
    return {
        "context": context,
        "methods": [_method_summary(label, rs, plan) for label, rs in by_label.items()],
        "best_static": best_static,
        "best_static_split": static_split if best_static is not None else None,
        "comparisons": _comparisons(by_label, refs, plan),
        "delta_m": {
            label: delta_m(rs, singles, plan.metrics, plan.higher)
            for label, rs in by_label.items()
        } if singles else {},
        "trajectories": {k: v for k, v in traj.items() if v},
    }


def _method_summary(label: str, rs: Sequence[Record], plan: _Plan) -> dict[str, Any]:
    """A method's row: its cells and folds, each metric described, the minutes per cell."""
    return {
        "label": label,
        "kind": rs[0].kind,
        "task": rs[0].task,
        "weight": rs[0].weight,
        "cells": [r.name for r in rs],
        "folds": sorted({json.dumps(r.fold) for r in rs}),
        "stats": {
            m: describe([v for v in (_value(r, m) for r in rs) if v is not None], plan.bounds[m])
            for m in plan.metrics
        },
        "minutes": describe([r.seconds / 60 for r in rs if r.seconds is not None]),
    }


def _comparisons(
    by_label: dict[str, list[Record]], refs: Sequence[tuple[str, str]], plan: _Plan
) -> list[dict[str, Any]]:
    """Every method paired against each reference on every metric; against the best static
    weight the other static weights are left out (one of them was picked as best)."""
    out = []
    for ref, why in refs:
        for label in by_label:
            if label == ref or (why != "baseline" and by_label[label][0].kind == "static"):
                continue
            for m in plan.metrics:
                out.append({
                    "reference": ref, "why": why, "method": label, "metric": m,
                    **compare(by_label[label], by_label[ref], m, plan.higher[m]),
                })
    return out


# --- rendering -------------------------------------------------------------------------------


def _f(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _p(v: float | None) -> str:
    return "n/a" if v is None else (f"{v:.3g}" if v >= 0.001 else f"{v:.1e}")


def _cell(stats: dict[str, Any], digits: int = 4) -> str:
    if stats["n"] == 0:
        return "n/a"
    if stats["std"] is None:
        return _f(stats["mean"], digits)
    lo, hi = stats["ci95"]
    return (
        f"{_f(stats['mean'], digits)} ± {_f(stats['std'], digits)}"
        f" [{_f(lo, digits)}, {_f(hi, digits)}]"
    )


def render_markdown(report: dict[str, Any], source: str, missing: Sequence[str] = ()) -> str:
    metrics = report["metrics"]
    arrows = {m: ("↑" if report["higher_is_better"][m] else "↓") for m in metrics}
    md = [
        f"# Sweep report: `{source}`",
        "",
        f"{report['cells']} finished cells, test split. Each entry: mean ± std"
        " [95% t interval of the mean, cut to the metric's range where it has one] over folds"
        " and seeds; ↑ higher is better, ↓ lower.",
    ]
    if missing:
        md += ["", f"Not finished (left out): {len(missing)} cell(s): "
               + ", ".join(f"`{m}`" for m in missing)]
    for ctx in report["contexts"]:
        if ctx["context"]:
            md += ["", f"## {ctx['context']}"]
        head = ["method", "n", *[f"{m} {arrows[m]}" for m in metrics]]
        has_dm = bool(ctx["delta_m"])
        if has_dm:
            head.append("Δm% ↑")
        head += ["min/cell", "min total"]
        md += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in ctx["methods"]:
            n = max(s["n"] for s in m["stats"].values())
            row = [f"`{m['label']}`", str(n), *[_cell(m["stats"][k]) for k in metrics]]
            if has_dm:
                row.append(_cell(ctx["delta_m"][m["label"]], 2))
            minutes = m["minutes"]
            row += [
                _f(minutes["mean"], 2),
                _f(minutes["mean"] * minutes["n"], 1) if minutes["n"] else "n/a",
            ]
            md.append("| " + " | ".join(row) + " |")
        md += _interval_notes(ctx, metrics, report.get("bounds") or {})
        if has_dm:
            md += ["", "Δm%: the mean relative difference to the single-task cells of the same"
                   " fold and seed over the metrics above, sign-flipped for lower-is-better ones."]
        elif report["contexts"] and not ctx["delta_m"]:
            md += ["", "Δm%: no single-task cells (`single_task: true` in the spec) to compare."]
        refs = list(dict.fromkeys((c["reference"], c["why"]) for c in ctx["comparisons"]))
        for ref, why in refs:
            md += [
                "", f"### Paired against `{ref}` ({why})", "",
                "Same fold and seed; a win is better by more than 1e-12. Sign test: exact"
                " binomial, ties left out; Wilcoxon signed-rank: exact up to 20 pairs.",
                "",
                "| method | metric | pairs | wins / ties / losses | mean difference |"
                " sign-test p | Wilcoxon p |",
                "|---|---|---|---|---|---|---|",
            ]
            for c in ctx["comparisons"]:
                if c["reference"] != ref:
                    continue
                md.append(
                    f"| `{c['method']}` | {c['metric']} | {c['pairs']} |"
                    f" {c['wins']} / {c['ties']} / {c['losses']} | {_f(c['mean_diff'])} |"
                    f" {_p(c['sign_p'])} | {_p(c['wilcoxon_p'])} |"
                )
    return "\n".join(md) + "\n"


def _interval_notes(
    ctx: dict[str, Any], metrics: Sequence[str], bounds: dict[str, Any]
) -> list[str]:
    """Say where an interval was cut at the metric's range, and where n is too small for the
    interval to mean much, instead of leaving a reader to find out."""
    cut = [
        (m["label"], k) for m in ctx["methods"] for k in metrics
        if interval_cut(m["stats"][k], bounds.get(k))
    ]
    pairs = sorted({m["label"] for m in ctx["methods"] for k in metrics
                    if m["stats"][k]["n"] == 2})
    notes = []
    if cut:
        ranges = sorted({f"[{bounds[k][0]:g}, {bounds[k][1]:g}]" for _, k in cut})
        notes.append(
            f"{len(cut)} interval(s) reach past the metric's range ({', '.join(ranges)}) and are"
            " cut at it; the cut end only says that the data cannot rule that end out."
        )
    if pairs:
        notes.append(
            f"n = 2 for {', '.join(f'`{p}`' for p in pairs)}: the t quantile with one degree"
            " of freedom is 12.7, so their intervals are too wide to compare methods; use the"
            " paired tests."
        )
    return ["", *notes] if notes else []


# --- plots -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def write_plots(
    report: dict[str, Any], records: Sequence[Record], out: Path
) -> list[Path]:
    """PNGs per context: metrics against the static weight (other methods as bands), the first
    two tasks' first metrics against each other, and the mean task-weight trajectories."""
    plt = _pyplot()
    if plt is None:
        notice(
            "report: no plots: matplotlib is not installed (pip install 'mtlkit[plot]');"
            " the tables and report.json are written"
        )
        return []
    written: list[Path] = []
    many = len(report["contexts"]) > 1
    for i, ctx in enumerate(report["contexts"]):
        suffix = f"_{i}" if many else ""
        title = ctx["context"]
        written += [p for p in (
            _plot_static(plt, report, ctx, out / f"static_weight{suffix}.png", title),
            _plot_tradeoff(plt, report, ctx, records, out / f"tradeoff{suffix}.png", title),
            _plot_weights(plt, ctx, out / f"weights{suffix}.png", title),
        ) if p is not None]
    return written


def _plot_static(plt: Any, report: dict[str, Any], ctx: dict[str, Any], path: Path,
                 title: str) -> Path | None:
    statics = sorted(
        (m for m in ctx["methods"] if m["kind"] == "static"), key=lambda m: m["weight"]
    )
    if not statics:
        return None
    metrics = report["metrics"]
    others = [m for m in ctx["methods"] if m["kind"] != "static"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    xs = [m["weight"] for m in statics]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics):
        ys = [m["stats"][metric]["mean"] for m in statics]
        es = [m["stats"][metric]["std"] or 0.0 for m in statics]
        ax.errorbar(xs, [y if y is not None else math.nan for y in ys], yerr=es, marker="o",
                    color="black", capsize=3, label="static")
        for j, m in enumerate(others):
            s = m["stats"][metric]
            if s["mean"] is None:
                continue
            c = colors[j % len(colors)]
            ax.axhline(s["mean"], color=c, label=m["label"])
            sd = s["std"] or 0.0
            ax.axhspan(s["mean"] - sd, s["mean"] + sd, color=c, alpha=0.15)
        ax.set_xlabel(f"static weight of {statics[0]['task']}")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, path)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*")
"""Marker shapes of the trade-off plot: 11 shapes against 10 colours (coprime), so methods
differ in shape and colour and hollow markers stay visible on top of each other."""


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot_tradeoff(plt: Any, report: dict[str, Any], ctx: dict[str, Any],
                   records: Sequence[Record], path: Path, title: str) -> Path | None:
    fig = tradeoff_figure(plt, report, ctx, records, title)
    return None if fig is None else _save(plt, fig, path)


def tradeoff_figure(plt: Any, report: dict[str, Any], ctx: dict[str, Any],
                    records: Sequence[Record], title: str) -> Any:
    """The first two tasks' first metrics against each other, one point per cell. Each method
    has its own hollow marker shape and colour, so points on the same spot (a verification
    accuracy of 1.0 on several folds) show every method there; the legend sits outside."""
    by_task: dict[str, str] = {}
    for m in report["metrics"]:
        by_task.setdefault(m.partition("/")[0], m)
    if len(by_task) < 2:
        return None
    mx, my = list(by_task.values())[:2]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(5.6, 4.4), layout="constrained")
    shown = 0
    for j, m in enumerate(ctx["methods"]):
        recs = [r for r in records if r.context == ctx["context"] and r.label == m["label"]]
        pts = [(_value(r, mx), _value(r, my)) for r in recs]
        pts = [(x, y) for x, y in pts if x is not None and y is not None]
        if pts:
            shown += 1
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=m["label"], s=30,
                       marker=MARKERS[j % len(MARKERS)], facecolors="none",
                       edgecolors=colors[j % len(colors)], linewidths=1.2, alpha=0.85)
    ax.set_xlabel(mx)
    ax.set_ylabel(my)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
              ncol=1 + shown // 24)
    ax.set_title(title or "one point per fold and seed", fontsize=9)
    return fig


def _plot_weights(plt: Any, ctx: dict[str, Any], path: Path, title: str) -> Path | None:
    fig = weights_figure(plt, ctx, title)
    return None if fig is None else _save(plt, fig, path)


def weights_figure(plt: Any, ctx: dict[str, Any], title: str, columns: int = 4) -> Any:
    """Per method, the mean task weights over epochs (and the gradient cosine, dashed, where
    the run logged it), in rows of ``columns`` panels. A task keeps its colour in every panel;
    earlier tasks are drawn wider, so equal weights (one line on another) still show both;
    every panel has its legend, since methods log different series."""
    fixed = {m["label"] for m in ctx["methods"] if m["kind"] in ("static", "single")}
    traj = {k: v for k, v in ctx["trajectories"].items() if k not in fixed}
    traj = traj or ctx["trajectories"]  # constant weights only when nothing else moves
    if not traj:
        return None
    keys = list(dict.fromkeys(k for t in traj.values() for k in t if k != "epoch"))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {k: colors[i % len(colors)] for i, k in enumerate(keys)}
    tasks = [k for k in keys if not k.startswith("diag/")]
    width = {k: 1.2 + 1.6 * (len(tasks) - 1 - i) / max(1, len(tasks) - 1)
             for i, k in enumerate(tasks)}
    ncols = min(columns, len(traj))
    nrows = math.ceil(len(traj) / ncols)
    # each panel its own y scale: one method's weights growing to 20 must not flatten the rest
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False,
                             layout="constrained")
    dashed = False
    for ax, (label, t) in zip(axes.flat, traj.items()):
        for key, col in t.items():
            if key == "epoch":
                continue
            diag = key.startswith("diag/")
            dashed |= diag
            ax.plot(t["epoch"], [math.nan if v is None else v for v in col],
                    linestyle="--" if diag else "-", color=color[key],
                    linewidth=1.2 if diag else width[key],
                    label="gradient cosine" if diag else key.partition("/")[2])
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in axes.flat[len(traj):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("weight, cosine" if dashed else "task weight")
    fig.suptitle(", ".join(x for x in (title, "epoch means") if x), fontsize=9)
    return fig


def write_report(
    source: str | Path,
    *,
    baseline: str | None = None,
    metrics: Iterable[str] | None = None,
    out: str | Path | None = None,
) -> tuple[dict[str, Any], str, list[Path]]:
    """Collect, compute and write ``report.md``, ``report.json`` and the PNGs under ``out``
    (default: ``<sweep folder>/report``); returns the report, its Markdown and the files."""
    records, root, missing = collect(source)
    report = build_report(records, list(metrics) if metrics else None, baseline)
    report["source"] = str(source)
    report["missing"] = list(missing)
    out_dir = Path(out) if out is not None else root / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    md = render_markdown(report, str(source), missing)
    files = write_plots(report, records, out_dir)
    report["plots"] = [str(p) for p in files]
    (out_dir / "report.md").write_text(md, encoding="utf-8")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report, md, [out_dir / "report.md", out_dir / "report.json", *files]
