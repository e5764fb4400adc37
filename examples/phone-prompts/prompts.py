"""Telephone prompts by language: real recordings of five languages, as Debian ships them.

Asterisk's voice prompts ("please enter your PIN", "the number you have dialed...", the digits,
the letters) recorded by professional voices, licensed CC-BY-SA 3.0, in Debian's packages::

    apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav \
        asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav \
        asterisk-prompt-it-menardi-wav

Six voices, five languages: English and Mexican Spanish by the same speaker (Allison Smith), so
a model cannot tell those two apart by the voice; Canadian French (June Wallack); Italian by a
man (Carlo) and by a woman (Menardi); Russian. 8 kHz, 16-bit WAV, 0.2 s to a minute and more.
The task is to say which language a prompt is in. Kept: the files of speech; left out: the
``silence/`` folder, every file whose bytes another voice also has (beeps and tones), and files
with no sound at all (one Russian file is a bare 44-byte header, which the ingester rejects).

    python examples/phone-prompts/prompts.py > prompts.jsonl   # every prompt, for labelloop ingest

Each line is an item whose ``audio`` is the file's path (the ingester reads it when
``LABELLOOP_INGESTER_MEDIA_ROOT`` covers :data:`ROOT`), with its language in
``metadata.simulation_truth`` (what the simulated crew answers from). The end-to-end test and
the benchmark load the same prompts through :func:`load_prompts`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.events import ItemIn

Array = npt.NDArray[Any]

ROOT = Path("/usr/share/asterisk/sounds")
VOICES: dict[str, str] = {
    "en_US_f_Allison": "english",
    "es_MX_f_Allison": "spanish",
    "fr_CA_f_June": "french",
    "it_IT_m_Carlo": "italian",
    "it_IT_f_Menardi": "italian",
    "ru_RU_f_IvrvoiceRU": "russian",
}
CLASSES = ["english", "french", "italian", "russian", "spanish"]
PACKAGES = (
    "asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav "
    "asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav asterisk-prompt-it-menardi-wav"
)
PREFIX = "prompt"
_WAV_HEADER = 44
"""Bytes of a plain WAV file's header: a file no longer holds no sound."""


class PromptsMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Prompts:
    paths: list[Path]
    labels: Array
    """Each prompt's language."""
    voices: list[str]
    classes: list[str]

    def split(self, seed: int, test_fraction: float = 0.3) -> tuple[Array, Array]:
        """Pool and held-out positions, sorted: a seeded share of each language held out."""
        rng = np.random.default_rng(seed)
        pool, test = [], []
        for name in self.classes:
            members = rng.permutation(np.flatnonzero(self.labels == name))
            n_test = round(len(members) * test_fraction)
            test.extend(members[:n_test].tolist())
            pool.extend(members[n_test:].tolist())
        return np.sort(np.asarray(pool)), np.sort(np.asarray(test))

    def subset(self, index: Array, per_class: int, seed: int) -> Array:
        """At most ``per_class`` positions of each language from ``index`` (seeded), sorted."""
        rng = np.random.default_rng(seed)
        out: list[int] = []
        for name in self.classes:
            members = index[self.labels[index] == name]
            out.extend(rng.permutation(members)[:per_class].tolist())
        return np.sort(np.asarray(out))

    def items(self, index: Array, *, n_gold: int = 0, seed: int = 0) -> list[ItemIn]:
        """Items for ``labelloop ingest``: the file's path, the truth for the simulated crew,
        and ``n_gold`` of them (seeded) with their labels known, as gold."""
        rng = np.random.default_rng(seed)
        gold = set(rng.choice(index, size=min(n_gold, len(index)), replace=False).tolist())
        return [
            ItemIn(
                data={"audio": str(self.paths[i])},
                metadata={"simulation_truth": str(self.labels[i]), "voice": self.voices[i]},
                known_label=str(self.labels[i]) if int(i) in gold else None,
                external_id=f"{PREFIX}-{self.voices[i]}-{self.paths[i].stem}",
            )
            for i in index
        ]


def load_prompts(root: Path = ROOT) -> Prompts:
    """Every speech prompt of the six voices, voice by voice, file names sorted."""
    found: dict[str, list[tuple[Path, str]]] = {}
    for voice in VOICES:
        folder = root / voice
        if not folder.is_dir():
            raise PromptsMissing(
                f"{folder} is missing: the prompts come from Debian's packages "
                f"(apt-get install {PACKAGES})"
            )
        for path in sorted(folder.rglob("*.wav")):
            raw = path.read_bytes()
            if "silence" in path.relative_to(folder).parts or len(raw) <= _WAV_HEADER:
                continue
            found.setdefault(voice, []).append((path, hashlib.sha256(raw).hexdigest()))
    # a file whose bytes two voices share is no one's speech (beeps, tones)
    voices_of = Counter(h for files in found.values() for h in {h for _, h in files})
    paths: list[Path] = []
    labels: list[str] = []
    voices: list[str] = []
    for voice, files in found.items():
        for path, digest in files:
            if voices_of[digest] > 1:
                continue
            paths.append(path)
            labels.append(VOICES[voice])
            voices.append(voice)
    return Prompts(paths, np.asarray(labels, dtype=object), voices, CLASSES)


def main() -> None:
    prompts = load_prompts()
    for item in prompts.items(np.arange(len(prompts.paths))):
        sys.stdout.write(json.dumps(item.model_dump(mode="json", exclude_none=True)) + "\n")


if __name__ == "__main__":
    main()
