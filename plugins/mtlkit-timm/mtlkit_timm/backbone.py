"""A timm model as the shared trunk, built headless (``num_classes=0``) for pooled features.

Pretrained weights are only ever read from a local file (``weights_file``); this backbone never asks
timm to download anything, so it works on machines without network access.
"""

from __future__ import annotations

import difflib
import pickle
import re
from pathlib import Path
from typing import Any

import timm
import torch
from pydantic import Field, field_validator, model_validator
from timm.data import resolve_data_config
from torch import Tensor, nn

from mtlkit.backbone import Backbone
from mtlkit.errors import ConfigError
from mtlkit.options import Options

_UNEXPECTED_KWARG = re.compile(r"unexpected keyword argument '(\w+)'")


def _unknown_model_message(name: str) -> str:
    names = timm.list_models()
    arch = name.split(".", 1)[0]
    near = difflib.get_close_matches(arch, names, n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(near)}" if near else ""
    return (
        f"unknown timm model {name!r}{hint} ({len(names)} models exist; list them with"
        " python -c 'import timm; print(timm.list_models(\"pattern*\"))')"
    )


class TimmOptions(Options):
    """Options of the ``timm`` backbone."""

    model_name: str = "resnet18"
    """Any name from ``timm.list_models()``; a pretrained tag (``resnet18.a1_in1k``) is allowed."""
    pretrained: bool = False
    """Load weights from ``weights_file`` (required then); there are no hub downloads."""
    weights_file: str | None = None
    """A local ``.pth``/``.pt``/``.bin``/``.safetensors`` state dict for ``model_name``."""
    in_chans: int = Field(3, gt=0)
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)
    global_pool: str | None = "avg"
    """timm's pooling (``avg``, ``max``, ``avgmax``, ViTs' ``token``...); None: the model's own."""
    img_size: int | None = Field(None, gt=0)
    """Input size for models that take one (ViTs); others only report it in ``data_config``."""

    @field_validator("model_name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if not timm.is_model(value):
            raise ValueError(_unknown_model_message(value))
        return value

    @field_validator("global_pool")
    @classmethod
    def _pooled(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                "global_pool must not be empty: the backbone has to return pooled [B, D] features"
                " (use 'avg', 'max', 'token', ... or null for the model's default)"
            )
        return value

    @model_validator(mode="after")
    def _weights(self) -> TimmOptions:
        if self.pretrained and not self.weights_file:
            raise ValueError(
                "pretrained=true needs weights_file: a local state-dict file (.pth/.safetensors)"
                " for this model; mtlkit-timm never downloads weights from a hub"
            )
        if self.weights_file and not self.pretrained:
            raise ValueError(
                "weights_file is set but pretrained=false; set pretrained: true to load it"
            )
        if self.weights_file and not Path(self.weights_file).expanduser().is_file():
            raise ValueError(f"weights_file {self.weights_file!r} does not exist or is not a file")
        return self


class TimmBackbone(Backbone):
    """Any timm model with its classifier removed: ``forward`` returns ``[B, feature_dim]``."""

    Options = TimmOptions
    options: TimmOptions

    def __init__(self, options: TimmOptions | None = None) -> None:
        super().__init__(options)
        self.model = self._create(self.options)
        self._dim = self._probe_dim()

    # --- construction ------------------------------------------------------------------------
    @staticmethod
    def _create(o: TimmOptions) -> nn.Module:
        if not timm.is_model(o.model_name):  # options built with model_construct skip validation
            raise ConfigError(f"model_name: {_unknown_model_message(o.model_name)}")
        kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": o.in_chans}
        if o.global_pool is not None:
            kwargs["global_pool"] = o.global_pool
        if o.drop_path_rate:
            kwargs["drop_path_rate"] = o.drop_path_rate
        if o.img_size is not None:
            kwargs["img_size"] = o.img_size
        if o.pretrained:
            if not o.weights_file:
                raise ConfigError("pretrained=true needs weights_file (no hub downloads)")
            path = Path(o.weights_file).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"weights_file {o.weights_file!r} does not exist or is not a file"
                )
            kwargs["pretrained"] = True
            # the file wins over every remote source; clearing them makes a download impossible
            kwargs["pretrained_cfg_overlay"] = {
                "file": str(path.resolve()),
                "source": None,
                "url": None,
                "hf_hub_id": None,
            }
        while True:
            try:
                return timm.create_model(o.model_name, **kwargs)
            except TypeError as exc:
                match = _UNEXPECTED_KWARG.search(str(exc))
                bad = match.group(1) if match else None
                if bad == "img_size":
                    # size-agnostic model (CNN): img_size only shapes data_config
                    kwargs.pop("img_size")
                    continue
                if bad in {"global_pool", "drop_path_rate"}:
                    raise ConfigError(
                        f"{bad}: timm model {o.model_name!r} does not accept it"
                    ) from exc
                raise
            except (RuntimeError, FileNotFoundError, KeyError, pickle.UnpicklingError) as exc:
                if o.pretrained:
                    # the first line only: torch's full text would advise weights_only=False
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
                        reason = "it holds objects other than tensors; mtlkit never unpickles them"
                    raise ConfigError(
                        f"weights_file {o.weights_file!r} could not be loaded into timm model"
                        f" {o.model_name!r}: {type(exc).__name__}: {reason[:300]}"
                    ) from None
                raise

    def _input_size(self) -> tuple[int, int, int]:
        cfg = resolve_data_config({}, model=self.model)
        _, h, w = cfg["input_size"]
        if self.options.img_size is not None:
            h = w = self.options.img_size
        return (self.options.in_chans, int(h), int(w))

    @torch.no_grad()
    def _probe_dim(self) -> int:
        """The real pooled width: ``num_features`` is not it for every model (MobileNetV3's
        ``conv_head`` makes it ``head_hidden_size``), so a dry forward of one image decides."""
        was_training = self.model.training
        self.model.eval()
        try:
            param = next(self.model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            dtype = param.dtype if param is not None else torch.float32
            out = self.model(torch.zeros(1, *self._input_size(), device=device, dtype=dtype))
        finally:
            self.model.train(was_training)
        if out.ndim != 2:
            raise ConfigError(
                f"timm model {self.options.model_name!r} returns features of shape"
                f" {tuple(out.shape)}, not pooled [B, D]; choose a global_pool"
            )
        return int(out.shape[1])

    # --- Backbone interface ------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        return self._dim

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def data_config(self) -> dict[str, Any]:
        """timm's preprocessing (mean, std, interpolation, crop) for this model, with ``input_size``
        and the per-channel mean/std adjusted to ``in_chans`` (and ``img_size`` when given), and
        ``fixed_input_size``: True for models that need that size (ViTs) or when img_size is set.
        """
        cfg = dict(resolve_data_config({}, model=self.model))
        c = self.options.in_chans
        cfg["input_size"] = self._input_size()
        cfg["in_chans"] = c
        # CNNs take any size: input_size is then only a default the data may override
        cfg["fixed_input_size"] = self.options.img_size is not None or bool(
            self.model.pretrained_cfg.get("fixed_input_size", False)
        )
        for key in ("mean", "std"):
            value = tuple(float(v) for v in cfg.get(key, ()))
            if value and len(value) != c:
                avg = sum(value) / len(value)
                cfg[key] = (avg,) * c
        return cfg
