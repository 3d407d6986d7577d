"""Inter reference codec: keyframes plus motion-compensated, DCT-coded residuals, in numpy.

Frame types:

* I (keyframe): JPEG-style intra coding, as in ``intra_dct.py`` (BT.709 full-range YCbCr,
  4:2:0, 8x8 orthonormal DCT-II, JPEG Annex K tables times a scale derived from
  ``config["quality"]`` as in ``intra_dct.py``).
  Sent for frame 0, every ``config["keyint"]`` frames, and whenever motion compensation
  predicts the frame worse than a flat intra guess would (a scene cut).
* P: one motion vector per 16x16 luma block, in half samples, minimising SAD on luma
  plus a small vector-length penalty: a search over +-``config["search_range"]`` whole
  samples (exhaustive up to 8, coarse to fine beyond), then a half-sample refinement. Chroma uses the same vector
  at half resolution (quarter chroma samples). Fractional positions are interpolated
  bilinearly in integer arithmetic. The residual against that prediction is
  8x8 DCT-coded with a flat quantiser (uniform steps minimise MSE; the perceptual JPEG
  tables do not) and a dead-zone rounding offset, because most residual coefficients
  are noise that costs more bits than the error it removes.

The prediction is always formed from the *decoded* previous frame, held as uint8 YCbCr
planes by the encoder and by the decoder alike; all of prediction is integer arithmetic
and the reconstruction is rounded to uint8, so encoder and decoder stay bit-exact and
there is no drift.

Bitstream of one frame: a 20-byte header ``>4sBBHHxxfI`` (magic ``b"CFM1"``, version,
frame type 0=I/1=P, width, height, step scale as float32, frame index), then a raw LZMA2
payload of int16 values with signs folded and low/high bytes split: for P frames the
vertical then horizontal vector components (in half samples), then the Y, Cb and Cr
coefficient levels, each laid out frequency-major in zigzag order (DC differenced for
I frames).

State: the module keeps the last reconstruction for the encoder (``_ENCODER``) and for
the decoder (``_DECODER``) separately, so one module instance can do both; frame 0
resets it, and a frame out of order is an error rather than a silent drift.
"""

import functools
import lzma
import struct

import numpy as np

# keyint: a keyframe at least every keyint frames (1 = intra only); search_range: the
# largest motion searched, in luma samples (1 to 127), None to scale it with the frame.
DEFAULT_CONFIG = {"quality": 0.5, "keyint": 30, "search_range": None}

MAGIC = b"CFM1"
VERSION = 1
HEADER = ">4sBBHHxxfI"
FRAME_I = 0
FRAME_P = 1
MAX_SCALE = 16.0
MIN_SCALE = 0.25
BLOCK = 16  # motion block size in luma samples
COARSE_RANGE = 8  # motion search ranges beyond this go coarse to fine (see _estimate_motion)
MV_COST = 4.0  # SAD units per sample of vector length: ties and near-ties go to short vectors
INTRA_ROUNDING = 0.5  # plain rounding for keyframe coefficients
INTER_ROUNDING = 1.0 / 6.0  # dead zone for residual coefficients (as H.264 uses for inter)
FLAT_STEP = 32.0  # residual step at scale 1: twice the JPEG luma DC step, near a keyframe's mid-band steps
SCENE_CUT_RATIO = 0.9  # intra if the inter SAD exceeds this share of the intra activity

_ENCODER = {}
_DECODER = {}

# ITU-T T.81 (JPEG) Annex K, tables K.1 and K.2: the quality-50 quantisers.
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)

# ITU-R BT.709 full range: Y = 0.2126 R + 0.7152 G + 0.0722 B, Cb = (B - Y) / 1.8556,
# Cr = (R - Y) / 1.5748; chroma gets +128 after the product. This Y is the luma the
# evaluation's PSNR-Y is computed on, so chroma subsampling does not leak into it.
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


# ---------------------------------------------------------------------------- tables


@functools.lru_cache(maxsize=None)
def _dct_matrix() -> np.ndarray:
    """Orthonormal 8-point DCT-II matrix D, so that coefficients = D @ block @ D.T."""
    n = 8
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0, :] = np.sqrt(1.0 / n)
    return d.astype(np.float32)


