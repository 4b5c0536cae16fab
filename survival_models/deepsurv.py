"""DeepSurv: a neural network trained on the Cox partial likelihood (Katzman et al. 2018).

A multilayer perceptron maps the features to a log-risk; it is trained full batch
(the partial likelihood needs whole risk sets) with AdamW, dropout and early
stopping on an inner, event-stratified validation part of the training data.
Survival curves use the Breslow baseline hazard of the final network on all
training rows. With ``hidden=()`` it is a linear Cox model.

Sequence blocks (per-slice vectors, see ``BlockLayout``) are pooled over depth by
gated attention (Ilse et al. 2018), learned end to end; padded slices get exactly
zero weight. Several blocks are fused late: concatenated, or weighted by a gate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from bench.errors import ModelError
from bench.plugins.options import check_config
from survival_models.base import BlockLayout, Interval, SurvivalModel, option

# Small tabular data on the CPU: float64 costs little and keeps the likelihood exact to ~1e-12.
DTYPE = torch.float64


@dataclass(frozen=True)
class DeepSurvConfig:
    # hidden layer widths, e.g. "32/16" on the command line; () is a linear Cox model
    hidden: tuple[int, ...] = option((32,), Interval(1, None, "left"))
    activation: Literal["relu", "selu"] = "relu"  # nonlinearity after each hidden layer
    dropout: float = option(0.1, Interval(0, 1, "left"))  # dropout after each hidden layer
    weight_decay: float = option(1e-3, Interval(0, None, "left"))  # AdamW's decoupled weight decay
    lr: float = option(1e-2, Interval(0, None, "neither"))  # Adam learning rate
    max_epochs: int = option(300, Interval(1, None, "left"))  # full-batch epochs at most
    # stop after this many epochs without a better validation loss
    patience: int = option(20, Interval(1, None, "left"))
    # inner validation part for early stopping (stratified by event); 0 = none
    validation_fraction: float = option(0.2, Interval(0, 1, "left"))
    ties: Literal["breslow", "efron"] = "efron"  # partial likelihood for tied event times
    fusion: Literal["concat", "gate"] = "concat"  # how several feature blocks are joined
    fusion_width: int = option(16, Interval(1, None, "left"))  # gate fusion: common width each block is encoded to
    # width of the gated-attention scorer for sequence blocks
    attention_hidden: int = option(32, Interval(1, None, "left"))
    # torch CPU threads while fitting and predicting, restored afterwards; 0 keeps torch's setting. One thread is
    # fastest for data this small and does not oversubscribe cores when combinations run in parallel.
    threads: int = option(1, Interval(0, None, "left"))

    def __post_init__(self) -> None:
        check_config(self, "model 'deepsurv'")  # the declared constraints also guard configs built in code


class DeepSurv(SurvivalModel):
    name = "deepsurv"
    version = "1"
    Config = DeepSurvConfig
    reads_sequences = True
    imports = ("torch._dynamo",)  # torch.optim's first optimizer imports it: 3 s on 2 cores

    def fit(self, X: np.ndarray, y: np.ndarray) -> DeepSurv:
        c = self.config
        X = self._check(X, "training")
        event, time = _outcomes(y)
        if len(event) != len(X):
            raise ModelError(f"model {self.name!r}: X has {len(X)} rows but y has {len(event)}")
        if not event.any():
            raise ModelError(
                f"model {self.name!r} cannot fit: the training data has no event; "
                "use a cohort or fold with at least one observed event"
            )
        layout = self.layout_for(X)
        self.signature_ = _signature(layout)
        seed = self.random_state if self.random_state is not None else int(np.random.SeedSequence().entropy % 2**63)
        rng = np.random.default_rng(seed)
        train, validation = _inner_split(event, c.validation_fraction, rng)

        # Init and dropout draw from torch's global generator: seed a forked copy so the caller's state survives.
        with torch.random.fork_rng(devices=[]), _threads(c.threads):
            torch.manual_seed(seed)
            self.network_ = _Network(self.signature_, c)
            inputs = self._inputs(X, layout)
            self.epochs_ = self._train(inputs, time, event, train, validation)
            self.network_.eval()
            with torch.no_grad():
                risk = self.network_(inputs)[0].numpy()
        self.baseline_ = breslow_baseline(risk, time, event)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The network's log-risk; higher means an earlier event."""
        return self._forward(X)[0].numpy().copy()

    def predict_survival_function(self, X: np.ndarray, times: np.ndarray) -> np.ndarray:
        """S(t | x) = exp(-H0(t) exp(f(x))) at ``times``, [n_samples, n_times]; 1 before the first event."""
        event_times, cumulative = self.baseline_
        at = np.searchsorted(event_times, np.asarray(times, dtype=float), side="right") - 1
        hazard = np.where(at >= 0, cumulative[np.maximum(at, 0)], 0.0)
        with np.errstate(divide="ignore"):  # log(0) = -inf before the first event gives S = 1
            log_hazard = np.log(hazard)[None, :] + self.predict(X)[:, None]
        return np.exp(-np.exp(log_hazard))

    def attention_weights(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Per sequence block, the [n, slices] attention over depth; padded slices weigh exactly 0."""
        return {k: v.numpy().copy() for k, v in self._forward(X)[1].items()}

    def gate_weights(self, X: np.ndarray) -> np.ndarray:
        """[n, blocks] gate of ``fusion="gate"``, blocks in layout order; rows sum to 1."""
        if self.config.fusion != "gate":
            raise ModelError(f"model {self.name!r} has gate weights only with fusion=gate, not {self.config.fusion}")
        return self._forward(X)[2].numpy().copy()

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        layers = trial.suggest_int("layers", 0, 2)
        width = trial.suggest_int("width", 8, 128, log=True) if layers else 0
        return {
            "hidden": (width,) * layers,
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
            "lr": trial.suggest_float("lr", 1e-3, 3e-2, log=True),
        }

    def _train(
        self,
        inputs: list[_Block],
        time: np.ndarray,
        event: np.ndarray,
        train: np.ndarray,
        validation: np.ndarray,
    ) -> int:
        """Full-batch AdamW; returns the epochs run. The best-validation state is restored."""
        c = self.config
        net = self.network_
        fit_sets = RiskSets(time[train], event[train], c.ties)
        check_sets = RiskSets(time[validation], event[validation], c.ties) if len(validation) else None
        fit_inputs = [b.take(train) for b in inputs]
        check_inputs = [b.take(validation) for b in inputs]
        optimiser = torch.optim.AdamW(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        best, best_state, waited, epoch = np.inf, None, 0, 0
        for epoch in range(1, c.max_epochs + 1):
            net.train()
            optimiser.zero_grad()
            loss = fit_sets.loss(net(fit_inputs)[0])
            if not torch.isfinite(loss):
                raise ModelError(
                    f"model {self.name!r} diverged (loss {loss.item()} at epoch {epoch}); lower lr (now {c.lr})"
                )
            loss.backward()
            optimiser.step()
            if check_sets is None:
                continue
            net.eval()
            with torch.no_grad():
                score = check_sets.loss(net(check_inputs)[0]).item()
            if score < best:
                best, waited = score, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                waited += 1
                if waited >= c.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        return epoch

    def _forward(self, X: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        X = self._check(X, "prediction")
        layout = self.layout_for(X)
        if _signature(layout) != self.signature_:
            raise ModelError(
                f"model {self.name!r} was fit on blocks {self.signature_} but X has blocks {_signature(layout)}"
            )
        self.network_.eval()
        with torch.no_grad(), _threads(self.config.threads):
            return self.network_(self._inputs(X, layout))

    def _check(self, X: np.ndarray, what: str) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise ModelError(f"model {self.name!r} needs a 2-d feature matrix, got shape {X.shape}")
        bad = np.argwhere(~np.isfinite(X))
        if bad.size:
            row, col = bad[0]
            raise ModelError(
                f"model {self.name!r}: {what} features hold {len(bad)} non-finite value(s), first X[{row}, {col}] = "
                f"{X[row, col]}; impute or drop them first"
            )
        return X

    def _inputs(self, X: np.ndarray, layout: tuple[BlockLayout, ...]) -> list[_Block]:
        if layout[-1].stop != X.shape[1]:
            raise ModelError(f"model {self.name!r}: the layout covers {layout[-1].stop} columns but X has {X.shape[1]}")
        blocks = []
        for block in layout:
            values = torch.as_tensor(block.values(X), dtype=DTYPE)
            if block.sequence is None:
                blocks.append(_Block(values, None))
                continue
            mask = torch.as_tensor(block.mask(X))
            empty = np.flatnonzero(~mask.any(dim=1).numpy())
            if empty.size:
                raise ModelError(f"model {self.name!r}: row {empty[0]} of sequence block {block.name!r} has no slice")
            blocks.append(_Block(values, mask))
        return blocks


def breslow_baseline(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breslow's cumulative baseline hazard: (distinct event times, H0 at each), for log-risks ``risk``."""
    order = np.argsort(-time, kind="stable")
    # Shifting by the largest risk avoids overflow; H0 scales back by the same factor.
    shift = risk.max()
    at_risk = np.cumsum(np.exp(risk[order] - shift))  # descending time: everyone at or after time[order[i]]
    distinct, first = np.unique(-time[order], return_index=True)  # ascending in -time
    last = np.r_[first[1:], len(time)] - 1  # a tie group's risk set includes the whole group
    deaths = np.add.reduceat(event[order].astype(float), first)
    keep = deaths > 0
    increments = deaths[keep] / at_risk[last[keep]] * np.exp(-shift)
    times = -distinct[keep]
    return times[::-1].copy(), np.cumsum(increments[::-1])


class RiskSets:
    """The risk sets of one sample, precomputed once, for the Cox partial likelihood of any risk vector."""

    def __init__(self, time: np.ndarray, event: np.ndarray, ties: Literal["breslow", "efron"]):
        order = np.argsort(-time, kind="stable")  # descending: a cumulative sum gives sums over risk sets
        sorted_time, sorted_event = time[order], event[order].astype(bool)
        _, group, counts = np.unique(-sorted_time, return_inverse=True, return_counts=True)
        last = np.cumsum(counts) - 1  # the last sorted row of each tie group
        events = np.flatnonzero(sorted_event)
        event_group = group[events]
        deaths = np.bincount(event_group, minlength=len(counts))
        # Efron: the l-th of d tied events (l = 0..d-1) sees the risk set less l/d of the tied events' risk.
        rank = np.arange(len(events)) - np.searchsorted(event_group, event_group)
        fraction = rank / deaths[event_group] if ties == "efron" else np.zeros(len(events))
        self.order = torch.as_tensor(order)
        self.events = torch.as_tensor(events)
        self.event_group = torch.as_tensor(event_group)
        self.risk_end = torch.as_tensor(last[event_group])
        self.fraction = torch.as_tensor(fraction, dtype=DTYPE)
        self.n_groups = len(counts)
        self.n_events = len(events)

    def log_likelihood(self, risk: torch.Tensor) -> torch.Tensor:
        """The Cox log partial likelihood of log-risks ``risk`` (in the rows' original order)."""
        if self.n_events == 0:
            return risk.sum() * 0.0
        eta = risk[self.order]
        shift = eta.max().detach()  # stabilises exp(); cancels between the two terms
        weight = torch.exp(eta - shift)
        at_risk = torch.cumsum(weight, 0)[self.risk_end]
        event_weight = weight[self.events]
        tied = torch.zeros(self.n_groups, dtype=weight.dtype).index_add(0, self.event_group, event_weight)
        denominator = at_risk - self.fraction * tied[self.event_group]
        return eta[self.events].sum() - (torch.log(denominator) + shift).sum()

    def loss(self, risk: torch.Tensor) -> torch.Tensor:
        """Negative log partial likelihood per event, so the learning rate does not depend on the sample size."""
        return -self.log_likelihood(risk) / max(self.n_events, 1)


@dataclass
class _Block:
    values: torch.Tensor  # [n, features], or [n, slices, features] for a sequence
    mask: torch.Tensor | None  # [n, slices] True for real slices; None for a flat block

    def take(self, rows: np.ndarray) -> _Block:
        index = torch.as_tensor(rows)
        return _Block(self.values[index], None if self.mask is None else self.mask[index])


class _GatedAttention(nn.Module):
    """Attention pooling over depth (Ilse et al. 2018): a_d ∝ exp(w^T (tanh(V h_d) ⊙ sigmoid(U h_d)))."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.V = nn.Linear(features, hidden)
        self.U = nn.Linear(features, hidden)
        self.w = nn.Linear(hidden, 1)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Zero the padding first, so its values reach neither the scores nor the pooled vector.
        h = torch.where(mask[..., None], values, 0.0)
        scores = self.w(torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))).squeeze(-1)
        weights = torch.softmax(scores.masked_fill(~mask, -torch.inf), dim=1)  # exp(-inf) = 0 exactly
        return (weights[..., None] * h).sum(dim=1), weights


class _Network(nn.Module):
    """Block encoders (identity or attention pooling), late fusion, then the MLP to one log-risk."""

    def __init__(self, signature: tuple[tuple[str, int, bool], ...], c: DeepSurvConfig):
        super().__init__()
        self.names = [name for name, _, _ in signature]
        self.pools = nn.ModuleDict(
            {name: _GatedAttention(width, c.attention_hidden) for name, width, sequence in signature if sequence}
        )
        widths = [width for _, width, _ in signature]
        self.gate = c.fusion == "gate"
        if self.gate:
            self.encoders = nn.ModuleList(nn.Linear(w, c.fusion_width) for w in widths)
            self.gate_scores = nn.Linear(len(widths) * c.fusion_width, len(widths))
            width = c.fusion_width
        else:
            width = sum(widths)
        layers: list[nn.Module] = []
        for size in c.hidden:
            activation = nn.ReLU() if c.activation == "relu" else nn.SELU()
            layers += [nn.Linear(width, size), activation, nn.Dropout(c.dropout)]
            width = size
        # The Cox likelihood ignores a constant, so the head has no bias (and a linear model's weight is its coef).
        layers.append(nn.Linear(width, 1, bias=False))
        self.mlp = nn.Sequential(*layers)
        self.to(DTYPE)

    def forward(self, blocks: list[_Block]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(log-risk [n], attention per sequence block [n, slices], gate [n, blocks] or an empty tensor)."""
        parts, attention = [], {}
        for name, block in zip(self.names, blocks):
            if block.mask is None:
                parts.append(block.values)
            else:
                pooled, attention[name] = self.pools[name](block.values, block.mask)
                parts.append(pooled)
        if self.gate:
            embedded = [encoder(part) for encoder, part in zip(self.encoders, parts)]
            gate = torch.softmax(self.gate_scores(torch.cat(embedded, dim=1)), dim=1)
            fused = (torch.stack(embedded, dim=1) * gate[..., None]).sum(dim=1)
        else:
            gate = torch.empty(0)
            fused = torch.cat(parts, dim=1)
        return self.mlp(fused).squeeze(-1), attention, gate


def _signature(layout: tuple[BlockLayout, ...]) -> tuple[tuple[str, int, bool], ...]:
    """(name, input width, is a sequence) per block: what the network is built for.

    The number of slices is left out: attention pools over any depth, so a model can
    predict on sequences padded to another length than in training.
    """
    return tuple(
        (b.name, b.stop - b.start, False) if b.sequence is None else (b.name, b.sequence[1], True) for b in layout
    )


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads (0: unchanged), then restore the process-wide setting."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _outcomes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(event, time) from scikit-survival's structured array: the first field is the event, the second the time."""
    event_field, time_field = y.dtype.names
    event, time = np.asarray(y[event_field], dtype=bool), np.asarray(y[time_field], dtype=float)
    if not np.isfinite(time).all():
        raise ModelError("model 'deepsurv': survival times must be finite")
    return event, time


def _inner_split(event: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows, stratified by event; no validation when it could hold no event."""
    rows = np.arange(len(event))
    events, censored = rows[event], rows[~event]
    # Both parts need an event: the validation loss and the training loss are undefined without one.
    n_events = min(round(fraction * len(events)), len(events) - 1)
    if n_events < 1:
        return rows, rows[:0]
    validation = np.sort(
        np.concatenate(
            [rng.permutation(events)[:n_events], rng.permutation(censored)[: round(fraction * len(censored))]]
        )
    )
    return np.setdiff1d(rows, validation), validation
