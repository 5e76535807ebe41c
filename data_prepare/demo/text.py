"""Deterministic English sentences for the demo corpus (private helper of ``demo.py``).

A small phrase grammar over a few hundred words gives varied, pronounceable
sentences of about 7-15 words (2-6 s when spoken at 140-185 words per minute).
Everything is drawn from an explicit ``numpy.random.Generator``, so a seed
gives the same text on every machine. Numbers are spelled out, as in
LibriSpeech transcripts.
"""

from __future__ import annotations

import re

import numpy as np

# Word lists are tuples (immutable module constants, not configuration).
NAMES = (
    "Anna", "Peter", "Maria", "James", "Linda", "Robert", "Susan", "Thomas", "Helen", "George",
    "Emily", "Daniel", "Grace", "Henry", "Alice", "Oliver", "Clara", "Samuel", "Laura", "Martin",
    "Rachel", "Edward", "Julia", "Walter", "Nora", "Arthur", "Margaret", "Frank", "Lucy", "Victor",
)  # fmt: skip

ADJECTIVES = (
    "old", "young", "quiet", "bright", "heavy", "small", "large", "warm", "cold", "green",
    "yellow", "careful", "tired", "happy", "strange", "gentle", "narrow", "wooden", "broken",
    "silver", "empty", "crowded", "ancient", "modern", "simple", "curious", "patient", "distant",
    "famous", "hidden", "clever", "noisy", "golden", "frozen", "busy", "lonely", "friendly",
    "dusty", "shiny", "little",
)  # fmt: skip

# (singular, plural)
NOUNS = (
    ("house", "houses"), ("garden", "gardens"), ("river", "rivers"), ("window", "windows"),
    ("letter", "letters"), ("teacher", "teachers"), ("doctor", "doctors"), ("farmer", "farmers"),
    ("child", "children"), ("horse", "horses"), ("bird", "birds"), ("table", "tables"),
    ("basket", "baskets"), ("bridge", "bridges"), ("road", "roads"), ("village", "villages"),
    ("market", "markets"), ("captain", "captains"), ("soldier", "soldiers"), ("painter", "painters"),
    ("kitchen", "kitchens"), ("train", "trains"), ("ship", "ships"), ("mountain", "mountains"),
    ("forest", "forests"), ("lamp", "lamps"), ("book", "books"), ("song", "songs"),
    ("clock", "clocks"), ("door", "doors"), ("stone", "stones"), ("apple", "apples"),
    ("neighbour", "neighbours"), ("student", "students"), ("engine", "engines"),
    ("island", "islands"), ("castle", "castles"), ("coat", "coats"), ("boat", "boats"),
    ("candle", "candles"), ("picture", "pictures"), ("machine", "machines"), ("cat", "cats"),
    ("dog", "dogs"), ("story", "stories"), ("key", "keys"), ("wall", "walls"), ("tower", "towers"),
)  # fmt: skip

# (base, past, third person singular); intransitive, followed by a prepositional phrase
INTRANSITIVE_VERBS = (
    ("walk", "walked", "walks"), ("run", "ran", "runs"), ("sit", "sat", "sits"),
    ("wait", "waited", "waits"), ("sleep", "slept", "sleeps"), ("stand", "stood", "stands"),
    ("travel", "travelled", "travels"), ("arrive", "arrived", "arrives"), ("rest", "rested", "rests"),
    ("climb", "climbed", "climbs"), ("stay", "stayed", "stays"), ("work", "worked", "works"),
    ("sing", "sang", "sings"), ("dance", "danced", "dances"), ("hide", "hid", "hides"),
)  # fmt: skip

TRANSITIVE_VERBS = (
    ("open", "opened", "opens"), ("carry", "carried", "carries"), ("paint", "painted", "paints"),
    ("find", "found", "finds"), ("bring", "brought", "brings"), ("build", "built", "builds"),
    ("clean", "cleaned", "cleans"), ("follow", "followed", "follows"), ("watch", "watched", "watches"),
    ("repair", "repaired", "repairs"), ("sell", "sold", "sells"), ("visit", "visited", "visits"),
    ("remember", "remembered", "remembers"), ("describe", "described", "describes"),
    ("close", "closed", "closes"), ("move", "moved", "moves"), ("read", "read", "reads"),
    ("keep", "kept", "keeps"), ("count", "counted", "counts"), ("pull", "pulled", "pulls"),
)  # fmt: skip

PREPOSITIONS = (
    "near", "behind", "beside", "under", "across", "along", "inside", "around", "towards",
    "beyond", "over", "past",
)  # fmt: skip

ADVERBS = (
    "slowly", "quickly", "quietly", "carefully", "happily", "suddenly", "gently", "loudly",
    "silently", "proudly", "early", "late", "often", "rarely", "calmly",
)  # fmt: skip

DEGREE_ADVERBS = ("very", "rather", "quite", "almost", "really", "surprisingly")

TIME_PHRASES = (
    "this morning", "last night", "in the evening", "before sunrise", "after dinner",
    "every summer", "on a rainy day", "at noon", "during the winter", "in the spring",
    "yesterday afternoon", "long ago", "on monday", "at the end of the week", "once a year",
)  # fmt: skip

