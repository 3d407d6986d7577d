"""Learned intra reference codec: an overfitted latent pyramid plus a tiny synthesis network.

The Cool-chic / C3 recipe, cut down so it trains in a few hundred steps. Every frame is
coded on its own, and its decoder is *trained at encode time*: the encoder fits latents
and network weights to this one frame under a rate-distortion loss, then sends both.

1. Representation. Latent grids at ``LEVELS`` resolutions (1, 1/2, 1/4, ... of the
   frame); level 0 has one channel (luma detail), coarser levels three (Y, Cb, Cr).
   Each grid is upsampled to full resolution by repeated 2x bilinear steps (the
   (1/4, 3/4) triangle filter), giving ``F`` feature channels per pixel.
2. Synthesis, per pixel: ``out = Ws x + bs + W2 relu(W1 x + b1)`` (a linear skip path
   plus an MLP with ``HIDDEN`` units), then a residual 3x3 convolution on the three
   output channels; the output is BT.709 YCbCr, turned into RGB.
3. Initialisation (what makes few steps enough): the latents start as a closed-loop
   Laplacian pyramid of the frame quantised with step ``step`` and the skip path as the
   identity, so step 0 is already a working pyramid codec; training then moves latents
   and weights to lower ``D + lambda * R``.
4. Training (torch on ``config["device"]``): Adam with cosine decay; the distortion sees
   rounded latents and weights (straight-through), the rate proxy sees latents plus
   uniform noise under a Laplace model per latent group. The loss is
   ``D + lambda * bits / pixels`` with D the (6 Y + Cb + Cr) / 8 weighted MSE and
   ``lambda = LAMBDA_SCALE * step**2``; ``step`` follows ``config["quality"]``. The
   step count is ``STEP_BUDGET[device]``'s pixel-steps / pixels, at least MIN_STEPS
   (``config["train_steps"]`` overrides it): a time budget counted in steps.
5. The encoder codes both the trained result and the untrained pyramid and keeps the one
   with the lower measured ``D + lambda * R`` (bytes counted, decoded exactly as the
   decoder will), so training can only help.
6. Entropy coding: the integer latents and the weights (integers in units of
   ``2**-WEIGHT_BITS``) are arithmetic-coded, group by group, under a discretised
   Laplace distribution whose bound and scale are in the stream.

Bitstream of one frame: header ``>4sBHHI`` (magic ``b"CFN1"``, version, width, height,
quantiser step in units of 2**-16), two bytes per group (bound bits, scale code), then
the arithmetic-coded payload. Groups: each latent grid channel, all weight matrices, all
biases.

Determinism: the decoder's synthesis is integer arithmetic on the CPU (fixed point with
``FEATURE_BITS`` fractional bits, int64 tensors), so the same bytes give the same frame
bit for bit in any process, on any device setting. Training runs in floating point on
``config["device"]``; only the encoder depends on it.
"""

import math
import struct

import numpy as np
import torch

DEFAULT_CONFIG = {"quality": 0.5, "device": "cpu", "train_steps": None}

MAGIC = b"CFN1"
VERSION = 1
HEADER = ">4sBHHI"

LEVELS = 4  # latent grids at 1, 1/2, 1/4, 1/8 of the frame
HIDDEN = 12  # units of the synthesis MLP
WEIGHT_BITS = 6  # weights are coded as integers in units of 1/64
FEATURE_BITS = 16  # fractional bits of the decoder's fixed-point activations
STEP_BITS = 16  # the header stores the latent step in units of 2**-16

MAX_STEP = 0.14  # latent quantiser step at quality 0 (pixel values scaled to [0, 1])
MIN_STEP = 0.008  # ... and at quality 1
LAMBDA_SCALE = 0.12  # lambda = LAMBDA_SCALE * step**2: the high-rate slope of a uniform quantiser

LATENT_RATE = 0.03  # Adam learning rate of the latents (in quantiser steps)
NET_RATE = 0.01  # Adam learning rate of the network weights
# The time budget, counted in steps (candidates have no clock): per device, training steps x
# pixels per frame, and the most steps. The CPU budget is a smoke test (tens of steps, a
# second or two per QCIF frame, where training gains little); the GPU one trains for real.
STEP_BUDGET = {"cpu": (1.0e6, 50), "cuda": (1.5e9, 3000)}
MIN_STEPS = 10

