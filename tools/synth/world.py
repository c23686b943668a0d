"""The synthetic world: interest facets, their title lexicons and selling points, the templates.

Everything here is a constant; the generator's seed only decides how the world is sampled. The
rules that make the benchmark work, checked by check_world() (and by the tests):

* every content word of a title belongs to exactly one facet, so a title's facet is recoverable
  from its words (facet_of_title), and no facet's name is written in any title;
* selling points use none of the title words (only shared function words), so a model cannot copy
  its way from the history to the right point: it has to learn which titles go with which points;
* every selling point belongs to one facet, and no point's words contain another point's words.

Facet fields: id, name (as profiles write it), taste (a phrase for the profile), mods (title
modifiers), nouns (title nouns), points (selling-point phrases, lower case noun phrases, as they
appear in ad descriptions and target titles).
"""

import re

FACETS = [
    {"id": "space_opera", "name": "space opera", "taste": "grand adventures among the stars",
     "mods": ["Starborn", "Stellar", "Orbital", "Cosmic", "Astral", "Lunar", "Solar", "Eclipsed",
              "Warp", "Nova"],
     "nouns": ["Empire", "Fleet", "Nebula", "Starship", "Armada", "Comet", "Void", "Dominion",
               "Galaxy", "Pulsar", "Admiral", "Quasar"],
     "points": ["a sweeping interstellar saga", "epic battles across distant worlds",
                "a rebel crew against a tyrant", "adventure beyond the speed of light"]},
    {"id": "cozy_mystery", "name": "cozy mystery", "taste": "gentle village puzzles",
     "mods": ["Crumpet", "Vicarage", "Hollyhock", "Thimble", "Gingham", "Marmalade", "Pennyroyal",
              "Cottage", "Knitted", "Teacup"],
     "nouns": ["Murder", "Alibi", "Poison", "Clue", "Inspector", "Corpse", "Suspect", "Sleuth",
               "Motive", "Parlour", "Spinster", "Verdict"],
     "points": ["a charming small town whodunit", "gentle puzzles over afternoon tea",
                "a nosy neighbour who cracks it", "crime without the gore"]},
    {"id": "military_history", "name": "military history", "taste": "the wars that shaped nations",
     "mods": ["Trench", "Artillery", "Regimental", "Napoleonic", "Garrison", "Infantry", "Bayonet",
              "Cavalry", "Frontline", "Armoured"],
     "nouns": ["Campaign", "Siege", "Battalion", "Legion", "General", "Offensive", "Retreat",
               "Fortress", "Division", "Salient", "Blitz", "Rampart"],
     "points": ["battle plans from real wars", "true stories of courage under fire",
                "the tactics that decided nations", "maps of every major engagement"]},
    {"id": "baking", "name": "baking", "taste": "home baking",
     "mods": ["Sourdough", "Crusty", "Sugared", "Yeasted", "Glazed", "Frosted", "Cinnamon",
              "Almond", "Honeyed", "Buttery"],
     "nouns": ["Loaf", "Scone", "Pastry", "Croissant", "Muffin", "Tart", "Crumb", "Oven", "Bakery",
               "Dough", "Baguette", "Pretzel"],
     "points": ["recipes that rise every time", "warm bread from your own kitchen",
                "step by step cakes and pies", "weekend treats for the whole family"]},
    {"id": "startups", "name": "startups", "taste": "building new companies",
     "mods": ["Lean", "Scalable", "Disruptive", "Venture", "Agile", "Bootstrapped", "Pivotal",
              "Seed", "Viral", "Unicorn"],
     "nouns": ["Founder", "Pitch", "Funding", "Pivot", "Runway", "Launch", "Growth", "Incubator",
               "Valuation", "Exit", "Garage", "Cofounder"],
     "points": ["a company built from nothing", "advice for first time entrepreneurs",
                "raising capital without losing control", "the playbook of billion dollar firms"]},
    {"id": "epic_fantasy", "name": "epic fantasy", "taste": "quests in magical realms",
     "mods": ["Elven", "Runic", "Enchanted", "Cursed", "Crowned", "Shadowed", "Ashen", "Gilded",
              "Thornbound", "Wyvern"],
     "nouns": ["Dragon", "Sword", "Crown", "Wizard", "Realm", "Prophecy", "Sorceress", "Citadel",
               "Rune", "Oath", "Kingdom", "Griffin"],
     "points": ["a quest for a lost magic", "heroes and monsters in an ancient world",
                "a chosen one against the dark", "magic with a price to pay"]},
    {"id": "true_crime", "name": "true crime", "taste": "real criminal cases",
     "mods": ["Cold", "Unsolved", "Forensic", "Missing", "Wanted", "Notorious", "Fugitive",
              "Homicide", "Serial", "Deadly"],
     "nouns": ["Killer", "Detective", "Case", "Evidence", "Trial", "Confession", "Witness", "Jury",
               "Heist", "Gangster", "Mugshot", "Prosecutor"],
     "points": ["the real investigation behind the headlines",
                "a courtroom drama that really happened", "inside the head of a criminal",
                "police files never seen before"]},
    {"id": "gardening", "name": "gardening", "taste": "plants and outdoor growing",
     "mods": ["Lavender", "Perennial", "Blooming", "Evergreen", "Heirloom", "Potted", "Wildflower",
              "Mossy", "Seasonal", "Sunny"],
     "nouns": ["Allotment", "Greenhouse", "Trellis", "Orchard", "Hedge", "Seedling", "Compost",
               "Tulip", "Meadow", "Rose", "Border", "Bulb"],
     "points": ["a greener yard in every season", "plants that thrive with little care",
                "vegetables you grow yourself", "flowers for small spaces"]},
    {"id": "regency_romance", "name": "regency romance", "taste": "love stories in high society",
     "mods": ["Scandalous", "Wicked", "Forbidden", "Courtly", "Velvet", "Silken", "Rakish",
              "Betrothed", "Ballroom", "Wallflower"],
     "nouns": ["Duke", "Earl", "Heiress", "Kiss", "Waltz", "Suitor", "Governess", "Marquess",
               "Debutante", "Scandal", "Bride", "Viscount"],
     "points": ["a slow burn love story", "witty banter and a happy ending",
                "love against the rules of society", "a marriage of convenience turned real"]},
    {"id": "travel", "name": "travel writing", "taste": "journeys to faraway places",
     "mods": ["Wandering", "Nomadic", "Overland", "Coastal", "Backpacking", "Faraway", "Roaming",
              "Island", "Desert", "Northern"],
     "nouns": ["Journey", "Passport", "Voyage", "Road", "Caravan", "Compass", "Itinerary",
               "Hostel", "Railway", "Harbour", "Atlas", "Postcard"],
     "points": ["a trip through unforgettable places", "hidden corners only locals know",
                "long highways and strangers met", "a guide for restless feet"]},
    {"id": "philosophy", "name": "philosophy", "taste": "big ideas about how to live",
     "mods": ["Stoic", "Socratic", "Existential", "Rational", "Ethical", "Metaphysical",
              "Skeptical", "Examined", "Virtuous", "Dialectic"],
     "nouns": ["Wisdom", "Reason", "Virtue", "Meditations", "Dialogue", "Truth", "Mind", "Ethics",
               "Paradox", "Logic", "Essence", "Being"],
     "points": ["big questions about how to live", "ancient ideas for modern life",
                "clear thinking in a confusing world", "the meaning of a good life"]},
    {"id": "horror", "name": "horror", "taste": "tales that frighten",
     "mods": ["Haunted", "Hollow", "Ghostly", "Wretched", "Midnight", "Creeping", "Grim",
              "Rotting", "Shrieking", "Bloodied"],
     "nouns": ["Crypt", "Phantom", "Asylum", "Coffin", "Specter", "Demon", "Hex", "Skull",
               "Cellar", "Graveyard", "Wraith", "Banshee"],
     "points": ["a chilling tale that keeps you awake", "dread in every shadow",
                "terror in an old house", "nightmares that follow you home"]},
    {"id": "personal_finance", "name": "personal finance", "taste": "managing money well",
     "mods": ["Frugal", "Wealthy", "Thrifty", "Compound", "Solvent", "Savvy", "Prosperous",
              "Passive", "Retired", "Richer"],
     "nouns": ["Money", "Savings", "Budget", "Pension", "Dividend", "Investor", "Fortune",
               "Wallet", "Mortgage", "Millionaire", "Paycheck", "Nest"],
     "points": ["simple steps to financial freedom", "a way out of debt for good",
                "investing with confidence", "saving more without feeling poor"]},
    {"id": "nature", "name": "nature writing", "taste": "wild animals and places",
     "mods": ["Wild", "Feral", "Untamed", "Migrating", "Nocturnal", "Woodland", "Alpine", "Arctic",
              "Rewilded", "Tidal"],
     "nouns": ["Fox", "Owl", "Wolf", "Otter", "Heron", "Badger", "Salmon", "Forest", "River",
               "Moor", "Hare", "Eagle"],
     "points": ["animals in their secret lives", "a love letter to the outdoors",
                "untouched places worth protecting", "the rhythm of the changing seasons"]},
    {"id": "popular_science", "name": "popular science", "taste": "how the world works",
     "mods": ["Quantum", "Atomic", "Molecular", "Relative", "Genetic", "Electric", "Cellular",
              "Chemical", "Elemental", "Infinite"],
     "nouns": ["Particle", "Gene", "Atom", "Equation", "Theory", "Experiment", "Neuron",
               "Molecule", "Entropy", "Photon", "Lab", "Brain"],
     "points": ["science explained without the jargon", "the discoveries that shaped our world",
                "curious facts about how things work", "a tour of the laws of physics"]},
    {"id": "productivity", "name": "productivity", "taste": "getting more out of each day",
     "mods": ["Focused", "Mindful", "Deliberate", "Effortless", "Daily", "Tiny", "Deep",
              "Essential", "Morning", "Habitual"],
     "nouns": ["Habit", "Routine", "Focus", "Discipline", "Goals", "Momentum", "Calendar",
               "Checklist", "Mindset", "Priority", "Ritual", "Hour"],
     "points": ["small changes with big results", "more done in less time",
                "an end to procrastination", "a calmer and more organised week"]},
]

