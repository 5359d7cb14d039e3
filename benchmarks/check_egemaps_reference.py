"""Check ``egemaps_functionals`` against openSMILE's own command-line tool on real EmoDB files.

The Python wheel ships only libSMILEapi.so, so the reference is ``SMILExtract`` built from openSMILE's
source (tag v3.0.1, the version of the wheel's bundled library; see docs/feature_sets.md):

    git clone https://github.com/audeering/opensmile && cd opensmile && git checkout v3.0.1
    mkdir build && cd build && cmake -DCMAKE_BUILD_TYPE=Release -DSTATIC_LINK=ON -DMARCH_NATIVE=OFF \
        -DWITH_PORTAUDIO=OFF -DWITH_FFMPEG=OFF -DWITH_OPENCV=OFF -DWITH_OPENSLES=OFF .. && make -j2 SMILExtract

    .venv/bin/python benchmarks/check_egemaps_reference.py --smilextract /tmp/opensmile-src/build/progsrc/smilextract/SMILExtract
    ... --rate 16000      # resampled first, as the stage does

SMILExtract reads the 16-bit wav itself; this side reads it with soundfile (float32 = int16 / 32768, which
openSMILE's Python wrapper multiplies back to the same int16 samples), both at the file's own rate; with
``--rate`` both get the resampled audio (``stage_input``). Values
come from SMILExtract's binary HTK output (float32, exact); the CSV output, which prints 7 significant
digits, gives only the names.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.features.egemaps import EGEMAPS_NAMES, egemaps_functionals  # noqa: E402

EMODB_WAV = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "emodb" / "wav"  # ../shared beside the repo
CONFIG_IN_SOURCE = Path("config/egemaps/v02/eGeMAPSv02.conf")
HTK_HEADER_BYTES = 12  # nSamples, sampPeriod (int32), sampSize, parmKind (int16)


def find_config(smilextract: Path) -> Path:
    """eGeMAPSv02.conf of the source tree that ``smilextract`` was built in (searched upwards)."""
    for parent in smilextract.resolve().parents:
        if (parent / CONFIG_IN_SOURCE).is_file():
            return parent / CONFIG_IN_SOURCE
    raise SystemExit(f"no {CONFIG_IN_SOURCE} above {smilextract}; pass --config")


def cli_functionals(smilextract: Path, config: Path, wav: Path) -> tuple[list[str], np.ndarray]:
    """Names (from the CSV header) and [88] float32 values (from the binary HTK output) SMILExtract gives ``wav``."""
    with tempfile.TemporaryDirectory() as tmp:
        out_csv, out_htk = Path(tmp) / "func.csv", Path(tmp) / "func.htk"
        subprocess.run([str(smilextract), "-C", str(config), "-I", str(wav), "-csvoutput", str(out_csv),
                        "-htkoutput", str(out_htk), "-l", "1"], check=True, capture_output=True)
        with out_csv.open(newline="") as f:
            header = next(csv.reader(f, delimiter=";"))
        # HTK: a 12-byte header, then big-endian float32 vectors; the CSV prints only 7 significant digits
        values = np.frombuffer(out_htk.read_bytes()[HTK_HEADER_BYTES:], dtype=">f4").astype(np.float32)
    if len(values) != len(header) - 2:
        raise SystemExit(f"{wav.name}: {len(values)} HTK values for {len(header) - 2} CSV columns")
    return header[2:], values  # CSV columns: name, frameTime, then the functionals


def compare(ours: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute and relative differences per feature ([88] each; relative to |reference|, 0 where both are 0)."""
    absolute = np.abs(ours.astype(np.float64) - reference)
    scale = np.abs(reference)
    relative = np.divide(absolute, scale, out=np.where(absolute > 0, np.inf, 0.0), where=scale > 0)
    return absolute, relative


def stage_input(wav: Path, rate_hz: int, tmp: Path) -> tuple[np.ndarray, int, Path]:
    """(audio for ``egemaps_functionals``, its rate, the wav SMILExtract reads).

    At the file's own rate both read the file. Resampled (``load_audio``, as the stage does), the CLI reads
    a 16-bit wav of exactly the int16 samples openSMILE's Python wrapper makes of the float audio
    (``sample * 32768``, truncated toward zero).
    """
    if not rate_hz:
        audio, rate = soundfile.read(str(wav), dtype="float32")
        return audio, rate, wav
    from pipeline.features.audio import load_audio

    audio = load_audio(str(wav), rate_hz)
    pcm = (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    soundfile.write(str(tmp / wav.name), pcm, rate_hz, subtype="PCM_16")
    return audio, rate_hz, tmp / wav.name


def spread(files: list[Path], count: int) -> list[Path]:
    """``count`` files evenly spaced over the sorted list (several speakers and emotions, deterministic)."""
    step = max(1, len(files) // count)
    return files[::step][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smilextract", type=Path, required=True, help="the SMILExtract binary")
    parser.add_argument("--config", type=Path, default=None, help="eGeMAPSv02.conf (default: the binary's tree)")
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--wav-dir", type=Path, default=EMODB_WAV)
    parser.add_argument("--rate", type=int, default=0,
                        help="resample to this rate first, as the stage does (default: the file's own rate)")
    args = parser.parse_args()
    config = args.config or find_config(args.smilextract)
    version = subprocess.run([str(args.smilextract), "-h"], capture_output=True, text=True)
    banner = [line.strip() for line in (version.stdout + version.stderr).splitlines() if "openSMILE version" in line]
    print(f"reference: {args.smilextract} ({banner[0] if banner else 'version unknown'}), config {config}")

    worst_overall = 0.0
    for wav in spread(sorted(args.wav_dir.glob("*.wav")), args.files):
        with tempfile.TemporaryDirectory() as tmp:
            audio, rate, cli_input = stage_input(wav, args.rate, Path(tmp))
            names, reference = cli_functionals(args.smilextract, config, cli_input)
        if tuple(names) != EGEMAPS_NAMES:
            raise SystemExit(f"{wav.name}: the CLI's feature names or order differ from EGEMAPS_NAMES")
        ours = egemaps_functionals(audio, rate)
        absolute, relative = compare(ours, reference)
        worst_abs, worst_rel = int(np.argmax(absolute)), int(np.argmax(relative))
        worst_overall = max(worst_overall, float(relative[worst_rel]))
        identical = int(np.sum((ours == reference) | (np.isnan(ours) & np.isnan(reference))))
        worst = (f"worst {EGEMAPS_NAMES[worst_rel]}: ours {ours[worst_rel]:.9g}, CLI {reference[worst_rel]:.9g}"
                 if relative[worst_rel] > 0 else "no feature differs")
        print(f"{wav.name} ({rate} Hz): {identical}/{len(ours)} bit-identical; max |diff| {absolute[worst_abs]:.3g} "
              f"({EGEMAPS_NAMES[worst_abs]}), max rel diff {relative[worst_rel]:.3g} ({worst})")
    print(f"max relative difference over all files and features: {worst_overall:.3g}")


if __name__ == "__main__":
    main()
