"""The loss-to-age test as a design that can answer: several runs, a within-run rank test, its power.

Hypothesis (the seed's): a checkpoint with lower validation loss writes like an older child.
Checkpoints of one run are not independent of each other and runs differ in level, so the test
works within runs:

- primary: per-run Spearman rho of (val_bpc, predicted age), combined as the mean of the per-run
  rhos weighted by checkpoints; its one-sided p comes from a stratified permutation test (ages
  permuted within each run, so the null keeps each run's own level and spread);
- secondary: a linear mixed model age ~ val_bpc with run as the grouping factor (statsmodels
  MixedLM, random intercept per run), reported beside it where it can be fit;
- power: the share of simulated designs with the same runs, the same checkpoints and the same
  val_bpc values whose test reaches p < alpha when the true within-run correlation is the stated
  effect (default rho = -0.6), simulated through a Gaussian copula on the ranks.

Three verdicts:
- "supported": the combined rho is negative with p < alpha;
- "contradicted": the combined rho is positive with p < alpha (older age with higher loss), or the
  test finds nothing although its power for the stated effect is at least `min_power`;
- "not testable with this design": too few checkpoints with an in-range age, or the test finds
  nothing at a power below `min_power` (the design could not have found the effect).
Only checkpoints whose predicted age is in range (the age model gave a number) take part; the
seed's bands are compared in bits per character (`evalsuite.hypothesis`) beside the verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from corpora.errors import UserError

SUPPORTED, CONTRADICTED, NOT_TESTABLE = "supported", "contradicted", "not testable with this design"


@dataclass
class LossAgeConfig:
    effect_rho: float = -0.6
    alpha: float = 0.05
    min_power: float = 0.8
    min_per_run: int = 3
    n_perm: int = 2000
    n_sim: int = 400
    seed: int = 0

    def validate(self) -> None:
        if not -1 < self.effect_rho < 0:
            raise UserError("effect_rho must lie in (-1, 0): the hypothesis is a negative loss-age relation")
        if not 0 < self.alpha < 1 or not 0 < self.min_power < 1:
            raise UserError("alpha and min_power must lie in (0, 1)")
        if self.min_per_run < 3 or self.n_perm < 100 or self.n_sim < 50:
            raise UserError("min_per_run >= 3, n_perm >= 100, n_sim >= 50")


@dataclass
class LossAgeResult:
    verdict: str
    reason: str
    n_checkpoints: int
    n_runs: int
    combined_rho: float = math.nan
    p_negative: float = math.nan
    p_positive: float = math.nan
    power: float = math.nan
    effect_rho: float = -0.6
    mixed_slope_months_per_bpc: float = math.nan
    mixed_ci_low: float = math.nan
    mixed_ci_high: float = math.nan
    mixed_p: float = math.nan
    mixed_note: str = ""
    band_overlap: int = 0
    n_with_band: int = 0
    per_run: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def statement(self) -> str:
        power = "" if self.power != self.power else f"; power for rho = {self.effect_rho:g}: {self.power:.2f}"
        rho = "" if self.combined_rho != self.combined_rho else (
            f"within-run Spearman rho(val_bpc, age) = {self.combined_rho:+.2f} (one-sided p = {self.p_negative:.3g}, "
            f"stratified permutation), ")
        return (f"loss-to-age: {self.verdict} ({rho}{self.n_checkpoints} checkpoints in range from "
                f"{self.n_runs} run(s){power}). {self.reason}")


def _usable(points: pd.DataFrame, config: LossAgeConfig) -> pd.DataFrame:
    need = {"run", "val_bpc", "predicted_age_months"}
    missing = need - set(points.columns)
    if missing:
        raise UserError(f"loss-age points lack column(s): {', '.join(sorted(missing))}")
    ok = np.isfinite(points["val_bpc"].astype(float)) & np.isfinite(points["predicted_age_months"].astype(float))
    if "in_range" in points:
        ok &= points["in_range"].astype(bool)
    use = points[ok]
    sizes = use.groupby("run")["val_bpc"].transform("size")
    return use[sizes >= config.min_per_run].reset_index(drop=True)


def _rank_rows(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, axis=-1)


def _combined_rho(runs: list[np.ndarray], ages: list[np.ndarray]) -> np.ndarray:
    """Weighted mean over runs of Spearman rho; each `ages[r]` may carry leading draw axes (..., n_r)."""
    total, weight = 0.0, 0
    for bx, ay in zip(runs, ages, strict=True):
        rx = _rank_rows(bx)
        ry = _rank_rows(ay)
        cx = rx - rx.mean()
        cy = ry - ry.mean(axis=-1, keepdims=True)
        denom = np.sqrt((cx @ cx) * (cy * cy).sum(axis=-1))
        rho = np.where(denom > 0, (cy @ cx) / np.where(denom > 0, denom, 1), 0.0)
        total = total + len(bx) * rho
        weight += len(bx)
    return total / weight


def _null(runs: list[np.ndarray], rng: np.random.Generator, n_perm: int) -> np.ndarray:
    """Null draws of the combined statistic: ages permuted within runs (only the ranks matter)."""
    ages = [np.argsort(rng.random((n_perm, len(b))), axis=1).astype(float) for b in runs]
    return _combined_rho(runs, ages)


def _p_values(observed: float, null: np.ndarray) -> tuple[float, float]:
    from evalsuite.stats import permutation_p

    return permutation_p(observed, null, "less"), permutation_p(observed, null, "greater")


def simulated_power(runs: list[np.ndarray], null: np.ndarray, config: LossAgeConfig, rng: np.random.Generator) -> float:
    """Share of simulated designs (same runs and val_bpc) reaching one-sided p < alpha when the
    within-run normal-score correlation is `effect_rho` (Gaussian copula on the ranks of val_bpc)."""
    from scipy.stats import norm

    r = config.effect_rho
    ages = []
    for b in runs:
        z = norm.ppf((_rank_rows(b) - 0.5) / len(b))
        z = (z - z.mean()) / (z.std() or 1.0)
        ages.append(r * z + math.sqrt(1 - r * r) * rng.standard_normal((config.n_sim, len(b))))
    stats = _combined_rho(runs, ages)
    crit = np.sort(null)
    p_less = (np.searchsorted(crit, stats, side="right") + 1) / (len(null) + 1)
    return float(np.mean(p_less < config.alpha))


def _mixed(use: pd.DataFrame) -> dict:
    """MixedLM age ~ val_bpc with a random intercept per run; NaN and a note where it cannot be fit."""
    import warnings

    if use["run"].nunique() < 2 or len(use) < 6:
        return {"mixed_note": "mixed model not fit: needs >= 2 runs and >= 6 checkpoints"}
    import statsmodels.formula.api as smf

    data = pd.DataFrame({"age": use["predicted_age_months"].astype(float), "bpc": use["val_bpc"].astype(float),
                         "run": use["run"].astype(str)})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence / boundary warnings are reported through the note
            fit = smf.mixedlm("age ~ bpc", data, groups=data["run"]).fit(reml=True)
        lo, hi = fit.conf_int().loc["bpc"]
        note = "" if fit.converged else "MixedLM did not converge: read with care"
        return {"mixed_slope_months_per_bpc": float(fit.params["bpc"]), "mixed_ci_low": float(lo),
                "mixed_ci_high": float(hi), "mixed_p": float(fit.pvalues["bpc"]), "mixed_note": note}
    except (np.linalg.LinAlgError, ValueError) as err:
        return {"mixed_note": f"mixed model not fit: {err}"}


def _bands(points: pd.DataFrame) -> tuple[int, int]:
    """Checkpoints whose age interval overlaps the seed's band (looked up in bits per character)."""
    from evalsuite.hypothesis import hypothesis_band

    overlap = n = 0
    for row in points.itertuples(index=False):
        _, lo, hi = hypothesis_band(float(getattr(row, "val_loss", math.nan)), float(row.val_bpc))
        if lo != lo:
            continue
        n += 1
        c_lo = getattr(row, "ci_low", row.predicted_age_months)
        c_hi = getattr(row, "ci_high", row.predicted_age_months)
        overlap += bool(c_hi >= lo and c_lo <= hi)
    return overlap, n