# Words any title or point may use; they carry no facet.
FUNCTION_WORDS = frozenset(["the", "of", "and", "a", "an", "in", "to", "for", "with", "on", "at",
                            "from", "by", "that", "who", "your", "you", "our", "their", "every",
                            "about", "how", "more", "without", "against", "beyond", "under",
                            "through", "only", "never", "all", "over", "into", "each"])

# Title patterns: M = a modifier, N / N2 = two different nouns, all of one facet.
TITLE_PATTERNS = [
    "The {M} {N}",
    "{M} {N}",
    "{N} of the {M} {N2}",
    "The {N} and the {N2}",
    "{N} of {N2}",
    "The {M} {N} of {N2}",
    "A {M} {N}",
    "{M} {N} and {N2}",
]

# How an ad description states each selling point (one sentence per point). {P} is the point
# with its first letter capitalized, {p} the point as is.
DESCRIPTION_FRAMES = ["{P}.", "Expect {p}.", "Readers love {p}.", "Inside: {p}.", "Also {p}."]

# The surface form of a personalized target title (documented in docs/SYNTH.md).
TARGET_SEPARATOR = ": "


def target_title(original, point):
    """The target title: the original title plus the selling point, or the original unchanged."""
    return original if point is None else original + TARGET_SEPARATOR + point


