"""Procedurally generated capability tasks, in the spirit of reasoning-gym.

Why generate instead of vendoring: every item is a pure function of (task, version, index),
so sets are reproducible, unlimited, and cannot have leaked into any training data. Item ``i``
is the same whatever ``n`` is asked for. Bump the ``*_VERSION`` string when changing a generator.

Tasks (gold in ``meta["answer"]``; scorers in `scoring`):

- ``arith``: multi-step integer arithmetic with + - * and parentheses, e.g. ``(7 + 5) * 3 - 4``;
- ``sort-words``: sort 4-7 distinct words alphabetically (``meta["words"]`` = the words);
- ``count-letters``: how often a letter occurs in a word (sometimes 0).

(The ``reasoning-gym`` package itself was not used: these three need no dependency.)
"""

from __future__ import annotations

import random

from ..data.query import Query

ARITH_VERSION = "arith-v1"
SORT_VERSION = "sort-words-v1"
COUNT_VERSION = "count-letters-v1"

# Concrete, unambiguous lowercase nouns (no word is a prefix-sensitive plural of another).
WORDS = tuple("""
anchor apple badger banana basket beetle blanket bottle bridge butter cabbage camera candle
canyon carrot castle cherry chimney circus cobalt copper cotton crayon dagger desert dolphin
dragon eagle engine falcon feather fiddle forest garden garlic giraffe glacier goblet granite
hammer harbor helmet hollow island jacket jigsaw kettle kitten ladder lantern lemon lizard
magnet mango marble meadow mirror monkey mustard needle nutmeg oyster paddle parrot pepper
pebble pencil pillow planet pocket pumpkin puzzle quartz rabbit ribbon rocket saddle salmon
sandal scooter shovel silver spider sponge squirrel strawberry summit tablet teapot thimble
ticket tiger tomato trumpet tunnel turtle umbrella valley velvet violin walnut wagon window
wizard yogurt zebra zipper mississippi banana coconut balloon bookkeeper committee
""".split())
WORDS = tuple(dict.fromkeys(WORDS))  # keep order, drop repeats
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def _query(task: str, version: str, i: int, text: str, answer: str, **meta) -> Query:
    return Query(id=f"{task}-{i:04d}", text=text, category="capability", source="procedural",
                 set_name=f"procedural:{task}", split="eval",
                 meta={"answer": answer, "task": task, "generator": version, **meta})


def arith_item(i: int) -> Query:
    """``(a op b) op c ...`` with 2-4 operations on small integers; value tracked exactly."""
    rng = random.Random(f"{ARITH_VERSION}:{i}")
    value = rng.randint(2, 30)
    expr = str(value)
    for step in range(rng.randint(2, 4)):
        op = rng.choice("+-*")
        b = rng.randint(2, 9) if op == "*" else rng.randint(2, 30)
        left = expr if step == 0 else f"({expr})"
        if rng.random() < 0.5:
            expr, value = f"{left} {op} {b}", {"+": value + b, "-": value - b, "*": value * b}[op]
        else:
            expr, value = f"{b} {op} {left}", {"+": b + value, "-": b - value, "*": b * value}[op]
    text = f"Compute {expr}. Give the final answer as a single integer."
    return _query("arith", ARITH_VERSION, i, text, str(value), expression=expr)


def sort_words_item(i: int) -> Query:
    rng = random.Random(f"{SORT_VERSION}:{i}")
    words = rng.sample(WORDS, rng.randint(4, 7))
    text = (f"Sort the following words in alphabetical order: {', '.join(words)}. "
            f"Answer with the sorted words, separated by commas.")
    return _query("sort-words", SORT_VERSION, i, text, ", ".join(sorted(words)), words=words)


def count_letters_item(i: int) -> Query:
    rng = random.Random(f"{COUNT_VERSION}:{i}")
    word = rng.choice(WORDS)
    absent = [c for c in _ALPHABET if c not in word]
    # Mostly letters of the word (repeated ones are the interesting case), sometimes absent ones.
    letter = rng.choice(absent) if rng.random() < 0.15 else rng.choice(word)
    text = f'How many times does the letter "{letter}" appear in the word "{word}"? Answer with a number.'
    return _query("count-letters", COUNT_VERSION, i, text, str(word.count(letter)), word=word, letter=letter)


def generate(task: str, n: int) -> list[Query]:
    """Items 0..n-1 of a procedural task."""
    make = {"arith": arith_item, "sort-words": sort_words_item, "count-letters": count_letters_item}[task]
    return [make(i) for i in range(n)]


__all__ = ["WORDS", "arith_item", "count_letters_item", "generate", "sort_words_item"]
