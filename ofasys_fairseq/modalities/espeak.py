"""eSpeak NG, offline, through the library and voices that the ``espeakng-loader`` wheel
bundles (no system package): speech synthesis for data that needs real speech signals,
and grapheme-to-phoneme conversion.

eSpeak NG is a rule-based formant synthesizer: its speech is intelligible and varies
with voice, variant, speed and pitch, but it is not a recording of a human.
"""
import ctypes
import threading
from typing import List, Optional

import numpy as np

# espeak_AUDIO_OUTPUT, initialization options, espeak_PARAMETER and text flags of speak_lib.h
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000  # report a failure instead of exiting the process
RATE, PITCH = 1, 3
CHARS_UTF8 = 1
PHONEMES_IPA = 0x02
ENGLISH_VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029",
                  "en-gb-x-gbclan", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.c_void_p)


def _declare(library: ctypes.CDLL) -> None:
    """The signatures of the functions used (speak_lib.h): ctypes would pass size_t and
    pointers as C ints otherwise."""
    signatures = {
        "espeak_Initialize": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                             ctypes.c_int]),
        "espeak_SetSynthCallback": (None, [_SYNTH_CALLBACK]),
        "espeak_SetVoiceByName": (ctypes.c_int, [ctypes.c_char_p]),
        "espeak_SetParameter": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_int]),
        "espeak_Synth": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                        ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                        ctypes.c_void_p, ctypes.c_void_p]),
        "espeak_Synchronize": (ctypes.c_int, []),
        "espeak_TextToPhonemes": (ctypes.c_char_p, [ctypes.POINTER(ctypes.c_char_p),
                                                    ctypes.c_int, ctypes.c_int]),
    }
    for name, (result, arguments) in signatures.items():
        function = getattr(library, name)
        function.restype, function.argtypes = result, arguments


class ESpeak:
    """The process's one eSpeak NG engine: ``ESpeak.get()`` loads it on first use (the
    library keeps global state, so there is one engine and its calls are serialized)."""

    _instance: Optional["ESpeak"] = None
    _lock = threading.Lock()

    def __init__(self, library: ctypes.CDLL, data_path: str):
        if ESpeak._instance is not None:
            raise RuntimeError("eSpeak NG has one engine per process: use ESpeak.get()")
        self.library = library
        _declare(library)
        self.sample_rate = library.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), INITIALIZE_DONT_EXIT)
        if self.sample_rate <= 0:
            raise RuntimeError(f"eSpeak NG failed to initialize (error {self.sample_rate}) "
                               f"with its data at {data_path}")
        self._chunks: List[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._receive)  # kept alive with the engine
        library.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> "ESpeak":
        with cls._lock:
            if cls._instance is None:
                try:
                    import espeakng_loader
                except ImportError as error:
                    raise ImportError("eSpeak NG comes with the espeakng-loader package: "
                                      "pip install espeakng-loader") from error
                cls._instance = cls(ctypes.CDLL(espeakng_loader.get_library_path()),
                                    espeakng_loader.get_data_path())
            return cls._instance

    def synthesize(self, text: str, voice: str = "en-us", rate: int = 175,
                   pitch: int = 50) -> np.ndarray:
        """``text`` spoken as int16 samples at ``sample_rate``.

        Args:
            voice: a language voice, optionally with a variant (``"en-gb+f3"``).
            rate: words per minute (80-450).
            pitch: 0-99 (50 is the voice's own).
        """
        with self._lock:
            self._voice(voice)
            self.library.espeak_SetParameter(RATE, rate, 0)
            self.library.espeak_SetParameter(PITCH, pitch, 0)
            self._chunks = []
            data = text.encode("utf-8")
            status = self.library.espeak_Synth(data, len(data) + 1, 0, 0, 0, CHARS_UTF8, None,
                                               None)
            self.library.espeak_Synchronize()
            if status != 0:
                raise RuntimeError(f"eSpeak NG could not speak {text!r} (error {status})")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def phonemes(self, text: str, voice: str = "en-us") -> List[List[str]]:
        """The IPA phones of each word of ``text`` (stress marks kept on their vowel)."""
        with self._lock:
            self._voice(voice)
            pointer = ctypes.c_char_p(text.encode("utf-8"))
            words: List[List[str]] = []
            separator = ord(" ") << 8  # phones separated by a space, words by two
            while pointer.value:
                clause = self.library.espeak_TextToPhonemes(ctypes.byref(pointer), CHARS_UTF8,
                                                            PHONEMES_IPA | separator)
                words += [w.split() for w in clause.decode("utf-8").split("  ") if w.strip()]
        return words

    def check_voice(self, voice: str) -> None:
        """ValueError unless eSpeak NG has ``voice``."""
        with self._lock:
            self._voice(voice)

    def _voice(self, voice: str) -> None:
        if self.library.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r} (English ones: "
                             f"{', '.join(ENGLISH_VOICES)}; a variant follows a +: en+f3)")

    def _receive(self, samples, count, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0
