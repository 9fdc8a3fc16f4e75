"""LT-MIA's classifier: a small transformer over per-token feature vectors, one logit per window.

Architecture (the authors' ``TinyMIASequence``): linear projection of the features, LayerNorm,
dropout, sinusoidal positions, a post-norm transformer encoder (ReLU feed-forward), attention
pooling over valid tokens (Linear-Tanh-Linear scores, softmax), and an MLP head
(Linear-ReLU-Dropout-Linear). Defaults are the authors' released configuration: d_model 192,
8 heads, 2 layers, feed-forward 576, dropout 0.05; BCE with label smoothing 0.02, AdamW (weight
decay 0.028), linear warm-up then cosine decay, gradient clipping at 1.

One addition: the features are standardised (per-feature mean and standard deviation of the
training set, stored with the weights) and clipped to +-10 standard deviations before the
projection. It changes nothing the network could not learn, but keeps optimisation stable when
feature scales differ by orders of magnitude (summed NLL differences vs normalised ranks), and
bounds the input on models far from the training distribution.

Saved as ``name.safetensors`` (weights and standardisation) plus ``name.json`` (architecture,
feature spec, training summary, format version and the weights' SHA-256). Nothing is pickled.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from memlens.errors import ClassifierError  # noqa: F401  (re-exported: its old home)
from memlens.ltmia.features import FeatureSpec, pad

FORMAT = "memlens-ltmia-classifier"
FORMAT_VERSION = 1


@dataclass
class NetConfig:
    d_in: int
    d_model: int = 192
    n_heads: int = 8
    n_layers: int = 2
    d_ff: int = 576
    dropout: float = 0.05
    clip: float = 10.0


def sinusoidal_positions(length: int, d_model: int, device=None) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class LTMIANet(nn.Module):
    """features [B, T, D], mask [B, T] (True = valid) -> logits [B]."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.register_buffer("feat_mean", torch.zeros(cfg.d_in))
        self.register_buffer("feat_std", torch.ones(cfg.d_in))
        self.proj = nn.Linear(cfg.d_in, d)
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(d_model=d, nhead=cfg.n_heads, dim_feedforward=cfg.d_ff, dropout=cfg.dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=cfg.n_layers, enable_nested_tensor=False)
        self.attn_pool = nn.Sequential(nn.Linear(d, d // 2), nn.Tanh(), nn.Linear(d // 2, 1))
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(d, 1))

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = (feats.float() - self.feat_mean) / self.feat_std
        x = x.clamp(-self.cfg.clip, self.cfg.clip) * mask[..., None]
        x = self.dropout(self.norm(self.proj(x)))
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype)
        pad_mask = ~mask
        x = self.encoder(x, src_key_padding_mask=pad_mask)
        w = self.attn_pool(x).squeeze(-1).float().masked_fill(pad_mask, float("-inf"))
        w = torch.softmax(w, dim=-1).nan_to_num(0.0)  # an all-padding row gets zero weights, not NaN
        pooled = (x.float() * w[..., None]).sum(1)
        return self.head(pooled.to(x.dtype)).squeeze(-1).float()


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_padded(X: Any, lengths: Any, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Accept a list of [T_i, D] windows, or a padded [n, T, D] array with ``lengths``."""
    if isinstance(X, np.ndarray) and X.ndim == 3:
        if X.shape[2] != spec.dim:
            raise ClassifierError(f"features have {X.shape[2]} columns; this classifier takes {spec.dim} (k={spec.k})")
        if lengths is None:
            lengths = np.full(len(X), X.shape[1], dtype=np.int64)
        lengths = np.minimum(np.asarray(lengths, dtype=np.int64), spec.max_tokens)
        X = X[:, : spec.max_tokens]
        return X, lengths
    if lengths is not None:
        raise ClassifierError("lengths are only taken with a padded [n, T, D] array")
    return pad(list(X), spec.max_tokens, spec.dim)


class LTMIAClassifier:
    """LT-MIA's sequence classifier with a scikit-learn-like interface.

    ``X``: a list of ``[T_i, D]`` feature windows (see :func:`memlens.ltmia.features.input_features`)
    or a padded ``[n, T, D]`` array with ``lengths``; ``y``: 1 member, 0 non-member.

    >>> clf = LTMIAClassifier(spec=FeatureSpec(k=20), epochs=10).fit(X, y)
    >>> p = clf.predict_proba(X_test)[:, 1]
    >>> clf.save("clf.safetensors"); clf = LTMIAClassifier.load("clf.safetensors")

    ``warm_start=True``: :meth:`fit` continues from the current weights (a fitted or loaded
    classifier; none yet: from scratch) and keeps their standardisation, e.g. to fine-tune the
    shipped classifier on real-model runs (a loaded classifier has the default training settings:
    set ``epochs``, ``lr`` ... on it before fitting).
    """

    def __init__(self, spec: FeatureSpec | None = None, *, d_model: int = 192, n_heads: int = 8, n_layers: int = 2,
                 d_ff: int = 576, dropout: float = 0.05, epochs: int = 20, batch_size: int = 256, lr: float = 1e-3,
                 weight_decay: float = 0.028, warmup_frac: float = 0.1, min_lr: float = 1e-6,
                 label_smoothing: float = 0.02, grad_clip: float = 1.0, max_steps: int | None = None,
                 val_fraction: float = 0.0, warm_start: bool = False, device: str = "auto", seed: int = 0, verbose: bool = False):
        self.spec = spec or FeatureSpec()
        self.net_config = NetConfig(self.spec.dim, d_model, n_heads, n_layers, d_ff, dropout)
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.weight_decay, self.warmup_frac, self.min_lr = weight_decay, warmup_frac, min_lr
        self.label_smoothing, self.grad_clip, self.max_steps = label_smoothing, grad_clip, max_steps
        self.val_fraction, self.warm_start = val_fraction, warm_start
        self.device, self.seed, self.verbose = device, seed, verbose
        self.net: LTMIANet | None = None
        self.history: dict[str, Any] = {}

    # -- training --------------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[int], lengths: Any = None, groups: Sequence[Any] | None = None,
            sample_weight: Sequence[float] | None = None) -> "LTMIAClassifier":
        """Train on features ``X`` and labels ``y``.

        With ``val_fraction`` > 0 a validation part is held out (whole ``groups``, e.g. runs, when
        given) and the epoch with the best validation AUC is kept, as the authors do.
        ``sample_weight`` weighs each window's loss (e.g. to balance runs of different sizes).
        """
        from sklearn.metrics import roc_auc_score

        Xp, lens = _as_padded(X, lengths, self.spec)
        y = np.asarray(y, dtype=np.float32)
        if len(y) != len(Xp):
            raise ClassifierError(f"{len(Xp)} windows but {len(y)} labels")
        if set(np.unique(y).tolist()) != {0.0, 1.0}:
            raise ClassifierError("training needs both members (1) and non-members (0)")
        wts = np.ones(len(y), np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
        dev = _device(self.device)
        g = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)

        idx = np.arange(len(y))
        val_idx = np.array([], dtype=np.int64)
        if self.val_fraction > 0:
            if groups is not None:
                gs = np.asarray(groups)
                uniq = np.unique(gs)
                n_val = max(1, int(round(self.val_fraction * len(uniq))))
                val_groups = set(rng.choice(uniq, n_val, replace=False).tolist()) if len(uniq) > 1 else set()
                is_val = np.array([g_ in val_groups for g_ in gs])
            else:
                is_val = rng.random(len(y)) < self.val_fraction
            if 0 < is_val.sum() and len(np.unique(y[is_val])) == 2 and len(np.unique(y[~is_val])) == 2:
                val_idx, idx = np.flatnonzero(is_val), np.flatnonzero(~is_val)

        warm = self.warm_start and self.net is not None
        if warm:
            # the first layer's weights were learned on inputs scaled by the stored standardisation: it stays
            net = self.net
        else:
            # standardisation from valid (unpadded) training positions, subsampled for speed
            sub = rng.choice(idx, min(len(idx), 4096), replace=False)
            valid = np.concatenate([Xp[i, : lens[i]] for i in sub]).astype(np.float64)
            mean, std = valid.mean(0), valid.std(0)
            std = np.where(std < 1e-6, 1.0, std)
            net = LTMIANet(self.net_config)
            net.feat_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            net.feat_std.copy_(torch.from_numpy(std.astype(np.float32)))
        net.to(dev)
        # The whole training set on the device once (half precision halves its size); batches
        # are then gathers on the device, without a loader.
        store_dtype = torch.float16 if dev.type == "cuda" else torch.float32
        Xt = torch.from_numpy(np.ascontiguousarray(Xp)).to(dev, store_dtype)
        Lt = torch.from_numpy(lens).to(dev)
        Yt = torch.from_numpy(y).to(dev)
        Wt = torch.from_numpy(wts).to(dev)
        pos = torch.arange(Xt.shape[1], device=dev)

        steps_per_epoch = max(1, math.ceil(len(idx) / self.batch_size))
        total = self.epochs * steps_per_epoch
        if self.max_steps:
            total = min(total, self.max_steps)
        warmup = int(self.warmup_frac * total)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def lr_at(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            p = (step - warmup) / max(1, total - warmup)
            return max(self.min_lr / self.lr, 0.5 * (1 + math.cos(math.pi * p)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        amp = dev.type == "cuda"
        t0 = time.perf_counter()
        step, best_auc, best_state, log = 0, -1.0, None, []
        idx_t = torch.from_numpy(idx).to(dev)
        while step < total:
            net.train()
            perm = idx_t[torch.randperm(len(idx_t), generator=g).to(dev)]
            ep_loss, nb = 0.0, 0
            for b in range(steps_per_epoch):
                if step >= total:
                    break
                bi = perm[b * self.batch_size:(b + 1) * self.batch_size]
                L = int(Lt[bi].max().item()) if dev.type != "cuda" else Xt.shape[1]
                feats, mask = Xt[bi, :L], pos[:L][None, :] < Lt[bi][:, None]
                target = Yt[bi] * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    logits = net(feats, mask)
                loss = (F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none") * Wt[bi]).sum() / Wt[bi].sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
                opt.step()
                sched.step()
                step += 1
                ep_loss += float(loss.detach()) if b % 20 == 0 else 0.0
                nb += 1 if b % 20 == 0 else 0
            entry = {"step": step, "train_loss": ep_loss / max(1, nb)}
            if len(val_idx):
                self.net = net
                s = self._logits_padded(Xt, Lt, torch.from_numpy(val_idx).to(dev))
                auc = float(roc_auc_score(y[val_idx], s))
                entry["val_auc"] = auc
                if auc > best_auc:
                    best_auc = auc
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            log.append(entry)
            if self.verbose:
                print(f"[ltmia] {entry} {time.perf_counter() - t0:.1f}s", flush=True)
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        self.net = net
        self.history = {"steps": step, "epochs": self.epochs, "windows": int(len(idx)), "val_windows": int(len(val_idx)),
                        "best_val_auc": best_auc if best_state is not None else None, "seconds": round(time.perf_counter() - t0, 2),
                        "log": log, "device": str(dev), "warm_start": warm}
        return self

    # -- inference -------------------------------------------------------------------------------
    @torch.inference_mode()
    def _logits_padded(self, Xt: torch.Tensor, Lt: torch.Tensor, which: torch.Tensor | None = None,
                       batch_size: int = 1024) -> np.ndarray:
        net = self._require()
        net.eval()
        dev = next(net.parameters()).device
        which = torch.arange(len(Xt), device=Xt.device) if which is None else which
        pos = torch.arange(Xt.shape[1], device=Xt.device)
        out = []
        amp = dev.type == "cuda"
        for lo in range(0, len(which), batch_size):
            bi = which[lo:lo + batch_size]
            mask = pos[None, :] < Lt[bi][:, None]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                out.append(net(Xt[bi].to(dev), mask.to(dev)).float().cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    def decision_function(self, X: Any, lengths: Any = None, batch_size: int = 1024) -> np.ndarray:
        """The classifier's logit per window (higher = more likely a member). Empty windows get NaN."""
        Xp, lens = _as_padded(X, lengths, self.spec)
        s = self._logits_padded(torch.from_numpy(np.ascontiguousarray(Xp)), torch.from_numpy(lens), batch_size=batch_size)
        s[lens == 0] = np.nan
        return s

    def predict_proba(self, X: Any, lengths: Any = None) -> np.ndarray:
        """[n, 2]: probabilities of non-member and member."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X, lengths)))
        return np.stack([1 - p, p], axis=1)

    def predict(self, X: Any, lengths: Any = None, threshold: float = 0.5) -> np.ndarray:
        return (self.predict_proba(X, lengths)[:, 1] >= threshold).astype(int)

    def score(self, X: Any, y: Sequence[int], lengths: Any = None) -> float:
        """ROC AUC on ``X``, ``y``."""
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(np.asarray(y), self.decision_function(X, lengths)))

    def to(self, device: str | torch.device) -> "LTMIAClassifier":
        self._require().to(_device(device))
        return self

    def _require(self) -> LTMIANet:
        if self.net is None:
            raise ClassifierError("the classifier is not fitted (call fit() or load())")
        return self.net

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``path`` (.safetensors: weights) and its .json (architecture, spec, training)."""
        from safetensors.torch import save_file

        net = self._require()
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
        save_file(tensors, str(path), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "weights": path.name, "weights_sha256": digest,
            "net": asdict(self.net_config), "features": self.spec.to_dict(),
            "training": {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
                         "warmup_frac": self.warmup_frac, "label_smoothing": self.label_smoothing, "seed": self.seed,
                         **{k: v for k, v in self.history.items() if k != "log"}},
            **(extra or {}),
        }
        from memlens._version import __version__

        meta["memlens_version"] = __version__
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", verify: bool = True) -> "LTMIAClassifier":
        """Load a classifier written by :meth:`save` (safetensors + json; never unpickles)."""
        from safetensors.torch import load_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        spec_path = path.with_suffix(".json")
        if not path.is_file() or not spec_path.is_file():
            raise ClassifierError(f"an LT-MIA classifier is a .safetensors file with its .json beside it; missing: "
                                  f"{', '.join(str(p) for p in (path, spec_path) if not p.is_file())}")
        meta = json.loads(spec_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ClassifierError(f"{spec_path} is not an LT-MIA classifier spec (format {meta.get('format')!r})")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ClassifierError(f"{path} has format version {meta['format_version']}; this memlens reads up to {FORMAT_VERSION}")
        if verify and meta.get("weights_sha256") and hashlib.sha256(path.read_bytes()).hexdigest() != meta["weights_sha256"]:
            raise ClassifierError(f"{path} does not match the SHA-256 recorded in {spec_path.name}")
        spec = FeatureSpec.from_dict(meta["features"])
        n = meta["net"]
        clf = cls(spec, d_model=n["d_model"], n_heads=n["n_heads"], n_layers=n["n_layers"], d_ff=n["d_ff"], dropout=n["dropout"],
                  device=device)
        clf.net_config = NetConfig(**n)
        net = LTMIANet(clf.net_config)
        state = load_file(str(path))
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ClassifierError(f"{path}: weights do not fit the architecture (missing {missing}, unexpected {unexpected})")
        clf.net = net.to(_device(device)).eval()
        clf.history = dict(meta.get("training", {}))
        clf.meta = meta
        return clf
