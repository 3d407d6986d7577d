"""Helpers shared by the generation tests (imported by name; this directory has no package)."""

from __future__ import annotations

from sandbox.sanitize import sanitize

#: A small lossless codec that satisfies the contract: the "good code" an LLM returns.
GOOD_CODE = '''\
import zlib

import numpy as np

LEVEL = 6


def compress_video_frame(frame, frame_index, config):
    h, w = frame.shape[:2]
    return h.to_bytes(2, "big") + w.to_bytes(2, "big") + zlib.compress(frame.tobytes(), LEVEL)


def decompress_video_frame(compressed_data, frame_index, config):
    h = int.from_bytes(compressed_data[:2], "big")
    w = int.from_bytes(compressed_data[2:4], "big")
    pixels = np.frombuffer(zlib.decompress(compressed_data[4:]), dtype=np.uint8)
    return pixels.reshape(h, w, 3).copy()
'''

GOOD_REPLY = f"Here is a lossless codec.\n\n```python\n{GOOD_CODE}```\n"

DIFF_REPLY = """I raise the zlib level.

<<<<<<< SEARCH
LEVEL = 6
=======
LEVEL = 9
>>>>>>> REPLACE
"""

WRONG_FUNCTIONS_REPLY = """```python
import numpy as np

def encode(frame):
    return frame.tobytes()

def decode(data):
    return np.frombuffer(data, dtype=np.uint8)
```
"""

NO_CODE_REPLY = "I am sorry, but I cannot help with writing a video codec today."

TRUNCATED_REPLY = "```python\nimport numpy as np\n\ndef compress_video_frame(frame, frame_index, config):\n    return fra"


def validate(code: str) -> tuple[bool, str | None]:
    """The real sanitizer as the offline generator's validator."""
    result = sanitize(code)
    return result.ok, result.reason