# The synthetic demo's templates, in the structure of MODEL_SPEC §5.1: prompt1 is a 6-line
# role-play instruction, a blank line and a line introducing the user profile (the user-embedding
# slot follows it); prompt2 introduces the original title and the description and cues the output,
# every line ending with a newline. The keys are those tools/init_package.py --templates reads.
TEMPLATES = {
    "user_prompt": "The vectors above are the books this user reviewed, oldest first. "
                   "Predict the book that the user may review next:",
    "prompt1": ("You are an expert in book-app operations and in consumer psychology.\n"
                "Rewrite the title of a book so that it appeals to one particular reader.\n"
                "Use what this reader likes, as the user profile below shows it.\n"
                "Keep the original title and add at most one selling point from the description.\n"
                "Choose a selling point that fits this reader; never force one.\n"
                "If none fits, return the original title unchanged.\n"
                "\n"
                "User profile:\n"),
    "prompt2": ("Original title:\n{title}\n"
                "Description:\n{description}\n"
                "New title:\n"),
    "profile_prompt": ("The vector above describes one reader of a book app. Describe this "
                       "reader's long-term and short-term reading interests, reading preferences "
                       "and needs, and how books should be recommended to them. Answer in English "
                       "as JSON with the keys Long-term Interest, Short-term Interest, "
                       "Preference, User Needs, Delivery Suggestion and User Profile Description."),
}

TITLE_MAX_CHARS = 768        # MODEL_SPEC §5.1 (--title_len)
DESCRIPTION_MAX_CHARS = 4096  # MODEL_SPEC §5.1 (--desc_len)

