"""The facts of the embedded world: small, fixed tables of English-like knowledge.

Everything the instruction tasks ask about is stated here once; the pretraining corpus and the
instruction records are both generated from these tables, so a task that the tuned model answers
correctly is answered from knowledge the base model met only as plain sentences.
"""

from __future__ import annotations

CAPITALS: dict[str, str] = {
    "France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin",
    "Portugal": "Lisbon", "Greece": "Athens", "Poland": "Warsaw", "Austria": "Vienna",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Ireland": "Dublin", "Egypt": "Cairo", "Kenya": "Nairobi", "Japan": "Tokyo",
    "China": "Beijing", "India": "Delhi", "Russia": "Moscow", "Canada": "Ottawa",
    "Mexico": "Mexico City", "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana",
    "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Hungary": "Budapest", "Belgium": "Brussels", "Nepal": "Kathmandu",
    "Ghana": "Accra", "Nigeria": "Abuja", "Morocco": "Rabat", "Argentina": "Buenos Aires",
    "Colombia": "Bogota", "Australia": "Canberra", "Iceland": "Reykjavik", "Ukraine": "Kyiv",
}

ANTONYMS: dict[str, str] = {
    "hot": "cold", "big": "small", "fast": "slow", "happy": "sad", "light": "dark",
    "high": "low", "old": "young", "rich": "poor", "strong": "weak", "early": "late",
    "open": "closed", "full": "empty", "hard": "soft", "long": "short", "wet": "dry",
    "clean": "dirty", "loud": "quiet", "thick": "thin", "heavy": "light", "near": "far",
    "good": "bad", "new": "used", "wide": "narrow", "deep": "shallow", "cheap": "expensive",
    "brave": "afraid", "sweet": "sour", "true": "false", "safe": "dangerous", "kind": "cruel",
    "first": "last", "inside": "outside", "above": "below", "win": "lose", "buy": "sell",
    "give": "take", "push": "pull", "laugh": "cry", "love": "hate", "begin": "end",
}

PLURALS: dict[str, str] = {
    "cat": "cats", "dog": "dogs", "house": "houses", "tree": "trees", "car": "cars",
    "book": "books", "river": "rivers", "apple": "apples", "table": "tables", "bird": "birds",
    "box": "boxes", "fox": "foxes", "bus": "buses", "dish": "dishes", "church": "churches",
    "glass": "glasses", "watch": "watches", "brush": "brushes", "city": "cities", "baby": "babies",
    "story": "stories", "lady": "ladies", "party": "parties", "berry": "berries", "knife": "knives",
    "leaf": "leaves", "wolf": "wolves", "wife": "wives", "child": "children", "man": "men",
    "woman": "women", "mouse": "mice", "foot": "feet", "tooth": "teeth", "goose": "geese",
    "person": "people", "sheep": "sheep", "fish": "fish", "ox": "oxen", "potato": "potatoes",
    "tomato": "tomatoes", "hero": "heroes", "key": "keys", "toy": "toys", "day": "days",
    "horse": "horses", "stone": "stones", "door": "doors", "cloud": "clouds", "shoe": "shoes",
}

ANIMAL_SOUNDS: dict[str, str] = {
    "dog": "woof", "cat": "meow", "cow": "moo", "duck": "quack", "sheep": "baa",
    "pig": "oink", "lion": "roar", "owl": "hoot", "horse": "neigh", "snake": "hiss",
    "frog": "croak", "bee": "buzz", "mouse": "squeak", "goat": "bleat", "wolf": "howl",
    "crow": "caw", "donkey": "bray", "chick": "cheep", "dove": "coo", "turkey": "gobble",
}

NUMBER_WORDS: list[str] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
]

# Words the letter-level operations (reverse, uppercase, count letters) are asked about.
SPELLING_WORDS: list[str] = sorted(
    {w for w in list(PLURALS) + list(ANTONYMS) + list(ANIMAL_SOUNDS) if " " not in w and len(w) <= 8}
)

# Subject-verb agreement: (base form, third person singular) and the objects that fit.
VERBS_PRESENT: dict[str, str] = {
    "go": "goes", "eat": "eats", "read": "reads", "like": "likes", "see": "sees",
    "want": "wants", "need": "needs", "carry": "carries", "watch": "watches", "wash": "washes",
    "fix": "fixes", "play": "plays", "find": "finds", "make": "makes", "have": "has",
    "open": "opens", "paint": "paints", "visit": "visits", "catch": "catches", "study": "studies",
}
SINGULAR_SUBJECTS: list[str] = ["he", "she", "it", "the boy", "the girl", "my friend", "the teacher", "the farmer"]
PRESENT_OBJECTS: list[str] = [
    "the book", "the apple", "the car", "a letter", "the door", "a song", "the river", "the map",
    "the garden", "a box",
]

# Active to passive: (past tense, past participle).
VERBS_PAST: dict[str, tuple[str, str]] = {
    "kick": ("kicked", "kicked"), "eat": ("ate", "eaten"), "see": ("saw", "seen"),
    "paint": ("painted", "painted"), "write": ("wrote", "written"), "build": ("built", "built"),
    "break": ("broke", "broken"), "find": ("found", "found"), "take": ("took", "taken"),
    "clean": ("cleaned", "cleaned"), "throw": ("threw", "thrown"), "open": ("opened", "opened"),
    "drive": ("drove", "driven"), "carry": ("carried", "carried"), "sell": ("sold", "sold"),
    "catch": ("caught", "caught"),
}
AGENTS: list[str] = ["the boy", "the girl", "the teacher", "the farmer", "the king", "my mother", "the cat", "a child"]
PATIENTS: list[str] = ["the ball", "the cake", "the door", "the letter", "the house", "the car", "the box", "the window"]

# Everyday sentences about asking and answering, so the words that prompt templates and instructions
# use (instruction, task, input, response, request, context, rewrite, convert ...) are ordinary
# English to the base model, as they are to any real pretrained model. None is in instruction format.
CLASSROOM_AGENTS: list[str] = ["the teacher", "my friend", "the girl", "the boy", "the student", "my mother",
                               "the farmer", "the king", "a child", "the assistant", "the user", "the writer"]
CLASSROOM_ACTIONS: list[str] = [
    "gave an instruction that describes a task", "wrote a response that completes the request",
    "read the input that provides further context", "paired each instruction with an input",
    "answered the request appropriately", "looked at the task below", "wrote the answer below the question",
    "asked a question about the word", "wrote the word in capital letters", "gave a short response",
    "found the context helpful", "made a request to the assistant", "wrote a response to the user",
    "asked which city is the capital", "asked what the opposite of the word is", "named the capital city",
    "told me the plural form of the noun", "could spell the given word backwards", "counted the letters of the word",
    "had to rewrite the sentence in the passive voice", "had to convert the sentence to passive voice",
    "turned the active sentence into a passive one", "fixed the grammar of the sentence",
    "corrected the verb so that it agrees with the subject", "computed the sum and wrote the answer as a word",
    "solved the sum below", "added the numbers and answered in words", "subtracted and wrote the answer as a word",
    "made the word uppercase", "converted the noun to its plural", "named the sound this animal makes",
    "found a word that means the opposite", "gave an antonym of the word", "wrote the singular form of the noun",
    "calculated the answer", "said which animal makes the sound", "followed the instruction",
    "read the following sentence", "checked the response", "completed the request",
]