# ITU-R BT.709 full range, as in the other seeds and the evaluation's PSNR-Y.
RGB_TO_YCBCR = (
    (0.2126, 0.7152, 0.0722),
    (-0.11457211, -0.38542789, 0.5),
    (0.5, -0.45415291, -0.04584709),
)
YCBCR_TO_RGB = (
    (1.0, 0.0, 1.5748),
    (1.0, -0.18732427, -0.46812427),
    (1.0, 1.8556, 0.0),
)
_COLOUR_BITS = 14  # fixed-point precision of the decoder's YCbCr -> RGB matrix
_TOTAL_BITS = 16  # the arithmetic coder's frequency tables sum to 2**16
_CHANNEL_WEIGHTS = (6.0 / 8.0, 1.0 / 8.0, 1.0 / 8.0)  # distortion weights of Y, Cb, Cr


# ---------------------------------------------------------------------------- set-up


def _device(config: dict) -> torch.device:
    """The torch device named by config["device"]; "auto" picks CUDA when present."""
    name = str(config.get("device") or "cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"overfit_nn: config['device'] is {name!r} but torch sees no CUDA device")
    return torch.device(name)


def quality_to_step(quality: float) -> int:
    """Map quality in [0, 1] to the latent step, in units of 2**-STEP_BITS (as the header stores it)."""
    quality = float(quality)
    if not 0.0 <= quality <= 1.0:
        raise ValueError(f"config['quality'] must be in [0, 1], got {quality}")
    step = MAX_STEP * (MIN_STEP / MAX_STEP) ** quality
    return max(1, int(round(step * (1 << STEP_BITS))))


def training_steps(config: dict, device: torch.device, pixels: int) -> int:
    """The step budget: config["train_steps"] if set, else from STEP_BUDGET of the device."""
    if config.get("train_steps") is not None:
        return max(0, int(config["train_steps"]))
    pixel_steps, most = STEP_BUDGET["cuda" if device.type == "cuda" else "cpu"]
    return int(min(most, max(MIN_STEPS, pixel_steps // pixels)))


def _level_shapes(h: int, w: int) -> list[tuple[int, int]]:
    shapes = [(h, w)]
    for _ in range(1, LEVELS):
        ph, pw = shapes[-1]
        shapes.append(((ph + 1) // 2, (pw + 1) // 2))
    return shapes


def _level_channels(level: int) -> int:
    return 1 if level == 0 else 3


def _n_features() -> int:
    return sum(_level_channels(k) for k in range(LEVELS))


def _weight_shapes() -> dict[str, tuple[int, ...]]:
    """The synthesis parameters, in bitstream order: matrices first, then biases."""
    f = _n_features()
    return {
        "skip_w": (3, f), "mlp_w1": (HIDDEN, f), "mlp_w2": (3, HIDDEN), "conv_w": (3, 3, 3, 3),
        "skip_b": (3,), "mlp_b1": (HIDDEN,), "conv_b": (3,),
    }  # fmt: skip


# ---------------------------------------------------------------------------- shared maths
# Written once for float tensors (training) and int64 tensors (decoding).


def _upsample2(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """2x upsampling of (..., h', w') to (..., h, w) with the taps (1, 3) / 4 and (3, 1) / 4 per
    axis and edge replication, *without* the division: the result is 16x the bilinear one."""
    for axis, size in ((-2, h), (-1, w)):
        n = x.shape[axis]
        before = torch.cat([x.narrow(axis, 0, 1), x.narrow(axis, 0, n - 1)], dim=axis)
        after = torch.cat([x.narrow(axis, 1, n - 1), x.narrow(axis, n - 1, 1)], dim=axis)
        even, odd = 3 * x + before, 3 * x + after
        x = torch.stack([even, odd], dim=axis).flatten(axis - 1, axis)  # even, odd, even, odd ...
        x = x.narrow(axis, 0, size)
    return x


def _upsample_levels(latents: list[torch.Tensor], h: int, w: int) -> list[torch.Tensor]:
    """Each latent grid brought to (h, w); level k comes back 16**k times too large."""
    shapes = _level_shapes(h, w)
    out = []
    for k, grid in enumerate(latents):
        for level in range(k - 1, -1, -1):
            grid = _upsample2(grid, *shapes[level])
        out.append(grid)
    return out


def _mix(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-pixel matrix product: (out, in) x (in, h, w) -> (out, h, w)."""
    return torch.matmul(weight, x.flatten(1)).reshape(weight.shape[0], *x.shape[1:])


def _conv3x3(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """3x3 convolution with edge replication, as nine per-pixel products (exact for int64)."""
    h, w = x.shape[1:]
    padded = torch.cat([x[:, :1], x, x[:, -1:]], dim=1)
    padded = torch.cat([padded[:, :, :1], padded, padded[:, :, -1:]], dim=2)
    out = 0
    for dy in range(3):
        for dx in range(3):
            out = out + _mix(weight[:, :, dy, dx], padded[:, dy : dy + h, dx : dx + w])
    return out


# ---------------------------------------------------------------------------- float synthesis (training)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity in the backward pass (straight-through)."""
    return x + (torch.round(x) - x).detach()


def _synthesis_float(latents, weights, step: float, h: int, w: int) -> torch.Tensor:
    """YCbCr (3, h, w) in [0, 1] units from float latents (in steps) and float weights."""
    features = [g * (step / 16.0**k) for k, g in enumerate(_upsample_levels(latents, h, w))]
    x = torch.cat(features, dim=0)
    q = {name: _round_ste(value * (1 << WEIGHT_BITS)) / (1 << WEIGHT_BITS) for name, value in weights.items()}
    hidden = torch.relu(_mix(q["mlp_w1"], x) + q["mlp_b1"][:, None, None])
    out = _mix(q["skip_w"], x) + q["skip_b"][:, None, None] + _mix(q["mlp_w2"], hidden)
    return out + _conv3x3(q["conv_w"], out) + q["conv_b"][:, None, None]


# ---------------------------------------------------------------------------- integer synthesis (decoding)


def _shift_round(x: torch.Tensor, bits: int) -> torch.Tensor:
    """x / 2**bits rounded half up, exactly, for int64 tensors."""
    return (x + (1 << (bits - 1))) >> bits if bits > 0 else x << -bits


def _synthesis_int(latents: list[np.ndarray], weights: dict[str, np.ndarray], step_int: int, h: int, w: int) -> np.ndarray:
    """RGB uint8 (h, w, 3) from integer latents and integer weights, all in int64 on the CPU."""
    f, wb = FEATURE_BITS, WEIGHT_BITS
    grids = [torch.from_numpy(g.astype(np.int64)) for g in latents]
    # level k arrives 16**k = 2**(4k) too large; the step carries STEP_BITS fractional bits
    x = torch.cat([_shift_round(g * step_int, 4 * k + STEP_BITS - f) for k, g in enumerate(_upsample_levels(grids, h, w))])
    p = {name: torch.from_numpy(value.astype(np.int64)) for name, value in weights.items()}

    def affine(weight, bias, x):  # weights and biases in units of 2**-wb; x and the result in 2**-f
        return _shift_round(_mix(weight, x) + (bias[:, None, None] << f), wb)

    hidden = torch.relu(affine(p["mlp_w1"], p["mlp_b1"], x))
    out = affine(p["skip_w"], p["skip_b"], x) + _shift_round(_mix(p["mlp_w2"], hidden), wb)
    out = out + _shift_round(_conv3x3(p["conv_w"], out) + (p["conv_b"][:, None, None] << f), wb)
    matrix = torch.tensor([[round(c * (1 << _COLOUR_BITS)) for c in row] for row in YCBCR_TO_RGB], dtype=torch.int64)
    rgb = _mix(matrix, out) * 255  # out is Y in [0, 1] and centred Cb, Cr, at 2**-f
    pixels = _shift_round(rgb, f + _COLOUR_BITS).clamp(0, 255)
    return pixels.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


# ---------------------------------------------------------------------------- entropy coding


def _laplace_frequencies(bound: int, scale_code: int) -> np.ndarray:
    """Integer frequencies (summing to 2**_TOTAL_BITS, none zero) of the values -bound..bound
    under a Laplace distribution of scale 2**((scale_code - 128) / 16), discretised to integers."""
    scale = 2.0 ** ((scale_code - 128) / 16.0)
    values = np.abs(np.arange(-bound, bound + 1, dtype=np.float64))
    upper = np.exp(-np.maximum(values - 0.5, 0.0) / scale)  # P(|X| > |v| - 1/2), up to a factor
    lower = np.exp(-(values + 0.5) / scale)
    p = np.where(values == 0, 1.0 - lower, 0.5 * (upper - lower))
    total = 1 << _TOTAL_BITS
    freqs = 1 + np.floor(p / p.sum() * (total - p.size)).astype(np.int64)
    freqs[bound] += total - freqs.sum()  # the rounding remainder goes to zero, the most likely value
    return freqs


def _code_length(values: np.ndarray, bound: int, scale_code: int) -> float:
    """Bits the arithmetic coder needs (to within a few) for ``values`` under the model."""
    counts = np.bincount(values + bound, minlength=2 * bound + 1)
    return float(-(counts * np.log2(_laplace_frequencies(bound, scale_code) / (1 << _TOTAL_BITS))).sum())


def _choose_model(values: np.ndarray) -> tuple[int, int]:
    """(bound bits, scale code) for one group: the bound 2**bits - 1 covers every value (0 bits:
    the group is all zeros and costs nothing), and the scale code is the cheapest near the
    maximum-likelihood scale mean(|v|)."""
    bits = int(np.abs(values).max()).bit_length() if values.size else 0
    if bits == 0:
        return 0, 0
    if bits > 15:
        raise ValueError(f"overfit_nn: a coded value of {int(np.abs(values).max())} exceeds the 15-bit bound")
    guess = min(255, max(0, int(round(16 * math.log2(max(float(np.abs(values).mean()), 0.05)))) + 128))
    candidates = range(max(0, guess - 24), min(255, guess + 24) + 1)
    bound = (1 << bits) - 1
    return bits, min(candidates, key=lambda code: _code_length(values, bound, code))


class _ArithmeticEncoder:
    """A 32-bit binary arithmetic coder (Witten, Neal and Cleary 1987) with static frequencies."""

    def __init__(self):
        self.low, self.high, self.pending, self.bits = 0, (1 << 32) - 1, 0, []

    def _emit(self, bit: int) -> None:
        self.bits.append(bit)
        self.bits.extend([1 - bit] * self.pending)
        self.pending = 0

    def encode(self, start: int, stop: int) -> None:
        """Narrow the interval to the symbol's share [start, stop) of 2**_TOTAL_BITS."""
        span = self.high - self.low + 1
        self.high = self.low + ((span * stop) >> _TOTAL_BITS) - 1
        self.low = self.low + ((span * start) >> _TOTAL_BITS)
        half, quarter = 1 << 31, 1 << 30
        while True:
            if self.high < half:
                self._emit(0)
            elif self.low >= half:
                self._emit(1)
                self.low, self.high = self.low - half, self.high - half
            elif self.low >= quarter and self.high < half + quarter:
                self.pending += 1
                self.low, self.high = self.low - quarter, self.high - quarter
            else:
                break
            self.low, self.high = 2 * self.low, 2 * self.high + 1

    def finish(self) -> bytes:
        self.pending += 1
        self._emit(0 if self.low < (1 << 30) else 1)
        return np.packbits(np.array(self.bits, dtype=np.uint8)).tobytes()


class _ArithmeticDecoder:
    def __init__(self, data: bytes):
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).tolist()
        self.position = 32
        self.low, self.high = 0, (1 << 32) - 1
        padded = self.bits[:32] + [0] * max(0, 32 - len(self.bits))
        self.value = int("".join(map(str, padded)), 2)

    def decode(self, cumulative: list[int], lookup: list[int]) -> int:
        """The index of the next symbol; ``cumulative[i]`` starts its share, ``lookup`` maps
        each of the 2**_TOTAL_BITS slots to its symbol."""
        span = self.high - self.low + 1
        slot = (((self.value - self.low + 1) << _TOTAL_BITS) - 1) // span
        symbol = lookup[slot]
        self.high = self.low + ((span * cumulative[symbol + 1]) >> _TOTAL_BITS) - 1
        self.low = self.low + ((span * cumulative[symbol]) >> _TOTAL_BITS)
        half, quarter = 1 << 31, 1 << 30
        while True:
            if self.high < half:
                pass
            elif self.low >= half:
                self.low, self.high, self.value = self.low - half, self.high - half, self.value - half
            elif self.low >= quarter and self.high < half + quarter:
                self.low, self.high, self.value = self.low - quarter, self.high - quarter, self.value - quarter
            else:
                break
            bit = self.bits[self.position] if self.position < len(self.bits) else 0
            self.position += 1
            self.low, self.high, self.value = 2 * self.low, 2 * self.high + 1, 2 * self.value + bit
        return symbol


def _encode_groups(groups: list[np.ndarray]) -> bytes:
    """Two bytes per group (bound bits, scale code), then every group's values, arithmetic-coded."""
    models = [_choose_model(g) for g in groups]
    coder = _ArithmeticEncoder()
    for values, (bits, code) in zip(groups, models):
        if bits == 0:
            continue
        bound = (1 << bits) - 1
        cumulative = np.concatenate([[0], np.cumsum(_laplace_frequencies(bound, code))]).tolist()
        for v in (values + bound).tolist():
            coder.encode(cumulative[v], cumulative[v + 1])
    return bytes(b for model in models for b in model) + coder.finish()


def _decode_groups(data: bytes, sizes: list[int], frame_index: int) -> list[np.ndarray]:
    if len(data) < 2 * len(sizes):
        raise ValueError(f"overfit_nn: frame {frame_index} is too short for its {len(sizes)} group models")
    coder = _ArithmeticDecoder(data[2 * len(sizes) :])
    groups = []
    for i, size in enumerate(sizes):
        bits, code = data[2 * i], data[2 * i + 1]
        if bits == 0:
            groups.append(np.zeros(size, dtype=np.int64))
            continue
        if bits > 15:
            raise ValueError(f"overfit_nn: frame {frame_index} group {i} has a {bits}-bit bound")
        bound = (1 << bits) - 1
        freqs = _laplace_frequencies(bound, code)
        cumulative = np.concatenate([[0], np.cumsum(freqs)]).tolist()
        lookup = np.repeat(np.arange(freqs.size), freqs).tolist()
        groups.append(np.array([coder.decode(cumulative, lookup) for _ in range(size)], dtype=np.int64) - bound)
    return groups


# ---------------------------------------------------------------------------- bitstream


def _group_sizes(h: int, w: int) -> list[int]:
    latent = [ph * pw for k, (ph, pw) in enumerate(_level_shapes(h, w)) for _ in range(_level_channels(k))]
    shapes = list(_weight_shapes().values())
    return latent + [sum(math.prod(s) for s in shapes if len(s) > 1), sum(math.prod(s) for s in shapes if len(s) == 1)]


def _pack(latents: list[np.ndarray], weights: dict[str, np.ndarray], step_int: int, h: int, w: int) -> bytes:
    groups = [channel.reshape(-1) for grid in latents for channel in grid]
    groups.append(np.concatenate([v.reshape(-1) for v in weights.values() if v.ndim > 1]))
    groups.append(np.concatenate([v.reshape(-1) for v in weights.values() if v.ndim == 1]))
    return struct.pack(HEADER, MAGIC, VERSION, w, h, step_int) + _encode_groups([g.astype(np.int64) for g in groups])


def _unpack(data: bytes, frame_index: int):
    size = struct.calcsize(HEADER)
    if len(data) < size:
        raise ValueError(f"overfit_nn: frame {frame_index} has {len(data)} bytes, shorter than the header")
    magic, version, w, h, step_int = struct.unpack(HEADER, data[:size])
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"overfit_nn: frame {frame_index} is not an overfit_nn v{VERSION} frame (magic {magic!r})")
    groups = _decode_groups(data[size:], _group_sizes(h, w), frame_index)
    latents = []
    for k, (ph, pw) in enumerate(_level_shapes(h, w)):
        channels = [groups.pop(0).reshape(ph, pw) for _ in range(_level_channels(k))]
        latents.append(np.stack(channels))
    weights = {}
    matrices, biases = groups
    for name, shape in _weight_shapes().items():
        source = matrices if len(shape) > 1 else biases
        weights[name] = source[: math.prod(shape)].reshape(shape)
        if len(shape) > 1:
            matrices = matrices[math.prod(shape) :]
        else:
            biases = biases[math.prod(shape) :]
    return latents, weights, step_int, h, w


# ---------------------------------------------------------------------------- training (encoder)


def _to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(h, w, 3) uint8 -> (3, h, w) float32: Y in [0, 1], Cb and Cr centred on 0."""
    matrix = torch.tensor(RGB_TO_YCBCR, dtype=torch.float32, device=rgb.device)
    return _mix(matrix, rgb.permute(2, 0, 1).to(torch.float32) / 255.0)


def _downsample2(x: torch.Tensor) -> torch.Tensor:
    """2x2 averaging, with edge replication when a side is odd."""
    h, w = x.shape[-2:]
    x = torch.nn.functional.pad(x[None], (0, w % 2, 0, h % 2), mode="replicate")
    return torch.nn.functional.avg_pool2d(x, 2)[0]


def _pyramid(ycc: torch.Tensor, step: float) -> list[torch.Tensor]:
    """Closed-loop Laplacian pyramid of the centred frame, in integer steps: the coarsest grid
    holds the low-pass, each finer one the rounded residual of the prediction from above."""
    shapes = _level_shapes(*ycc.shape[1:])
    centred = ycc - torch.tensor([0.5, 0.0, 0.0], device=ycc.device)[:, None, None]
    gauss = [centred]
    for _ in range(1, LEVELS):
        gauss.append(_downsample2(gauss[-1]))
    latents, approx = [None] * LEVELS, None
    for k in range(LEVELS - 1, -1, -1):
        target = gauss[k][: _level_channels(k)]
        pred = torch.zeros_like(target) if approx is None else (_upsample2(approx, *shapes[k]) / 16.0)[: _level_channels(k)]
        latents[k] = torch.round((target - pred) / step)
        approx = pred + latents[k] * step
    return latents


def _initial_weights(device: torch.device, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The identity pyramid decoder: skip path sums each channel's levels, everything else 0,
    except a small random first MLP layer (so gradients reach the MLP)."""
    weights = {name: torch.zeros(shape, device=device) for name, shape in _weight_shapes().items()}
    column = 0
    for k in range(LEVELS):
        for c in range(_level_channels(k)):
            weights["skip_w"][c, column] = 1.0
            column += 1
    weights["skip_b"][0] = 0.5
    f = _n_features()
    weights["mlp_w1"] = torch.randn((HIDDEN, f), generator=generator, device=device) / math.sqrt(f)
    return weights


def _laplace_bits(x: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Differentiable bits of ``x`` (integers plus noise) under a discretised Laplace model."""
    scale = torch.exp(log_scale)

    def cdf(t):
        return 0.5 + 0.5 * torch.sign(t) * (1.0 - torch.exp(-t.abs() / scale))

    p = (cdf(x + 0.5) - cdf(x - 0.5)).clamp_min(2.0**-_TOTAL_BITS)
    return -torch.log2(p).sum()


def _train(ycc: torch.Tensor, step: float, lam: float, steps: int, seed: int):
    """Fit latents and weights to one frame; returns (latents, weights) as float tensors."""
    device = ycc.device
    h, w = ycc.shape[1:]
    generator = torch.Generator(device=device).manual_seed(seed)
    latents = [g.clone().requires_grad_(True) for g in _pyramid(ycc, step)]
    weights = {name: v.requires_grad_(True) for name, v in _initial_weights(device, generator).items()}
    log_scales = torch.zeros(len(latents) + 1, device=device, requires_grad=True)
    channel_weights = torch.tensor(_CHANNEL_WEIGHTS, device=device)
    optimiser = torch.optim.Adam([
        {"params": latents, "lr": LATENT_RATE},
        {"params": [*weights.values(), log_scales], "lr": NET_RATE},
    ])  # fmt: skip
    base_rates = [group["lr"] for group in optimiser.param_groups]
    for t in range(steps):
        for group, rate in zip(optimiser.param_groups, base_rates):
            group["lr"] = rate * 0.5 * (1.0 + math.cos(math.pi * t / steps))
        out = _synthesis_float([_round_ste(g) for g in latents], weights, step, h, w)
        distortion = (((out - ycc) ** 2).mean(dim=(1, 2)) * channel_weights).sum()
        bits = sum(
            _laplace_bits(g + torch.rand(g.shape, generator=generator, device=device) - 0.5, log_scales[k])
            for k, g in enumerate(latents)
        )
        flat = torch.cat([v.reshape(-1) for v in weights.values()]) * (1 << WEIGHT_BITS)
        bits = bits + _laplace_bits(flat + torch.rand(flat.shape, generator=generator, device=device) - 0.5, log_scales[-1])
        loss = distortion + lam * bits / (h * w)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return [g.detach() for g in latents], {name: v.detach() for name, v in weights.items()}


def _integers(latents, weights) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """What the bitstream carries: latents rounded, weights in units of 2**-WEIGHT_BITS."""
    grids = [torch.round(g).to(torch.int64).cpu().numpy() for g in latents]
    ints = {name: torch.round(v * (1 << WEIGHT_BITS)).to(torch.int64).cpu().numpy() for name, v in weights.items()}
    return grids, ints


def _weighted_mse(frame: np.ndarray, decoded: np.ndarray) -> float:
    """The training distortion, measured on two uint8 RGB frames."""
    diff = (frame.astype(np.float64) - decoded.astype(np.float64)) / 255.0
    ycc = np.einsum("ij,hwj->ihw", np.array(RGB_TO_YCBCR), diff)
    return float(sum(wc * np.mean(c**2) for wc, c in zip(_CHANNEL_WEIGHTS, ycc)))


# ---------------------------------------------------------------------------- contract


def compress_video_frame(frame: np.ndarray, frame_index: int, config: dict) -> bytes:
    """Train a decoder for this RGB uint8 frame (H, W, 3) and return its bitstream."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = getattr(frame, "shape", type(frame).__name__)
        raise ValueError(f"overfit_nn: frame must be an (H, W, 3) uint8 array, got {got}")
    h, w = frame.shape[:2]
    step_int = quality_to_step(config.get("quality", DEFAULT_CONFIG["quality"]))
    step = step_int / (1 << STEP_BITS)
    lam = LAMBDA_SCALE * step**2
    device = _device(config)
    ycc = _to_ycbcr(torch.from_numpy(np.array(frame, copy=True)).to(device))
    steps = training_steps(config, device, h * w)
    with torch.no_grad():
        untrained = (_pyramid(ycc, step), _initial_weights(device, torch.Generator(device=device)))
        untrained[1]["mlp_w1"].zero_()
    options = [untrained]
    if steps > 0:
        # One CPU thread while training: float sums then do not depend on the thread count,
        # so a frame encodes to the same bytes in every process (and tiny tensors gain
        # nothing from more threads).
        threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(1)
        try:
            with torch.enable_grad():
                options.append(_train(ycc, step, lam, steps, seed=frame_index))
        finally:
            torch.set_num_threads(threads)
    best, best_cost = None, math.inf
    for latents, weights in options:
        grids, ints = _integers(latents, weights)
        data = _pack(grids, ints, step_int, h, w)
        cost = _weighted_mse(frame, _synthesis_int(grids, ints, step_int, h, w)) + lam * 8 * len(data) / (h * w)
        if cost < best_cost:
            best, best_cost = data, cost
    return best


def decompress_video_frame(compressed_data: bytes, frame_index: int, config: dict) -> np.ndarray:
    """Decode one frame: integer synthesis from the bytes alone (config is not read)."""
    latents, weights, step_int, h, w = _unpack(bytes(compressed_data), frame_index)
    return _synthesis_int(latents, weights, step_int, h, w)