@functools.lru_cache(maxsize=None)
def _zigzag() -> np.ndarray:
    """Raster indices (0..63) of an 8x8 block in JPEG zigzag order."""
    cells = [(i, j) for i in range(8) for j in range(8)]
    cells.sort(key=lambda c: (c[0] + c[1], c[0] if (c[0] + c[1]) % 2 else c[1]))
    return np.array([i * 8 + j for i, j in cells], dtype=np.intp)


@functools.lru_cache(maxsize=None)
def _step_tables(frame_type: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient quantiser steps (luma, chroma) for a frame type and step scale."""
    s = np.float32(scale)
    if frame_type == FRAME_I:
        return np.asarray(LUMA_TABLE, np.float32) * s, np.asarray(CHROMA_TABLE, np.float32) * s
    flat = np.full((8, 8), FLAT_STEP, np.float32) * s
    return flat, flat


def quality_to_scale(quality: float) -> float:
    """Map quality in [0, 1] to the quantiser step scale, as the float32 the header stores."""
    quality = float(quality)
    if not 0.0 <= quality <= 1.0:
        raise ValueError(f"config['quality'] must be in [0, 1], got {quality}")
    return float(np.float32(MAX_SCALE * (MIN_SCALE / MAX_SCALE) ** quality))


# ------------------------------------------------------------------------ colour & planes


def _rgb_to_planes(frame: np.ndarray) -> list[np.ndarray]:
    """RGB uint8 (H, W, 3) -> padded float32 planes Y (H16, W16), Cb and Cr (H16/2, W16/2)."""
    h, w = frame.shape[:2]
    rgb = np.pad(frame, ((0, -h % 16), (0, -w % 16), (0, 0)), mode="edge")
    hp, wp = rgb.shape[:2]
    # One (3x3) @ (3xN) product over all pixels: far faster than (N, 3) @ (3, 3).
    ycc = (np.asarray(RGB_TO_YCBCR, np.float32) @ rgb.reshape(-1, 3).T.astype(np.float32)).reshape(3, hp, wp)
    return [ycc[0], _downsample2(ycc[1]) + np.float32(128.0), _downsample2(ycc[2]) + np.float32(128.0)]


def _planes_to_rgb(planes: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """uint8 YCbCr planes -> RGB uint8 (h, w, 3), chroma upsampled, padding cropped."""
    y, cb, cr = (p.astype(np.float32) for p in planes)
    cb, cr = (_upsample2(c)[:h, :w] - np.float32(128.0) for c in (cb, cr))
    ycc = np.stack([y[:h, :w], cb, cr])
    rgb = np.asarray(YCBCR_TO_RGB, np.float32) @ ycc.reshape(3, -1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).T.reshape(h, w, 3)


def _downsample2(plane: np.ndarray) -> np.ndarray:
    """2x2 box average; the chroma sample sits at the centre of its four luma samples."""
    return (plane[0::2, 0::2] + plane[1::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 1::2]) * np.float32(0.25)


def _upsample2(plane: np.ndarray) -> np.ndarray:
    """Centred 2x upsampling with the (3/4, 1/4) triangle filter (libjpeg "fancy upsampling")."""
    for axis in (0, 1):
        n = plane.shape[axis]
        prev = np.take(plane, np.maximum(np.arange(n) - 1, 0), axis=axis)
        nxt = np.take(plane, np.minimum(np.arange(n) + 1, n - 1), axis=axis)
        even = np.float32(0.75) * plane + np.float32(0.25) * prev
        odd = np.float32(0.75) * plane + np.float32(0.25) * nxt
        plane = np.stack([even, odd], axis=axis + 1)
        shape = list(plane.shape)
        shape[axis : axis + 2] = [2 * n]
        plane = plane.reshape(shape)
    return plane


def _to_uint8(plane: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(plane), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------ transform


def _to_blocks(plane: np.ndarray) -> np.ndarray:
    """(H, W) -> (H/8 * W/8, 8, 8), blocks in raster order."""
    h, w = plane.shape
    return plane.reshape(h // 8, 8, w // 8, 8).swapaxes(1, 2).reshape(-1, 8, 8)


def _from_blocks(blocks: np.ndarray, h: int, w: int) -> np.ndarray:
    return blocks.reshape(h // 8, w // 8, 8, 8).swapaxes(1, 2).reshape(h, w)


def _forward_dct(plane: np.ndarray) -> np.ndarray:
    d = _dct_matrix()
    return d @ _to_blocks(plane) @ d.T


def _inverse_dct(coefficients: np.ndarray, h: int, w: int) -> np.ndarray:
    d = _dct_matrix()
    return _from_blocks(d.T @ coefficients @ d, h, w)


def _quantise(coefficients: np.ndarray, steps: np.ndarray, rounding: float) -> np.ndarray:
    """Levels sign(c) * floor(|c| / step + rounding); rounding 0.5 is plain rounding,
    smaller values widen the zero bin (dead zone)."""
    levels = np.sign(coefficients) * np.floor(np.abs(coefficients) / steps + np.float32(rounding))
    return np.clip(levels, -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------------ motion


def _block_sad(cur: np.ndarray, prediction: np.ndarray, block: int) -> np.ndarray:
    """Sum of absolute differences per block x block region."""
    h, w = cur.shape
    return np.abs(cur - prediction).reshape(h // block, block, w // block, block).sum(axis=(1, 3))


def _full_search(cur: np.ndarray, ref: np.ndarray, block: int, search_range: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole-sample vectors within +-search_range minimising SAD + MV_COST * (|dy| + |dx|).

    Offsets are tried shortest first and only a strictly lower cost replaces the best,
    so ties go to the shorter vector. Samples outside the reference repeat its edge.
    """
    h, w = cur.shape
    r = search_range
    padded = np.pad(ref, r, mode="edge")
    offsets = sorted(
        ((dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)),
        key=lambda o: (abs(o[0]) + abs(o[1]), o),
    )
    best_cost = np.full((h // block, w // block), np.inf, dtype=np.float32)
    best_dy = np.zeros(best_cost.shape, dtype=np.int16)
    best_dx = np.zeros(best_cost.shape, dtype=np.int16)
    for dy, dx in offsets:
        shifted = padded[r + dy : r + dy + h, r + dx : r + dx + w]
        cost = _block_sad(cur, shifted, block) + np.float32(MV_COST * (abs(dy) + abs(dx)))
        better = cost < best_cost
        best_cost[better] = cost[better]
        best_dy[better] = dy
        best_dx[better] = dx
    return best_dy, best_dx


def _refine(
    cur: np.ndarray, ref: np.ndarray, dy: np.ndarray, dx: np.ndarray, block: int, precision: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each block's vector (in 1/precision samples) or one of its 8 neighbours one step
    away, whichever has the lowest SAD + MV_COST * length in samples."""
    best_cost = np.full(dy.shape, np.inf, dtype=np.float32)
    best_dy, best_dx = dy.copy(), dx.copy()
    steps = sorted(((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)), key=lambda o: abs(o[0]) + abs(o[1]))
    for step_y, step_x in steps:
        cand_dy, cand_dx = dy + step_y, dx + step_x
        prediction = _motion_compensate(ref, cand_dy, cand_dx, block, precision).astype(np.float32)
        length = (np.abs(cand_dy) + np.abs(cand_dx)).astype(np.float32) / np.float32(precision)
        cost = _block_sad(cur, prediction, block) + np.float32(MV_COST) * length
        better = cost < best_cost
        best_cost[better] = cost[better]
        best_dy[better] = cand_dy[better]
        best_dx[better] = cand_dx[better]
    return best_dy, best_dx


def _estimate_motion(cur: np.ndarray, ref: np.ndarray, search_range: int) -> tuple[np.ndarray, np.ndarray]:
    """Block matching on luma: one vector (dy, dx) per 16x16 block, in half samples.

    Large ranges are searched coarse to fine: the planes are halved (2x2 averages)
    until the range left is at most COARSE_RANGE or the blocks would shrink below 4
    samples; a full search runs on the smallest planes, and each finer level doubles
    the vectors and refines them by one sample. A last step tries the half-sample
    positions around each vector. Each refinement costs nine passes over its plane,
    so the default range of 20 at 720p runs faster than an exhaustive search of 8.
    """
    curs, refs = [cur], [ref.astype(np.float32)]
    while search_range >> (len(curs) - 1) > COARSE_RANGE and BLOCK >> len(curs) >= 4:
        curs.append(_downsample2(curs[-1]))
        refs.append(_downsample2(refs[-1]))
    depth = len(curs) - 1
    dy, dx = _full_search(curs[depth], refs[depth], BLOCK >> depth, -(-search_range // (1 << depth)))
    for level in range(depth - 1, -1, -1):
        reference = np.rint(refs[level]).astype(np.uint8)
        dy, dx = _refine(curs[level], reference, 2 * dy, 2 * dx, BLOCK >> level, 1)
    return _refine(cur, ref, 2 * dy, 2 * dx, BLOCK, 2)


def _motion_compensate(ref: np.ndarray, dy: np.ndarray, dx: np.ndarray, block: int, precision: int) -> np.ndarray:
    """Predict a plane from the uint8 reference, one vector per block x block region.

    Vectors are in 1/precision samples (precision a power of two). A fractional
    position mixes its four neighbours bilinearly, in integers with rounding, so every
    machine computes the same prediction. Positions outside the reference repeat its edge.
    """
    h, w = ref.shape
    shift = precision.bit_length() - 1
    field_y = np.repeat(np.repeat(dy.astype(np.int32), block, axis=0), block, axis=1)
    field_x = np.repeat(np.repeat(dx.astype(np.int32), block, axis=0), block, axis=1)
    ys = precision * np.arange(h, dtype=np.int32)[:, None] + field_y
    xs = precision * np.arange(w, dtype=np.int32)[None, :] + field_x
    # Gathers through flat indices (row * w + column): several times faster than 2-D fancy indexing.
    row0, row1 = np.clip(ys >> shift, 0, h - 1) * w, np.clip((ys >> shift) + 1, 0, h - 1) * w
    col0, col1 = np.clip(xs >> shift, 0, w - 1), np.clip((xs >> shift) + 1, 0, w - 1)
    flat = ref.ravel()
    if precision == 1:
        return flat[row0 + col0]
    fy, fx = ys & (precision - 1), xs & (precision - 1)
    top = flat[row0 + col0].astype(np.int32) * (precision - fx) + flat[row0 + col1] * fx
    bottom = flat[row1 + col0].astype(np.int32) * (precision - fx) + flat[row1 + col1] * fx
    total = top * (precision - fy) + bottom * fy
    return ((total + precision * precision // 2) >> (2 * shift)).astype(np.uint8)


def _predict(ref_planes: list[np.ndarray], dy: np.ndarray, dx: np.ndarray) -> list[np.ndarray]:
    """Vectors in half luma samples; at half resolution the same numbers are quarter
    chroma samples, on 8x8 chroma blocks."""
    y = _motion_compensate(ref_planes[0], dy, dx, BLOCK, 2)
    cb = _motion_compensate(ref_planes[1], dy, dx, BLOCK // 2, 4)
    cr = _motion_compensate(ref_planes[2], dy, dx, BLOCK // 2, 4)
    return [y, cb, cr]


def _default_search_range(h: int, w: int) -> int:
    """Motion grows with the picture: 8 samples up to CIF, 20 at 720p, 30 at 1080p."""
    return min(127, max(8, min(h, w) // 36))


def _is_scene_cut(cur_y: np.ndarray, pred_y: np.ndarray) -> bool:
    """True when the motion-compensated error exceeds SCENE_CUT_RATIO of the frame's
    own activity (mean absolute deviation from each 16x16 block's mean), a cheap
    stand-in for the cost of coding the frame intra."""
    h, w = cur_y.shape
    blocks = cur_y.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK)
    activity = np.abs(blocks - blocks.mean(axis=(1, 3), keepdims=True)).mean()
    inter_error = np.abs(cur_y - pred_y.astype(np.float32)).mean()
    return bool(inter_error > SCENE_CUT_RATIO * activity)


# ------------------------------------------------------------------------ entropy coding


def _lzma_filters() -> list[dict]:
    """Raw LZMA2: no container header, since every byte counts toward the rate. A 1 MiB
    window compresses as well as the preset's 8 MiB here and needs far less memory."""
    return [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 20}]


def _serialise(levels: np.ndarray, frame_type: int) -> np.ndarray:
    """(N, 8, 8) int16 levels -> frequency-major int16 vector; I-frame DCs differenced
    between neighbouring blocks (residual DCs are already near zero)."""
    scan = levels.reshape(-1, 64)[:, _zigzag()]
    if frame_type == FRAME_I:
        scan[1:, 0] = np.diff(scan[:, 0])
    return scan.T.reshape(-1)


def _deserialise(values: np.ndarray, n_blocks: int, frame_type: int) -> np.ndarray:
    scan = values.reshape(64, n_blocks).T.copy()
    if frame_type == FRAME_I:
        scan[:, 0] = np.cumsum(scan[:, 0], dtype=np.int16)
    levels = np.empty_like(scan)
    levels[:, _zigzag()] = scan
    return levels.reshape(-1, 8, 8)


def _pack_values(values: np.ndarray) -> bytes:
    """int16 -> bytes: signs folded in (0, -1, 1, -2 -> 0, 1, 2, 3), low and high bytes
    in separate runs because the high bytes are almost all zero."""
    v = values.astype(np.int32)
    folded = np.where(v < 0, -2 * v - 1, 2 * v).astype(np.uint16)
    data = (folded & 0xFF).astype(np.uint8).tobytes() + (folded >> 8).astype(np.uint8).tobytes()
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_lzma_filters())


def _unpack_values(payload: bytes, count: int, frame_index: int) -> np.ndarray:
    raw = np.frombuffer(lzma.decompress(payload, format=lzma.FORMAT_RAW, filters=_lzma_filters()), dtype=np.uint8)
    if raw.size != 2 * count:
        raise ValueError(f"inter_mc: frame {frame_index} payload holds {raw.size} bytes, expected {2 * count}")
    folded = raw[:count].astype(np.int32) | (raw[count:].astype(np.int32) << 8)
    return np.where(folded & 1, -((folded + 1) >> 1), folded >> 1).astype(np.int16)


def _plane_shapes(h: int, w: int) -> list[tuple[int, int]]:
    hp, wp = h + (-h % 16), w + (-w % 16)
    return [(hp, wp), (hp // 2, wp // 2), (hp // 2, wp // 2)]


# ------------------------------------------------------------------------ frame coding


def _reconstruct(
    frame_type: int,
    scale: float,
    levels: list[np.ndarray],
    shapes: list[tuple[int, int]],
    prediction: list[np.ndarray] | None,
) -> list[np.ndarray]:
    """Decoded uint8 planes from levels (and, for P frames, the prediction). The encoder
    calls this too, so its reference is exactly the decoder's."""
    luma_steps, chroma_steps = _step_tables(frame_type, scale)
    planes = []
    for i, (h, w) in enumerate(shapes):
        steps = luma_steps if i == 0 else chroma_steps
        signal = _inverse_dct(levels[i].astype(np.float32) * steps, h, w)
        base = np.float32(128.0) if prediction is None else prediction[i].astype(np.float32)
        planes.append(_to_uint8(signal + base))
    return planes


def compress_video_frame(frame: np.ndarray, frame_index: int, config: dict) -> bytes:
    """Code one RGB uint8 frame (H, W, 3); frames must come in order from index 0."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = getattr(frame, "shape", type(frame).__name__)
        raise ValueError(f"inter_mc: frame must be an (H, W, 3) uint8 array, got {got}")
    if frame_index == 0:
        _ENCODER.clear()
    elif _ENCODER.get("index") != frame_index - 1:
        last = _ENCODER.get("index")
        raise ValueError(f"inter_mc: encoder got frame {frame_index} after frame {last}; frames must come in order")
    h, w = frame.shape[:2]
    scale = quality_to_scale(config.get("quality", DEFAULT_CONFIG["quality"]))
    keyint = int(config.get("keyint", DEFAULT_CONFIG["keyint"]))
    search_range = config.get("search_range", DEFAULT_CONFIG["search_range"])
    search_range = _default_search_range(h, w) if search_range is None else int(search_range)
    if not 1 <= search_range <= 127:
        raise ValueError(f"inter_mc: config['search_range'] must be in [1, 127], got {search_range}")
    planes = _rgb_to_planes(frame)
    shapes = [p.shape for p in planes]
    reference = _ENCODER.get("planes")

    frame_type, prediction, vectors = FRAME_I, None, []
    if reference is not None and frame_index % max(keyint, 1) != 0 and _ENCODER.get("size") == (h, w):
        dy, dx = _estimate_motion(planes[0], reference[0], search_range)
        candidate = _predict(reference, dy, dx)
        if not _is_scene_cut(planes[0], candidate[0]):
            frame_type, prediction, vectors = FRAME_P, candidate, [dy.ravel(), dx.ravel()]

    luma_steps, chroma_steps = _step_tables(frame_type, scale)
    rounding = INTRA_ROUNDING if frame_type == FRAME_I else INTER_ROUNDING
    levels = []
    for i, plane in enumerate(planes):
        signal = plane - (np.float32(128.0) if prediction is None else prediction[i].astype(np.float32))
        levels.append(_quantise(_forward_dct(signal), luma_steps if i == 0 else chroma_steps, rounding))

    _ENCODER.update(index=frame_index, size=(h, w), planes=_reconstruct(frame_type, scale, levels, shapes, prediction))
    values = np.concatenate(vectors + [_serialise(lv, frame_type) for lv in levels])
    header = struct.pack(HEADER, MAGIC, VERSION, frame_type, w, h, scale, frame_index)
    return header + _pack_values(values)


def decompress_video_frame(compressed_data: bytes, frame_index: int, config: dict) -> np.ndarray:
    """Decode one frame made by compress_video_frame; frames must come in order from index 0."""
    size = struct.calcsize(HEADER)
    if len(compressed_data) < size:
        raise ValueError(f"inter_mc: frame {frame_index} has {len(compressed_data)} bytes, shorter than the header")
    magic, version, frame_type, w, h, scale, coded_index = struct.unpack(HEADER, compressed_data[:size])
    if magic != MAGIC or version != VERSION or frame_type not in (FRAME_I, FRAME_P):
        raise ValueError(
            f"inter_mc: frame {frame_index} is not an inter_mc v{VERSION} frame (magic {magic!r}, type {frame_type})"
        )
    if coded_index != frame_index:
        raise ValueError(f"inter_mc: payload for frame {frame_index} was coded as frame {coded_index}")
    if frame_index == 0:
        _DECODER.clear()
    if frame_type == FRAME_P and (_DECODER.get("index") != frame_index - 1 or _DECODER.get("size") != (h, w)):
        raise ValueError(
            f"inter_mc: P frame {frame_index} needs decoded frame {frame_index - 1} of size {w}x{h}; "
            f"the decoder last produced frame {_DECODER.get('index')}"
        )

    shapes = _plane_shapes(h, w)
    n_vectors = 2 * (shapes[0][0] // BLOCK) * (shapes[0][1] // BLOCK) if frame_type == FRAME_P else 0
    counts = [a * b for a, b in shapes]
    values = _unpack_values(compressed_data[size:], n_vectors + sum(counts), frame_index)

    prediction = None
    if frame_type == FRAME_P:
        grid = (shapes[0][0] // BLOCK, shapes[0][1] // BLOCK)
        dy = values[: n_vectors // 2].reshape(grid)
        dx = values[n_vectors // 2 : n_vectors].reshape(grid)
        prediction = _predict(_DECODER["planes"], dy, dx)
    levels = []
    offset = n_vectors
    for count in counts:
        levels.append(_deserialise(values[offset : offset + count], count // 64, frame_type))
        offset += count

    planes = _reconstruct(frame_type, scale, levels, shapes, prediction)
    _DECODER.update(index=frame_index, size=(h, w), planes=planes)
    return _planes_to_rgb(planes, h, w)
