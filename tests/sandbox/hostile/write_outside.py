"""Attack: write files outside the work dir: artifacts, beside the clip, system dirs."""

TARGETS = ["{{ARTIFACT_DIR}}/planted", "{{SOURCE_DIR}}/planted", "{{HOST_MARKER}}",
           "/usr/planted", "/etc/planted", "/planted", "/dev/planted", "/proc/planted"]


def compress_video_frame(frame, frame_index, config):
    results = []
    for path in TARGETS:
        try:
            with open(path, "w") as fh:
                fh.write("planted")
            results.append(f"{path}: written")
        except OSError as exc:
            results.append(f"{path}: {type(exc).__name__}")
    raise RuntimeError("; ".join(results))


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