_FIELD_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def prompt2_errors(template):
    """Problems with a prompt2 template: only {title}, {description}, {{ and }} may appear."""
    errs, seen = [], set()
    for m in _FIELD_RE.finditer(template):
        s = m.group(0)
        if s in ("{{", "}}"):
            continue
        if m.group(1) in ("title", "description"):
            seen.add(m.group(1))
            continue
        errs.append(f"prompt2: {s!r} at offset {m.start()} is not {{title}}, {{description}}, "
                    f"{{{{ or }}}}")
    for f in ("title", "description"):
        if f not in seen:
            errs.append(f"prompt2: has no {{{f}}} field")
    return errs


def render_prompt2(template, title, description):
    """prompt2 filled in as the reference data script does (MODEL_SPEC §5.1): the title is cut to
    768 characters, the description to 4096, and a missing description renders as "None"."""
    title = (title or "")[:TITLE_MAX_CHARS]
    description = "None" if description is None else description[:DESCRIPTION_MAX_CHARS]

    def rep(m):
        s = m.group(0)
        if s == "{{":
            return "{"
        if s == "}}":
            return "}"
        return {"title": title, "description": description}[m.group(1)]
    return _FIELD_RE.sub(rep, template)


_WORD_RE = re.compile(r"[^\W_]+")


def words(text):
    """Lower-case words of a text, punctuation and spacing dropped (the judge's view of text)."""
    return _WORD_RE.findall(text.lower())


FACET_IDS = [f["id"] for f in FACETS]
FACET_BY_ID = {f["id"]: f for f in FACETS}
WORD_FACET = {w.lower(): f["id"] for f in FACETS for w in f["mods"] + f["nouns"]}
POINT_FACET = {p: f["id"] for f in FACETS for p in f["points"]}
ALL_POINTS = [p for f in FACETS for p in f["points"]]


def facet_of_title(title):
    """The facet a title's words belong to, or None when its words name no single facet."""
    found = {WORD_FACET[w] for w in words(title) if w in WORD_FACET}
    return found.pop() if len(found) == 1 else None


def check_world():
    """Every rule of the module docstring; returns a list of problems (empty when sound)."""
    errs = []
    seen = {}
    for f in FACETS:
        lex = f["mods"] + f["nouns"]
        if len(set(lex)) != len(lex):
            errs.append(f"{f['id']}: a title word is listed twice")
        for w in lex:
            lw = w.lower()
            if not re.fullmatch(r"[A-Z][a-z]+", w):
                errs.append(f"{f['id']}: title word {w!r} is not one capitalized ASCII word")
            if lw in FUNCTION_WORDS:
                errs.append(f"{f['id']}: title word {w!r} is a function word")
            if lw in seen and seen[lw] != f["id"]:
                errs.append(f"title word {w!r} is in {seen[lw]} and {f['id']}")
            seen[lw] = f["id"]
    for f in FACETS:
        for w in words(f["name"]):
            if w in WORD_FACET:
                errs.append(f"{f['id']}: its name word {w!r} is a title word of {WORD_FACET[w]}")
        if len(f["points"]) < 3:
            errs.append(f"{f['id']}: fewer than 3 selling points")
        for p in f["points"]:
            if not re.fullmatch(r"[a-z]+( [a-z]+)*", p):
                errs.append(f"{f['id']}: point {p!r} is not lower-case ASCII words")
            for w in words(p):
                if w in WORD_FACET:
                    errs.append(f"{f['id']}: point {p!r} uses the title word {w!r} "
                                f"({WORD_FACET[w]})")
    pts = [(p, words(p)) for p in ALL_POINTS]
    if len(set(ALL_POINTS)) != len(ALL_POINTS):
        errs.append("a selling point is listed twice")
    for p, pw in pts:
        for q, qw in pts:
            if p != q and any(qw[i:i + len(pw)] == pw for i in range(len(qw) - len(pw) + 1)):
                errs.append(f"point {p!r} is contained in point {q!r}")
    return errs


def world_json():
    """The world as written to world.json by the generator (for reference and other tools)."""
    return {"facets": FACETS, "function_words": sorted(FUNCTION_WORDS),
            "title_patterns": TITLE_PATTERNS, "description_frames": DESCRIPTION_FRAMES,
            "target_separator": TARGET_SEPARATOR, "templates": TEMPLATES}
