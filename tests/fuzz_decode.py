"""atheris harness for the decoder: any exception other than ImageDecodeError is a crash.

Run: python tests/fuzz_decode.py CORPUS_DIR -runs=N -max_len=65536
"""

import sys

import atheris

with atheris.instrument_imports():
    from PIL import Image  # noqa: F401  (instrumented so coverage guides the fuzzer into the parsers)

    from brandguard.errors import ImageDecodeError
    from brandguard.vision.decode import DecodeLimits, decode_image

LIMITS = DecodeLimits(max_pixels=4_000_000)


def test_one_input(data: bytes) -> None:
    try:
        out = decode_image(data, target_side=128, limits=LIMITS)
    except ImageDecodeError:
        return
    rgb = out.rgb
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype.name != "uint8":
        raise RuntimeError(f"decoder returned {rgb.shape} {rgb.dtype}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
