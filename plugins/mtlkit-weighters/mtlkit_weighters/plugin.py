"""Entry point of mtlkit-weighters: light on purpose, it only names where each weighter lives."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from mtlkit.registry import Registry

WEIGHTERS: dict[str, tuple[str, str]] = {
    # loss-based: one backward, the cost of equal weighting
    "uncertainty": ("uncertainty:UncertaintyWeighter",
                    "learned homoscedastic uncertainty (Kendall et al. 2018)"),
    "dwa": ("dwa:DWAWeighter", "dynamic weight average of epoch-loss ratios (Liu et al. 2019)"),
    "rlw": ("rlw:RLWWeighter", "random loss weighting, softmax of N(0, I) (Lin et al. 2022)"),
    "dtp": ("dtp:DTPWeighter", "dynamic task prioritization on step metrics (Guo et al. 2018)"),
    "famo": ("famo:FAMOWeighter", "fast adaptive multitask optimization (Liu et al. 2023)"),
    # gradient-based
    "gradnorm": ("gradnorm:GradNormWeighter",
                 "gradient-norm balancing on the last shared layer (Chen et al. 2018)"),
    "mgda": ("mgda:MGDAWeighter", "min-norm point of the task gradients; rep=true: MGDA-UB"
             " (Sener & Koltun 2018)"),
    "pcgrad": ("pcgrad:PCGradWeighter", "projecting conflicting gradients (Yu et al. 2020)"),
    "cagrad": ("cagrad:CAGradWeighter", "conflict-averse gradient descent (Liu et al. 2021)"),
    "imtl": ("imtl:IMTLWeighter", "impartial MTL, IMTL-G + IMTL-L (Liu et al. 2021)"),
    "nash_mtl": ("nash_mtl:NashMTLWeighter", "Nash bargaining G^T G a = 1/a (Navon et al. 2022)"),
    "aligned_mtl": ("aligned_mtl:AlignedMTLWeighter",
                    "aligned gradients via the Gram eigenbasis (Senushkin et al. 2023)"),
    "db_mtl": ("db_mtl:DBMTLWeighter",
               "dual balancing: log losses + EMA gradient-norm balance (Lin et al. 2023)"),
    "gls": ("gls:GLSWeighter", "geometric mean of the task losses (Chennupati et al. 2019)"),
    "stch": ("stch:STCHWeighter",
             "smooth Tchebycheff of nadir-normalised log losses (Lin et al. 2024)"),
    "excess_mtl": ("excess_mtl:ExcessMTLWeighter",
                   "exponentiated weights on AdaGrad excess-risk estimates (He et al. 2024)"),
    "graddrop": ("graddrop:GradDropWeighter",
                 "gradient sign dropout on the shared representation (Chen et al. 2020)"),
    "gradvac": ("gradvac:GradVacWeighter",
                "gradient vaccine, EMA target cosines per task pair (Wang et al. 2021)"),
    "config": ("conflict_free:ConFIGWeighter",
               "conflict-free direction U^+ 1, sum-of-projections length (Liu et al. 2024)"),
    "upgrad": ("upgrad:UPGradWeighter",
               "projections onto the dual cone of the gradients (Quinton & Rey 2024)"),
    "fairgrad": ("fairgrad:FairGradWeighter", "alpha-fair allocation G^T G w = w^(-1/alpha)"
                 " (Ban & Ji 2024)"),
    "moco": ("moco:MoCoWeighter", "MGDA step on tracked gradients (Fernando et al. 2023)"),
    "modo": ("modo:MoDoWeighter", "MGDA dual step per step, single-sample (Chen et al. 2023)"),
    "sdmgrad": ("sdmgrad:SDMGradWeighter",
                "direction-oriented MGDA toward the mean, single-sample (Xiao et al. 2023)"),
}


@hookimpl
def register_weighters(registry: Registry) -> None:
    for name, (target, summary) in WEIGHTERS.items():
        registry.add(name, f"mtlkit_weighters.{target}", summary=summary)
