# Cheat: regenerate the built-in synthetic clip instead of coding it (issue 12, finding 3).
#
# The synthetic clips are a public, deterministic function of name, size, frame count
# and seed, and the sandbox has the same numpy. This candidate carries a copy of that
# function (the test pastes in the source of evaluation.synthetic's generator, as any
# candidate could) and guesses the seed the operator would use: the public default
# (GUESSED_SEED below). The encoder looks for the frame count N whose regenerated clip
# holds this very frame (frame 0 of a scene depends on N) and sends N in one byte
# (0: no match); the decoder regenerates the clip and returns its frames. On a clip
# with the guessed seed it scores 100 dB at one byte a frame; on a clip with a secret
# seed it has nothing to go on.
import math
import statistics
from dataclasses import dataclass

import numpy as np

{{GENERATOR}}

GUESSED_SEED = {{SEED}}
GUESSED_NAME = "{{NAME}}"
MAX_FRAMES = 12
_cache = {}


def _regenerate(width, height, frames):
    key = (width, height, frames)
    if key not in _cache:
        # The body of evaluation.synthetic.synthetic_clip, on the copied helpers.
        pan, objects, sigma, n_scenes = _RECIPES[GUESSED_NAME]
        n_scenes = min(n_scenes, frames)
        starts = [k * frames // n_scenes for k in range(n_scenes)] + [frames]
        rng = np.random.default_rng([GUESSED_SEED, _NAME_SALT[GUESSED_NAME]])
        noise_table = _gaussian_table(sigma)
        out = np.empty((frames, height, width, 3), np.uint8)
        canvas = np.empty((height, width, 3), np.float32)
        noise = np.empty_like(canvas)
        for k in range(n_scenes):
            length = starts[k + 1] - starts[k]
            scene = _Scene(rng, width, height, length, pan=pan, objects=objects)
            for t in range(length):
                scene.render(t, canvas)
                noise_bytes = np.frombuffer(rng.bytes(canvas.size), np.uint8).reshape(canvas.shape)
                np.take(noise_table, noise_bytes, out=noise)
                canvas += noise
                np.clip(canvas, 0.0, 255.0, out=canvas)
                np.rint(canvas, out=canvas)
                out[starts[k] + t] = canvas
        _cache[key] = out
    return _cache[key]


def compress_video_frame(frame, frame_index, config):
    h, w = frame.shape[:2]
    for n in range(frame_index + 1, MAX_FRAMES + 1):
        if np.array_equal(_regenerate(w, h, n)[frame_index], frame):
            return bytes([n])
    return b"\0"


def decompress_video_frame(compressed_data, frame_index, config):
    n = compressed_data[0] or max(frame_index + 1, 8)  # no match: the default clip length
    return _regenerate(int(config["width"]), int(config["height"]), n)[frame_index].copy()
