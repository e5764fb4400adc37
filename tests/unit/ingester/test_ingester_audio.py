"""Audio features: decoding (formats, resampling, the duration cap, bad files) and the spectral
summary vector (shape, determinism, what a tone, silence and a clipped or tiny sound give)."""

from __future__ import annotations

import io

import av
import librosa
import numpy as np
import pytest
import soundfile  # type: ignore[import-untyped]  # no type information
from numpy.typing import NDArray

from labelloop_ingester.domain.audio import (
    AUDIO_DIM,
    N_MFCC,
    UnreadableMedia,
    audio_vectors,
    decode_audio,
)

Wave = NDArray[np.float32]
RATE = 16_000
CENTROID = 4 * N_MFCC  # mean spectral centroid (fraction of Nyquist), then its deviation
BANDWIDTH = CENTROID + 2
ROLLOFF = CENTROID + 4
ZCR = CENTROID + 6
LEVEL = CENTROID + 8


def _tone(freq: float, seconds: float = 1.0, rate: int = RATE, amp: float = 0.5) -> Wave:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _encoded(wave: Wave, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, wave, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _m4a(wave: Wave, rate: int) -> bytes:
    """AAC in an MP4 container: a format libsndfile does not read (PyAV's turn)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [("WAV", "PCM_16"), ("FLAC", None), ("OGG", "VORBIS"), ("MP3", None), ("M4A", None)],
)
def test_common_formats_decode_to_mono_at_one_rate(fmt: str, subtype: str | None) -> None:
    tone = _tone(440, seconds=1.0, rate=22_050)
    stereo = np.stack([tone, tone], axis=1)
    raw = _m4a(tone, 22_050) if fmt == "M4A" else _encoded(stereo, 22_050, fmt, subtype)
    wave = decode_audio(raw, RATE, max_seconds=30)
    assert wave.dtype == np.float32
    assert wave.ndim == 1
    # lossy codecs pad a little; a second of sound stays about a second at the new rate
    assert abs(wave.size - RATE) < 0.1 * RATE
    (vector,) = audio_vectors([wave], RATE)
    # the tone survives every codec (AAC adds some hiss: a brighter spectrum)
    assert vector[CENTROID] * RATE / 2 == pytest.approx(440, rel=0.25)


def test_only_the_first_seconds_are_decoded() -> None:
    raw = _encoded(_tone(300, seconds=5.0, rate=8_000), 8_000, "WAV", "PCM_16")
    assert decode_audio(raw, RATE, max_seconds=2.0).size == 2 * RATE
    assert decode_audio(raw, 8_000, max_seconds=60).size == 5 * 8_000


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (np.random.default_rng(3).bytes(4_000), "not a sound file"),
        (b"", "not a sound file"),
        (_encoded(_tone(440), RATE, "WAV", "PCM_16")[:5_000], "truncated WAV"),
        (_encoded(_tone(440), RATE, "WAV", "PCM_16")[:30], "truncated WAV"),
        (_encoded(np.zeros(0, dtype=np.float32), RATE, "WAV", "PCM_16"), "no audio samples"),
        (b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunkjunkjunkjunkjunkjunk", "not a sound file"),
    ],
    ids=["random-bytes", "empty", "cut-in-the-data", "cut-in-the-header", "no-samples", "junk"],
)
def test_a_file_that_cannot_be_decoded_is_refused_with_a_reason(raw: bytes, says: str) -> None:
    with pytest.raises(UnreadableMedia, match=says):
        decode_audio(raw, RATE, max_seconds=30)


def test_a_wav_streamed_with_an_unknown_length_is_read() -> None:
    raw = bytearray(_encoded(_tone(440), RATE, "WAV", "PCM_16"))
    raw[4:8] = b"\xff\xff\xff\xff"  # what a recorder writes before it knows the size
    assert decode_audio(bytes(raw), RATE, max_seconds=30).size > 0


def test_vectors_have_a_fixed_length_and_the_same_sound_gives_the_same_vector() -> None:
    rng = np.random.default_rng(0)
    waves = [
        _tone(220, 0.5),
        (0.1 * rng.standard_normal(RATE * 3)).astype(np.float32),
        _tone(1_000, 2.0),
    ]
    X = audio_vectors(waves, RATE)  # noqa: N806
    assert X.shape == (3, AUDIO_DIM)
    assert X.dtype == np.float32
    assert np.isfinite(X).all()
    np.testing.assert_array_equal(X, audio_vectors(waves, RATE))
    # an item's vector does not depend on the others in its message (to float rounding)
    np.testing.assert_allclose(audio_vectors(waves[1:2], RATE)[0], X[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(audio_vectors(waves[::-1], RATE)[::-1], X, rtol=1e-5, atol=1e-6)
    assert len({tuple(row) for row in X.round(4)}) == 3


def test_the_statistics_are_librosas() -> None:
    rng = np.random.default_rng(1)
    wave = (_tone(600, 1.5) + 0.05 * rng.standard_normal(int(1.5 * RATE))).astype(np.float32)
    (vector,) = audio_vectors([wave], RATE)
    mfcc = librosa.feature.mfcc(
        y=wave, sr=RATE, n_mfcc=N_MFCC, n_mels=40, n_fft=512, hop_length=160, win_length=400
    )
    delta = librosa.feature.delta(mfcc)
    magnitude = np.abs(librosa.stft(wave, n_fft=512, hop_length=160, win_length=400))
    centroid = librosa.feature.spectral_centroid(S=magnitude, sr=RATE)[0] / (RATE / 2)
    rolloff = librosa.feature.spectral_rolloff(S=magnitude, sr=RATE)[0] / (RATE / 2)
    n = N_MFCC
    np.testing.assert_allclose(vector[:n], mfcc.mean(axis=1) / 100, atol=1e-4)
    np.testing.assert_allclose(vector[n : 2 * n], mfcc.std(axis=1) / 100, atol=1e-4)
    np.testing.assert_allclose(vector[2 * n : 3 * n], delta.mean(axis=1) / 10, atol=1e-4)
    np.testing.assert_allclose(vector[3 * n : 4 * n], delta.std(axis=1) / 10, atol=1e-4)
    assert vector[CENTROID] == pytest.approx(centroid.mean(), abs=1e-4)
    assert vector[CENTROID + 1] == pytest.approx(centroid.std(), abs=1e-4)
    assert vector[ROLLOFF] == pytest.approx(rolloff.mean(), abs=1e-4)


@pytest.mark.parametrize("freq", [250.0, 1_000.0, 3_000.0])
def test_a_tones_centroid_sits_at_its_frequency(freq: float) -> None:
    (vector,) = audio_vectors([_tone(freq)], RATE)
    assert vector[CENTROID] * RATE / 2 == pytest.approx(freq, rel=0.05)
    assert vector[BANDWIDTH] * RATE / 2 < 0.25 * freq + 100  # a pure tone: a narrow spectrum
    # a sine crosses zero twice a period
    assert vector[ZCR] == pytest.approx(2 * freq / RATE, rel=0.05)
    assert vector[LEVEL] * 100 == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.5)


def test_silence_gives_a_finite_vector_with_no_spectrum() -> None:
    (silent,) = audio_vectors([np.zeros(RATE, dtype=np.float32)], RATE)
    assert np.isfinite(silent).all()
    assert silent[CENTROID] == silent[BANDWIDTH] == silent[ROLLOFF] == 0.0
    assert silent[ZCR] == 0.0
    assert silent[LEVEL] == pytest.approx(-1.0)  # the floor: -100 dB
    (tone,) = audio_vectors([_tone(440)], RATE)
    assert not np.allclose(silent, tone)


def test_a_clipped_sound_reads_brighter_than_the_clean_one() -> None:
    clean = _tone(440, amp=0.5)
    clipped = np.clip(_tone(440, amp=4.0), -1.0, 1.0)  # a square-ish wave: odd harmonics
    raw = _encoded(clipped, RATE, "WAV", "PCM_16")
    a, b = audio_vectors([clean, decode_audio(raw, RATE, max_seconds=30)], RATE)
    assert np.isfinite(b).all()
    assert b[CENTROID] > 2 * a[CENTROID]
    assert b[LEVEL] > a[LEVEL]


@pytest.mark.parametrize("samples", [1, 50, 399, 900])
def test_very_short_sounds_get_vectors_too(samples: int) -> None:
    raw = _encoded(_tone(1_000)[:samples], RATE, "WAV", "PCM_16")
    wave = decode_audio(raw, RATE, max_seconds=30)
    assert wave.size == samples
    (vector,) = audio_vectors([wave], RATE)
    assert vector.shape == (AUDIO_DIM,)
    assert np.isfinite(vector).all()
    if samples >= 399:  # a tone cut that short splatters (its edges): still nearer 1 kHz than not
        assert 700 < vector[CENTROID] * RATE / 2 < 1_500


def test_an_empty_message_gives_an_empty_matrix() -> None:
    assert audio_vectors([], RATE).shape == (0, AUDIO_DIM)