def loss_age_test(points: pd.DataFrame, config: LossAgeConfig | None = None) -> LossAgeResult:
    """points: one row per checkpoint with run, val_bpc, predicted_age_months (in_range, ci_low/high,
    val_loss optional). Returns the verdict with the statistic, its power and the mixed model."""
    config = config or LossAgeConfig()
    config.validate()
    use = _usable(points, config)
    n_runs = int(use["run"].nunique())
    if len(use) < 4:
        n_in = int(points["in_range"].astype(bool).sum()) if "in_range" in points else len(points)
        return LossAgeResult(NOT_TESTABLE, f"{len(use)} checkpoint(s) in runs with >= {config.min_per_run} in-range "
                             f"ages ({n_in} of {len(points)} checkpoints have an in-range age); the test needs >= 4",
                             len(use), n_runs, effect_rho=config.effect_rho)
    groups = [g for _, g in use.groupby("run", sort=True)]
    runs = [g["val_bpc"].to_numpy(float) for g in groups]
    ages = [g["predicted_age_months"].to_numpy(float) for g in groups]
    rng = np.random.default_rng(config.seed)
    observed = float(_combined_rho(runs, ages))
    null = _null(runs, rng, config.n_perm)
    p_neg, p_pos = _p_values(observed, null)
    power = simulated_power(runs, null, config, rng)
    from evalsuite.stats import spearman

    per_run = [{"run": str(g["run"].iloc[0]), "n": len(g), **spearman(g["val_bpc"], g["predicted_age_months"]).as_dict()}
               for g in groups]
    if p_neg < config.alpha:
        verdict, reason = SUPPORTED, "lower loss goes with an older predicted age within runs"
    elif p_pos < config.alpha:
        verdict, reason = CONTRADICTED, "lower loss goes with a younger predicted age within runs"
    elif power >= config.min_power:
        verdict, reason = CONTRADICTED, (f"no relation found although the design detects rho = {config.effect_rho:g} "
                                         f"with power {power:.2f}")
    else:
        verdict, reason = NOT_TESTABLE, (f"no relation found, but the design's power for rho = {config.effect_rho:g} is "
                                         f"{power:.2f} < {config.min_power:g}: add checkpoints or runs")
    overlap, n_band = _bands(use)
    return LossAgeResult(verdict, reason, len(use), n_runs, observed, p_neg, p_pos, power, config.effect_rho,
                         band_overlap=overlap, n_with_band=n_band, per_run=per_run, **_mixed(use))
