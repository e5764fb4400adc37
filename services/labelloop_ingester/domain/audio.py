"""Audio items' feature vectors: the waveform decoded, then spectral summary statistics.

Decoding (:func:`decode_audio`): WAV, FLAC, OGG and MP3 through libsndfile (``soundfile``),
anything else FFmpeg reads (M4A/AAC, WebM, a video's sound track) through PyAV; mixed to mono,
cut to ``max_seconds``, resampled to one rate (soxr). A file neither can read, a WAV shorter
than its header says, or one with no samples raises :class:`UnreadableMedia` with the reason.

Features (:func:`audio_vectors`, :data:`AUDIO_DIM` numbers, float32), stateless and
deterministic like the other featurisers, so replicas put their items in one space:

* 20 MFCCs (40 mel bands, 25 ms windows every 10 ms) and their deltas: mean and standard
  deviation over time of each (80);
* spectral centroid, bandwidth and 85% roll-off as fractions of the Nyquist frequency, the
  zero-crossing rate and the RMS level (dB / 100): mean and standard deviation of each (10).

MFCCs come from one short-time Fourier transform per item; every frame of a whole message then
goes through the mel filters, the logarithm and the DCT in one product each (librosa would
transform the signal again for each feature). No statistic crosses items: an item's vector is
the same whatever message it comes in (to float rounding).

MFCCs are divided by 100 and their deltas by 10 (fixed scales, not fitted): the sampler's
diversity runs k-means on raw vectors, where 80 unscaled MFCC statistics (the first in the
hundreds) would drown the other ten.

librosa is imported on the first audio item only: its import (numba) takes seconds.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "AUDIO_DIM",
    "N_MFCC",
    "UnreadableMedia",
    "audio_space",
    "audio_vectors",
    "decode_audio",
]

N_MFCC = 20
N_MELS = 40
WINDOW_SECONDS = 0.025
HOP_SECONDS = 0.010
ROLLOFF = 0.85
AUDIO_DIM = 4 * N_MFCC + 10
_MFCC_SCALE = 100.0
_DELTA_SCALE = 10.0
_TOP_DB = 80.0


class UnreadableMedia(ValueError):
    """A media file that cannot be decoded; the message says why (for the producer)."""


def audio_space(sample_rate: int) -> str:
    return f"audio-spectral-{sample_rate}"


def decode_audio(raw: bytes, sample_rate: int, max_seconds: float) -> NDArray[np.float32]:
    """The first ``max_seconds`` of the sound in ``raw``, mono, at ``sample_rate``, float32.

    Raises :class:`UnreadableMedia`."""
    _check_riff(raw)
    try:
        samples, rate = _read_soundfile(raw, max_seconds)
    except _NotForLibsndfile:
        samples, rate = _read_av(raw, max_seconds)
    if samples.size == 0:
        raise UnreadableMedia("the file holds no audio samples")
    if not np.isfinite(samples).all():
        raise UnreadableMedia("the file holds samples that are not finite numbers")
    if rate != sample_rate:
        import librosa

        try:
            samples = librosa.resample(
                samples, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq"
            )
        except (ValueError, ZeroDivisionError, OverflowError) as exc:
            raise UnreadableMedia(
                f"cannot resample its {rate} Hz to {sample_rate} Hz ({exc})"
            ) from None
        if samples.size == 0:
            raise UnreadableMedia(f"too short to resample from {rate} Hz")
    return np.ascontiguousarray(samples, dtype=np.float32)


class _NotForLibsndfile(Exception):
    pass


def _check_riff(raw: bytes) -> None:
    """A WAV (RIFF) file cut short: its header gives the size it had; libsndfile would read
    what is left without a word. A size of 0 or 2**32 - 1 means "unknown" (a stream)."""
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return
    (declared,) = struct.unpack("<I", raw[4:8])
    if declared not in (0, 0xFFFFFFFF) and declared + 8 > len(raw):
        raise UnreadableMedia(
            f"truncated WAV: its header says {declared + 8} bytes, the file has {len(raw)}"
        )


def _read_soundfile(raw: bytes, max_seconds: float) -> tuple[NDArray[np.float32], int]:
    import soundfile  # type: ignore[import-untyped]  # no type information

    try:
        with soundfile.SoundFile(io.BytesIO(raw)) as f:
            rate = int(f.samplerate)
            frames = int(max_seconds * rate)
            if f.frames > 0:  # a stream may not know its length
                frames = min(frames, int(f.frames))
            data = f.read(frames, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise _NotForLibsndfile from exc
    return data.mean(axis=1, dtype=np.float32), rate


def _read_av(raw: bytes, max_seconds: float) -> tuple[NDArray[np.float32], int]:
    import av

    try:
        with av.open(io.BytesIO(raw), mode="r") as container:
            if not container.streams.audio:
                raise UnreadableMedia("not a sound file libsndfile or FFmpeg can read")
            stream = container.streams.audio[0]
            rate = int(stream.rate or stream.codec_context.sample_rate or 0)
            if rate <= 0:
                raise UnreadableMedia("the sound track has no sample rate")
            mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
            wanted = int(max_seconds * rate)
            parts: list[NDArray[np.float32]] = []
            have = 0
            for frame in container.decode(stream):
                for out in mono.resample(frame):
                    part = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    parts.append(part)
                    have += part.size
                if have >= wanted:
                    break
    except UnreadableMedia:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise UnreadableMedia(f"not a sound file libsndfile or FFmpeg can read ({exc})") from None
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return samples[:wanted], rate


def audio_vectors(waves: Sequence[NDArray[np.float32]], sample_rate: int) -> NDArray[np.float32]:
    """One :data:`AUDIO_DIM` vector per waveform (mono, at ``sample_rate``)."""
    import librosa
    from scipy.fft import dct

    out = np.zeros((len(waves), AUDIO_DIM), dtype=np.float32)
    if not waves:
        return out
    win = max(2, round(WINDOW_SECONDS * sample_rate))
    hop = max(1, round(HOP_SECONDS * sample_rate))
    n_fft = 1 << (win - 1).bit_length()
    padded = [_pad(np.asarray(w, dtype=np.float32), n_fft) for w in waves]
    # one STFT per item (lengths differ), then every frame of the message side by side
    spectra = [
        np.abs(librosa.stft(w, n_fft=n_fft, hop_length=hop, win_length=win, center=True))
        for w in padded
    ]
    counts = np.fromiter((s.shape[1] for s in spectra), np.int64, len(spectra))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # float32, frames x bins: a frame's bins side by side in memory (the roll-off's running sum)
    magnitude = np.concatenate([s.T for s in spectra])
    del spectra
    mel = (np.square(magnitude) @ _mel_basis(sample_rate, n_fft).T).T
    log_mel = 10.0 * np.log10(np.maximum(mel, 1e-10, dtype=np.float64))
    # librosa's power_to_db(top_db=80), per item: nothing below its loudest frame's peak - 80 dB
    peak = np.maximum.reduceat(log_mel.max(axis=0), starts)
    log_mel = np.maximum(log_mel, np.repeat(peak - _TOP_DB, counts))
    mfcc = dct(log_mel, type=2, axis=0, norm="ortho")[:N_MFCC]
    delta = np.concatenate(
        [_delta(mfcc[:, s : s + n]) for s, n in zip(starts, counts, strict=True)], axis=1
    )

    # centroid, bandwidth (the spread about it) and roll-off, over the magnitudes as librosa
    # computes them, from three weighted sums: products, not a pass of Python per frame
    freqs = librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft).astype(np.float32)
    moments = magnitude @ np.stack([np.ones_like(freqs), freqs, np.square(freqs)], axis=1)
    total, first, second = moments.T.astype(np.float64)
    voiced = total > 0
    safe = np.where(voiced, total, 1.0)
    centroid = first / safe
    bandwidth = np.sqrt(np.maximum(second / safe - np.square(centroid), 0.0))
    reached = np.cumsum(magnitude, axis=1) >= (ROLLOFF * total).astype(np.float32)[:, None]
    rolloff = freqs[np.argmax(reached, axis=1)].astype(np.float64)
    del magnitude
    spectral = np.stack([centroid, bandwidth, rolloff]) / (sample_rate / 2.0) * voiced

    framed = [_time_frames(w, win, hop) for w in padded]
    zcr = np.concatenate([_zero_crossings(f) for f in framed])
    rms = np.concatenate([np.sqrt(np.mean(np.square(f, dtype=np.float64), axis=0)) for f in framed])
    level = 20.0 * np.log10(np.maximum(rms, 1e-5)) / 100.0  # dB / 100: 0 full scale, -1 silence
    # the time-domain frames and the STFT's frames line up (both centred, same hop)
    per_frame = np.concatenate(
        [mfcc / _MFCC_SCALE, delta / _DELTA_SCALE, spectral, zcr[None], level[None]]
    )
    mean, std = _segment_moments(per_frame, starts, counts)
    n = N_MFCC
    out[:, 0:n] = mean[:, :n]
    out[:, n : 2 * n] = std[:, :n]
    out[:, 2 * n : 3 * n] = mean[:, n : 2 * n]
    out[:, 3 * n : 4 * n] = std[:, n : 2 * n]
    out[:, 4 * n :: 2] = mean[:, 2 * n :]
    out[:, 4 * n + 1 :: 2] = std[:, 2 * n :]
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _pad(wave: NDArray[np.float32], n_fft: int) -> NDArray[np.float32]:
    """A signal shorter than one window, zero-padded to one (a 5 ms click is a sound too)."""
    if wave.size >= n_fft:
        return wave
    return np.pad(wave, (0, n_fft - wave.size))


@lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int) -> NDArray[np.float32]:
    import librosa

    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=N_MELS)
    return np.asarray(basis, dtype=np.float32)


def _delta(mfcc: NDArray[np.float64]) -> NDArray[np.float64]:
    """librosa's delta (a Savitzky-Golay derivative over 9 frames), or a shorter odd window
    for an item of fewer frames; zero for a single frame."""
    import librosa

    frames = mfcc.shape[1]
    width = min(9, frames if frames % 2 else frames - 1)
    if width < 3:
        return np.zeros_like(mfcc)
    out: NDArray[np.float64] = librosa.feature.delta(mfcc, width=width, axis=-1)
    return out


def _time_frames(wave: NDArray[np.float32], win: int, hop: int) -> NDArray[np.float32]:
    """Windows of ``win`` samples every ``hop``, centred like the STFT's (zero padding)."""
    import librosa

    centred = np.pad(wave, (win // 2, win // 2))
    frames: NDArray[np.float32] = librosa.util.frame(centred, frame_length=win, hop_length=hop)
    count = 1 + wave.size // hop  # the STFT's frame count with center=True
    if frames.shape[1] < count:
        frames = np.pad(frames, ((0, 0), (0, count - frames.shape[1])))
    return frames[:, :count]


def _zero_crossings(frames: NDArray[np.float32]) -> NDArray[np.float64]:
    signs = np.signbit(frames)
    rate: NDArray[np.float64] = np.mean(signs[1:] != signs[:-1], axis=0, dtype=np.float64)
    return rate


def _segment_moments(
    per_frame: NDArray[np.float64], starts: NDArray[np.int64], counts: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and standard deviation over each item's frames (its columns), for all at once."""
    sums = np.add.reduceat(per_frame, starts, axis=1)
    mean = sums / counts
    squares = np.add.reduceat(np.square(per_frame), starts, axis=1) / counts
    std = np.sqrt(np.maximum(squares - np.square(mean), 0.0))
    return mean.T, std.T
