"""The training recipes: the authors' per dataset (quirks included), and the toy track's.

The reference's two scripts differ in more than numbers. CIRR lays its OneCycle schedule over 80
epochs while training 50 (so the rate never decays to its floor), weights the auxiliary losses by
0.4, and only keeps a best model after epoch 18. FashionIQ lays the schedule over the epochs it
runs, warms up for 1.5 epochs from lr/100, and sums the three losses unweighted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from sprc_lib.data.schema import DATASETS, TARGET_RATIO, TRANSFORM


@dataclass(frozen=True)
class Recipe:
    """Everything about how to train that is not a path. `None` schedule fields mean "the epochs run"."""

    num_epochs: int
    learning_rate: float
    batch_size: int
    loss_rtc: float
    loss_align: float
    div_factor: float
    pct_start: float | None = None  # fraction of the schedule spent warming up, if fixed
    warmup_epochs: float | None = None  # or: warm-up length in epochs (pct_start = warmup/epochs)
    schedule_epochs: int | None = None  # epochs the OneCycle schedule is laid over
    best_from_epoch: int = 0  # keep-best only considers validations from this epoch on
    validation_frequency: int = 1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-7
    weight_decay: float = 0.05
    transform: str = TRANSFORM
    target_ratio: float = TARGET_RATIO

    def schedule(self, num_epochs: int, over_run: bool = False) -> tuple[int, float]:
        """(epochs the OneCycle schedule spans, its pct_start) for a run of `num_epochs`.

        `over_run` lays the schedule over the epochs actually run (the fix for CIRR's 80-epoch quirk).
        """
        epochs = num_epochs if over_run or self.schedule_epochs is None else self.schedule_epochs
        pct = self.pct_start if self.pct_start is not None else (self.warmup_epochs or 0.0) / epochs
        return epochs, pct

    def with_overrides(self, **changes: object) -> Recipe:
        """This recipe with the given fields replaced; `None` values leave a field as it is."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


PAPER = {
    "CIRR": Recipe(
        num_epochs=50,
        learning_rate=1e-5,
        batch_size=128,
        loss_rtc=0.4,
        loss_align=0.4,
        div_factor=25.0,
        pct_start=1 / 50,
        schedule_epochs=80,
        best_from_epoch=19,
    ),
    "FashionIQ": Recipe(
        num_epochs=30,
        learning_rate=2e-5,
        batch_size=128,
        loss_rtc=1.0,
        loss_align=1.0,
        div_factor=100.0,
        warmup_epochs=1.5,
    ),
}

# The tiny preset learns from scratch on toy data in CPU minutes: a higher rate, smaller batches,
# and a schedule over the epochs run. Same optimiser, losses and weights as the paper's recipe.
TOY = {
    "CIRR": replace(PAPER["CIRR"], num_epochs=6, learning_rate=1e-3, batch_size=32, schedule_epochs=None,
                    best_from_epoch=0),
    "FashionIQ": replace(PAPER["FashionIQ"], num_epochs=6, learning_rate=1e-3, batch_size=32),
}


def recipe_for(dataset: str, preset: str) -> Recipe:
    """The default recipe: the paper's for real models, the toy track's for the tiny preset.

    SPRC²'s re-ranker takes the same: the authors' script trains it like SPRC (its one loss is ITM, weight
    1, so the RTC and alignment weights go unused).
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r}: choose one of {DATASETS}")
    return (TOY if preset == "tiny" else PAPER)[dataset]