PLACE_PHRASES = (
    "in the city", "at the station", "by the sea", "on the hill", "in the old town",
    "at the harbour", "in the valley", "near the school", "at the farm", "in the library",
    "on the north road", "at the corner shop", "in the small church", "beside the lake",
)  # fmt: skip

NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve")

CONNECTIVES = ("because", "although", "while", "until", "when")


def _pick(rng: np.random.Generator, words):
    return words[int(rng.integers(len(words)))]


def _noun_phrase(rng, plural=False, article=True):
    singular, plural_form = _pick(rng, NOUNS)
    words = []
    if rng.random() < 0.5:
        words.append(_pick(rng, ADJECTIVES))
    words.append(plural_form if plural else singular)
    if article and not plural:
        words.insert(0, "the")
    return " ".join(words)


def _clause(rng):
    """A short declarative clause in the past tense (4-9 words)."""
    form = int(rng.integers(3))
    if form == 0:
        verb = _pick(rng, INTRANSITIVE_VERBS)[1]
        return f"{_noun_phrase(rng)} {verb} {_pick(rng, PREPOSITIONS)} {_noun_phrase(rng)}"
    if form == 1:
        verb = _pick(rng, TRANSITIVE_VERBS)[1]
        return f"{_pick(rng, NAMES)} {verb} {_noun_phrase(rng)}"
    verb = _pick(rng, TRANSITIVE_VERBS)[1]
    return f"{_noun_phrase(rng)} {verb} {_noun_phrase(rng)} {_pick(rng, ADVERBS)}"


def make_sentence(rng: np.random.Generator) -> str:
    """One varied English sentence with punctuation (for the synthesizer).

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of all choices.

    Returns
    -------
    str
        A capitalised sentence ending with ".", "?" or "!".

    Example
    -------
    >>> sentence = make_sentence(np.random.default_rng(0))
    >>> sentence[0].isupper() and sentence[-1] in ".?!"
    True
    """
    form = int(rng.integers(10))
    if form == 0:
        verb = _pick(rng, INTRANSITIVE_VERBS)[1]
        text = (
            f"{_noun_phrase(rng)} {verb} {_pick(rng, PREPOSITIONS)} {_noun_phrase(rng)} "
            f"{_pick(rng, TIME_PHRASES)}."
        )
    elif form == 1:
        verb = _pick(rng, TRANSITIVE_VERBS)[1]
        text = f"{_pick(rng, NAMES)} {verb} a {_pick(rng, ADJECTIVES)} {_pick(rng, NOUNS)[0]} {_pick(rng, PLACE_PHRASES)}."
    elif form == 2:
        verb = _pick(rng, INTRANSITIVE_VERBS)[0]
        text = f"Did {_noun_phrase(rng)} {verb} {_pick(rng, PREPOSITIONS)} {_noun_phrase(rng)}?"
    elif form == 3:
        verb = _pick(rng, TRANSITIVE_VERBS)[0]
        later = _pick(rng, INTRANSITIVE_VERBS)[2]
        text = (
            f"We should {verb} {_noun_phrase(rng)} before {_noun_phrase(rng)} "
            f"{later} {_pick(rng, ADVERBS)}."
        )
    elif form == 4:
        verb = _pick(rng, INTRANSITIVE_VERBS)[1]
        text = (
            f"{_pick(rng, NUMBERS)} {_noun_phrase(rng, plural=True)} {verb} "
            f"{_pick(rng, PLACE_PHRASES)} {_pick(rng, TIME_PHRASES)}."
        )
    elif form == 5:
        verb = _pick(rng, TRANSITIVE_VERBS)[1]
        text = (
            f"I think {_pick(rng, NAMES)} {verb} {_noun_phrase(rng)} because it was "
            f"{_pick(rng, ADJECTIVES)}."
        )
    elif form == 6:
        verb = _pick(rng, INTRANSITIVE_VERBS)[1]
        text = (
            f"{_pick(rng, TIME_PHRASES)}, the {_pick(rng, NOUNS)[1]} {verb} {_pick(rng, ADVERBS)} "
            f"{_pick(rng, PREPOSITIONS)} {_noun_phrase(rng)}."
        )
    elif form == 7:
        first, second = _pick(rng, TRANSITIVE_VERBS)[0], _pick(rng, TRANSITIVE_VERBS)[0]
        text = f"Please {first} {_noun_phrase(rng)} and {second} {_noun_phrase(rng)}!"
    elif form == 8:
        text = (
            f"{_pick(rng, NAMES)} said that {_noun_phrase(rng)} was {_pick(rng, DEGREE_ADVERBS)} "
            f"{_pick(rng, ADJECTIVES)} {_pick(rng, TIME_PHRASES)}."
        )
    else:
        text = f"{_clause(rng)} {_pick(rng, CONNECTIVES)} {_clause(rng)}."
    return text[0].upper() + text[1:]


def make_transcript(sentence: str) -> str:
    """LibriSpeech-style transcript: upper case, no punctuation but apostrophes.

    Example
    -------
    >>> make_transcript("Did the old dog wait, near the house?")
    'DID THE OLD DOG WAIT NEAR THE HOUSE'
    """
    words = re.sub(r"[^A-Za-z' ]+", " ", sentence).upper().split()
    return " ".join(words)
