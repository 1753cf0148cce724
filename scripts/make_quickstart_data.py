"""Build the quickstart instruction set and answer it once with the teacher (SmolLM2-135M-Instruct).

    HF_HUB_OFFLINE=1 python scripts/make_quickstart_data.py                # writes data/quickstart/*.jsonl
    python scripts/make_quickstart_data.py --limit 4 --out /tmp/qs          # tiny run (4 per split)

The instructions are short-answer tasks written here from small word lists (no downloads): definitions,
synonyms, antonyms, plurals, capitals, one-sentence descriptions, rewrites, formatting, short lists,
classification and one-sentence explanations. The pool is shuffled with a fixed seed; the teacher answers
prompts in that order until every split is full. Each prompt is the tokenizer's chat template around one
user message (`csd.data.prompts.format_prompt("chat", ...)`, exactly what training and evaluation use),
decoding is greedy, and a response is kept only when the teacher ended it with EOS (<|im_end|>) within
`--max-new-tokens` and it is not empty, so references are complete answers.

Output: {train,validation,test}.jsonl, one {"instruction", "input": "", "output"} record per line
(the MiniLLM / Dolly format). Splits are consecutive blocks of the kept examples, so no instruction
appears in two splits.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

SPLIT_SIZES = {"train": 400, "validation": 48, "test": 64}

# ---------------------------------------------------------------------------------------------------
# Word lists. Each category turns a list into instructions through a few phrasings, so the student
# sees varied wording; the phrasing for an item is drawn with the seed.
# ---------------------------------------------------------------------------------------------------
ADJECTIVES = (
    "happy sad big small fast slow hot cold bright dark easy difficult strong weak rich poor loud quiet "
    "young old brave kind angry calm clean dirty empty full early late soft hard heavy light wide narrow "
    "sharp smooth wet dry tall short cheap expensive simple honest polite careful lazy funny serious "
    "friendly proud shy clever curious generous gentle noisy fresh ancient modern famous rare busy"
).split()
NOUNS = (
    "child mouse tooth foot knife leaf city box bus baby wolf goose man woman person fish sheep "
    "berry story church potato tomato hero life wife half shelf glass dish class toy key day "
    "country party lady wish fox watch puppy bench library cactus goose ox deer louse calf "
    "thief roof photo piano hobby"
).split()
CONCEPTS = (
    "democracy|gravity|photosynthesis|inflation|friendship|recycling|evaporation|electricity|an island|"
    "a volcano|a verb|a noun|a planet|a mammal|an insect|a triangle|a budget|a dictionary|a vaccine|"
    "a desert|a glacier|a rainbow|an atom|a calendar|a compass|a bridge|a museum|a poem|a recipe|"
    "a marathon|a telescope|a battery|a river|a forest|an orchestra|a harbor|a canyon|a password|"
    "an election|a habit"
).split("|")
COUNTRIES = (
    "France|Germany|Italy|Spain|Portugal|Japan|China|India|Canada|Mexico|Brazil|Argentina|Egypt|Kenya|"
    "Australia|Russia|Norway|Sweden|Finland|Poland|Greece|Turkey|Ireland|Peru|Chile|Thailand|Vietnam|"
    "South Korea|Indonesia|Nigeria|Morocco|Austria|Switzerland|Belgium|the Netherlands|Denmark|Cuba|"
    "Colombia|New Zealand|the United Kingdom"
).split("|")
TOPICS = (
    "the ocean|the moon|autumn|coffee|a library|mountains|rain|a city at night|friendship|music|"
    "a garden|winter|the desert|cats|dogs|bicycles|the sun|books|a forest|snow|the sky|breakfast|"
    "a train journey|the beach|birds|a thunderstorm|summer|a river|chess|a market|spring|tea|"
    "the stars|a lighthouse|bread|a school|the wind|flowers|a farm|a museum|volcanoes|the internet|"
    "a birthday party|honey|a bakery|an old castle|robots|the Olympic Games|a waterfall|pizza|"
    "a hospital|a rainy Monday|airplanes|a picnic|the night sky"
).split("|")
LIST_CATEGORIES = (
    "fruits|vegetables|colors|farm animals|ocean animals|planets|musical instruments|sports|"
    "countries in Europe|kitchen tools|types of weather|breakfast foods|school subjects|board games|"
    "programming languages|jobs|birds|flowers|trees|means of transport|body parts|clothes|"
    "furniture items|insects|metals|languages|shapes|things found in a park|things you take on a trip|"
    "ways to save water|ways to stay healthy|hobbies|desserts|mammals|reptiles|rivers|"
    "oceans|continents|cities in Asia|herbs|dog breeds|card games|winter sports|things made of wood"
).split("|")
SENTENCES = (
    "The cat sleeps on the sofa.|She walks to school every day.|We eat dinner at seven.|"
    "He plays the guitar well.|They build a small house.|I read a book before bed.|"
    "The dog chases the ball.|The children sing a song.|My brother drives a red car.|"
    "The sun rises in the east.|She writes a letter to her friend.|We visit our grandparents.|"
    "The bird builds a nest.|He drinks a cup of tea.|The students open their books.|"
    "The baker makes fresh bread.|It rains a lot in April.|The team wins the game.|"
    "I clean my room on Sunday.|The teacher explains the lesson.|"
    "the meeting is at noon|please send me the report|i love this song|can you help me|"
    "we need more time|thanks for the gift"
).split("|")
ANIMALS = (
    "dog eagle salmon snake cat frog shark whale penguin lizard horse owl tuna turtle bat "
    "dolphin crocodile parrot cow goldfish sparrow rabbit trout tortoise"
).split()
PHENOMENA = (
    "the sky is blue|ice floats on water|leaves change color in autumn|we have seasons|"
    "the moon has phases|plants need sunlight|metal feels cold to the touch|bread rises|"
    "we need to sleep|the sea is salty|people wear sunscreen|bicycles have gears|"
    "birds migrate|we see lightning before we hear thunder|onions make people cry|"
    "rubber bounces|boats float|the ground is wet after rain|we brush our teeth|"
    "people recycle paper|the sun sets in the west|hot air rises|exercise is healthy|"
    "cats purr|yawning is contagious"
).split("|")
VERBS = (
    "go eat run swim write speak take see buy think teach catch drink sing bring fly begin break "
    "choose drive fall find forget give know leave lose make meet pay read ride sell send sleep "
    "steal throw understand wake wear win"
).split()
COLORED_THINGS = (
    "a banana|the sky on a clear day|grass|snow|a ripe tomato|coal|an orange|milk|a lemon|"
    "a fire truck|a carrot|chocolate|a strawberry|the sea|a polar bear|a crow|a lime|an eggplant|"
    "blood|a cloud|a pumpkin|a flamingo|charcoal|a sunflower"
).split("|")
SENTENCE_STARTS = (
    "The best way to learn a language is|On a rainy day I like to|A good friend is someone who|"
    "The most important meal of the day is|When I grow up I want to|The weather today is|"
    "My favorite season is|A healthy breakfast includes|The first thing I do in the morning is|"
    "A library is a place where|Cats are popular pets because|The ocean is important because|"
    "To stay focused while studying, you should|A good teacher always|Before crossing the street, you should|"
    "The internet is useful because|On weekends many people|A balanced diet contains|"
    "Trees are important because|The best thing about summer is"
).split("|")
TOOLS = (
    "a hammer|a thermometer|a ladder|scissors|a microscope|a stapler|a map|a broom|an umbrella|"
    "a kettle|a ruler|a calculator|a flashlight|a saw|a vacuum cleaner|a magnet|a toaster|glue|"
    "a helmet|a whistle|a shovel|a needle|a sponge|a padlock|a compass|a mirror|soap|a clock"
).split("|")
DISHES = (
    "guacamole|hummus|an omelette|pancakes|french fries|mashed potatoes|popcorn|tofu|sushi rice|"
    "lemonade|apple pie|tomato soup|butter|cheese|yogurt|chocolate|peanut butter|bread|wine|"
    "pasta|tortillas|coleslaw"
).split("|")
RHYME_WORDS = (
    "cat|light|tree|cake|ring|house|moon|rain|bed|star|stone|boat|hat|fish|sing|blue|chair|"
    "bell|clock|snow|train|hand|pen|sun|bee"
).split("|")
WORDS_TO_FORMAT = (
    "hello world|good morning|machine learning|open the door|happy birthday|thank you very much|"
    "knowledge distillation|the quick brown fox|see you soon|red green blue|python code|small steps"
).split("|")


def with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def build_instruction_pool(seed: int = 0) -> list[str]:
    """All candidate instructions, unique, in a seeded random order."""
    rng = random.Random(seed)

    def phrased(templates: list[str], items, **extra) -> list[str]:
        return [rng.choice(templates).format(x=item, **extra) for item in items]

    pool = []
    pool += phrased(["Define the word '{x}' in one sentence.", "What does the word '{x}' mean?"], ADJECTIVES)
    pool += phrased(["Give one synonym for '{x}'.", "What is a synonym of the word '{x}'?"], ADJECTIVES)
    pool += phrased(["What is the opposite of '{x}'?", "Give the antonym of '{x}'."], ADJECTIVES)
    pool += phrased(["What is the plural of '{x}'?", "Write the plural form of the noun '{x}'."], NOUNS)
    pool += phrased(["What is {x}? Answer in one sentence.", "Explain in one sentence what {x} is."], CONCEPTS)
    pool += phrased(["What is the capital of {x}?", "Name the capital city of {x}."], COUNTRIES)
    pool += phrased(["Which continent is {x} in?"], COUNTRIES)
    pool += phrased(["Write one sentence about {x}.", "Describe {x} in one short sentence."], TOPICS)
    pool += phrased(["List three {x}.", "Name three {x}."], LIST_CATEGORIES)
    pool += phrased(["Rewrite this sentence in the past tense: {x}",
                     "Rewrite the following sentence as a question: {x}"], SENTENCES[:20])
    pool += phrased(["Correct the capitalization and punctuation: {x}"], SENTENCES[20:])
    pool += phrased(["Is {x} a mammal, bird, fish, or reptile?"], [with_article(a) for a in ANIMALS])
    pool += phrased(["How many legs does {x} have?", "Where does {x} usually live?"],
                    [with_article(a) for a in ANIMALS])
    pool += phrased(["What is the past tense of '{x}'?", "Give the past tense of the verb '{x}'."], VERBS)
    pool += phrased(["Use the word '{x}' in a short sentence."], NOUNS)
    pool += phrased(["What color is {x}?"], COLORED_THINGS)
    pool += phrased(["Complete the sentence: {x}"], SENTENCE_STARTS)
    pool += phrased(["Explain briefly why {x}.", "In one sentence, why {x}?"], PHENOMENA)
    pool += phrased(["Convert '{x}' to uppercase.", "Write '{x}' in title case."], WORDS_TO_FORMAT)
    pool += phrased(["What is {x} used for?", "In one sentence, what is {x} used for?"], TOOLS)
    pool += phrased(["What is the main ingredient of {x}?"], DISHES)
    pool += phrased(["Name a word that rhymes with '{x}'.", "Give two words that rhyme with '{x}'."],
                    RHYME_WORDS)
    pool += [f"Write the number {n} in words." for n in rng.sample(range(11, 1000), 40)]
    pool += [f"What is {a} plus {b}?" for a, b in zip(rng.sample(range(2, 60), 40), rng.sample(range(2, 60), 40))]
    pool += [f"Which number is larger, {a} or {b}?"
             for a, b in zip(rng.sample(range(10, 999), 25), rng.sample(range(10, 999), 25))]
    pool += [f"Sort these words alphabetically: {', '.join(rng.sample(RHYME_WORDS + ANIMALS, 4))}."
             for _ in range(25)]
    pool = list(dict.fromkeys(pool))  # drop duplicates, keep first occurrence
    rng.shuffle(pool)
    return pool


# ---------------------------------------------------------------------------------------------------
# Answering with the teacher
# ---------------------------------------------------------------------------------------------------
def answer_batch(model, tokenizer, instructions: list[str], max_new_tokens: int) -> list[str | None]:
    """Greedy teacher responses (stripped), or None where the response is empty or hit the length cap."""
    from csd.data.encoding import PromptCollator, pad_token_id_of
    from csd.data.prompts import format_prompt
    from csd.generation import eos_token_ids, sample_batch

    prompts = [format_prompt("chat", tokenizer, instruction) for instruction in instructions]
    batch = PromptCollator(tokenizer)(prompts)
    eos_ids = eos_token_ids(model, tokenizer)
    sequences, response_mask = sample_batch(
        model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens, do_sample=False,
        eos_token_id=eos_ids, pad_token_id=pad_token_id_of(tokenizer))
    responses = []
    for row in range(len(instructions)):
        response_ids = sequences[row][response_mask[row].bool()].tolist()  # up to and including EOS
        finished = bool(response_ids) and response_ids[-1] in eos_ids
        text = tokenizer.decode(response_ids, skip_special_tokens=True).strip()
        responses.append(text if finished and text else None)
    return responses


def answer_until_full(model, tokenizer, pool: list[str], needed: int, batch_size: int,
                      max_new_tokens: int) -> tuple[list[dict], int]:
    """Walk the pool in order, batch by batch, until `needed` finished examples exist.

    Returns (examples in pool order, number of prompts tried)."""
    from tqdm.auto import tqdm

    examples, tried = [], 0
    progress = tqdm(total=needed, desc="teacher answers (kept)", unit="ex")
    with torch.no_grad():
        while len(examples) < needed and tried < len(pool):
            instructions = pool[tried:tried + batch_size]
            tried += len(instructions)
            for instruction, output in zip(instructions, answer_batch(model, tokenizer, instructions, max_new_tokens)):
                if output is not None and len(examples) < needed:
                    examples.append({"instruction": instruction, "input": "", "output": output})
                    progress.update(1)
            progress.set_postfix(tried=tried)
    progress.close()
    if len(examples) < needed:
        raise RuntimeError(f"only {len(examples)} of {len(pool)} prompts got a finished answer, {needed} needed; "
                           "add instructions to the pool or raise --max-new-tokens")
    return examples, tried


def split_examples(examples: list[dict], sizes: dict[str, int]) -> dict[str, list[dict]]:
    """Consecutive blocks in the order of `sizes` (test first, then validation, then train)."""
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = examples[start:start + size]
        start += size
    return splits


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "quickstart")
    parser.add_argument("--limit", type=int, default=None, help="at most this many examples per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads; 1 is much faster when other processes share the cores")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from csd.smollm import load_smollm2

    # Test and validation are filled first so that a --limit run keeps every split non-empty.
    sizes = {name: SPLIT_SIZES[name] for name in ("test", "validation", "train")}
    if args.limit is not None:
        sizes = {name: min(size, args.limit) for name, size in sizes.items()}
    started = time.time()
    model, tokenizer = load_smollm2()
    loaded = time.time()
    pool = build_instruction_pool(args.seed)
    examples, tried = answer_until_full(model, tokenizer, pool, sum(sizes.values()), args.batch_size,
                                        args.max_new_tokens)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, records in split_examples(examples, sizes).items():
        write_jsonl(args.out / f"{name}.jsonl", records)
    print(f"kept {len(examples)} of {tried} prompts (pool {len(pool)}); "
          f"load {loaded - started:.0f} s, generation {time.time() - loaded:.0f} s; wrote "
          + ", ".join(f"{name}={size}" for name, size in sizes.items()) + f" to {args.out}")


if __name__ == "__main__":
    main()
