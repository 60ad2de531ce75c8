"""What SynthSpeech says: read sentences (ASR, PR, SID), spoken commands with intents in the style
of Fluent Speech Commands (SLU), and single command words in the style of Speech Commands.

Everything is generated from small word banks with a seeded ``numpy`` generator, so a seed gives
the same texts on every machine. Texts are lower-case words separated by single spaces.
"""

from __future__ import annotations

import itertools

import numpy as np

NAMES = ["anna", "peter", "maria", "john", "lucy", "david", "sarah", "tom", "emma", "paul", "kate", "mark"]
ADJECTIVES = [
    "old", "new", "small", "large", "red", "green", "blue", "yellow", "quiet", "loud", "warm", "cold",
    "bright", "dark", "happy", "tired", "clever", "gentle", "heavy", "empty", "clean", "strange", "famous", "simple",
]  # fmt: skip
NOUNS = [
    "dog", "cat", "horse", "bird", "teacher", "doctor", "farmer", "child", "captain", "painter", "student",
    "neighbour", "box", "letter", "garden", "river", "window", "table", "kettle", "basket", "ladder", "wagon",
    "lantern", "blanket", "violin", "engine", "bottle", "mirror", "pencil", "bridge",
]  # fmt: skip
PLURALS = {noun: noun + ("es" if noun.endswith(("x", "s")) else "s") for noun in NOUNS}
PLURALS["child"] = "children"
VERBS_PAST = [
    "found", "painted", "carried", "opened", "washed", "followed", "watched", "dropped", "fixed", "pushed",
    "borrowed", "counted", "cleaned", "moved", "wanted", "noticed", "lifted", "covered", "sold", "bought",
]  # fmt: skip
VERBS_BASE = ["find", "paint", "carry", "open", "wash", "follow", "watch", "fix", "push", "clean", "move", "sell"]
PLACES = [
    "market", "station", "library", "harbour", "village", "kitchen", "office", "forest", "school", "museum",
    "bakery", "garage", "island", "valley", "hospital", "theatre",
]  # fmt: skip
TIMES = ["today", "yesterday", "tonight", "in the morning", "after lunch", "last week", "on monday", "before dinner"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]
PREPOSITIONS = ["near", "behind", "under", "beside", "inside", "across"]

SENTENCE_TEMPLATES = [
    "the {adj} {noun} {verb} the {noun2} {time}",
    "{name} {verb} a {adj} {noun} near the {place}",
    "we {verb} {number} {plural} at the {place} {time}",
    "did the {noun} {verb_base} the {adj} {noun2} {time}",
    "my {adj} {noun} is {prep} the {place}",
    "{name} and {name2} {verb} the {noun} {prep} the {noun2}",
    "please {verb_base} the {adj} {noun} before the {noun2}",
    "there were {number} {adj} {plural} in the {place}",
    "the {noun} {verb} {number} {plural} {time}",
    "will you {verb_base} the {noun} at the {place} {time}",
]

# Fluent Speech Commands style intents: (action, object, location), "none" where a slot is empty.
COMMAND_PHRASES: dict[tuple[str, str, str], list[str]] = {}


def _add_intents() -> None:
    locations = {"kitchen": "kitchen", "bedroom": "bedroom", "washroom": "washroom"}
    for device in ("lights", "lamp", "music"):
        for action, verbs in (("activate", ("turn on", "switch on")), ("deactivate", ("turn off", "switch off"))):
            word = "on" if action == "activate" else "off"
            COMMAND_PHRASES[(action, device, "none")] = [f"{v} the {device}" for v in verbs] + [f"{device} {word}"]
            if device == "lights":
                for loc in locations:
                    COMMAND_PHRASES[(action, device, loc)] = [f"{v} the {device} in the {loc}" for v in verbs] + [
                        f"{v} the {loc} {device}" for v in verbs
                    ] + [f"{loc} {device} {word}"]
    for thing in ("volume", "heat"):
        for action, verbs in (("increase", ("increase", "turn up", "raise")), ("decrease", ("decrease", "turn down", "lower"))):
            COMMAND_PHRASES[(action, thing, "none")] = [f"{v} the {thing}" for v in verbs]
            if thing == "heat":
                for loc in locations:
                    COMMAND_PHRASES[(action, thing, loc)] = [f"{v} the heat in the {loc}" for v in verbs] + [
                        f"{v} the {loc} heating" for v in verbs[:2]
                    ]
    for language in ("chinese", "korean", "english", "german"):
        COMMAND_PHRASES[("change language", language, "none")] = [
            f"change the language to {language}",
            f"switch the language to {language}",
            f"use {language}",
            f"set my device to {language}",
        ]
    for thing in ("newspaper", "juice", "socks", "shoes"):
        COMMAND_PHRASES[("bring", thing, "none")] = [f"bring me the {thing}", f"get me my {thing}", f"fetch the {thing}"]


_add_intents()
COMMAND_PREFIXES = ["", "please ", "could you ", "hey ", "now "]
COMMAND_SUFFIXES = ["", " please", " now", " for me"]

# Speech Commands v0.02 style single words.
COMMAND_WORDS = [
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "bed", "bird", "cat", "dog", "happy", "house", "tree", "wow", "follow", "forward",
]  # fmt: skip


def make_sentences(count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct sentences from the templates, in generation order."""
    sentences: dict[str, None] = {}
    attempts = 0
    while len(sentences) < count:
        attempts += 1
        if attempts > count * 50:
            raise ValueError(f"cannot make {count} distinct sentences from the word banks")
        template = SENTENCE_TEMPLATES[rng.integers(len(SENTENCE_TEMPLATES))]
        noun, noun2 = rng.choice(NOUNS, size=2, replace=False)
        name, name2 = rng.choice(NAMES, size=2, replace=False)
        text = template.format(
            adj=rng.choice(ADJECTIVES), noun=noun, noun2=noun2, plural=PLURALS[noun], name=name, name2=name2,
            verb=rng.choice(VERBS_PAST), verb_base=rng.choice(VERBS_BASE), place=rng.choice(PLACES),
            time=rng.choice(TIMES), number=rng.choice(NUMBERS), prep=rng.choice(PREPOSITIONS),
        )  # fmt: skip
        sentences[text] = None
    return list(sentences)


def split_command_phrasings(
    rng: np.random.Generator, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> dict[str, dict[tuple[str, str, str], list[str]]]:
    """All phrasings of every intent, split so that each intent has phrasings in every split and
    no phrasing is in two splits. Returns ``split -> intent -> phrasings``."""
    splits: dict[str, dict[tuple[str, str, str], list[str]]] = {"train": {}, "valid": {}, "test": {}}
    for intent, phrases in COMMAND_PHRASES.items():
        variants = [p + phrase + s for phrase, p, s in itertools.product(phrases, COMMAND_PREFIXES, COMMAND_SUFFIXES)]
        variants = [variants[i] for i in rng.permutation(len(variants))]
        n_valid = max(1, round(fractions[1] * len(variants)))
        n_test = max(1, round(fractions[2] * len(variants)))
        splits["valid"][intent] = variants[:n_valid]
        splits["test"][intent] = variants[n_valid : n_valid + n_test]
        splits["train"][intent] = variants[n_valid + n_test :]
    return splits
