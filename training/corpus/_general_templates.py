"""Templates and vocabulary for the generated part of the general-text corpus (``chat`` and ``risky`` records).

Used by ``make_general.py``; everything here was written for safesail-guard (Apache-2.0) and nothing is copied
from a dataset or benchmark. Two generators:

* `chat_records` -- benign user prompts to an assistant (cooking, travel, coding, homework, writing, health
  information, history, maths, relationships, business, ...): an *ask* template with slots, optionally wrapped
  in an opener, first-person context, a follow-up, a format request and a closer, so lengths run from a
  single line to a paragraph. English plus smaller sets in Chinese, Hindi, Italian and Vietnamese.
* `risky_records` -- text that *mentions* safety-relevant topics (the ten level-0 domains of
  ``data/taxonomy.json``) in many registers: news reports, forum questions, moderation-report descriptions,
  short fiction, policy text, explainer questions and social posts. It names and discusses the topics; it
  holds no operational instructions (no methods, quantities, code or step lists that enable harm), no
  graphic sexual content, nothing sexual involving minors and no real slurs ("a racial slur" instead).
  Self-harm text is written from a support / awareness angle, without methods.

Template mini-language (see `fill`):

* ``{slot}`` -- a random value from the slot's list (the domain's own slots first, then the shared ones).
  Within one record a slot name always gets the same value; ``{slot2}`` (a trailing digit) draws a
  *different* value from the list of ``slot``; ``{slot^}`` capitalises the first letter.
  Values may themselves contain slots and alternatives.
* ``[a|b|c]`` -- an inline alternative, one chosen at random.
* special slots generate numbers: ``{num4}``, ``{num5}``, ``{year}``, ``{year2}`` (a later year),
  ``{pct_r}``, ``{count_r}``.

Records are de-duplicated twice: by normalised text and by a *signature* (the template plus the values of
its content slots), and every template and every long content item (a forum question, a fiction scene, a
policy sentence) has a use cap, so the same core sentence never appears with only its wrapper changed
more than a couple of times.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

__all__ = ["CHAT_SOURCES", "RISKY_SOURCES", "chat_records", "fill", "risky_records"]

LICENSE = "Apache-2.0"
ORIGIN = ("generated from templates and vocabulary lists written for safesail-guard "
          "(training/corpus/_general_templates.py)")


def _lines(block: str) -> list[str]:
    """One list item per non-empty line (leading/trailing spaces stripped)."""
    return [s.strip() for s in block.strip().splitlines() if s.strip()]


# ------------------------------------------------------------------------------------------------ filling

_SLOT = re.compile(r"\{(\w+?)(\d?)(\^?)\}")
_ALT = re.compile(r"\[([^\[\]]*\|[^\[\]]*)\]")


def _special(name: str, rng: random.Random, values: dict[str, str]) -> str | None:
    if name == "num4":
        return str(rng.randint(1000, 9999))
    if name == "num5":
        return str(rng.randint(10000, 99999))
    if name == "year":
        return str(rng.randint(2014, 2023))
    if name == "year2":  # a later year than {year}
        return str(min(2024, int(values.get("year", "2019")) + rng.randint(1, 5)))
    if name == "pct_r":
        return str(rng.choice([8, 11, 14, 17, 19, 22, 26, 30, 35, 41, 48, 60]))
    if name == "count_r":
        return str(rng.randint(12, 900))
    return None


def fill(template: str, slots: Sequence[Mapping[str, Sequence[str]]], rng: random.Random,
         values: dict[str, str] | None = None, raw: dict[str, str] | None = None, _depth: int = 0) -> str:
    """Expand ``[a|b]`` alternatives and ``{slot}`` references of ``template`` (see the module doc).

    ``slots`` is searched in order; ``values`` records the (expanded) value chosen per slot name (pass the same
    dict to keep several templates of one record consistent); ``raw``, if given, records the list item chosen
    per slot before its own slots were expanded (used for signatures and use caps).
    """
    values = {} if values is None else values
    raw = {} if raw is None else raw
    text = _ALT.sub(lambda m: rng.choice(m.group(1).split("|")), template)

    def rep(m: re.Match[str]) -> str:
        base, digit, cap = m.group(1), m.group(2), m.group(3)
        key = base + digit
        if key not in values:
            special = _special(key, rng, values)
            if special is not None:
                values[key] = special
            else:
                options = next((s[base] for s in slots if base in s), None)
                if options is None:
                    raise KeyError(f"template slot {{{key}}} has no value list: {template!r}")
                taken = {v for k, v in values.items() if k.rstrip("0123456789") == base and k != key}
                pool = [o for o in options if o not in taken] or list(options)
                item = rng.choice(pool)
                raw[key] = item
                values[key] = fill(item, slots, rng, values, raw, _depth + 1) if _depth < 4 else item
        v = values[key]
        return v[:1].upper() + v[1:] if cap else v

    return _SLOT.sub(rep, text)


def slot_names(template: str) -> set[str]:
    """Base slot names referenced directly by a template (``{a2^}`` -> ``a``)."""
    return {m.group(1) for m in _SLOT.finditer(template)}


_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def _norm(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", t).split())


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([,.;:!?])", r"\1", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return "\n".join(line.strip() for line in text.split("\n")).strip()


# ------------------------------------------------------------------------------------------------ shared EN

SHARED_EN: dict[str, list[str]] = {
    "name_f": ["Maya", "Aisha", "Priya", "Mei", "Sofia", "Leila", "Hana", "Amara", "Elena", "Nadia", "Clara", "Fatima",
               "Zoe", "Ingrid", "Chloe", "Grace", "Yuki", "Lucia"],
    "name_m": ["Daniel", "Tomás", "Liam", "Kwame", "Jonas", "Mateo", "Oliver", "Ravi", "Yusuf", "Kenji", "Lucas", "Arjun",
               "Diego", "Malik", "Samuel", "Omar", "Felix", "Anton"],
    "name": ["{name_f}", "{name_m}", "Sam", "Alex", "Robin", "Kim"],
    "city": _lines("""
        Leeds
        Lyon
        Rotterdam
        Porto
        Krakow
        Melbourne
        Toronto
        Denver
        Manila
        Nairobi
        Pune
        Osaka
        Valencia
        Glasgow
        Halifax
        Auckland
        Cork
        Tampere
        Bologna
        Brno
        Adelaide
        Ottawa
        Durban
        Cebu
        Accra
        Gdansk
        Seville
        Aarhus
        Winnipeg
        Sacramento
    """),
    "country": _lines("""
        Canada
        Germany
        India
        Brazil
        Kenya
        Japan
        Spain
        Australia
        Ireland
        the Philippines
        Mexico
        Poland
        South Africa
        the Netherlands
        New Zealand
        the UK
        the US
        Italy
    """),
    "weekday": _lines("""
        Monday
        Tuesday
        Wednesday
        Thursday
        Friday
        Saturday
        Sunday
    """),
    "month": _lines("""
        January
        February
        March
        April
        May
        June
        July
        August
        September
        October
        November
        December
    """),
    "season": ["winter", "spring", "summer", "autumn", "the rainy season"],
    "timeframe": _lines("""
        this weekend
        next month
        tomorrow
        in two weeks
        over the holidays
        next Friday
        at the end of the month
        in the spring
    """),
    "family": _lines("""
        my mom
        my dad
        my sister
        my brother
        my grandmother
        my partner
        my roommate
        my best friend
        my uncle
        my daughter
        my son
        my coworker
        my aunt
        my husband
        my wife
    """),
    "kid": ["daughter", "son", "niece", "nephew", "little brother", "stepdaughter"],
    "num_small": ["two", "three", "four", "five", "six"],
    "years_k": ["two", "three", "five", "eight", "ten", "fifteen", "twenty"],
    "words": ["100", "150", "200", "250", "300"],
    "minutes": ["20", "30", "40", "45"],
    "age_num": ["23", "29", "34", "41", "47", "52", "58", "63", "70"],
}

# ------------------------------------------------------------------------------------------------ chat EN

CHAT_OPENERS_EN = _lines("""
    Hi!
    Hello.
    Hey!
    Hi there!
    Good morning!
    Quick question.
    Hey, quick one.
    Hello again.
    Can you help me with something?
    I need some advice.
    Okay, so here's my situation.
    Hi, hope you're doing well.
    Random question.
    Help, please!
    Hey assistant.
    Morning!
    Question for you.
    Hi, I'm hoping you can help.
    Evening!
    So I've been wondering about this.
""")

CHAT_FORMAT_EN = _lines("""
    Please keep the answer short.
    A step-by-step list would be great.
    Answer in {num_small} bullet points, please.
    Keep it under {words} words.
    Explain it like I'm [five|a high school student|a complete beginner|someone who has never done this before].
    Please include a simple example.
    Give me a few options and tell me which one you'd pick.
    No need for a long explanation, just the main points.
    Could you also explain why?
    Please use a friendly tone.
    Summarize everything in one sentence at the end.
    A small table comparing the options would help.
    Be honest, even if the answer is no.
    Assume I'm a complete beginner.
    I already know the basics, so you can skip those.
    Please don't use jargon.
    If there are trade-offs, spell them out.
    Keep it practical; I don't need the theory.
""")

CHAT_CLOSERS_EN = _lines("""
    Thanks!
    Thanks in advance.
    Thank you!
    Appreciate it.
    Any help is appreciated.
    Thanks a lot.
    Cheers.
    Much appreciated!
    Thank you so much.
    Thanks, you're a lifesaver.
    I'd really appreciate your thoughts.
    Looking forward to your answer.
""")

CHAT_CONTEXT_EN = _lines("""
    I've tried looking this up but the answers online contradict each other.
    I'm asking because I have to decide {timeframe}.
    I don't have a lot of money to spend on this.
    I'm not in a hurry, so a thorough answer is fine.
    My {kid} asked me about this and I realized I don't really know.
    I'd like to understand it properly rather than just get an answer.
    I'm {age_num} and feel like I should know this by now.
    A friend recommended asking you.
    I've been putting this off for weeks and want to finally sort it out.
    Please don't just point me to a website; I'd like an actual explanation.
    I'll probably have a few follow-up questions.
    Last time I tried to figure this out on my own, it went badly.
    I'm a visual learner, so examples help a lot.
    {family^} and I disagree about this, so a neutral answer would help.
    Some context: I'm based in {country}.
    I'm typing this on my phone during my lunch break.
    I'd like to get this right the first time.
    I asked a few people and got completely different answers.
""")

CHAT_EN: dict[str, dict] = {
    "cooking": {
        "slots": {
            "dish": _lines("""
                lasagna
                chicken curry
                banana bread
                vegetable soup
                pad thai
                beef stew
                mushroom risotto
                pancakes
                shakshuka
                a lemon tart
                fried rice
                chili con carne
                falafel
                a spinach quiche
                roast chicken
                chocolate chip cookies
                ramen broth
                a Greek salad
                sourdough bread
                seafood paella
                dal
                carrot cake
                tacos
                moussaka
            """),
            "ingredient": _lines("""
                eggs
                butter
                milk
                gluten
                onions
                garlic
                refined sugar
                nuts
                dairy
                cilantro
                wheat flour
                heavy cream
                tomatoes
                soy sauce
            """),
            "diet": ["vegan", "vegetarian", "gluten-free", "low-sodium", "dairy-free", "low-carb", "high-protein"],
            "tool": _lines("""
                an air fryer
                a slow cooker
                a cast-iron pan
                a pressure cooker
                a stand mixer
                a wok
                a toaster oven
                a rice cooker
            """),
            "cooker": ["an air fryer", "a slow cooker", "a pressure cooker", "a cast-iron pan", "a wok", "a toaster oven", "a Dutch oven"],
            "occasion": _lines("""
                a birthday dinner
                a picnic
                a potluck at work
                a dinner party
                Sunday lunch
                a kid's birthday party
                a holiday brunch
                a game night
                a housewarming
            """),
            "leftover": ["rice", "chicken", "pasta", "soup", "fish", "roasted vegetables", "chili", "curry"],
            "veg": _lines("""
                roasted carrots
                cauliflower
                sweet potatoes
                lentils
                chickpeas
                eggplant
                green beans
                zucchini
                butternut squash
                mushrooms
            """),
            "num_people": ["six", "eight", "ten", "twelve", "fifteen", "twenty"],
            "pair_cook": _lines("""
                baking soda and baking powder
                broiling and baking
                stock and broth
                simmering and boiling
                all-purpose flour and bread flour
                sautéing and stir-frying
                light and dark soy sauce
                convection and regular oven settings
            """),
            "flaw": ["dry", "too salty", "bland", "soggy", "burnt on the bottom", "rubbery", "flat", "too dense"],
        },
        "asks": _lines("""
            How do I make {dish} without {ingredient}?
            What's a good {diet} version of {dish}?
            Can I cook {dish} in {cooker}? How long would it take?
            I'm hosting {occasion} for {num_people} people. What should I cook?
            Why does my {dish} always come out {flaw}?
            What can I substitute for {ingredient} in baking?
            How long does cooked {leftover} keep in the fridge?
            Give me a simple weekly meal plan for a {diet} diet on a budget.
            What spices go well with {veg}?
            How do I know when {dish} is done?
            What side dishes go well with {dish}?
            Is it worth buying {tool}, or can I manage with what I have?
            What's the difference between {pair_cook}?
            Can you scale a recipe for {dish} from four servings to {num_people}?
            What's an easy weeknight dinner using {veg} and {leftover}?
            How can I make {dish} ahead of time for {occasion}?
            Can you suggest a {diet} menu for {occasion}?
        """),
        "context": _lines("""
            I'm a pretty inexperienced cook and I only have a small kitchen.
            {family^} is on a {diet} diet and is coming over {timeframe}.
            I tried a recipe last night and it didn't turn out the way I expected.
            We're trying to eat more vegetables and spend less on takeout.
            I only have about {minutes} minutes to cook on weeknights.
            I have {tool} that I've barely used.
            My kids are picky eaters and won't touch anything green.
            I live at high altitude, if that changes anything.
        """),
        "follow": _lines("""
            Also, can I prepare any of it the day before?
            And what would you serve for dessert?
            Also, how should I store the leftovers?
            Could you also give me a shopping list?
            And what wine or drink would go with it?
        """),
    },
    "travel": {
        "slots": {
            "dest": _lines("""
                Lisbon
                Kyoto
                Mexico City
                Iceland
                Vietnam
                the Scottish Highlands
                Morocco
                New Zealand
                Buenos Aires
                Prague
                Cape Town
                Seoul
                the Amalfi Coast
                Istanbul
                Peru
                Vancouver
                Bali
                Croatia
                Sri Lanka
                Norway
                Jordan
                Tasmania
            """),
            "days": ["three", "four", "five", "seven", "ten", "fourteen"],
            "traveler": _lines("""
                my partner
                two young kids
                my elderly parents
                a group of friends
                my dog
                a colleague
                my teenage daughter
            """),
            "budget": _lines("""
                a tight budget
                a mid-range budget
                about 1,500 dollars
                around 2,000 euros
                a student budget
                a fairly generous budget
            """),
            "activity": _lines("""
                hiking
                street food
                museums
                beaches
                nightlife
                photography
                local markets
                history
                architecture
                wildlife
                cycling
            """),
            "nationality": ["Canadian", "Indian", "Brazilian", "German", "Filipino", "Nigerian", "Australian", "US", "Mexican"],
            "anniv": ["first", "fifth", "tenth", "twentieth", "thirtieth"],
            "trouble": ["cancelled", "delayed by eight hours", "overbooked", "rerouted through another city"],
        },
        "asks": _lines("""
            Can you plan a {days}-day itinerary for {dest}?
            What's the best time of year to visit {dest}?
            I'm traveling to {dest} with {traveler} on {budget}. Where should we stay?
            What should I pack for a trip to {dest} in {month}?
            Is {dest} a good choice for someone who loves {activity}?
            How do I get around {dest} without renting a car?
            What are some common tourist traps in {dest} I should avoid?
            Do I need a visa to visit {dest} on a {nationality} passport?
            What local customs should I know about before visiting {dest}?
            How can I avoid jet lag on a long flight to {dest}?
            Which is better for a first trip, {dest} or {dest2}?
            What are some good day trips from {dest}?
            My flight to {dest} was {trouble}. What are my options?
            Do I need cash in {dest}, or are cards accepted almost everywhere?
            Can you suggest a {days}-day route that combines {dest} and {dest2}?
            What's a realistic daily budget for {dest} if we like {activity}?
            Is {dest} manageable with {traveler}?
        """),
        "context": _lines("""
            It's my first time traveling abroad and I'm a bit nervous.
            We're celebrating our {anniv} anniversary.
            I don't speak the local language at all.
            I have a bad knee, so I can't walk long distances.
            We'd rather avoid the most crowded tourist spots.
            I'm traveling {timeframe} and haven't booked anything yet.
            I'm vegetarian, so food options matter to me.
            I'll be working remotely for part of the trip.
        """),
        "follow": _lines("""
            Also, is there any food I absolutely shouldn't miss?
            And is it safe to drink the tap water there?
            Also, what's a good souvenir to bring back?
            And how many days would you add if we had more time?
        """),
    },
    "coding": {
        "slots": {
            "lang": _lines("""
                Python
                JavaScript
                Java
                C#
                Go
                Rust
                TypeScript
                Kotlin
                PHP
                Ruby
                C++
                Swift
            """),
            "error": _lines("""
                index out of range
                null pointer exception
                permission denied
                module not found
                maximum recursion depth exceeded
                connection refused
                unexpected end of input
                type mismatch
                out of memory
                file not found
                stack overflow
            """),
            "task": _lines("""
                read a CSV file
                sort a list of records by date
                parse JSON from an API
                reverse a string
                remove duplicates from a list
                send an email
                resize all the images in a folder
                validate an email address
                connect to a PostgreSQL database
                write unit tests
                read environment variables
                paginate database results
                upload a file to cloud storage
                run a job every hour
                count word frequencies in a text file
                retry a failed HTTP request
                log errors to a file
                merge two sorted lists
            """),
            "concept": _lines("""
                recursion
                closures
                async and await
                dependency injection
                Big O notation
                pointers
                inheritance
                REST APIs
                database indexes
                git rebase
                Docker containers
                regular expressions
                memoization
                the event loop
                hash maps
                unit testing
                garbage collection
                race conditions
            """),
            "code_pair": _lines("""
                a list and a tuple
                == and === in JavaScript
                an abstract class and an interface
                threads and processes
                SQL and NoSQL databases
                git merge and git rebase
                a stack and a queue
                let and const
                unit tests and integration tests
                compiled and interpreted languages
                TCP and UDP
                GET and POST requests
                authentication and authorization
            """),
            "devtool": _lines("""
                VS Code
                git
                Docker
                npm
                pip and virtual environments
                GitHub Actions
                Jupyter
                a debugger
                a linter
                pre-commit hooks
            """),
        },
        "asks": _lines("""
            How do I {task} in {lang}?
            I'm getting a "{error}" error in my {lang} program. What usually causes it?
            Can you explain {concept} in simple terms?
            What's the difference between {code_pair}?
            Which is better for a beginner, {lang} or {lang2}?
            How do I set up {devtool} for a {lang} project?
            My {lang} script works on my laptop but fails on the server. Where should I start debugging?
            I want to {task} and my plan is to loop over everything twice. Is there a better approach?
            What are good practice projects for learning {lang}?
            What naming conventions do people usually follow in {lang}?
            Why would my {lang} code be slow when I {task}?
            What's a clean way to structure a small {lang} project?
            Could you write a short, commented {lang} function to {task}?
            How do I undo my last git commit without losing my changes?
            When should I actually use {concept}?
            How would you explain {concept} to a junior developer on my team?
            Is {devtool} worth learning early, or can it wait?
        """),
        "context": _lines("""
            I'm a self-taught developer and this is my first real project.
            I'm learning {lang} through an online course.
            This is for a small internal tool at work.
            I've been stuck on this for two hours.
            I come from a {lang2} background, so some of this is new to me.
            Our team is adopting {devtool} next month.
            It's a hobby project, so it doesn't need to be perfect.
        """),
        "follow": _lines("""
            Also, how would I write a test for it?
            And is there a library that already does this?
            Also, what would you do differently in production?
            And how do I make the error messages clearer?
        """),
    },
    "homework": {
        "slots": {
            "subject": _lines("""
                biology
                chemistry
                physics
                world history
                economics
                geography
                English literature
                statistics
                computer science
                psychology
                sociology
            """),
            "hw_topic": _lines("""
                photosynthesis
                the water cycle
                supply and demand
                the causes of the First World War
                plate tectonics
                cell division
                Newton's laws of motion
                the French Revolution
                the structure of the atom
                natural selection
                the Industrial Revolution
                chemical bonding
                the nitrogen cycle
                inflation
                the Renaissance
                the Krebs cycle
                electromagnetic induction
                the scientific method
                opportunity cost
                the rock cycle
                urbanization
                classical conditioning
            """),
            "book": _lines("""
                To Kill a Mockingbird
                Macbeth
                Pride and Prejudice
                The Great Gatsby
                Of Mice and Men
                Animal Farm
                Things Fall Apart
                Frankenstein
                Lord of the Flies
                Romeo and Juliet
                The Odyssey
                Jane Eyre
                The Crucible
                A Christmas Carol
            """),
            "theme": ["power", "identity", "ambition", "justice", "friendship", "isolation", "fate", "social class", "loyalty", "guilt"],
            "grade": ["seventh-grade", "ninth-grade", "high school", "first-year university", "AP", "GCSE", "IB"],
            "hw_pair": _lines("""
                mitosis and meiosis
                weather and climate
                an element and a compound
                speed and velocity
                a simile and a metaphor
                DNA and RNA
                renewable and nonrenewable resources
                a republic and a democracy
                kinetic and potential energy
                an acid and a base
                imports and exports
            """),
            "cite": ["APA", "MLA", "Chicago", "Harvard"],
            "pages": ["three", "five", "eight", "ten"],
            "days_left": ["three", "five", "ten", "fourteen"],
        },
        "asks": _lines("""
            Can you explain {hw_topic} for my {grade} {subject} class?
            What are the main themes in {book}?
            How does the author explore {theme} in {book}?
            I have to write an essay on {hw_topic}. Can you help me come up with a thesis statement?
            What's an easy way to remember {hw_topic}?
            Can you quiz me with five questions on {hw_topic}?
            How should I structure a {pages}-page paper on {hw_topic}?
            What's the difference between {hw_pair}?
            Which important points should a summary of {book} include?
            What are some reliable sources to learn more about {hw_topic}?
            How do I cite a website in {cite} style?
            Can you make me a study schedule for my {subject} exam in {days_left} days?
            Who are the most important characters in {book}, and how do they change?
            Can you give me a real-world example of {hw_topic}?
            What would be a good essay question comparing {book} and {book2}?
        """),
        "context": _lines("""
            I'm in {grade} {subject} and we have a test on {weekday}.
            My teacher's explanation went way too fast for me.
            English isn't my first language, so please use simple words.
            I've read the chapter twice but it still doesn't click.
            I don't want you to write it for me, I just need help getting started.
            I learn best with diagrams or analogies.
        """),
        "follow": _lines("""
            Also, what's a common mistake students make on this?
            And could you add a practice question at the end?
            Also, how would this show up on an exam?
        """),
    },
    "math": {
        "slots": {
            "mtopic": _lines("""
                quadratic equations
                derivatives
                integrals
                probability
                logarithms
                matrices
                the Pythagorean theorem
                fractions
                percentages
                standard deviation
                complex numbers
                limits
                linear regression
                trigonometric identities
                proof by induction
                eigenvalues
                compound interest
                permutations and combinations
                Bayes' theorem
                vectors
            """),
            "numbers": ["4, 8, 15, 16, 23, 42", "2, 3, 3, 5, 7, 10", "12, 15, 11, 20, 18", "1.5, 2.5, 3.0, 4.5", "7, 7, 9, 10, 13, 21"],
            "stat": ["the mean", "the median", "the standard deviation", "the variance", "the interquartile range", "the mode"],
            "mpair": _lines("""
                permutations and combinations
                sine and cosine
                the mean and the median
                area and perimeter
                correlation and causation
                rational and irrational numbers
                independent and mutually exclusive events
                a function and an equation
            """),
            "pct": ["15", "20", "12.5", "35", "7", "60"],
            "amount": ["80", "250", "1,200", "64", "3,500", "480"],
            "rate": ["3", "4.5", "5", "7"],
            "horizon": ["5", "10", "20", "30"],
            "ea": ["2", "3", "5", "7", "4"],
            "eb": ["4", "9", "11", "6", "15"],
            "ec": ["20", "31", "5", "47", "-3"],
            "unit_conv": _lines("""
                miles to kilometers
                Fahrenheit to Celsius
                cups of flour to grams
                square feet to square meters
                ounces to grams
                liters per 100 km to miles per gallon
            """),
            "mental": _lines("""
                multiplying two-digit numbers
                working out a 15 percent tip
                dividing by 7
                squaring numbers that end in 5
                converting fractions to percentages
            """),
            "exam": ["SAT", "GRE", "statistics", "calculus", "nursing entrance", "engineering", "GMAT"],
        },
        "asks": _lines("""
            Can you explain {mtopic} step by step?
            What is {pct} percent of {amount}, and how do you work it out?
            How do I solve {ea}x + {eb} = {ec}?
            Where does {mtopic} show up in real life?
            What's the probability of rolling two sixes with two dice? Please show the reasoning.
            How do I calculate {stat} of {numbers}?
            What's an intuitive way to think about {mtopic}?
            I keep mixing up {mpair}. How do I tell them apart?
            If I invest {amount} dollars at {rate} percent a year, how much will I have after {horizon} years?
            Can you give me three practice problems on {mtopic} with answers?
            How do I convert {unit_conv}?
            Is there a trick for {mental} in my head?
            What should I learn before starting {mtopic}?
            Why does {mtopic} work the way it does? I can follow the steps but I don't get the idea.
        """),
        "context": _lines("""
            Math has never been my strong subject.
            I'm helping my {kid} with homework and I've forgotten all of this.
            I'm preparing for a {exam} exam.
            I'm going back to school after ten years away.
            I understand the formulas but not when to use them.
        """),
        "follow": _lines("""
            Also, how can I check my answer?
            And what's the most common mistake people make here?
        """),
    },
    "writing": {
        "slots": {
            "doc_type": _lines("""
                cover letter
                wedding toast
                eulogy for my grandfather
                thank-you note to my teacher
                LinkedIn summary
                product description for a candle
                short story opening
                apology email to a client
                birthday message for my boss
                resignation letter
                graduation speech
                newsletter introduction
                blog post about minimalism
                haiku about autumn
                limerick about a cat
                toast for my parents' anniversary
                bio for a conference program
                farewell card for a colleague
            """),
            "tone": ["more formal", "friendlier", "more confident", "shorter", "more persuasive", "less stiff", "more professional", "funnier", "warmer"],
            "sentence": _lines("""
                We regret to inform you that the meeting has been moved to next week.
                I am writing to apply for the position of marketing assistant.
                Our team worked really hard on this project and we think it came out good.
                The results was not what we expected but we learned alot.
                Please find attached the documents you have requested earlier.
                I wanted to follow up about the invoice from last month.
                Thanks for having us, the dinner was really nice and everything.
                The new policy will be implemented starting from the first of the month.
                I'm sorry for the late reply, I was very busy.
                Our cafe serves coffee and cakes and sandwiches every day.
                Me and my colleague will present the findings on Thursday.
                Due to unforeseen circumstances the event is cancelled.
                I have a lot of experience in many different things.
                Kindly revert back at the earliest.
            """),
            "overused": ["very", "really", "just", "actually", "that", "things", "basically"],
            "wpair": _lines("""
                affect and effect
                fewer and less
                who and whom
                its and it's
                lie and lay
                comprise and compose
                e.g. and i.e.
                farther and further
            """),
            "audience": ["colleagues", "older relatives", "university students", "potential customers", "hiring managers", "parents at my kid's school"],
        },
        "asks": _lines("""
            Can you help me write a {doc_type}?
            Can you make this sentence {tone}: "{sentence}"
            Please proofread this: "{sentence}"
            Give me five title ideas for a {doc_type}.
            What's a strong way to open a {doc_type}?
            How long should a {doc_type} be?
            Can you draft a {doc_type} in under {words} words?
            How do I stop overusing the word "{overused}" in my writing?
            What's the difference between {wpair}?
            Is this sentence grammatically correct? "{sentence}"
            Can you rewrite this so it sounds {tone}? "{sentence}"
            What should I avoid saying in a {doc_type}?
        """),
        "context": _lines("""
            English is my second language and I want it to sound natural.
            I'm not a confident writer.
            It's due {timeframe}.
            The audience is mostly {audience}.
            I've written three drafts and none of them feel right.
        """),
        "follow": _lines("""
            Also, can you suggest a good closing line?
            And could you explain the changes you made?
        """),
    },
    "health": {
        "slots": {
            "cond": _lines("""
                seasonal allergies
                a mild cold
                lower back pain
                trouble sleeping
                tension headaches
                heartburn
                a sprained ankle
                dry skin
                high blood pressure
                low iron
                motion sickness
                eye strain from screens
                a sore throat
                shin splints
            """),
            "habit": _lines("""
                drinking more water
                walking 10,000 steps a day
                intermittent fasting
                taking vitamin D
                using a standing desk
                taking cold showers
                meditating every day
                cutting back on sugar
                stretching after work
                going to bed at the same time every night
            """),
            "hpair": _lines("""
                a cold and the flu
                a virus and a bacterial infection
                type 1 and type 2 diabetes
                HDL and LDL cholesterol
                a sprain and a strain
                Alzheimer's and dementia
                an allergy and an intolerance
            """),
            "medtest": ["blood panel", "cholesterol test", "thyroid test", "bone density scan", "A1C test", "vitamin D test"],
            "body": ["a stiff neck", "tight hamstrings", "a sore lower back", "tired shoulders after desk work", "stiff hips"],
            "life_stage": ["teenager", "40-year-old", "person over 65", "toddler", "new parent"],
            "race": ["5K", "10K", "half marathon"],
            "weeks": ["six", "eight", "ten", "twelve"],
            "exercise": ["squats", "deadlifts", "planks", "push-ups", "lunges", "rowing", "swimming"],
            "fit_goal": ["running pace", "flexibility", "grip strength", "balance", "posture", "endurance"],
        },
        "asks": _lines("""
            What are common ways to manage {cond} at home?
            When should I see a doctor about {cond}?
            Is {habit} actually good for you?
            How much sleep does a {life_stage} need?
            What's a balanced breakfast that keeps me full until lunch?
            What questions should I ask my doctor about {cond}?
            How can I make {habit} stick?
            What's the difference between {hpair}?
            What does a {medtest} measure?
            What are some gentle stretches for {body}?
            Can you make me a {weeks}-week plan to run my first {race}?
            What's a good {minutes}-minute home workout with no equipment?
            What muscles do {exercise} work?
            How do I improve my {fit_goal}?
            How many rest days a week should a beginner take?
            Is it better to do cardio before or after weights?
        """),
        "context": _lines("""
            I'm not looking for a diagnosis, just general information.
            I work night shifts, which makes routines hard.
            I'm {age_num} and fairly active.
            My doctor mentioned this briefly but I forgot to ask more.
            I haven't exercised regularly in years.
            I sit at a desk for most of the day.
        """),
        "follow": _lines("""
            Also, are there any reliable websites where I can read more?
            And how long does it usually take to see a difference?
        """),
    },
    "history": {
        "slots": {
            "era": _lines("""
                the Roman Empire
                the Ming dynasty
                the Ottoman Empire
                ancient Egypt
                the Cold War
                the Meiji Restoration
                the Mughal Empire
                the Byzantine Empire
                the Aztec Empire
                the Viking Age
                the Harlem Renaissance
                the Silk Road
                the Great Depression
                the Hanseatic League
                the Mali Empire
                the space race
                the Inca Empire
                the Tang dynasty
                the Enlightenment
            """),
            "figure": _lines("""
                Cleopatra
                Ashoka
                Marie Curie
                Nelson Mandela
                Leonardo da Vinci
                Ibn Battuta
                Catherine the Great
                Simón Bolívar
                Ada Lovelace
                Genghis Khan
                Frederick Douglass
                Hatshepsut
                Galileo
                Mansa Musa
                Elizabeth I
                Sun Yat-sen
                Rosalind Franklin
                Wangari Maathai
            """),
            "event_h": _lines("""
                the fall of the Berlin Wall
                the moon landing
                the invention of the printing press
                the Black Death
                the signing of the Magna Carta
                the fall of Constantinople
                the building of the pyramids
                the abolition of the slave trade
                the first transatlantic telegraph
                the opening of the Suez Canal
                the eradication of smallpox
            """),
        },
        "asks": _lines("""
            What caused the decline of {era}?
            Who was {figure}, and why are they remembered?
            Can you give me a short timeline of {era}?
            What was daily life like for ordinary people in {era}?
            Why was {event_h} so important?
            What are some common myths about {era}?
            What books would you recommend about {figure}?
            How did {event_h} change everyday life?
            If {figure} had a social media account, what would they post? Just for fun.
            How do historians know what they know about {era}?
            What did {figure} think about {era}? Or did they live at a different time?
            What happened right before and right after {event_h}?
            Could {figure} and {figure2} have met? When did each of them live?
        """),
        "context": _lines("""
            I'm preparing questions for a pub quiz.
            My {kid} asked me this and I had no idea.
            I'm visiting a museum about this {timeframe}.
            I only know what I saw in a documentary years ago.
        """),
        "follow": _lines("""
            Also, what's a good documentary on this?
            And is there a fun fact I could share at dinner?
        """),
    },
    "relationships": {
        "slots": {
            "rel": _lines("""
                best friend
                roommate
                partner
                sister
                coworker
                neighbor
                father-in-law
                teenage son
                old school friend
                manager
                brother
                mother
            """),
            "rel_issue": _lines("""
                keeps canceling plans at the last minute
                rarely replies to my messages
                borrowed money months ago and hasn't mentioned it since
                always interrupts me in conversations
                forgot my birthday this year
                is going through a divorce
                is moving to another country
                plays loud music late at night
                keeps giving me advice I didn't ask for
                seems distant lately
                is jealous of my new friends
            """),
            "rel_hard": ["is going through a divorce", "just lost their job", "is grieving a parent", "is moving abroad soon",
                         "is stressed about exams", "just had a baby", "is recovering from surgery", "failed their driving test again"],
            "favor": ["a loan", "help moving", "a ride to the airport every week", "a reference letter", "to watch their kids every weekend", "to cover their shift"],
            "hobby": _lines("""
                gardening
                board games
                jazz
                hiking
                baking
                photography
                vintage cars
                knitting
                astronomy
                football
                anime
                chess
                cycling
                tea
            """),
        },
        "asks": _lines("""
            My {rel} {rel_issue}. How should I handle it?
            What's a kind way to say no when my {rel} asks me for {favor}?
            How can I make new friends after moving to {city}?
            What are some thoughtful gift ideas for my {rel}, who loves {hobby}?
            How do I apologize to my {rel} after an argument?
            What are good conversation starters for a first date?
            How can I become a better listener?
            How do I set boundaries with my {rel} without feeling guilty?
            What's a fun, cheap date idea for {season}?
            How do I support my {rel}, who {rel_hard}?
            What can I say to my {rel}, who {rel_hard}, without sounding fake?
            How do I bring it up that my {rel} {rel_issue}, without starting a fight?
            What's a nice way to reconnect with an old friend I haven't talked to in {years_k} years?
            Can you help me plan a surprise for my {rel}, who is into {hobby}?
        """),
        "context": _lines("""
            We've known each other for {years_k} years.
            I tend to avoid conflict.
            I don't want to damage the relationship.
            Things have been a bit tense lately.
            I'm an introvert and this kind of conversation stresses me out.
        """),
        "follow": _lines("""
            Also, what should I avoid saying?
            And how do I know if I'm overreacting?
        """),
    },
    "business": {
        "slots": {
            "biz": _lines("""
                bakery
                dog-walking service
                online candle shop
                bike repair shop
                tutoring business
                coffee cart
                freelance design studio
                food truck
                cleaning company
                yoga studio
                bookkeeping practice
                handmade jewelry brand
                plant nursery
                photography business
            """),
            "job": _lines("""
                data analyst
                nurse
                product manager
                teacher
                UX designer
                electrician
                accountant
                software engineer
                marketing coordinator
                project manager
                pharmacist
                chef
                lab technician
                HR specialist
            """),
            "bpair": _lines("""
                revenue and profit
                an LLC and a sole proprietorship
                gross and net margin
                equity and debt financing
                marketing and sales
                a mission statement and a vision statement
                fixed and variable costs
            """),
            "savings": ["5,000 dollars", "10,000 euros", "very little money", "a small loan from my family"],
            "decade": ["thirties", "forties", "fifties"],
        },
        "asks": _lines("""
            How do I write a simple business plan for a {biz}?
            How should I price my services for a {biz}?
            What are some low-cost marketing ideas for a {biz}?
            How do I prepare for a job interview as a {job}?
            What are common interview questions for a {job} position?
            How do I negotiate a higher salary for a {job} offer?
            Can you help me write a polite follow-up email after an interview?
            What skills should I learn to move from {job} to {job2}?
            How do I ask my manager for more responsibility?
            What should a one-page résumé for a {job} include?
            How do I handle a difficult customer at my {biz}?
            What's the difference between {bpair}?
            What should I track each month to know whether my {biz} is healthy?
            How do I find my first ten customers for a {biz}?
            Is it a good idea to hire my first employee for my {biz} this year?
        """),
        "context": _lines("""
            I've been in my current role for {years_k} years.
            I'm starting with {savings}.
            I'm changing careers in my {decade}.
            I run the business on my own with one part-time helper.
            The local market is pretty competitive.
        """),
        "follow": _lines("""
            Also, what mistakes do people usually make at this stage?
            And how long before I should expect results?
        """),
    },
    "finance": {
        "slots": {
            "debt": ["student loans", "credit card balance", "car loan", "personal loan"],
            "big_purchase": ["home", "car", "laptop", "electric bike", "used motorcycle"],
            "income": ["modest", "irregular freelance", "single", "part-time", "seasonal"],
            "decade": ["twenties", "thirties", "forties", "fifties"],
        },
        "asks": _lines("""
            How do I make a monthly budget on a {income} income?
            Should I pay off my {debt} or build an emergency fund first?
            How does compound interest work?
            What's a reasonable share of income to spend on rent?
            How do index funds work?
            How can I cut my grocery bill without eating badly?
            What should I know before buying my first {big_purchase}?
            How do I start saving for retirement in my {decade}?
            Is it better to lease or buy a car?
            How do credit scores work, and how can I improve mine?
            How big should an emergency fund be for someone with a {income} income?
            What's the simplest way to track where my money goes each month?
        """),
        "context": _lines("""
            I've never really had a budget before.
            I just got my first full-time job.
            We're saving for a {big_purchase} in a few years.
            I'm not comfortable with risky investments.
        """),
        "follow": _lines("""
            Also, are there apps that make this easier?
            And what would you do first if you were me?
        """),
    },
    "home": {
        "slots": {
            "home_problem": _lines("""
                leaky faucet
                squeaky door
                running toilet
                slow drain
                loose cabinet hinge
                drafty window
                small hole in the drywall
                sticking drawer
                wobbly table
            """),
            "plant": ["tomatoes", "basil", "strawberries", "chili peppers", "lettuce", "mint", "lavender", "rosemary"],
            "houseplant": ["monstera", "fiddle-leaf fig", "snake plant", "orchid", "pothos", "lemon tree", "succulent", "peace lily"],
            "stain": ["red wine", "coffee", "grass", "ink", "grease", "tomato sauce", "candle wax"],
            "fabric": ["a white shirt", "a carpet", "jeans", "a sofa cushion", "a wool sweater", "a linen tablecloth"],
            "room": ["bedroom", "kitchen", "living room", "home office", "bathroom", "hallway"],
        },
        "asks": _lines("""
            How do I fix a {home_problem}?
            What's the easiest way to grow {plant} on a balcony?
            Why are the leaves on my {houseplant} turning yellow?
            How do I get {stain} out of {fabric}?
            What tools does a beginner need for basic home repairs?
            How do I make my small {room} feel bigger?
            How often should I water a {houseplant}?
            What's a good way to declutter before a move?
            How do I paint a {room} without making a mess?
            Which houseplants are easy to keep alive in a dark apartment?
            How can I lower my heating bill this {season}?
            How do I start composting at home?
            Can I grow {plant} and {houseplant} indoors together?
            What's a cheap way to make my {room} feel cozier?
        """),
        "context": _lines("""
            I'm renting, so I can't make big changes.
            I'm not very handy, to be honest.
            The apartment gets almost no direct sunlight.
            We just moved in and everything feels a bit chaotic.
        """),
        "follow": _lines("""
            Also, when should I call a professional instead?
            And roughly how much would the supplies cost?
        """),
    },
    "pets": {
        "slots": {
            "pet": ["dog", "cat", "rabbit", "parrot", "hamster", "puppy", "kitten", "guinea pig"],
            "pet_problem": _lines("""
                chewing the furniture
                barking at the mail carrier
                scratching the sofa
                pulling on the leash
                waking me up at 5 a.m.
                jumping on guests
                ignoring the litter box
                being scared of the vacuum
            """),
            "pet_age": ["young", "senior", "ten-week-old", "overweight", "very active"],
            "pet_adj": ["fluffy", "tiny", "very lazy", "black", "orange", "clumsy", "grumpy-looking"],
        },
        "asks": _lines("""
            How do I stop my {pet} from {pet_problem}?
            What should I feed a {pet_age} {pet}?
            How do I introduce a new {pet} to my {pet2}?
            What are signs that my {pet} is bored?
            How often should I take my {pet} to the vet?
            What's a good name for a {pet_adj} {pet}?
            Is it okay to leave my {pet} alone while I'm at work?
            How do I travel by car with a {pet}?
            What toys are good for a {pet_age} {pet}?
            How do I know if my {pet} is happy?
        """),
        "context": _lines("""
            We adopted from a shelter {timeframe}.
            This is my first pet ever.
            I live in a small apartment without a yard.
            I work long hours a few days a week.
        """),
        "follow": _lines("""
            Also, how long does training usually take?
            And is there anything I should buy beforehand?
        """),
    },
    "tech": {
        "slots": {
            "device": ["laptop", "Android phone", "iPhone", "smart TV", "printer", "tablet", "gaming console", "old desktop PC", "router"],
            "device_buy": ["Chromebook", "MacBook Air", "Windows laptop", "iPad", "refurbished ThinkPad"],
            "use": ["college", "photo editing", "light gaming", "my parents, who aren't tech-savvy", "writing and email", "video calls"],
            "tech_msg": ["storage almost full", "update failed", "no internet", "certificate not trusted", "battery health degraded", "device not recognized"],
        },
        "asks": _lines("""
            My {device} is running really slowly. What can I try?
            How do I back up the photos on my {device}?
            What's the best way to create strong passwords I can remember?
            How do I set up parental controls on a {device}?
            Why does my Wi-Fi keep disconnecting?
            How do I free up storage on my {device}?
            Should I buy a {device_buy} or a {device_buy2} for {use}?
            How do I move my contacts to a new phone?
            What does it mean when my {device} says "{tech_msg}"?
            How do I turn on two-factor authentication for my email?
            How can I tell whether an email asking me to reset my password is legitimate?
            Is it worth upgrading my {device}, or can I make it last another year?
            How do I connect my {device} to my {device2}?
        """),
        "context": _lines("""
            I'm not very good with technology.
            It's about {years_k} years old.
            I'm setting this up for {family}.
            I don't want to pay for a repair shop if I can avoid it.
        """),
        "follow": _lines("""
            Also, how do I stop this from happening again?
            And is there anything I should back up first?
        """),
    },
    "language": {
        "slots": {
            "lang_h": _lines("""
                Spanish
                Japanese
                French
                German
                Mandarin
                Korean
                Portuguese
                Arabic
                Italian
                Hindi
                Swahili
                Turkish
                Vietnamese
                Greek
            """),
            "phrase": _lines("""
                where is the train station
                I'm allergic to peanuts
                nice to meet you
                could I have the bill, please
                how much does this cost
                I'm a bit lost
                what do you recommend
                thank you for your hospitality
            """),
            "gram": ["verb conjugations", "gendered nouns", "tones", "particles", "the subjunctive", "formal and informal address", "counters", "cases"],
            "n_words": ["50", "100", "200"],
        },
        "asks": _lines("""
            What's the fastest way to learn basic {lang_h} for a trip?
            How do I say "{phrase}" in {lang_h}?
            Can you give me a simple daily routine for practicing {lang_h}?
            Why is {gram} in {lang_h} so confusing, and how do I get better at it?
            What are the {n_words} most useful words to learn first in {lang_h}?
            Is {lang_h} or {lang_h2} harder to learn for an English speaker?
            How can I improve my accent when speaking {lang_h}?
            What are good podcasts or shows for learning {lang_h}?
            How do I keep practicing {lang_h} when I don't know any native speakers?
            Can you explain {gram} in {lang_h} with a few examples?
        """),
        "context": _lines("""
            I'm moving abroad {timeframe}.
            I studied it in school years ago but forgot most of it.
            I only have about fifteen minutes a day.
            My partner's family speaks it at home.
        """),
        "follow": _lines("""
            Also, what apps would you recommend?
            And how long until I can hold a basic conversation?
        """),
    },
    "entertainment": {
        "slots": {
            "book_r": _lines("""
                The Hobbit
                Gone Girl
                The Martian
                Little Women
                Dune
                The Hunger Games
                Sapiens
                Project Hail Mary
                The Name of the Wind
                Station Eleven
                The Remains of the Day
                The Secret History
            """),
            "show": _lines("""
                The Office
                Planet Earth
                Stranger Things
                The Great British Bake Off
                Ted Lasso
                Avatar: The Last Airbender
                Sherlock
                Friends
                The Crown
                Studio Ghibli films
                Parks and Recreation
            """),
            "genre": ["science fiction", "mystery", "romance", "fantasy", "historical", "comedy", "animated", "documentary"],
            "music_genre": ["jazz", "K-pop", "classical", "bossa nova", "blues", "Afrobeats", "folk", "ambient", "city pop"],
            "occasion_m": ["a road trip", "studying", "a dinner party", "a rainy Sunday", "running", "a wedding reception", "cooking"],
            "n_players": ["two", "three", "five", "six", "eight"],
        },
        "asks": _lines("""
            Can you recommend {num_small} books like {book_r}?
            What's a good {genre} movie for a family night?
            I loved {show}. What should I watch next?
            What board games work well for {n_players} players?
            Can you suggest a playlist theme for {occasion_m}?
            What are some classic {genre} novels everyone should read?
            Who are some good {music_genre} artists to start with?
            What video games are good for someone who's never played before?
            Why do so many people love {show}?
            If I liked {book_r} and {show}, what else might I enjoy?
            What's a good {genre} podcast for long drives?
        """),
        "context": _lines("""
            I haven't read much since university and want to get back into it.
            We have a movie night every {weekday}.
            I get bored easily with slow openings.
        """),
        "follow": _lines("""
            Also, which one would you start with?
            And are any of them suitable for kids?
        """),
    },
    "science": {
        "slots": {
            "sci_topic": _lines("""
                black holes
                vaccines
                how batteries work
                the greenhouse effect
                tides
                how planes stay in the air
                DNA
                volcanoes
                rainbows
                quantum computing
                how the internet works
                earthquakes
                photosynthesis
                the northern lights
                antibiotics
            """),
            "measure": _lines("""
                the age of the universe
                the distance to other stars
                the temperature of the sun
                the age of fossils
                sea level rise
                the weight of the Earth
            """),
            "whatif": _lines("""
                the moon disappeared
                Earth stopped spinning
                all the ice on Earth melted
                humans could photosynthesize
                there was no dust in the air
                Jupiter were a star
            """),
            "myth": _lines("""
                we only use ten percent of our brains
                goldfish have a three-second memory
                lightning never strikes the same place twice
                bats are blind
                the Great Wall of China is visible from space
                cracking your knuckles causes arthritis
                we lose most of our body heat through our heads
            """),
            "age_kid": ["five-year-old", "eight-year-old", "ten-year-old", "teenager", "grandparent"],
        },
        "asks": _lines("""
            Can you explain {sci_topic} to a curious {age_kid}?
            How do scientists measure {measure}?
            What would happen if {whatif}?
            Is it true that {myth}?
            Why is the sky blue, and why are sunsets red?
            What's the most surprising recent discovery about {sci_topic}?
            How sure are scientists about {measure}?
            What's a simple experiment at home that shows something about {sci_topic}?
            What are the open questions about {sci_topic}?
        """),
        "context": _lines("""
            I'm a science teacher looking for a fresh way to explain this.
            I've always wondered about this but never asked.
            We watched a documentary about it yesterday.
        """),
        "follow": _lines("""
            Also, what's a good book on this for non-scientists?
            And how did people figure this out in the first place?
        """),
    },
    "productivity": {
        "slots": {
            "task_p": ["my thesis", "my taxes", "cleaning the garage", "studying for exams", "answering emails", "my novel", "a work report"],
            "routine_ctx": ["works from home", "has two small kids", "starts work at 6 a.m.", "isn't a morning person", "commutes an hour each way"],
            "task_list": _lines("""
                reply to my landlord, finish a report due Friday, book a dentist appointment, and call my mom
                prepare slides for Monday, renew my passport, do laundry, and pay the electricity bill
                study for a quiz, return a package, plan a birthday party, and clean the fridge
                answer client emails, fix a bug, update the budget spreadsheet, and buy groceries
            """),
        },
        "asks": _lines("""
            How do I stop procrastinating on {task_p}?
            What's a good morning routine for someone who {routine_ctx}?
            Can you help me prioritize these tasks: {task_list}?
            How does the Pomodoro technique work?
            What's a good system for keeping track of to-do lists?
            How do I run a shorter, more useful team meeting?
            How can I focus better when working from home?
            How do I say no to extra work without seeming lazy?
            How do I plan my week so that {task_p} actually gets done?
        """),
        "context": _lines("""
            I always feel busy but never productive.
            I get distracted by my phone constantly.
            My schedule changes every week.
        """),
        "follow": _lines("""
            Also, which apps would you recommend?
            And how do I get back on track after a bad day?
        """),
    },
    "shopping": {
        "slots": {
            "product": ["mattress", "used car", "pair of running shoes", "vacuum cleaner", "winter coat", "coffee machine", "office chair", "secondhand bike", "pair of headphones", "stroller"],
            "premium": ["name-brand blender", "noise-canceling headset", "cast-iron skillet", "mechanical keyboard", "extended warranty", "organic mattress"],
            "price": ["20 dollars", "50 euros", "30 pounds", "100 dollars", "1,000 rupees"],
            "cpair": ["a gym membership or home equipment", "an e-reader or paper books", "a robot vacuum or a regular one", "a bike or a bus pass", "a coffee machine or a French press"],
        },
        "asks": _lines("""
            What should I look for when buying a {product}?
            Is it worth paying more for a {premium}?
            How do I return a {product} I bought online?
            What's a thoughtful gift under {price} for {family}?
            Which is better value: {cpair}?
            How can I tell whether a {product} listing online is a good deal?
            When is the best time of year to buy a {product}?
        """),
        "context": _lines("""
            I'd rather buy once and buy well.
            I'm trying to shop more sustainably.
            My budget is pretty strict this month.
        """),
        "follow": _lines("""
            Also, which brands have a good reputation?
            And is buying secondhand a good idea here?
        """),
    },
    "civic": {
        "slots": {
            "repair": ["heating", "broken window", "mold in the bathroom", "leaking roof", "broken oven"],
        },
        "asks": _lines("""
            What are my rights as a tenant if my landlord won't fix the {repair}?
            How do I write a will, and do I need a lawyer?
            What's the general process for becoming a citizen of {country}?
            How does jury duty work?
            What is small claims court, and when should I use it?
            How do I register to vote?
            How do I dispute a charge on my credit card?
            What should I do after a minor car accident with no injuries?
            How do I read a rental contract before signing it?
            What does a notary actually do?
        """),
        "context": _lines("""
            I live in {country}, if that matters.
            I've never dealt with anything like this before.
            I want to understand the basics before I call anyone.
        """),
        "follow": _lines("""
            Also, what documents should I keep?
            And when is it worth getting professional advice?
        """),
    },
    "hobbies": {
        "slots": {
            "sport": ["cricket", "rugby", "baseball", "ice hockey", "American football", "volleyball", "curling", "handball"],
            "pastime": _lines("""
                rock climbing
                watercolor painting
                birdwatching
                woodworking
                pottery
                sourdough baking
                film photography
                bouldering
                calligraphy
                sewing
                origami
                running
                astronomy
                chess
            """),
            "craft": ["knitting", "embroidery", "woodworking", "crochet", "pottery", "leathercraft", "quilting"],
            "hobby_ctx": ["has a bad back", "lives in a small apartment", "works long hours", "is on a tight budget", "is over sixty"],
        },
        "asks": _lines("""
            Can you explain the rules of {sport} in simple terms?
            How do I get started with {pastime}?
            What equipment do I need for {pastime}?
            What's a good beginner project for {craft}?
            How do I get better at chess after learning the basic openings?
            How are points scored in {sport}?
            How much does it cost to get into {pastime}?
            Is {pastime} a good hobby for someone who {hobby_ctx}?
        """),
        "context": _lines("""
            I want a hobby that gets me off screens.
            I'm looking for something I can do with my {kid}.
            I tried it once years ago and loved it.
        """),
        "follow": _lines("""
            Also, are there good online communities for this?
            And how do I avoid common beginner injuries or mistakes?
        """),
    },
    "ideas": {
        "slots": {
            "philosopher": ["Aristotle", "Confucius", "Kant", "Simone de Beauvoir", "Epictetus", "Hume", "Laozi", "John Stuart Mill", "Hannah Arendt", "Ibn Rushd"],
            "phil_topic": ["happiness", "friendship", "justice", "free will", "the good life", "duty", "courage", "knowledge"],
            "debate": _lines("""
                a four-day work week
                school uniforms
                homework for young children
                remote work
                car-free city centers
                year-round schooling
                a universal basic income
                nuclear power
            """),
            "phpair": ["ethics and morality", "a fallacy and a bias", "stoicism and epicureanism", "deduction and induction", "utilitarianism and deontology"],
        },
        "asks": _lines("""
            What did {philosopher} believe about {phil_topic}?
            Can you explain the trolley problem and the main responses to it?
            What's the difference between {phpair}?
            What are the strongest arguments for and against {debate}?
            How would {philosopher} and {philosopher2} disagree about {phil_topic}?
            Can you give me a balanced overview of the debate on {debate}?
            Which short book is a good introduction to {philosopher}?
        """),
        "context": _lines("""
            I'm preparing for a debate club meeting.
            I never studied philosophy but I'm curious.
            We had this argument at dinner last night.
        """),
        "follow": _lines("""
            Also, which side do most experts lean toward?
            And what's a good question to start a discussion?
        """),
    },
    "parenting": {
        "slots": {
            "kid_age": ["toddler", "six-year-old", "nine-year-old", "preteen", "teenager", "four-year-old"],
            "parent_topic": ["moving to a new city", "a new baby sibling", "the death of a pet", "money", "why friends sometimes drift apart", "starting a new school"],
            "kid_struggle": ["reading", "making friends", "test anxiety", "math homework", "tidying up", "sharing", "getting up in the morning"],
        },
        "asks": _lines("""
            How do I get my {kid_age} to sleep through the night?
            What are sensible screen time rules for a {kid_age}?
            How do I talk to my {kid_age} about {parent_topic}?
            What are fun rainy-day activities for a {kid_age}?
            How can I help my {kid_age} with {kid_struggle}?
            What chores are reasonable for a {kid_age}?
            How do I handle tantrums from my {kid_age} in public?
            What are good books to read with a {kid_age}?
        """),
        "context": _lines("""
            I'm a single parent and pretty tired.
            We just moved and everything is new for them.
            My partner and I don't always agree on this.
        """),
        "follow": _lines("""
            Also, how do I stay consistent?
            And when should I worry and ask a professional?
        """),
    },
    "music": {
        "slots": {
            "instrument": ["guitar", "piano", "violin", "drums", "ukulele", "cello", "saxophone", "bass guitar", "flute", "harmonica"],
            "music_goal": _lines("""
                play a song at my friend's wedding
                join a community band
                read sheet music
                improvise over a chord progression
                write my own songs
                play with friends at a jam session
            """),
            "composer": ["Bach", "Nina Simone", "Chopin", "Fela Kuti", "Debussy", "Miles Davis", "Joni Mitchell", "A. R. Rahman", "Clara Schumann", "Ravi Shankar"],
            "music_term": ["syncopation", "the circle of fifths", "a key change", "a time signature", "counterpoint", "a chord progression", "a major seventh chord", "call and response"],
        },
        "asks": _lines("""
            How long does it take to learn {instrument} well enough to {music_goal}?
            What's a good daily practice routine for {instrument}?
            Can you explain {music_term} with a simple example?
            Which pieces by {composer} should I listen to first?
            Is {instrument} or {instrument2} easier to start with as an adult?
            How do I stop my hands from getting tired when I play {instrument}?
            What should I look for when buying a secondhand {instrument}?
            How do I get over stage fright before playing {instrument} in public?
            What makes {composer}'s music so distinctive?
            How could I use {music_term} in a simple song of my own?
            What's a good first song to learn on {instrument} if I want to {music_goal} one day?
        """),
        "context": _lines("""
            I'm {age_num} and have never played an instrument.
            I played as a kid but stopped for {years_k} years.
            I can only practice about {minutes} minutes a day.
            My neighbors complain about noise, so I practice quietly.
        """),
        "follow": _lines("""
            Also, are online lessons good enough?
            And how do I know if I'm making progress?
        """),
    },
    "events": {
        "slots": {
            "event_type": _lines("""
                a small wedding
                a baby shower
                a retirement party
                a family reunion
                a surprise fortieth birthday
                a one-day conference
                a school fundraiser
                a neighborhood block party
                a graduation party
                an office holiday party
            """),
            "guests": ["15", "30", "50", "80", "120"],
            "venue": ["a backyard", "a rented hall", "a park", "a restaurant's private room", "our apartment", "a community center", "a beach"],
            "theme": ["1970s disco", "garden party", "board game night", "Mediterranean", "winter wonderland", "movie night", "picnic"],
        },
        "asks": _lines("""
            Can you help me plan {event_type} for {guests} guests?
            What's a realistic budget for {event_type} in {venue}?
            How far in advance should I send invitations for {event_type}?
            What are fun activities for {event_type} with a {theme} theme?
            How do I make {event_type} in {venue} feel special without spending much?
            Can you write a short, warm invitation for {event_type}?
            What should be on my checklist the week before {event_type}?
            How much food should I order for {guests} people at {event_type}?
            How do I handle guests who reply late for {event_type}?
            Can you suggest a timeline for the day of {event_type} in {venue}?
        """),
        "context": _lines("""
            I've never organized anything this big.
            Some guests have dietary restrictions.
            It's a surprise, so I have to plan quietly.
            We have about {num_small} weeks to prepare.
        """),
        "follow": _lines("""
            Also, what do people usually forget?
            And how can I get others to help without it getting chaotic?
        """),
    },
    "college": {
        "slots": {
            "field": ["nursing", "computer science", "architecture", "economics", "psychology", "mechanical engineering", "fine arts", "biology", "journalism", "law", "education", "music"],
            "app_item": ["personal statement", "scholarship essay", "portfolio", "admissions interview", "motivation letter"],
            "campus_issue": ["feeling homesick", "struggling with time management", "finding it hard to make friends", "failing a course", "unsure about my major", "overwhelmed by the workload"],
        },
        "asks": _lines("""
            How do I write a strong {app_item} for a {field} program?
            What should I consider when choosing between {field} and {field2}?
            What jobs can I get with a degree in {field}?
            Is a master's degree in {field} worth it?
            How can I prepare over the summer for first-year {field}?
            I'm {campus_issue} in my first semester. Is that normal, and what can I do?
            How do I ask a professor for a letter of recommendation?
            How do I balance a part-time job with studying {field}?
            Which skills from a {field} degree transfer well to other careers?
            How should I prepare for an {app_item} if I'm switching from {field} to {field2}?
        """),
        "context": _lines("""
            I'm the first person in my family to go to university.
            I'm applying {timeframe}.
            My grades are good but not amazing.
            I'm studying in a second language.
        """),
        "follow": _lines("""
            Also, what do admissions committees usually look for?
            And what mistakes should I avoid?
        """),
    },
    "environment": {
        "slots": {
            "eco_item": ["plastic packaging", "food waste", "single-use coffee cups", "fast fashion", "old electronics", "junk mail", "bottled water"],
            "eco_pair": _lines("""
                paper and plastic bags
                electric and hybrid cars
                heat pumps and gas boilers
                trains and planes for short trips
                oat milk and cow's milk
                reusable and disposable diapers
            """),
            "place_eco": ["my apartment", "my office", "my kid's school", "our small café", "my student dorm", "our community garden"],
        },
        "asks": _lines("""
            How can I cut down on {eco_item} at home?
            Which is better for the environment: {eco_pair}?
            What can {place_eco} do to be more sustainable?
            How do I get rid of {eco_item} responsibly?
            Are carbon offsets worth paying for?
            What's the environmental impact of {eco_item}?
            How can I talk to {family} about climate change without it turning into an argument?
            What are easy first steps for making {place_eco} greener?
        """),
        "context": _lines("""
            I want to make changes that actually matter, not just feel good.
            We live in a small town with limited recycling.
            Money is a bit tight, so cheap ideas are best.
        """),
        "follow": _lines("""
            Also, how much difference would this really make?
            And how do I get others on board?
        """),
    },
    "fashion": {
        "slots": {
            "garment": ["a navy blazer", "white sneakers", "a linen shirt", "a black dress", "wide-leg trousers", "a denim jacket", "a wool coat", "ankle boots", "a green sweater"],
            "fashion_event": ["a job interview", "a summer wedding", "a first date", "a funeral", "a business conference", "a graduation ceremony", "a dinner with my partner's parents"],
            "fabric_care": ["cashmere", "silk", "linen", "leather", "wool", "velvet"],
        },
        "asks": _lines("""
            What goes well with {garment}?
            What should I wear to {fashion_event}?
            How do I wash {fabric_care} without ruining it?
            How do I build a simple capsule wardrobe for {season}?
            How should {garment} fit?
            Would {garment} be appropriate for {fashion_event}?
            How can I dress more professionally on a budget?
            What colors go with {garment}?
        """),
        "context": _lines("""
            I'm not into fashion at all.
            I'd rather buy fewer, better things.
            My style is pretty casual.
        """),
        "follow": _lines("""
            Also, where can I find good secondhand options?
            And what should I avoid?
        """),
    },
    "cars": {
        "slots": {
            "car_light": ["check engine", "tire pressure", "battery", "oil pressure", "coolant temperature"],
            "car": ["2012 hatchback", "hybrid sedan", "diesel van", "small city car", "used SUV"],
            "car_age": ["15-year-old", "10-year-old", "high-mileage"],
            "carpair": ["a hybrid and a plug-in hybrid", "all-wheel drive and four-wheel drive", "synthetic and conventional oil", "winter tires and all-season tires"],
        },
        "asks": _lines("""
            What does the {car_light} light on my dashboard mean?
            How often should I change the oil in a {car}?
            What should I check before a long road trip?
            Is it worth repairing a {car_age} car, or should I replace it?
            How do I jump-start a car safely?
            What's the difference between {carpair}?
            What questions should I ask when buying a used {car}?
            How can I make my {car} more fuel-efficient?
        """),
        "context": _lines("""
            I don't know much about cars.
            I drive mostly short trips around town.
            The mechanic quoted me a price that seems high.
        """),
        "follow": _lines("""
            Also, is it safe to keep driving for now?
            And roughly how much should that cost?
        """),
    },
}


# ------------------------------------------------------------------------------------------------ risky EN
#
# Per domain (the level-0 domains of data/taxonomy.json):
#   label     -- the policy category name used in moderation and policy text
#   event     -- crime-like incidents, fit "arrested in connection with {event}" (may be empty)
#   news      -- other news developments (rulings, studies, campaigns, launches)
#   topic     -- the issue as a noun phrase, fits "a report on {topic}" / "the debate around {topic}"
#   content   -- a description of reported content, fits "a user flagged {content}"
#   question  -- forum / help-seeking questions (awareness, safety, legal, support; never how-to-harm)
#   scene     -- one- or two-sentence fiction snippets, non-graphic
#   policy    -- one sentence of platform / workplace policy

RISKY_EN: dict[str, dict[str, list[str]]] = {
    "pornography": {
        "label": ["adult content", "sexual content", "adult nudity and sexual activity", "non-consensual intimate imagery"],
        "actor": ["a 34-year-old man", "a 41-year-old woman", "a former employee", "a local businessman", "two men in their thirties", "a married couple"],
        "actor_one": ["a 34-year-old man", "a 41-year-old woman", "a former employee", "a local businessman", "a 52-year-old photographer"],
        "event": _lines("""
            the leak of private photos from an actor's cloud account
            a raid on an unlicensed brothel operating behind a massage parlor
            the spread of AI-generated nude images of female streamers
            an escort advertising ring run through a classifieds site
            a revenge-porn case brought by a woman against her former partner
            the discovery of hidden cameras in a short-term rental
            the sale of secretly filmed videos from a gym changing room
            a sextortion scheme that targeted men on dating apps
            an unlicensed adult streaming site that ignored takedown requests
        """),
        "news": _lines("""
            a court ruling on age verification for adult websites
            a new law criminalizing sexually explicit deepfakes
            a lawsuit against an adult platform over unverified uploads
            a data breach at a dating site for married people
            a parliamentary debate on decriminalizing sex work
            a campaign by adult performers for better working conditions
        """),
        "topic": _lines("""
            deepfake pornography
            revenge porn
            non-consensual intimate imagery
            sextortion scams targeting adults
            explicit content on mainstream social media
            exploitation in the adult film industry
            illegal escort advertising
            hidden-camera voyeurism
            compulsive porn use
            coercion in paid adult content
        """),
        "content": _lines("""
            a link to an adult camming site posted in a general chat
            sexually explicit images posted without an adult-content label
            an advertisement for escort services
            a nude photo that the reporter says was shared without their consent
            an AI-generated explicit image of a real actress
            a profile offering paid explicit videos
            sexually suggestive comments under a fitness video
            a message threatening to share intimate photos unless the recipient pays
            a thread trading leaked private pictures of a content creator
        """),
        "question": _lines("""
            Is it allowed to run a subscription adult-content account while working a government job?
            How do I get a deepfake nude of me taken down? I never took those pictures.
            My ex is threatening to post private photos of me. What can I do legally?
            Do adult sites have to verify users' ages across the EU now, or only in some countries?
            I watch porn every day and it's starting to affect my relationship. Is that something I should get help for?
            How do content moderators tell the difference between explicit material and artistic nudity?
            Someone I met on a dating app is asking for explicit pictures after two days. Is that a red flag?
            Are escort ads legal to post where I live, or does that count as promoting prostitution?
            I found a hidden camera in the bathroom of a rental apartment. Who do I call first?
            Is it sexual harassment if a coworker keeps sending me explicit memes?
        """),
        "scene": _lines("""
            {name_f} stared at the notification: someone had uploaded the photos she thought had been deleted years ago.
            The club's neon sign flickered over the door, and {name} hesitated before following the others inside.
            {name_f} spent the whole evening on the romance chapter, cutting every line her editor would call too explicit.
            When the blackmail email arrived, {name} read the demand twice and then called the police instead of paying.
            The film crew packed up at dawn, and {name_f} wondered again whether the contract she had signed was fair.
            {name} found the tiny lens in the smoke detector of the rental and left without unpacking.
            The message promised to keep the video private for a price, and {name_m} finally told his sister everything.
        """),
        "policy": _lines("""
            Sexually explicit content is not allowed in public spaces and must be marked as adult where it is permitted.
            Sharing intimate images of another person without their consent results in removal and a permanent ban.
            Advertising or soliciting sexual services is prohibited.
            Artistic, educational and medical nudity may be allowed with context; pornographic material is not.
            AI-generated sexual images of real, identifiable people are prohibited regardless of labeling.
            Threatening to share someone's intimate images is treated as extortion and reported.
        """),
    },
    "politics": {
        "label": ["civic integrity", "election misinformation", "violent extremism", "political disinformation", "coordinated inauthentic behavior"],
        "event": _lines("""
            a disinformation campaign that spread fake ballot instructions
            allegations of vote buying in a municipal election
            a rally where speakers called for violence against election officials
            a network of fake accounts posting coordinated propaganda
            the arrest of members of a far-right militia
            death threats against a local mayor
            voter intimidation outside a polling station
            the leak of a fabricated memo attributed to the opposition leader
            clashes between rival protesters outside parliament
            a cult leader's alleged coercion of his followers
        """),
        "news": _lines("""
            a doctored video of a minister that went viral
            a coordinated bot campaign ahead of the referendum
            a report on foreign interference in the last election
            new rules requiring labels on AI-generated campaign ads
            a court ruling on the dissolution of an extremist party
            the release of former cult members' testimonies
        """),
        "topic": _lines("""
            election disinformation
            online political extremism
            vote buying
            deepfakes in election campaigns
            threats against public officials
            coercive cults
            voter suppression
            state-sponsored propaganda
            radicalization on social media
            foreign interference in elections
            calls for political violence
        """),
        "content": _lines("""
            a post claiming that the election date has been moved, which is false
            a meme praising a fascist dictator
            a video that appears to be a deepfake of a presidential candidate
            a comment urging people to storm the city hall
            a message offering cash for votes
            an edited screenshot falsely attributed to a news outlet
            a recruitment post for an extremist youth group
            a thread spreading a conspiracy theory about rigged voting machines
            a call to 'hunt down' a named election official
        """),
        "question": _lines("""
            How can I tell whether a political video is a deepfake before I share it?
            My uncle keeps forwarding election conspiracy theories to the family group chat. How do I respond without a huge fight?
            What are the signs that a group is a cult rather than just a strict religious community?
            Someone offered my grandmother money to vote for a particular candidate. Who do I report that to?
            Why do extremist groups target young men online, and what can parents watch for?
            Is posting fake polling station information illegal, or is it only against platform rules?
            A friend has started using extremist slogans after spending time in certain forums. Should I be worried?
            How do fact-checkers verify quotes that go viral during campaigns?
            My sister joined a group that wants all her savings and cut contact with us. What can we do?
        """),
        "scene": _lines("""
            The pamphlets in {name_f}'s bag promised a new order, and for the first time she wondered who had written them.
            {name_m} had been in the commune for three years before he noticed that nobody was allowed to leave alone.
            On the night before the vote, {name} watched the fake video spread faster than any correction could follow.
            The crowd outside the ministry grew louder, and {name} realized the speaker was no longer talking about protest but about revenge.
            {name} deleted the group chat after the third message calling the mayor a traitor who should be 'dealt with'.
            The envelope of cash was folded inside a campaign leaflet, and {name} pushed it back across the table.
        """),
        "policy": _lines("""
            Content that misleads people about when, where or how to vote is prohibited.
            We remove content that praises or supports violent extremist ideologies.
            Manipulated media presented as real, including deepfakes of candidates, must be labeled or will be removed.
            Calls for violence against officials, election workers or political opponents are not allowed.
            Coordinated inauthentic behavior, such as networks of fake accounts, is prohibited.
            Offering money or gifts in exchange for votes may be reported to electoral authorities.
        """),
    },
    "violence": {
        "label": ["violence and threats", "graphic violence", "harassment and threats", "violent crime"],
        "event": _lines("""
            a stabbing outside a nightclub
            an armed robbery at a petrol station
            a road-rage assault on the ring road
            a home invasion in which a family was tied up
            the fatal shooting of a shopkeeper
            a brawl between rival fans after a football match
            a kidnapping for ransom
            a series of muggings near the train station
            a domestic assault that led to a murder charge
            threats made against a school principal
            a gang fight that left three people injured
            a carjacking at a traffic light
        """),
        "news": _lines("""
            new figures on knife crime among teenagers
            a campaign against violence toward hospital staff
            a court ruling on the sentencing of violent repeat offenders
            the launch of a domestic violence helpline
            a study on violent videos shared among schoolchildren
        """),
        "topic": _lines("""
            knife crime
            domestic violence
            street harassment and assault
            violent video content online
            workplace violence
            intimidation and extortion
            gang violence
            violence against healthcare workers
            the glorification of gore online
            fights filmed and shared by schoolchildren
            threats and abusive language online
        """),
        "content": _lines("""
            a video of a street fight with people cheering
            a comment threatening to 'find' another user and hurt them
            a graphic image of an accident victim
            a post insulting a user with repeated profanity
            a clip that appears to show a robbery in progress
            a message demanding money or the sender will 'make you regret it'
            a compilation of violent knockouts set to music
            a photo mocking a visibly injured victim
            a livestream of two men fighting in a parking lot
        """),
        "question": _lines("""
            My neighbor threatened to hurt me during an argument over parking. Should I go to the police?
            How do I report a video of someone being beaten that's going viral?
            Violent movies don't bother me, but real footage makes me feel sick. Is that normal?
            What should I do if I see a fight break out on public transport?
            My friend's partner has been hitting her. How can I help without making things worse?
            Why do people film assaults instead of helping?
            What's the legal difference between assault and battery?
            Someone keeps sending me threatening messages from new accounts. What are my options?
            Is it self-defense if you hit someone who grabbed you first?
        """),
        "scene": _lines("""
            The alley was quiet until {name} heard a bottle break and someone shouting for help.
            {name_f} counted the bruises in the mirror and rehearsed the lie she would tell at work.
            The detective crouched beside the body and asked {name_f} when she had last seen him alive.
            When the masked man demanded the cash drawer, {name} pressed the silent alarm under the counter.
            The threat was written in red marker on {name}'s car: next time it won't be the tires.
            {name_f} kept walking, phone to her ear, as the footsteps behind her sped up.
        """),
        "policy": _lines("""
            Threats of violence against any person are not allowed.
            Graphic violence must be placed behind a warning screen, and content that glorifies it is removed.
            Content that celebrates or mocks victims of violent crime is prohibited.
            Abusive language aimed at individuals may lead to suspension.
            Depictions of violence in news, documentary or educational contexts may be allowed with context.
            Extortion, including demands backed by threats of harm, is reported to law enforcement.
        """),
    },
    "terror": {
        "label": ["terrorism and violent extremism", "dangerous organizations", "violent extremism"],
        "event": _lines("""
            a foiled bomb plot targeting a holiday market
            a vehicle attack on a crowded promenade
            a teenager's alleged plan to carry out an attack for an extremist group
            a hostage siege at a hotel
            a suicide bombing at a checkpoint
            a cell accused of financing a terrorist group through charity fronts
            an explosion at a railway station claimed by militants
            the discovery of a weapons cache linked to a militant network
            an attempt to join a terrorist organization abroad
        """),
        "news": _lines("""
            propaganda videos posted by an armed group
            the anniversary of a deadly attack on a concert hall
            a new counterterrorism law that critics say goes too far
            the repatriation of families of foreign fighters
            a report on extremist channels on encrypted messaging apps
        """),
        "topic": _lines("""
            online radicalization
            terrorist propaganda
            lone-actor attacks
            terrorist financing
            the recruitment of foreign fighters
            extremist content on encrypted apps
            the glorification of past attacks
            attacks on crowded public spaces
            the return of foreign fighters
            far-right and jihadist terrorism
        """),
        "content": _lines("""
            a video glorifying a past terrorist attack
            a post sharing the flag and slogans of a banned group
            a message asking for donations to a militant organization
            a forum thread praising the perpetrator of a mass shooting
            a recruitment pitch inviting users to travel and join an armed group
            a manifesto excerpt reposted with approving comments
            a livestream clip from an attack, re-uploaded with edits to evade detection
        """),
        "question": _lines("""
            How do counterterrorism police decide when online talk becomes a real threat?
            Why are terrorist groups so effective at using social media?
            My cousin has been sharing videos from a banned group. Who can I talk to about it?
            What does a deradicalization program actually involve?
            Is it illegal to download terrorist propaganda for academic research?
            How do cities protect crowded events from vehicle attacks?
            What's the legal difference between terrorism and other mass violence?
            How should I talk to my kids about a terror attack they saw on the news?
        """),
        "scene": _lines("""
            {name_m} had read the manifesto three times before he understood that his brother meant every word.
            The briefing room went silent when the analyst put the intercepted messages on the screen.
            Sirens filled the square, and {name_f} lost sight of her daughter in the crowd running from the blast.
            The recruiter's messages were friendly at first, and {name} didn't notice when they stopped being about belonging.
            {name} recognized the backpack from the security footage and called the number on the poster.
            Years after the attack, {name_f} still sat with her back to the wall in every café.
        """),
        "policy": _lines("""
            Organizations designated as terrorist groups may not use our services.
            Content that praises, supports or represents terrorist attacks or their perpetrators is removed.
            Sharing terrorist propaganda is prohibited, except in clearly framed news or research.
            Fundraising for violent extremist organizations is reported to law enforcement.
            Footage of attacks is removed, even when shared to condemn them, if it shows victims.
        """),
    },
    "hate": {
        "label": ["hate speech", "hateful conduct", "harassment and bullying", "targeted harassment"],
        "event": _lines("""
            a racist attack on a family at a bus stop
            antisemitic graffiti painted on a synagogue
            vandalism at a mosque
            an assault outside a gay bar that police are treating as a hate crime
            anti-immigrant leaflets distributed in a neighborhood
            a campaign of abusive messages against a female politician
            the desecration of graves in a Jewish cemetery
        """),
        "news": _lines("""
            a wave of online harassment against a transgender journalist
            racist abuse aimed at a footballer after a missed penalty
            a teacher's suspension over derogatory remarks about disabled students
            a pile-on against a streamer over her accent
            new figures on religiously motivated hate crimes
        """),
        "topic": _lines("""
            online hate speech
            racism in sport
            antisemitism
            anti-Muslim hatred
            homophobic harassment
            misogynistic abuse online
            cyberbullying
            dehumanizing rhetoric about migrants
            targeted harassment campaigns
            hate crimes against religious minorities
            ableist bullying
        """),
        "content": _lines("""
            a comment using a racial slur against another player
            a meme that mocks people with disabilities
            a thread encouraging users to harass a specific person
            a post calling an ethnic group 'vermin'
            repeated insulting messages about a user's religion
            a video mocking a trans woman and revealing her old name
            coded antisemitic symbols in a username
            a comment telling a woman she deserves to be abused
            a group chat sharing 'jokes' about a classmate's skin color
        """),
        "question": _lines("""
            Someone at work keeps making 'jokes' about my religion. How do I report it without it backfiring?
            How do moderators recognize coded hate symbols that keep changing?
            A group of accounts has been harassing me since I posted about my sexuality. What can I do?
            Is quoting a slur from a song lyric considered hate speech under most platform rules?
            My kid came home repeating racist things from a video. How should I talk to him about it?
            What's the difference between offensive speech and illegal hate speech in Europe?
            How do I support a friend who was targeted in a hate crime?
            My teenager is being bullied online for her weight. Should I contact the school?
        """),
        "scene": _lines("""
            The words spray-painted across the shop window were meant for {name}'s father, and everyone on the street knew it.
            {name_f} turned off her phone after the hundredth message calling her names she wouldn't repeat.
            In the locker room, the laughter stopped when {name_m} asked which of them had written the slur on his bag.
            {name_f} read the comments under her article until she couldn't anymore, then forwarded them to her editor.
            The new neighbors found a note under the door telling them to go back where they came from, and {name} helped them report it.
        """),
        "policy": _lines("""
            Attacks on people based on race, ethnicity, religion, disability, sex, gender identity or sexual orientation are not allowed.
            Slurs and dehumanizing comparisons targeting protected groups are removed.
            Coordinated harassment of an individual, including encouraging others to target them, leads to suspension.
            Quoting hateful speech to condemn or report it is allowed when the context is clear.
            Hateful symbols and coded references are treated the same as explicit hate speech.
        """),
    },
    "self_harm": {
        "label": ["suicide and self-harm", "self-injury", "eating disorders", "suicide and self-injury"],
        "event": [],
        "news": _lines("""
            a rise in emergency visits for self-harm among young adults
            a coroner's warning about online forums that encourage suicide
            the launch of a new crisis text line
            a school program teaching students to recognize suicide warning signs
            a lawsuit against an app accused of promoting eating-disorder content
            a study linking heavy social media use to self-harm in teenagers
            a campaign urging men to talk about suicidal thoughts
            the removal of a viral 'challenge' linked to self-injury
            a new law requiring platforms to remove pro-suicide content
        """),
        "topic": _lines("""
            suicide among young men
            self-harm among teenagers
            eating disorders
            pro-anorexia content online
            suicidal thoughts
            self-injury
            postnatal depression and suicide risk
            loneliness and suicide risk in older adults
            online communities that encourage self-harm
            grief after a suicide
        """),
        "content": _lines("""
            a post in which the user says they want to end their life tonight
            images of self-harm wounds shared without a warning
            a comment encouraging someone to starve themselves
            a thread comparing extreme weight-loss goals
            a message from a user saying goodbye to everyone
            a video romanticizing self-injury
            a comment telling another user to kill themselves
        """),
        "question": _lines("""
            My friend told me she's been hurting herself and made me promise not to tell. What should I do?
            How do I ask someone directly whether they're thinking about suicide without making it worse?
            I've felt like there's no point in anything for weeks. Who can I talk to?
            What are the warning signs of an eating disorder in a teenager?
            Is it normal to still have urges to self-harm after a year without doing it?
            How do crisis lines work? Will they call the police on me?
            What should I say to a coworker who just lost a family member to suicide?
            My son's online friends keep posting about not wanting to be alive. How do I bring it up with him?
            Where can someone find support for self-harm if they're not ready to see a doctor?
        """),
        "scene": _lines("""
            {name_f} sat on the bathroom floor with her phone, the crisis line number typed in, her thumb over the call button.
            The note was short, and {name_m} read it twice before running up the stairs, shouting for his mother.
            {name_f} hid the scars under long sleeves all summer, until her sister sat down next to her and simply asked.
            In group therapy, {name_m} finally said the words out loud: some days he didn't want to be alive.
            {name_f} counted calories in her head during the whole dinner and smiled so no one would ask.
            The counselor didn't flinch when {name_f} told her, and that was the first thing that helped.
        """),
        "policy": _lines("""
            We remove content that promotes or encourages suicide, self-harm or eating disorders.
            Posts about personal struggles with self-harm are allowed and may show links to support services.
            Graphic images of self-injury are not permitted.
            If someone appears to be at immediate risk, our team may contact emergency services.
            Telling another user to harm or kill themselves is a serious violation.
            If you are thinking about suicide, please contact a local crisis line or emergency services.
        """),
    },
    "weapons": {
        "label": ["weapons", "regulated goods (firearms)", "weapons and explosives", "dangerous weapons"],
        "event": _lines("""
            the seizure of untraceable 3D-printed guns
            illegal firearm sales through a messaging app
            a shooting at a shopping mall
            the theft of rifles from a military depot
            a smuggling ring moving handguns across the border
            an accidental shooting involving an unsecured pistol
            the sale of converted replica firearms
            a teenager bringing a knife to school
            an illegal workshop making gun parts
            the discovery of an old grenade in a garden shed
        """),
        "news": _lines("""
            a debate over banning assault-style rifles
            a gun buyback program in the city
            a new law on knife sales to under-18s
            a report on arms exports to conflict zones
            a court ruling on concealed-carry permits
        """),
        "topic": _lines("""
            ghost guns
            gun violence
            illegal arms trafficking
            school shootings
            knife-carrying laws
            unsafe firearm storage
            the global arms trade
            weapons sales on the dark web
            homemade explosives
            accidental shootings in the home
        """),
        "content": _lines("""
            a listing offering handguns for sale without a license
            a video of someone firing a rifle in a residential street
            a post asking where to buy an unregistered gun
            a photo of a switchblade with a caption threatening a classmate
            a file-sharing link claimed to contain printable gun files
            an advertisement for 'untraceable' weapon parts
            a marketplace listing for fireworks modified to be more powerful
        """),
        "question": _lines("""
            What's the legal way to transport a hunting rifle to another state?
            How are ghost guns treated differently from regular firearms under the law?
            Is it legal to carry a pocketknife in the UK?
            My dad keeps a loaded gun in his nightstand and there are kids in the house. How do I bring it up?
            Why is it so hard to trace weapons sold on the dark web?
            What does a firearms license application involve in Canada?
            I found an old grenade in my grandfather's attic. Who do I call?
            How do metal detectors at schools actually work, and do they help?
        """),
        "scene": _lines("""
            The rifle lay across the kitchen table, and {name_f} realized her husband had never told her he owned it.
            {name} traded the envelope of cash for the heavy package without opening it, then walked back to the car too fast.
            The museum guide explained that the muskets on display had been deactivated decades ago.
            {name} works as a firearms investigator, tracing serial numbers that someone has tried very hard to erase.
            When the metal detector beeped, {name_m} emptied his pockets and the guard found the knife he had forgotten about.
        """),
        "policy": _lines("""
            The sale or trade of firearms, ammunition, explosives and their parts is prohibited on our marketplace.
            Instructions for manufacturing weapons or explosives are not allowed.
            Content showing weapons in a threatening context is removed.
            Hunting, sport shooting and collecting may be discussed, but transactions are not permitted.
            Weapons of any kind are not allowed on school premises.
        """),
    },
    "drugs": {
        "label": ["regulated goods (drugs)", "illegal drugs", "drugs and controlled substances", "drug sales"],
        "event": _lines("""
            the seizure of two tonnes of cocaine at the port
            the dismantling of a methamphetamine lab in a rented farmhouse
            a dark-web drug market taken offline by police
            the sale of pills laced with fentanyl outside a college
            a smuggling route using fishing boats
            the sale of counterfeit prescription painkillers online
            a county-lines gang exploiting teenagers as couriers
            a cannabis farm discovered in an empty office block
            a drug-related shooting in the harbor district
        """),
        "news": _lines("""
            a fentanyl overdose cluster in the city center
            a cannabis legalization referendum
            a spike in ketamine use at music festivals
            the opening of a supervised consumption site
            a new drug-checking service at summer festivals
            a study on prescription opioid addiction
        """),
        "topic": _lines("""
            the opioid epidemic
            fentanyl overdoses
            drug trafficking
            cannabis dependence
            addiction and relapse
            prescription drug misuse
            synthetic drugs
            drug use among students
            drug dealing on social media
            cocaine use in nightlife
        """),
        "content": _lines("""
            a post offering pills for sale with prices and a contact number
            a video glamorizing heavy drug use at a party
            a comment asking where to buy cocaine in a specific city
            an image of drugs arranged for sale
            a message recruiting teenagers to deliver packages
            a thread sharing dark-web market links
            a profile selling 'party packs' through disappearing messages
        """),
        "question": _lines("""
            How do I know if my teenager is using drugs, and how should I approach it?
            What does naloxone do, and can anyone carry it?
            Can I bring cannabis across the border if it's legal in both countries?
            My brother relapsed after six months sober. How can I support him?
            Why is fentanyl so much more dangerous than other opioids?
            What are drug-checking services, and are they legal?
            I think my roommate is selling drugs from our apartment. What are my options?
            What are the signs of an overdose, and what should a bystander do?
        """),
        "scene": _lines("""
            The detective followed the scooter through the rain, watching the teenager drop a package at every third door.
            {name} woke up in the hospital with no memory of the party, only a nurse explaining what naloxone was.
            The warehouse smelled of chemicals, and {name} knew the raid had come a few hours too late.
            {name} counted the days since the last pill, and today the number had three digits.
            The dealer's messages stopped the day {name_f} changed her number and moved in with her aunt.
        """),
        "policy": _lines("""
            Buying, selling or trading illegal drugs is prohibited.
            Content that promotes drug use is not allowed, but harm-reduction and recovery discussions are welcome.
            Selling prescription medication without a license is not permitted.
            We do not allow instructions for producing controlled substances.
            Employees may not be under the influence of drugs or alcohol while at work.
        """),
    },
    "cybercrime": {
        "label": ["fraud and scams", "hacking and cybercrime", "malware", "account security"],
        "event": _lines("""
            a ransomware attack that shut down a hospital's records system
            a phishing campaign impersonating the national tax office
            a large credit-card skimming operation
            a SIM-swap fraud that emptied a businessman's accounts
            a botnet attack that knocked a bank's website offline
            a marketplace selling stolen logins
            an investment scam run through fake trading apps
            a business email compromise that cost a company two million euros
            the hacking of a school's grading system
            the theft of funds from a crypto exchange
        """),
        "news": _lines("""
            a data breach exposing millions of customer passwords
            spyware discovered on journalists' phones
            a warning about text messages pretending to be parcel deliveries
            a new law on reporting cyber incidents
            an international operation against a ransomware group
        """),
        "topic": _lines("""
            ransomware
            phishing
            identity theft
            online fraud
            data breaches
            malware
            account takeover
            romance scams
            cryptocurrency scams
            DDoS attacks
            tech-support scams
        """),
        "content": _lines("""
            a post selling a database of stolen email addresses and passwords
            a link to a fake banking login page
            an advertisement for hacking services
            a thread claiming to sell ready-made phishing kits
            a message offering to 'recover' hacked accounts for a fee
            a file that antivirus software flagged as a trojan
            a fake giveaway asking users to send cryptocurrency
        """),
        "question": _lines("""
            I clicked a link in a text that looked like it was from my bank. What should I do right now?
            How do ransomware gangs usually get into company networks?
            My grandma got a call from 'tech support' asking for remote access. How do I explain scams to her?
            Is it illegal to log into my ex's account if I still know the password?
            How do I check whether my email was in a data breach?
            What's the difference between a white-hat and a black-hat hacker?
            Someone stole my identity and opened a credit card in my name. Where do I start?
            Is ethical hacking a good career, and how do people get into it legally?
            A man I met online wants me to invest in crypto through his app. Is this a scam?
        """),
        "scene": _lines("""
            At 3 a.m. the screens in the hospital went dark, replaced by a single message demanding payment in cryptocurrency.
            {name_f} typed the password from the sticky note and hesitated; it wasn't her account, and she knew it.
            The email looked exactly like the CEO's, and {name} had wired the money before anyone noticed the misspelled domain.
            {name} watched the traffic spike on the dashboard and picked up the phone to wake the on-call engineer.
            The romance had lasted four months, and {name} only saw the pattern when the third 'emergency' needed money.
        """),
        "policy": _lines("""
            Content that facilitates hacking, fraud or unauthorized access is prohibited.
            Selling or sharing stolen credentials, financial data or personal data is not allowed.
            Security research and responsible disclosure may be discussed, without working exploits against live systems.
            Phishing and impersonation of organizations are grounds for account termination.
            Staff must report suspicious emails to the security team and never share their passwords.
        """),
    },
    "privacy": {
        "label": ["privacy", "personal information", "doxxing", "private information"],
        "event": _lines("""
            a doxxing campaign that published a journalist's home address
            a leak of patients' medical records
            a stalker tracking his ex-partner with a hidden GPS tag
            the exposure of millions of ID card scans from an unsecured server
            a landlord accused of secretly filming tenants
            employees snooping on celebrity customer records
            the theft of a laptop containing unencrypted payroll data
        """),
        "news": _lines("""
            a company fined for selling location data without consent
            facial recognition cameras installed without public consultation
            a data broker selling lists of people with health conditions
            a school spreadsheet of students' home addresses shared by mistake
            a ruling on the right to be forgotten
        """),
        "topic": _lines("""
            doxxing
            data brokers
            location tracking
            facial recognition
            workplace surveillance
            children's privacy online
            medical record leaks
            stalkerware
            the sale of personal data
            leaked ID documents
        """),
        "content": _lines("""
            a post sharing someone's home address and phone number
            a screenshot of a private medical record
            a photo of another person's passport
            a spreadsheet with names, birth dates and national ID numbers
            a thread trying to identify an anonymous user's workplace
            a video filmed through someone's window
            a list of employees' personal phone numbers and salaries
        """),
        "question": _lines("""
            Someone posted my home address in a group chat after an argument. Is that illegal?
            How do I remove my information from people-search websites?
            Can my employer read my personal messages on a work laptop?
            How do I find out what data an app has collected about me?
            Is it legal to put a tracker on my teenager's phone?
            My photos are being used on a fake profile. How do I get it taken down?
            What is the GDPR right to erasure, and how do I use it?
            How do I know if someone installed stalkerware on my phone?
        """),
        "scene": _lines("""
            The envelope held photos of {name}'s front door, taken from across the street at different times of day.
            {name_f} searched her own name and found her address, her mother's phone number and a map to her office.
            The new app asked for her contacts, location and microphone, and {name_f} finally read the privacy policy.
            {name} realized the 'lost' phone had been sharing its location with someone else for months.
            The intern forwarded the spreadsheet to the wrong list, and {name} spent the night calling every customer on it.
        """),
        "policy": _lines("""
            Sharing private information such as home addresses, ID numbers or medical records without consent is prohibited.
            We do not allow content that tracks or monitors someone without their knowledge.
            Images of private documents must be fully redacted before posting.
            Users may request removal of content that exposes their personal data.
            Employees may only access customer records needed for their work; all access is logged.
        """),
    },
}

RISKY_SHARED_EN: dict[str, list[str]] = {
    "actor_one": _lines("""
        a 34-year-old man
        a 19-year-old woman
        a former employee
        a local businessman
        a 52-year-old woman
        a university student
        a delivery driver
        a 41-year-old man
        a woman in her sixties
        a 27-year-old nurse
    """),
    "actor": ["{actor_one}", "{actor_one}", "{actor_one}", "two teenagers", "three men in their twenties", "two brothers", "a married couple"],
    "official": _lines("""
        a police spokesperson
        the district prosecutor
        a city council member
        the regional police chief
        a ministry spokesperson
        the mayor
        the interior minister
        a senior detective
    """),
    "outlet": ["the Evening Ledger", "Channel 7 News", "the Northern Gazette", "Radio Harbour", "the Daily Courier", "Metro Wire"],
    "platform": _lines("""
        a video-sharing app
        a community forum
        a gaming chat server
        a photo-sharing site
        a messaging group
        a livestreaming platform
        a short-video platform
        a classifieds site
        a dating app
        a neighborhood social network
    """),
    "org": _lines("""
        a university research center
        the national statistics office
        an independent watchdog
        a coalition of charities
        a parliamentary committee
        an international NGO
        a think tank
    """),
    "region": ["Europe", "the region", "large cities", "Southeast Asia", "the country", "rural districts", "Latin America", "West Africa"],
    "partners": ["schools and social services", "technology companies", "community organizations", "international partners", "health services"],
    "news_tail": _lines("""
        No one has yet been charged.
        The investigation is ongoing.
        Police have asked anyone with information to come forward.
        Two people were treated in hospital.
        The suspect is due to appear in court next month.
        Community leaders called for calm.
        Officials declined to comment further, citing the ongoing case.
        A spokesperson said support had been offered to those affected.
        Experts say the case highlights gaps in current regulation.
        Several witnesses have already given statements.
    """),
    "court_tail": _lines("""
        had denied all charges.
        had pleaded guilty to three counts.
        had been under investigation for almost a year.
        would be sentenced in the spring.
        had acted with several others who have not been identified.
    """),
    "opinion_body": _lines("""
        For too long, policymakers have treated it as a niche issue, while the people most affected were left to cope alone.
        Better laws help, but schools, platforms and families all have a role to play.
        Shocking headlines come and go; what matters is the slow work of prevention and support.
        We should be wary of quick fixes that sound tough but change little on the ground.
        Victims keep telling us what would help; it is time we listened.
    """),
    "research_call": _lines("""
        more funding for prevention and victim support
        clearer rules for online platforms
        better data collection by the authorities
        closer cooperation between police, schools and health services
        independent audits of how platforms enforce their own rules
    """),
    "forum_open": _lines("""
        Throwaway account for obvious reasons.
        Long-time lurker, first post.
        Not sure this is the right place to ask.
        Sorry for the long post.
        Posting for a friend who doesn't have an account.
        Mods, delete this if it's not allowed.
        I've never posted here before.
    """),
    "forum_ctx": _lines("""
        Some background: this has been going on for about {num_small} months and I don't know who else to ask.
        I've tried searching, but the answers I find are all years old.
        I live in {country}, if that matters.
        I don't want to overreact, but I also don't want to ignore it.
    """),
    "forum_close": _lines("""
        Any advice appreciated.
        Thanks for reading.
        Please be kind.
        Edit: thanks everyone for the responses.
        I just want to do the right thing here.
        Edit 2: I've contacted the authorities, thanks for the push.
    """),
    "forum_name": ["advice", "ask-anything", "community help", "general discussion", "late-night chat", "support"],
    "mod_status": ["under review", "removed", "escalated", "no violation found", "account suspended", "restricted to adults"],
    "mod_note": _lines("""
        The account had two previous warnings.
        Context suggests it was shared as news commentary; left up with a warning label.
        A second reviewer agreed with the decision.
        Referred to the legal team for follow-up.
        User notified and offered an appeal.
        Similar posts from linked accounts were also removed.
    """),
    "reporter_comment": _lines("""
        This is really not okay, please take it down.
        I think this breaks the rules but I'm not sure.
        This is about me and I never agreed to it.
        People of all ages use this app.
        I saw this in a group I moderate.
        This account has been doing this for weeks.
    """),
    "mod_action": _lines("""
        removed and user warned
        left up behind a sensitivity screen
        escalated to a senior reviewer
        account suspended pending review
        no action; does not violate policy
        removed and reported to the authorities
    """),
    "appeal_reason": _lines("""
        it was shared to raise awareness
        it was part of a news report
        it is satire
        the account was hacked
        it was posted to the wrong group by mistake
    """),
    "appeal_decision": ["upheld", "overturned", "partly overturned; a warning label was added"],
    "count_small": ["five", "eight", "twelve", "twenty", "forty"],
    "fiction_tail": _lines("""
        Outside, the city carried on as if nothing had happened.
        Later, {name2} would say that was the moment everything changed.
        Nobody in the room said a word.
        It would take months before anyone told the truth about that night.
        The rain started again, heavier this time.
    """),
    "chapter": ["One", "Seven", "Twelve", "3", "Nineteen", "Four"],
    "service": ["video-sharing", "messaging", "gaming", "marketplace", "discussion forum", "social network", "dating"],
    "policy_tail": _lines("""
        Repeated violations may lead to permanent suspension.
        We may share information with law enforcement where required by law.
        Exceptions may apply for news, education and research.
        Users can appeal any decision within 30 days.
        Reports are reviewed by trained moderators.
    """),
    "report_to": ["the security team", "HR", "the compliance officer", "their line manager", "the safeguarding lead"],
    "social_tail": _lines("""
        This isn't okay.
        Genuinely worried about where this is going.
        Sharing resources below.
        Please check on your friends.
        Not sure what the answer is, but silence isn't it.
        We have to do better.
    """),
    "thread_n": ["5", "7", "8", "10", "12"],
    "assist_frame": _lines("""
        I'm writing a report on {topic}. What are the main facts I should include?
        Can you explain the debate around {topic} in a balanced way?
        What should parents know about {topic}?
        Why is {topic} so hard for platforms to moderate?
        How has {topic} changed over the last ten years?
        What does the research say about {topic}?
        I'm a journalist covering {topic}. How do I report on it responsibly?
        What support exists for people affected by {topic}?
    """),
}

# Carriers: (style, template). Applicable to a domain when every slot it names has values there.
RISKY_CARRIERS_EN: list[tuple[str, str]] = [
    ("news", "{city^} police [said on {weekday}|confirmed on {weekday}|announced late on {weekday}] that {actor} had been arrested in connection with {event}. {news_tail}"),
    ("news", "[Investigators|Detectives|Police] in {city} are appealing for witnesses after {event}, {official} [told reporters|said in a statement|told a press conference]. {news_tail}"),
    ("news", "[Court hears details of|Trial opens over|Prosecutors outline case in] {event}\n\nProsecutors told a court in {city} that {actor} {court_tail} {news_tail}"),
    ("news", "Speaking on {weekday}, {official} [answered questions about|was asked about|responded to criticism over] {news} and said the authorities would look closely at what it means for {city}. {news_tail}"),
    ("news", "[Calls for action|Community demands answers|Pressure grows] after {event}\n\n{city^} - {official^} said the authorities were working with {partners} on the issue. \"{quote}\" {news_tail}"),
    ("news", "{city^}, {weekday}. {official^} confirmed that police had detained {actor} after {event}. \"{quote}\" {news_tail} {news_tail2}"),
    ("news", "[Local news roundup|This morning's briefing|Around the region today]: {news^}. Elsewhere in {city}, police are still investigating {event}. {news_tail}"),
    ("news", "[Explainer|Analysis|Q&A]: making sense of {news}, and what comes next for {region}. Critics argue that {critic_view}, while supporters say {support_view}. {research_intro} {topic} {research_end}"),
    ("news", "Court report: {actor_one^} appeared before judges in {city} on {weekday} in connection with {event}. The defendant {court_tail} Observers say the case has drawn fresh attention to {topic}."),
    ("news", "[Podcast episode notes|This week on the show|Episode {thread_n} description]: we talk to {guest} about {topic}, what {news} changed, and {pod_tail}. [Listener discretion advised.|Some listeners may find this episode distressing.|Resources are linked in the show notes.]"),
    ("news", "{news^}: [reactions|what people are saying|mixed response]\n\n{official^} welcomed the step but warned that {critic_view}. {guest^} told {outlet} that {support_view}. {news_tail}"),
    ("news", "A [new|long-awaited|critical] report by {org} on {topic} in {region} calls for {research_call}. It cites {news} among the developments of the past year."),
    ("news", "[Opinion|Editorial|Comment]: We need an honest conversation about {topic}. {opinion_body}"),
    ("news", "[Live updates|Breaking|Developing story]: {event^} in {city}. {news_tail} This story will be updated as more information becomes available."),
    ("news", "{outlet^} has learned that {event} in {city} followed months of [warnings from local residents|complaints that went unanswered|concerns raised by neighbors]. {news_tail}"),
    ("news", "Residents of {city} gathered on {weekday} [evening|afternoon|night], days after {event} shocked the neighborhood. [Many said they had never felt unsafe there before.|Some left flowers; others demanded answers.|Organizers called for more support for those affected.]"),
    ("forum", "{question}"),
    ("forum", "{forum_open} {question} {forum_close}"),
    ("forum", "[Title|Subject|Topic]: {question}\n\n{forum_ctx} {forum_close}"),
    ("forum", "[Posted in|Cross-posting from|Asked in] the {forum_name} forum: {question}"),
    ("forum", "{question} {forum_ctx}"),
    ("forum", "{forum_open} {forum_ctx} {question} {forum_close}"),
    ("forum", "[Title|Subject]: {question}\n\n{forum_ctx} {forum_ctx2} {forum_close}"),
    ("forum", "Reply from a volunteer moderator: [thanks for posting about|sorry you're dealing with|thank you for raising] {topic}. {mod_reply} {support_line}"),
    ("moderation", "Report #{num5}: a user flagged {content} on {platform}. [Suggested category|Auto-classifier label|Category]: {label}. Status: {mod_status}."),
    ("moderation", "Moderator note: removed {content}. Reason: [violates|breaks] the {label} policy. {mod_note}"),
    ("moderation", "[Trust and safety queue item|Ticket|Review task] {num4}. Reported content: {content}. Reporter comment: \"{reporter_comment}\" Action: {mod_action}."),
    ("moderation", "Appeal received: the user says the removal of {content} was a mistake because {appeal_reason}. Reviewer decision: {appeal_decision}."),
    ("moderation", "[Weekly|Monthly|Quarterly] moderation summary for {platform}: {count_r} reports about {topic}, most of them involving {content}. {mod_note}"),
    ("moderation", "Escalation: {content} was reported {count_small} times within [an hour|a day|ten minutes]. Routed to the {label} specialist team; {mod_action}."),
    ("moderation", "Case {num5} ({platform}). Reported: {content}. Reviewer 1: {mod_action}. Reviewer 2: {mod_action2}. Final status: {mod_status}. {mod_note}"),
    ("moderation", "Transparency report excerpt: in {month} we reviewed {count_r} reports in the {label} category and removed material such as {content}. {mod_note}"),
    ("moderation", "Training example for new moderators: a user posts {content}. Which policy applies? Answer: {label}. {policy}"),
    ("fiction", "{scene}"),
    ("fiction", "{scene} {fiction_tail}"),
    ("fiction", "Writing prompt: {scene} Continue the story in the same voice, without graphic detail."),
    ("fiction", "[Excerpt from a crime novel|From a short story|Opening of chapter {chapter}]:\n\n{scene} {scene_cont} {fiction_tail}"),
    ("fiction", "INT. {place} - [NIGHT|DAY|EARLY MORNING]\n\n{scene} {scene_cont}"),
    ("policy", "The {service} community guidelines, section {ea}.{eb}: {policy} {policy_tail}"),
    ("policy", "{policy} {policy2}"),
    ("policy", "Our rules on {label}: {policy} {policy_tail}"),
    ("policy", "[Terms of service update|Policy change|Guidelines revision] ({month} {year}): {policy} {policy_tail}"),
    ("policy", "Staff handbook - {label^}. {policy} Employees who see this on company systems should report it to {report_to}."),
    ("policy", "FAQ: Are posts like this allowed here: {content}? No. {policy} {policy_tail}"),
    ("youth", "School online-safety policy, {label} section: {policy} Students who come across such material should tell {school_contact}. {policy_tail}"),
    ("assistant", "{assist_frame}"),
    ("assistant", "What should [people|parents|employers|new users] know about {topic}?"),
    ("assistant", "How should journalists report on {news} without sensationalizing it?"),
    ("assistant", "Summarize what is known about {topic} in {region} for a [short presentation|newsletter|team briefing]."),
    ("assistant", "{assist_frame} {assist_ctx}"),
    ("assistant", "Can you summarize this news item in one sentence? \"{city^} police said on {weekday} that {actor} had been arrested in connection with {event}. {news_tail}\""),
    ("social", "[just saw|just read|can't stop thinking about] the news about {event} in {city}. [stay safe everyone|hug your people tonight|thinking of everyone affected]"),
    ("social", "Can we talk about {topic} for a second? {social_tail}"),
    ("social", "Thread: what I learned after a year of volunteering with people affected by {topic} (1/{thread_n})"),
    ("social", "[Reading about|Still processing|Woke up to news of] {news} this morning. {social_tail}"),
    ("social", "PSA: if you see {content}, report it instead of sharing it. {social_tail} {social_tail2}"),
    ("social", "Honestly exhausted by the discourse around {topic}. {social_tail}"),
]

RISKY_SHARED_EN["ea"] = ["2", "3", "4", "5", "7"]
RISKY_SHARED_EN["eb"] = ["1", "2", "3", "4", "6"]
RISKY_SHARED_EN.update({
    "quote": _lines("""
        We will not tolerate this in our community.
        Our thoughts are with everyone affected.
        This should never have happened, and we will find out how it did.
        We are asking the public to stay calm and let investigators do their work.
        People deserve to feel safe, online and offline.
        There are no simple answers, but doing nothing is not an option.
    """),
    "critic_view": _lines("""
        the measures go too far
        the response came far too late
        the issue is being used for political point-scoring
        enforcement will be almost impossible
        the people most affected were not consulted
    """),
    "support_view": _lines("""
        it is a necessary first step
        it finally takes victims seriously
        it will make enforcement easier
        it sends a clear signal
        it brings the rules up to date with technology
    """),
    "research_intro": ["Researchers who study", "Experts on", "Charities working on", "Academics focused on"],
    "research_end": ["say the evidence is still thin.", "have welcomed the debate.", "warn against quick fixes.", "call for long-term funding."],
    "guest": _lines("""
        a former police officer
        a trauma counselor
        a researcher who has studied the subject for a decade
        a survivor
        a former content moderator
        a policy advisor
        an investigative journalist
    """),
    "pod_tail": _lines("""
        why the headlines rarely tell the whole story
        what families can do
        how platforms decide what to remove
        what support actually looks like
        why the numbers are so hard to pin down
    """),
    "mod_reply": _lines("""
        You did the right thing by asking.
        Please keep personal details out of the thread for your own safety.
        I've pinned some resources at the top of the forum.
        A few members here have been through something similar and may reply.
        We removed a couple of unhelpful replies; please report anything that breaks the rules.
    """),
    "support_line": _lines("""
        If anyone is in immediate danger, contact emergency services.
        Local helplines are listed in the sidebar.
        Talking to someone you trust is a good first step.
        A professional can give advice that fits your situation.
    """),
    "scene_cont": _lines("""
        The phone buzzed again on the table.
        Somewhere down the hall, a door closed.
        It was almost midnight.
        The streetlights outside flickered on one by one.
        Nobody answered the first time.
        The kettle had long gone cold.
    """),
    "place": ["APARTMENT", "POLICE STATION", "HOSPITAL CORRIDOR", "OFFICE", "KITCHEN", "PARKED CAR", "NEWSROOM"],
    "school_contact": ["a teacher", "the school counselor", "the safeguarding lead", "the head of year"],
    "assist_ctx": _lines("""
        I want to avoid sensational language.
        Please stick to what reliable sources say.
        It's for an adult-education class.
        I need it for a community meeting next week.
        Keep it neutral; people in the audience disagree strongly.
    """),
})

# Slots that carry a domain's long content items; each item is used at most `ITEM_CAP` times.
LONG_ITEMS = ("question", "scene", "policy", "policy2", "sentence", "task_list")


# ------------------------------------------------------------------------------------------------ zh / hi / it / vi
#
# Smaller sets, written directly in each language (not machine-translated from the English lists). Chat:
# ask templates + openers, context and closers. Risky: per-domain topic / event / news / content / label
# lists and a handful of carriers per language; crime carriers skip domains without events (self-harm).

CHAT_ML: dict[str, dict] = {
    "zh": {
        "joiner": "",
        "slots": {
            "dish": ["红烧肉", "番茄炒蛋", "宫保鸡丁", "麻婆豆腐", "饺子", "酸辣汤", "蛋炒饭", "清蒸鱼", "糖醋排骨", "凉拌黄瓜", "葱油饼", "可乐鸡翅"],
            "city": ["成都", "西安", "杭州", "厦门", "桂林", "大理", "青岛", "苏州", "哈尔滨", "重庆", "东京", "曼谷", "新加坡"],
            "days": ["三", "四", "五", "七"],
            "subject": ["数学", "物理", "化学", "历史", "英语", "生物", "地理", "语文"],
            "topic": ["光合作用", "牛顿第一定律", "供求关系", "二次函数", "勾股定理", "细胞分裂", "工业革命", "化学键", "概率", "通货膨胀"],
            "lang_code": ["Python", "Java", "JavaScript", "C++", "Go"],
            "code_task": ["读取CSV文件", "给列表去重", "解析JSON数据", "连接数据库", "写单元测试", "批量重命名文件"],
            "device": ["手机", "笔记本电脑", "路由器", "平板电脑", "打印机"],
            "device_issue": ["越来越卡", "耗电特别快", "老是连不上Wi-Fi", "存储空间不足", "经常自动重启"],
            "rel": ["室友", "同事", "男朋友", "女朋友", "好朋友", "邻居", "领导", "表哥"],
            "rel_issue": ["总是迟到", "借钱一直不还", "说话不算数", "半夜还很吵", "经常不回消息", "总是打断我说话"],
            "job": ["产品经理", "会计", "护士", "程序员", "老师", "设计师", "数据分析师"],
            "health": ["失眠", "颈椎痛", "季节性过敏", "胃不舒服", "眼睛干涩", "腰疼"],
            "book": ["《红楼梦》", "《活着》", "《三体》", "《围城》", "《骆驼祥子》", "《平凡的世界》"],
            "hobby": ["摄影", "跑步", "书法", "烘焙", "吉他", "游泳", "围棋"],
            "pet": ["猫", "狗", "仓鼠", "兔子"],
            "pet_issue": ["乱咬东西", "半夜叫个不停", "挑食", "怕生", "不爱运动"],
            "budget": ["三千元", "五千元", "一万元", "两万元"],
            "season": ["春天", "夏天", "秋天", "冬天"],
        },
        "asks": _lines("""
            {dish}怎么做才好吃？
            我想在家做{dish}，需要准备哪些材料？
            为什么我做的{dish}总是[太咸|太淡|太油|不入味]？
            去{city}旅游{days}天，帮我安排一下行程吧。
            {season}去{city}玩需要带什么衣服？
            预算{budget}，去{city}玩{days}天够吗？
            能用简单的话给我解释一下{topic}吗？
            我的{subject}成绩一直不好，有什么学习方法吗？
            下周考{subject}，帮我制定一个复习计划。
            用{lang_code}怎么{code_task}？
            我的{lang_code}程序报错说找不到模块，该怎么排查？
            我的{device}{device_issue}，怎么办？
            我的{rel}{rel_issue}，我该怎么跟对方沟通？
            想转行做{job}，需要学些什么？
            {job}面试一般会问哪些问题？
            最近总是{health}，平时生活中要注意什么？
            {health}的话，什么情况下应该去看医生？
            {book}主要讲了什么？值得读吗？
            想学{hobby}，零基础应该从哪里开始？
            我家的{pet}总是{pet_issue}，怎么办？
            帮我写一段生日祝福，送给我的{rel}。
            帮我写一封请假邮件，语气正式一点。
            每天只有半小时，怎么提高英语口语？
            周末适合和家人一起做些什么活动？
            第一次养{pet}，需要准备什么？
            工作压力大的时候，怎么调整心态？
            怎么做一个每月的家庭预算？
            {topic}和日常生活有什么关系？请举几个例子。
        """),
        "openers": ["你好！", "你好，", "请问一下，", "打扰一下，", "嗨，", "有个问题想请教：", "麻烦问一下，"],
        "context": ["我是新手，什么都不太懂。", "我平时工作比较忙。", "我的预算有限。", "我还是学生，时间比较灵活。", "这个问题困扰我很久了。", "我现在住在{city}。"],
        "closers": ["谢谢！", "先谢谢了。", "麻烦了！", "请说得简单一点。", "最好分点列出来。", "越详细越好。"],
    },
    "hi": {
        "joiner": " ",
        "slots": {
            "dish": ["पनीर बटर मसाला", "आलू पराठा", "दाल तड़का", "राजमा चावल", "छोले भटूरे", "वेज बिरयानी", "गाजर का हलवा", "पोहा", "उपमा", "मसाला डोसा", "खिचड़ी", "मटर पनीर"],
            "city": ["जयपुर", "गोवा", "ऋषिकेश", "उदयपुर", "शिमला", "वाराणसी", "दार्जिलिंग", "लद्दाख", "मैसूर", "अमृतसर", "कोच्चि", "पुडुचेरी"],
            "days": ["तीन", "चार", "पाँच", "सात"],
            "subject": ["गणित", "भौतिकी", "रसायन विज्ञान", "इतिहास", "अंग्रेज़ी", "जीव विज्ञान", "भूगोल", "अर्थशास्त्र"],
            "topic": ["प्रकाश संश्लेषण", "न्यूटन के गति के नियम", "मांग और आपूर्ति", "द्विघात समीकरण", "पाइथागोरस प्रमेय", "कोशिका विभाजन", "औद्योगिक क्रांति", "जल चक्र", "प्रायिकता", "मुद्रास्फीति"],
            "lang_code": ["Python", "Java", "JavaScript", "C++"],
            "code_q": ["CSV फ़ाइल कैसे पढ़ें", "लिस्ट से डुप्लिकेट कैसे हटाएँ", "JSON डेटा कैसे पार्स करें", "डेटाबेस से कैसे जुड़ें", "यूनिट टेस्ट कैसे लिखें"],
            "device": ["फ़ोन", "लैपटॉप", "राउटर", "टैबलेट"],
            "device_issue": ["बहुत धीमा चल रहा है", "बार-बार हैंग हो जाता है", "वाई-फ़ाई से कनेक्ट नहीं हो रहा", "अपने आप बंद हो जाता है", "बहुत गरम हो जाता है"],
            "rel": ["दोस्त", "रूममेट", "सहकर्मी", "भाई", "पड़ोसी", "बॉस"],
            "rel_issue": ["हमेशा देर से आता है", "पैसे उधार लेकर वापस नहीं करता", "मेरे मैसेज का जवाब नहीं देता", "रात को बहुत शोर करता है", "हर बात में टोकता है"],
            "job": ["डेटा एनालिस्ट", "शिक्षक", "नर्स", "सॉफ़्टवेयर इंजीनियर", "ग्राफ़िक डिज़ाइनर", "अकाउंटेंट"],
            "health": ["नींद न आने", "कमर दर्द", "मौसमी एलर्जी", "सिरदर्द", "एसिडिटी"],
            "book": ["गोदान", "गुनाहों का देवता", "मधुशाला", "रश्मिरथी", "पंचतंत्र", "राग दरबारी"],
            "hobby": ["फ़ोटोग्राफ़ी", "गिटार", "योग", "पेंटिंग", "शतरंज", "बागवानी"],
            "pet": ["कुत्ता", "बिल्ली", "तोता", "खरगोश"],
            "budget": ["दस हज़ार रुपये", "बीस हज़ार रुपये", "पचास हज़ार रुपये"],
        },
        "asks": _lines("""
            {dish} बनाने का आसान तरीका बताइए।
            घर पर {dish} बनाने के लिए कौन-कौन सी चीज़ें चाहिए?
            {dish} को [कम तेल|कम मसाले|कम नमक] में कैसे बनाएँ?
            {city} में {days} दिन घूमने का प्लान बना दीजिए।
            क्या {budget} के बजट में {city} घूमना हो सकता है?
            {city} घूमने का सबसे अच्छा समय कौन सा है?
            क्या आप मुझे {topic} आसान भाषा में समझा सकते हैं?
            {subject} की परीक्षा के लिए पढ़ाई कैसे करूँ?
            अगले हफ़्ते मेरी {subject} की परीक्षा है, एक टाइम टेबल बना दीजिए।
            {lang_code} में {code_q}?
            मेरा {device} {device_issue}। क्या करूँ?
            मेरा {rel} {rel_issue}। उससे इस बारे में कैसे बात करूँ?
            {job} बनने के लिए क्या पढ़ना चाहिए?
            {job} के इंटरव्यू में आमतौर पर कौन से सवाल पूछे जाते हैं?
            मुझे अक्सर {health} की समस्या रहती है। घर पर क्या कर सकते हैं?
            {health} की समस्या में डॉक्टर को कब दिखाना चाहिए?
            '{book}' किस बारे में है? क्या इसे पढ़ना चाहिए?
            मैं {hobby} सीखना चाहता हूँ, शुरुआत कहाँ से करूँ?
            पहली बार {pet} पाल रहा हूँ, किन बातों का ध्यान रखूँ?
            मेरे {rel} के जन्मदिन के लिए एक छोटा सा संदेश लिख दीजिए।
            छुट्टी के लिए एक औपचारिक ईमेल लिखने में मदद कीजिए।
            रोज़ सिर्फ़ आधा घंटा है, अंग्रेज़ी बोलना कैसे सुधारूँ?
            महीने का घरेलू बजट कैसे बनाएँ?
            काम के तनाव को कैसे कम करें?
            रोज़मर्रा की ज़िंदगी में {topic} का क्या उपयोग है? कुछ उदाहरण दीजिए।
        """),
        "openers": ["नमस्ते!", "नमस्ते,", "हैलो!", "एक सवाल है।", "मदद चाहिए।", "सुनिए,"],
        "context": ["मैं इसमें बिल्कुल नया हूँ।", "मेरा बजट थोड़ा कम है।", "मैं कॉलेज में पढ़ता हूँ।", "मैं {city} में रहता हूँ।", "यह सवाल मुझे काफ़ी समय से परेशान कर रहा है।"],
        "closers": ["धन्यवाद!", "बहुत-बहुत शुक्रिया।", "कृपया आसान शब्दों में बताइए।", "पॉइंट्स में बताएँ तो अच्छा रहेगा।"],
    },
    "it": {
        "joiner": " ",
        "slots": {
            "dish": ["la carbonara", "il risotto ai funghi", "la parmigiana di melanzane", "il tiramisù", "la lasagna", "la pizza fatta in casa", "il ragù alla bolognese", "la pasta e fagioli", "la pasta al forno", "la torta di mele", "il pesto alla genovese", "la frittata di zucchine"],
            "city": ["Roma", "Firenze", "Napoli", "Palermo", "Torino", "Venezia", "Bologna", "Lecce", "Trieste", "Matera", "Barcellona", "Parigi", "Vienna", "Lisbona"],
            "days": ["tre", "quattro", "cinque", "sette"],
            "subject": ["matematica", "fisica", "chimica", "storia", "inglese", "biologia", "filosofia", "latino"],
            "topic": ["la fotosintesi", "la prima legge di Newton", "la legge della domanda e dell'offerta", "l'equazione di secondo grado", "il teorema di Pitagora", "la divisione cellulare", "la rivoluzione industriale", "il ciclo dell'acqua", "la probabilità", "l'inflazione"],
            "lang_code": ["Python", "Java", "JavaScript", "C++"],
            "code_task": ["leggere un file CSV", "togliere i duplicati da una lista", "leggere dati JSON", "collegarmi a un database", "scrivere dei test automatici"],
            "dev_mio": ["il mio telefono", "il mio portatile", "il mio router", "il mio tablet"],
            "device_issue": ["si blocca di continuo", "non si connette al Wi-Fi", "fa un rumore strano", "non si aggiorna più", "si scarica in poche ore"],
            "rel": ["il mio coinquilino", "la mia collega", "il mio migliore amico", "mia sorella", "il mio vicino", "il mio capo", "mia madre"],
            "rel_issue": ["arriva sempre in ritardo", "non restituisce mai i soldi che prende in prestito", "non risponde ai miei messaggi", "fa rumore fino a tardi", "mi interrompe sempre", "critica tutto quello che faccio"],
            "job": ["data analyst", "infermiere", "insegnante", "sviluppatore software", "grafico", "commercialista"],
            "health": ["l'insonnia", "il mal di schiena", "le allergie stagionali", "il mal di testa", "il reflusso"],
            "book": ["I promessi sposi", "Il nome della rosa", "La coscienza di Zeno", "Il barone rampante", "Se questo è un uomo", "L'amica geniale"],
            "hobby": ["la fotografia", "la chitarra", "lo yoga", "la pittura", "gli scacchi", "il giardinaggio"],
            "pet": ["un gatto", "un cane", "un coniglio", "un pappagallo"],
            "budget": ["500 euro", "800 euro", "1.500 euro"],
        },
        "asks": _lines("""
            Come si prepara {dish} in modo semplice?
            Quali ingredienti servono per {dish}?
            Perché {dish} non mi viene mai bene?
            Mi organizzi un itinerario di {days} giorni a {city}?
            Con {budget} si riesce a passare {days} giorni a {city}?
            Qual è il periodo migliore per visitare {city}?
            Mi spieghi {topic} con parole semplici?
            Come posso studiare meglio {subject}?
            La prossima settimana ho la verifica di {subject}: mi prepari un piano di ripasso?
            Come faccio a {code_task} in {lang_code}?
            {dev_mio^} {device_issue}. Cosa posso fare?
            {rel^} {rel_issue}. Come posso parlargliene senza litigare?
            Cosa devo studiare per diventare {job}?
            Quali domande fanno di solito a un colloquio per {job}?
            In generale, come si può gestire {health} senza farmaci?
            Quando è il caso di andare dal medico per {health}?
            Di cosa parla "{book}"? Vale la pena leggerlo?
            Vorrei iniziare con {hobby}: da dove parto?
            Sto per adottare {pet}: cosa devo sapere?
            Mi aiuti a scrivere un messaggio di auguri per {rel}?
            Mi scrivi una mail formale per chiedere un giorno di ferie?
            Come posso migliorare il mio inglese parlato con mezz'ora al giorno?
            Come si fa un budget familiare mensile?
            Come si gestisce lo stress al lavoro?
            A cosa serve {topic} nella vita di tutti i giorni?
        """),
        "openers": ["Ciao!", "Buongiorno.", "Salve!", "Una domanda.", "Ho bisogno di un consiglio.", "Ciao, mi serve una mano."],
        "context": ["Sono alle prime armi.", "Ho un budget limitato.", "Sono uno studente.", "Abito a {city}.", "È da un po' che ci penso.", "Ho poco tempo durante la settimana."],
        "closers": ["Grazie!", "Grazie mille in anticipo.", "Spiegamelo in modo semplice, per favore.", "Meglio se per punti.", "Grazie dell'aiuto."],
    },
    "vi": {
        "joiner": " ",
        "slots": {
            "dish": ["phở bò", "bún chả", "gỏi cuốn", "cá kho tộ", "canh chua", "bánh xèo", "cơm chiên", "thịt kho trứng", "chè đậu xanh", "bánh mì", "bún bò Huế", "xôi gà"],
            "city": ["Đà Nẵng", "Hội An", "Đà Lạt", "Huế", "Sa Pa", "Phú Quốc", "Nha Trang", "Hà Giang", "Hạ Long", "Cần Thơ", "Bangkok", "Seoul"],
            "days": ["ba", "bốn", "năm", "bảy"],
            "subject": ["toán", "vật lý", "hóa học", "lịch sử", "tiếng Anh", "sinh học", "địa lý", "ngữ văn"],
            "topic": ["quang hợp", "định luật Newton", "quy luật cung cầu", "phương trình bậc hai", "định lý Pytago", "quá trình phân bào", "cách mạng công nghiệp", "vòng tuần hoàn của nước", "xác suất", "lạm phát"],
            "lang_code": ["Python", "Java", "JavaScript", "C++"],
            "code_task": ["đọc file CSV", "xóa phần tử trùng trong danh sách", "đọc dữ liệu JSON", "kết nối cơ sở dữ liệu", "viết unit test"],
            "device": ["điện thoại", "laptop", "router", "máy tính bảng"],
            "device_issue": ["chạy rất chậm", "hay bị đơ", "không kết nối được Wi-Fi", "tự tắt nguồn", "hết pin rất nhanh"],
            "rel": ["bạn cùng phòng", "đồng nghiệp", "bạn thân", "anh trai", "hàng xóm", "sếp"],
            "rel_issue": ["hay đến muộn", "mượn tiền mà không trả", "không trả lời tin nhắn", "làm ồn đến khuya", "hay ngắt lời tôi"],
            "job": ["lập trình viên", "kế toán", "giáo viên", "y tá", "nhà thiết kế đồ họa", "chuyên viên phân tích dữ liệu"],
            "health": ["mất ngủ", "đau lưng", "dị ứng thời tiết", "đau đầu", "đau dạ dày"],
            "book": ["Truyện Kiều", "Dế Mèn phiêu lưu ký", "Số đỏ", "Nỗi buồn chiến tranh", "Tắt đèn", "Mắt biếc"],
            "hobby": ["chụp ảnh", "chơi guitar", "yoga", "vẽ tranh", "cờ vua", "làm vườn"],
            "pet": ["mèo", "chó", "thỏ", "vẹt"],
            "budget": ["năm triệu đồng", "mười triệu đồng", "hai mươi triệu đồng"],
        },
        "asks": _lines("""
            Cách nấu {dish} đơn giản tại nhà là gì?
            Nấu {dish} cần chuẩn bị những nguyên liệu gì?
            Tại sao {dish} tôi nấu lúc nào cũng [bị mặn|bị nhạt|không đậm đà]?
            Lên giúp tôi lịch trình {days} ngày ở {city} nhé.
            Với {budget} thì đi {city} {days} ngày có đủ không?
            Thời điểm nào đẹp nhất để đi {city}?
            Bạn có thể giải thích {topic} một cách dễ hiểu không?
            Làm sao để học tốt môn {subject}?
            Tuần sau tôi thi môn {subject}, lập giúp tôi kế hoạch ôn tập nhé.
            Làm thế nào để {code_task} bằng {lang_code}?
            {device^} của tôi {device_issue}, phải làm sao?
            {rel^} của tôi {rel_issue}. Tôi nên nói chuyện thế nào để không cãi nhau?
            Muốn làm {job} thì cần học những gì?
            Phỏng vấn vị trí {job} thường hỏi những câu gì?
            Dạo này tôi hay bị {health}, nên chú ý gì trong sinh hoạt?
            Khi nào thì nên đi khám bác sĩ vì {health}?
            Cuốn "{book}" nói về điều gì? Có nên đọc không?
            Tôi muốn bắt đầu học {hobby}, nên bắt đầu từ đâu?
            Lần đầu nuôi {pet}, tôi cần chuẩn bị những gì?
            Viết giúp tôi một lời chúc sinh nhật cho {rel} nhé.
            Giúp tôi viết email xin nghỉ phép một cách lịch sự.
            Mỗi ngày chỉ có nửa tiếng, làm sao để cải thiện khả năng nói tiếng Anh?
            Làm sao để lập ngân sách chi tiêu hằng tháng cho gia đình?
            Làm thế nào để giảm căng thẳng trong công việc?
            {topic^} có ứng dụng gì trong đời sống hằng ngày?
        """),
        "openers": ["Chào bạn!", "Xin chào.", "Cho mình hỏi một chút.", "Bạn ơi, giúp mình với.", "Mình cần lời khuyên."],
        "context": ["Tôi là người mới, chưa biết gì nhiều.", "Ngân sách của tôi khá hạn chế.", "Tôi là sinh viên.", "Tôi đang sống ở {city}.", "Chuyện này làm tôi băn khoăn khá lâu rồi."],
        "closers": ["Cảm ơn bạn!", "Cảm ơn nhiều nhé.", "Giải thích đơn giản giúp mình nhé.", "Liệt kê theo ý cho dễ đọc nhé."],
    },
}

RISKY_ML: dict[str, dict] = {
    "zh": {
        "joiner": "",
        "shared": {
            "city": ["北京", "上海", "广州", "深圳", "成都", "武汉", "杭州", "南京", "西安", "重庆"],
            "weekday": ["周一", "周二", "周三", "周四", "周五", "周六", "周日"],
            "actor": ["34岁男子", "25岁女子", "前员工", "外卖骑手", "大学生", "52岁男子"],
            "org": ["某大学研究中心", "一家独立监督机构", "一个国际非政府组织", "某智库"],
            "region": ["国内", "亚太地区", "一线城市", "农村地区"],
            "platform": ["某短视频平台", "某论坛", "某聊天群", "某游戏服务器", "某二手交易网站"],
            "mod_status": ["审核中", "已删除", "已升级处理", "未发现违规", "已封禁账号"],
        },
        "carriers": [
            ("news", "{city}警方{weekday}[通报|发布消息|证实]，一名{actor}因与{event}有关被警方带走，[案件正在进一步调查中|目前案件仍在侦办中|具体情况警方未予透露]。"),
            ("news", "{city}[发生|近日发生|昨晚发生]{event}，[当地警方呼吁知情者提供线索|警方已成立专案组|多名目击者已向警方作证]。"),
            ("news", "{org}[发布的报告指出|的最新研究显示|在年度报告中提到]，{region}的{topic}问题近年来日益突出，[报告呼吁加强预防和受害者支持|专家建议平台与警方加强合作|研究人员呼吁加强数据收集]。"),
            ("news", "[近日|本周|上周]，{news}引发[舆论关注|网友热议|广泛讨论]。[专家表示，应理性看待，并加强相关监管。|有评论认为，相关部门应尽快回应公众关切。|业内人士提醒，不要传播未经核实的信息。]"),
            ("moderation", "[举报编号|工单号|审核任务]{num5}：用户举报了{platform}上的{content}。[建议分类|系统标签|分类]：{label}。处理状态：{mod_status}。"),
            ("moderation", "审核备注：已删除{content}，原因是违反了关于{label}的社区规定。[该账号此前已被警告两次。|已通知用户，可在三十天内申诉。|第二位审核员同意该处理结果。]"),
            ("forum", "[网上看到|群里有人发了|刷到了]{content}，应该怎么举报？[在线等，挺急的。|谢谢大家。|]"),
            ("forum", "如果[身边有人|朋友|家里人]遇到{topic}相关的问题，应该向哪里求助？"),
            ("youth", "怎么跟[孩子|家里老人|上初中的孩子]解释{topic}这种事情？"),
            ("policy", "[本平台|本社区|本论坛]禁止发布{label}相关内容，例如{content}。[多次违规的账号将被封禁。|违规内容将被删除，情节严重的将移交执法机关。|用户可在三十天内对处理结果提出申诉。]"),
            ("assistant", "[能客观地介绍一下|请简单总结一下|能帮我梳理一下]关于{topic}的[争论|现状|主要观点]吗？"),
            ("social", "[刚看到|刚刷到|早上看到]{city}{event}的新闻，[大家注意安全。|心里很不是滋味。|希望早日查明真相。]"),
        ],
        "domains": {
            "pornography": {"actor": ["34岁男子", "41岁女子", "前员工", "中年男子"], "label": ["色情内容", "未经同意的私密影像"], "topic": ["深度伪造色情内容", "报复性色情", "针对成年人的性勒索诈骗"], "event": ["一起出租屋内偷拍案", "一起通过分类广告网站组织卖淫的案件"], "news": ["某成人网站因未核实上传内容被起诉", "关于成人网站年龄验证的新规"], "content": ["未经本人同意传播的私密照片", "招嫖广告"]},
            "politics": {"label": ["选举虚假信息", "暴力极端主义"], "topic": ["选举虚假信息", "网络政治极端化", "邪教组织的精神控制"], "event": ["一起贿选案", "一起针对市长的死亡威胁事件"], "news": ["一段经过篡改的部长视频在网上疯传", "大批虚假账号在公投前协同发帖"], "content": ["谎称选举日期已更改的帖子", "煽动民众冲击市政厅的评论"]},
            "violence": {"label": ["暴力与威胁", "血腥暴力内容"], "topic": ["持刀犯罪", "家庭暴力", "网络暴力威胁"], "event": ["一起夜店门外的持刀伤人案", "一起加油站持械抢劫案"], "news": ["针对医护人员的暴力事件增多", "一段街头斗殴视频在网上广泛传播"], "content": ["围观者起哄的街头斗殴视频", "扬言要找到并伤害对方的评论"]},
            "terror": {"label": ["恐怖主义与暴力极端主义"], "topic": ["网络激进化", "恐怖主义宣传", "恐怖融资"], "event": ["一起针对圣诞集市的未遂爆炸图谋", "一起酒店人质劫持事件"], "news": ["一项新的反恐法律引发争议", "某武装组织在网上发布宣传视频"], "content": ["美化恐怖袭击的视频", "为武装组织募捐的信息"]},
            "hate": {"label": ["仇恨言论", "定向骚扰"], "topic": ["网络仇恨言论", "体育界的种族歧视", "针对少数群体的骚扰"], "event": ["一起针对外国家庭的种族主义袭击", "一起清真寺遭破坏事件"], "news": ["一名跨性别记者遭到大规模网络骚扰", "一名足球运动员罚丢点球后遭种族歧视辱骂"], "content": ["带有种族歧视辱骂的评论", "号召网友围攻某个人的帖子"]},
            "self_harm": {"label": ["自杀与自伤"], "topic": ["青少年自伤", "进食障碍", "自杀念头"], "event": [], "news": ["一条新的心理危机干预热线正式开通", "一项研究发现社交媒体使用与青少年自伤有关"], "content": ["用户表示今晚想结束生命的帖子", "鼓励他人极端节食的评论"]},
            "weapons": {"label": ["武器与爆炸物"], "topic": ["非法枪支交易", "3D打印枪支", "校园持刀事件"], "event": ["一起通过聊天软件非法买卖枪支的案件", "一起商场枪击案"], "news": ["关于禁止攻击性步枪的辩论", "一份关于武器出口的新报告"], "content": ["无证出售手枪的帖子", "配文威胁同学的弹簧刀照片"]},
            "drugs": {"label": ["毒品与管制物品"], "topic": ["阿片类药物危机", "芬太尼过量", "学生吸毒问题"], "event": ["一起港口查获两吨可卡因的案件", "一起农舍内冰毒制造窝点被捣毁的案件"], "news": ["市中心出现多起芬太尼过量事件", "一场关于大麻合法化的公投"], "content": ["标明价格和联系方式的卖药帖子", "招募青少年运送包裹的信息"]},
            "cybercrime": {"label": ["诈骗与网络犯罪"], "topic": ["勒索软件", "网络钓鱼", "身份盗用"], "event": ["一起导致医院病历系统瘫痪的勒索软件攻击", "一起冒充税务部门的钓鱼诈骗案"], "news": ["某公司数百万用户密码遭泄露", "多名记者的手机中被发现间谍软件"], "content": ["出售被盗账号密码数据库的帖子", "仿冒银行登录页面的链接"]},
            "privacy": {"label": ["隐私与个人信息"], "topic": ["人肉搜索", "位置追踪", "医疗记录泄露"], "event": ["一起公开记者家庭住址的人肉搜索事件", "一起用GPS定位器跟踪前任的案件"], "news": ["某公司因未经同意出售位置数据被罚款", "未经公众讨论就安装人脸识别摄像头"], "content": ["公开他人住址和电话的帖子", "他人的护照照片"]},
        },
    },
    "hi": {
        "joiner": " ",
        "shared": {
            "city": ["मुंबई", "दिल्ली", "लखनऊ", "पटना", "भोपाल", "इंदौर", "नागपुर", "कोलकाता", "चेन्नई", "हैदराबाद"],
            "weekday": ["सोमवार", "मंगलवार", "बुधवार", "गुरुवार", "शुक्रवार", "शनिवार", "रविवार"],
            "actor": ["एक 34 वर्षीय व्यक्ति", "एक 25 वर्षीय महिला", "दो युवकों", "एक पूर्व कर्मचारी", "एक डिलीवरी ड्राइवर"],
            "org": ["एक विश्वविद्यालय शोध केंद्र", "एक स्वतंत्र निगरानी संस्था", "एक अंतरराष्ट्रीय संगठन"],
            "region": ["देश", "बड़े शहरों", "ग्रामीण इलाक़ों", "दक्षिण एशिया"],
            "platform": ["एक वीडियो ऐप", "एक ऑनलाइन फ़ोरम", "एक मैसेजिंग ग्रुप", "एक गेमिंग सर्वर"],
            "mod_status": ["समीक्षाधीन", "हटाया गया", "वरिष्ठ समीक्षक को भेजा गया", "कोई उल्लंघन नहीं मिला"],
        },
        "carriers": [
            ("news", "{city} पुलिस ने {weekday} को [बताया|पुष्टि की] कि {event} के सिलसिले में {actor} को गिरफ़्तार किया गया है। [मामले की जाँच जारी है।|पुलिस ने अभी और जानकारी नहीं दी है।|आरोपी को अदालत में पेश किया जाएगा।]"),
            ("news", "{city} में {event} के बाद [पुलिस ने गवाहों से आगे आने की अपील की है।|स्थानीय लोगों में डर का माहौल है।|प्रशासन ने जाँच के आदेश दिए हैं।]"),
            ("news", "{org} की एक नई रिपोर्ट के अनुसार {region} में {topic} की समस्या बढ़ रही है। रिपोर्ट में रोकथाम और पीड़ितों की सहायता बढ़ाने की सिफ़ारिश की गई है।"),
            ("news", "{news} को लेकर [सोशल मीडिया पर बहस छिड़ गई है।|विशेषज्ञों की राय बँटी हुई है।|लोगों के बीच चर्चा हो रही है।]"),
            ("moderation", "रिपोर्ट संख्या {num5}: एक उपयोगकर्ता ने {platform} पर {content} की शिकायत की है। श्रेणी: {label}। स्थिति: {mod_status}।"),
            ("moderation", "मॉडरेटर नोट: {content} को हटाया गया, क्योंकि इससे {label} से जुड़े नियमों का उल्लंघन होता है। [उपयोगकर्ता को चेतावनी दी गई है।|इस खाते को पहले भी दो बार चेतावनी मिल चुकी है।|उपयोगकर्ता तीस दिनों के भीतर अपील कर सकता है।]"),
            ("forum", "अगर [किसी|किसी दोस्त|परिवार में किसी] को {topic} से जुड़ी परेशानी हो, तो [मदद के लिए कहाँ संपर्क करना चाहिए?|किससे बात करनी चाहिए?|क्या करना चाहिए?]"),
            ("youth", "[बच्चों|किशोरों|घर के बुज़ुर्गों] से {topic} के बारे में कैसे बात करें?"),
            ("assistant", "क्या आप {topic} पर [चल रही बहस को निष्पक्ष तरीके से समझा सकते हैं?|मुख्य तथ्य संक्षेप में बता सकते हैं?|एक छोटा सा सारांश लिख सकते हैं?]"),
            ("policy", "हमारे प्लेटफ़ॉर्म पर {content} जैसी सामग्री की अनुमति नहीं है, क्योंकि यह {label} से जुड़े नियमों के ख़िलाफ़ है। बार-बार उल्लंघन करने पर खाता बंद किया जा सकता है।"),
            ("social", "अभी {city} में {event} की ख़बर [देखी|पढ़ी]। [सब लोग सावधान रहें।|बहुत दुख हुआ।|उम्मीद है सच जल्द सामने आएगा।]"),
        ],
        "domains": {
            "pornography": {"actor": ["एक 34 वर्षीय व्यक्ति", "एक 41 वर्षीय महिला", "एक पूर्व कर्मचारी"], "label": ["वयस्क सामग्री", "बिना सहमति की निजी तस्वीरें"], "topic": ["डीपफ़ेक अश्लील सामग्री", "रिवेंज पोर्न", "ऑनलाइन सेक्सटॉर्शन"], "event": ["किराए के कमरे में छिपे कैमरे से रिकॉर्डिंग के मामले", "विज्ञापन वेबसाइट के ज़रिए चल रहे देह व्यापार"], "news": ["वयस्क वेबसाइटों पर उम्र की पुष्टि के नए नियम", "बिना सत्यापन अपलोड पर एक वयस्क साइट के ख़िलाफ़ मुक़दमे"], "content": ["बिना अनुमति साझा की गई किसी की निजी तस्वीरों", "एस्कॉर्ट सेवाओं के विज्ञापन"]},
            "politics": {"label": ["चुनावी ग़लत सूचना", "हिंसक उग्रवाद"], "topic": ["चुनावी फ़र्ज़ी ख़बरों", "ऑनलाइन राजनीतिक कट्टरता", "पंथों के मानसिक नियंत्रण"], "event": ["नगर निगम चुनाव में वोट ख़रीदने के मामले", "एक महापौर को जान से मारने की धमकी के मामले"], "news": ["एक मंत्री के छेड़छाड़ किए गए वीडियो", "जनमत संग्रह से पहले फ़र्ज़ी खातों के संगठित अभियान"], "content": ["चुनाव की तारीख़ बदलने का झूठा दावा करने वाली पोस्ट", "लोगों को नगर भवन पर धावा बोलने के लिए उकसाने वाली टिप्पणी"]},
            "violence": {"label": ["हिंसा और धमकी"], "topic": ["चाकूबाज़ी", "घरेलू हिंसा", "ऑनलाइन धमकियों"], "event": ["एक नाइटक्लब के बाहर चाकूबाज़ी की घटना", "एक पेट्रोल पंप पर हथियारबंद लूट"], "news": ["अस्पताल कर्मचारियों पर बढ़ते हमलों", "सड़क पर हुई मारपीट के वायरल वीडियो"], "content": ["सड़क पर हुई मारपीट के वीडियो", "किसी को ढूँढकर नुक़सान पहुँचाने की धमकी वाली टिप्पणी"]},
            "terror": {"label": ["आतंकवाद और हिंसक उग्रवाद"], "topic": ["ऑनलाइन कट्टरपंथीकरण", "आतंकवादी प्रचार", "आतंकवाद के वित्तपोषण"], "event": ["एक बाज़ार को निशाना बनाने की नाकाम बम साज़िश", "एक होटल में बंधक संकट"], "news": ["नए आतंकवाद-रोधी क़ानून", "एक सशस्त्र समूह के प्रचार वीडियो"], "content": ["किसी आतंकी हमले का महिमामंडन करने वाले वीडियो", "एक प्रतिबंधित संगठन के लिए चंदा माँगने वाले संदेश"]},
            "hate": {"label": ["नफ़रत भरी भाषा", "लक्षित उत्पीड़न"], "topic": ["ऑनलाइन नफ़रत भरी भाषा", "खेल में नस्लवाद", "अल्पसंख्यकों के उत्पीड़न"], "event": ["बस स्टॉप पर एक परिवार पर नस्लवादी हमले", "एक धार्मिक स्थल पर तोड़फोड़"], "news": ["एक पत्रकार के ख़िलाफ़ ऑनलाइन उत्पीड़न अभियान", "एक खिलाड़ी को मिली नस्लवादी गालियों"], "content": ["नस्लीय गाली वाली टिप्पणी", "किसी व्यक्ति को परेशान करने के लिए लोगों को उकसाने वाली पोस्ट"]},
            "self_harm": {"label": ["आत्महत्या और आत्म-क्षति"], "topic": ["किशोरों में आत्म-क्षति", "खाने से जुड़े विकारों", "आत्महत्या के विचारों"], "event": [], "news": ["नई संकट सहायता हेल्पलाइन की शुरुआत", "सोशल मीडिया और किशोरों में आत्म-क्षति पर एक अध्ययन"], "content": ["आज रात जीवन ख़त्म करने की बात कहने वाली पोस्ट", "किसी को भूखा रहने के लिए उकसाने वाली टिप्पणी"]},
            "weapons": {"label": ["हथियार और विस्फोटक"], "topic": ["अवैध हथियारों की बिक्री", "3D प्रिंटेड बंदूकों", "स्कूलों में चाकू लाने"], "event": ["मैसेजिंग ऐप के ज़रिए अवैध हथियार बेचने के मामले", "एक शॉपिंग मॉल में गोलीबारी"], "news": ["हथियार नियंत्रण पर नई बहस", "हथियारों के निर्यात पर एक रिपोर्ट"], "content": ["बिना लाइसेंस पिस्तौल बेचने के विज्ञापन", "सहपाठी को धमकाने वाले कैप्शन के साथ चाकू की तस्वीर"]},
            "drugs": {"label": ["नशीले पदार्थ"], "topic": ["ओपिओइड संकट", "फ़ेंटानिल ओवरडोज़", "छात्रों में नशे की लत"], "event": ["बंदरगाह पर दो टन कोकीन की ज़ब्ती", "एक फ़ार्महाउस में चल रही मेथ लैब के भंडाफोड़"], "news": ["शहर में ओवरडोज़ के बढ़ते मामलों", "भांग को वैध बनाने पर जनमत संग्रह"], "content": ["दाम और संपर्क नंबर के साथ गोलियाँ बेचने वाली पोस्ट", "किशोरों को पैकेट पहुँचाने के लिए भर्ती करने वाले संदेश"]},
            "cybercrime": {"label": ["धोखाधड़ी और साइबर अपराध"], "topic": ["रैनसमवेयर", "फ़िशिंग", "पहचान की चोरी"], "event": ["एक अस्पताल की रिकॉर्ड प्रणाली ठप करने वाले रैनसमवेयर हमले", "आयकर विभाग के नाम पर फ़िशिंग घोटाले"], "news": ["लाखों ग्राहकों के पासवर्ड लीक होने", "पत्रकारों के फ़ोन में मिले स्पाइवेयर"], "content": ["चोरी किए गए पासवर्डों का डेटाबेस बेचने वाली पोस्ट", "नक़ली बैंक लॉगिन पेज के लिंक"]},
            "privacy": {"label": ["निजता और व्यक्तिगत जानकारी"], "topic": ["डॉक्सिंग", "लोकेशन ट्रैकिंग", "मेडिकल रिकॉर्ड लीक"], "event": ["एक पत्रकार का घर का पता सार्वजनिक करने के मामले", "GPS टैग से पूर्व साथी का पीछा करने के मामले"], "news": ["बिना सहमति लोकेशन डेटा बेचने पर एक कंपनी पर लगे जुर्माने", "बिना सार्वजनिक चर्चा के लगाए गए फ़ेशियल रिकग्निशन कैमरों"], "content": ["किसी का घर का पता और फ़ोन नंबर साझा करने वाली पोस्ट", "किसी दूसरे व्यक्ति के पासपोर्ट की तस्वीर"]},
        },
    },
    "it": {
        "joiner": " ",
        "shared": {
            "city": ["Milano", "Roma", "Napoli", "Torino", "Bari", "Genova", "Verona", "Padova", "Cagliari", "Catania"],
            "weekday": ["lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica"],
            "actor": ["un uomo di 34 anni", "una donna di 25 anni", "due ragazzi", "un ex dipendente", "un rider"],
            "org": ["un centro di ricerca universitario", "un osservatorio indipendente", "un'organizzazione internazionale"],
            "region": ["Italia", "Europa", "Lombardia", "Sicilia", "Campania"],
            "platform": ["un'app di video brevi", "un forum", "un gruppo di messaggistica", "un server di gioco", "un sito di annunci"],
            "mod_status": ["in revisione", "rimosso", "inoltrato a un revisore senior", "nessuna violazione", "account sospeso"],
        },
        "carriers": [
            ("news", "La polizia di {city} ha [comunicato|confermato] {weekday} di aver arrestato {actor} in relazione a {event}. [Le indagini proseguono.|Gli inquirenti non escludono altri coinvolti.|L'udienza di convalida è prevista nei prossimi giorni.]"),
            ("news", "Dopo {event} a {city}, [gli investigatori cercano testimoni.|il sindaco ha convocato un vertice sulla sicurezza.|i residenti chiedono più controlli.]"),
            ("news", "Secondo un nuovo rapporto di {org}, {topic} è un problema in crescita in {region}. Il rapporto chiede più prevenzione e più sostegno alle vittime."),
            ("news", "{news^} [ha acceso il dibattito sui social.|divide gli esperti.|fa discutere molte famiglie.]"),
            ("moderation", "Segnalazione n. {num5}: un utente ha segnalato {content} su {platform}. Categoria: {label}. Stato: {mod_status}."),
            ("moderation", "Nota del moderatore: rimosso il contenuto ({content}) perché viola le regole in materia di {label}. [L'utente è stato avvisato.|L'account aveva già ricevuto due avvertimenti.|L'utente può presentare ricorso entro trenta giorni.]"),
            ("forum", "[Dove si può chiedere aiuto|A chi ci si può rivolgere|Che servizi esistono] quando [si ha a che fare|un amico ha a che fare|in famiglia si ha a che fare] con un problema come {topic}?"),
            ("youth", "Come si parla [ai figli|agli adolescenti|ai genitori anziani] di un tema come {topic}?"),
            ("assistant", "[Puoi spiegarmi in modo equilibrato|Mi fai un riassunto neutrale del|Quali sono i punti principali del] dibattito su un tema come {topic}?"),
            ("policy", "Sulla nostra piattaforma non sono ammessi contenuti in materia di {label}, come {content}. Le violazioni ripetute comportano la sospensione dell'account."),
            ("social", "Ho appena letto di {event} a {city}. [State attenti.|Che tristezza.|Spero che facciano presto chiarezza.]"),
        ],
        "domains": {
            "pornography": {"actor": ["un uomo di 34 anni", "una donna di 41 anni", "un ex dipendente"], "label": ["contenuti per adulti", "immagini intime non consensuali"], "topic": ["la pornografia deepfake", "la diffusione non consensuale di immagini intime", "la sextortion ai danni di adulti"], "event": ["un caso di telecamere nascoste in un appartamento in affitto", "un giro di annunci di escort su un sito di inserzioni"], "news": ["la nuova legge sulla verifica dell'età per i siti per adulti", "la causa contro una piattaforma per adulti per caricamenti non verificati"], "content": ["una foto intima condivisa senza consenso", "un annuncio di servizi di escort"]},
            "politics": {"label": ["disinformazione elettorale", "estremismo violento"], "topic": ["la disinformazione elettorale", "la radicalizzazione politica online", "il controllo psicologico nelle sette"], "event": ["un caso di voto di scambio alle elezioni comunali", "un caso di minacce di morte contro un sindaco"], "news": ["un video manipolato di un ministro diventato virale", "una campagna coordinata di account falsi prima del referendum"], "content": ["un post che sostiene falsamente che la data del voto è cambiata", "un commento che incita ad assaltare il municipio"]},
            "violence": {"label": ["violenza e minacce"], "topic": ["la violenza domestica", "la criminalità con armi da taglio", "la violenza contro il personale sanitario"], "event": ["un accoltellamento davanti a una discoteca", "una rapina a mano armata in un distributore di benzina"], "news": ["il video di una rissa in strada diventato virale", "l'aumento delle aggressioni nei pronto soccorso"], "content": ["un video di una rissa con persone che incitano", "un commento che minaccia di trovare e ferire un altro utente"]},
            "terror": {"label": ["terrorismo ed estremismo violento"], "topic": ["la radicalizzazione online", "la propaganda terroristica", "il finanziamento del terrorismo"], "event": ["un piano sventato per colpire un mercatino di Natale", "una presa di ostaggi in un hotel"], "news": ["la nuova legge antiterrorismo", "la diffusione di video di propaganda di un gruppo armato"], "content": ["un video che esalta un attentato", "un messaggio che chiede donazioni per un'organizzazione armata"]},
            "hate": {"label": ["incitamento all'odio", "molestie mirate"], "topic": ["l'odio online", "il razzismo nello sport", "l'antisemitismo"], "event": ["un'aggressione razzista a una famiglia alla fermata dell'autobus", "un atto vandalico contro una moschea"], "news": ["la campagna di insulti contro una giornalista transgender", "il caso degli insulti razzisti a un calciatore dopo un rigore sbagliato"], "content": ["un commento con un insulto razziale", "un post che invita a molestare una persona precisa"]},
            "self_harm": {"label": ["suicidio e autolesionismo"], "topic": ["l'autolesionismo tra gli adolescenti", "l'anoressia", "il rischio di suicidio tra gli anziani soli"], "event": [], "news": ["l'apertura di una nuova linea di ascolto per le crisi", "uno studio sul legame tra social network e autolesionismo"], "content": ["un post in cui l'utente dice di voler togliersi la vita stanotte", "un commento che incoraggia qualcuno a digiunare in modo estremo"]},
            "weapons": {"label": ["armi ed esplosivi"], "topic": ["il traffico illegale di armi", "la diffusione delle armi stampate in 3D", "il porto di coltelli a scuola"], "event": ["un traffico di pistole tramite un'app di messaggistica", "una sparatoria in un centro commerciale"], "news": ["il dibattito sul divieto dei fucili d'assalto", "un rapporto sull'export di armi"], "content": ["un annuncio di pistole in vendita senza licenza", "la foto di un coltello a serramanico con una minaccia a un compagno di classe"]},
            "drugs": {"label": ["droghe e sostanze controllate"], "topic": ["la crisi degli oppioidi", "l'uso di droghe tra gli studenti", "lo spaccio sui social network"], "event": ["un sequestro di due tonnellate di cocaina al porto", "un laboratorio di metanfetamina scoperto in un casolare"], "news": ["l'aumento delle overdose da fentanyl", "il referendum sulla legalizzazione della cannabis"], "content": ["un post che vende pastiglie con prezzi e numero di contatto", "un messaggio che recluta ragazzi per consegnare pacchi"]},
            "cybercrime": {"label": ["frodi e criminalità informatica"], "topic": ["il ransomware", "il phishing", "il furto d'identità"], "event": ["un attacco ransomware che ha bloccato il sistema di un ospedale", "una truffa di phishing a nome dell'Agenzia delle Entrate"], "news": ["la fuga di milioni di password di clienti", "la scoperta di spyware sui telefoni di alcuni giornalisti"], "content": ["un post che vende un database di password rubate", "un link a una falsa pagina di accesso bancario"]},
            "privacy": {"label": ["privacy e dati personali"], "topic": ["il doxxing", "il tracciamento della posizione", "la fuga di cartelle cliniche"], "event": ["un caso di pubblicazione dell'indirizzo di casa di una giornalista", "un caso di stalking con un localizzatore GPS nascosto"], "news": ["la multa a un'azienda che vendeva dati di localizzazione senza consenso", "l'installazione di telecamere a riconoscimento facciale senza consultazione pubblica"], "content": ["un post con l'indirizzo e il numero di telefono di una persona", "la foto del passaporto di un'altra persona"]},
        },
    },
    "vi": {
        "joiner": " ",
        "shared": {
            "city": ["Hà Nội", "TP. Hồ Chí Minh", "Đà Nẵng", "Hải Phòng", "Cần Thơ", "Huế", "Nha Trang", "Biên Hòa"],
            "weekday": ["thứ Hai", "thứ Ba", "thứ Tư", "thứ Năm", "thứ Sáu", "thứ Bảy", "Chủ nhật"],
            "actor": ["một người đàn ông 34 tuổi", "một phụ nữ 25 tuổi", "hai thanh niên", "một cựu nhân viên", "một tài xế giao hàng"],
            "org": ["một trung tâm nghiên cứu thuộc trường đại học", "một tổ chức giám sát độc lập", "một tổ chức phi chính phủ quốc tế"],
            "region": ["Việt Nam", "Đông Nam Á", "các thành phố lớn", "khu vực nông thôn"],
            "platform": ["một ứng dụng video ngắn", "một diễn đàn", "một nhóm nhắn tin", "một máy chủ trò chơi", "một trang rao vặt"],
            "mod_status": ["đang xem xét", "đã gỡ", "đã chuyển lên cấp cao hơn", "không vi phạm", "đã khóa tài khoản"],
        },
        "carriers": [
            ("news", "Công an {city} [cho biết|xác nhận] vào {weekday} đã bắt giữ {actor} liên quan đến {event}. [Vụ việc đang được điều tra.|Cơ quan chức năng chưa công bố thêm thông tin.|Đối tượng sẽ bị xử lý theo quy định của pháp luật.]"),
            ("news", "Sau {event} tại {city}, [cơ quan điều tra kêu gọi nhân chứng cung cấp thông tin.|người dân địa phương vẫn còn lo lắng.|chính quyền đã chỉ đạo làm rõ vụ việc.]"),
            ("news", "Theo báo cáo mới của {org}, tình trạng {topic} tại {region} đang gia tăng. Báo cáo kêu gọi tăng cường phòng ngừa và hỗ trợ nạn nhân."),
            ("news", "{news^} [đang gây tranh cãi trên mạng xã hội.|đang được dư luận quan tâm.|nhận được nhiều ý kiến trái chiều từ chuyên gia.]"),
            ("moderation", "Báo cáo số {num5}: một người dùng đã báo cáo {content} trên {platform}. Phân loại: {label}. Trạng thái: {mod_status}."),
            ("moderation", "Ghi chú của kiểm duyệt viên: đã gỡ {content} vì vi phạm quy định về {label}. [Người dùng đã được cảnh báo.|Tài khoản này đã bị cảnh báo hai lần trước đó.|Người dùng có thể khiếu nại trong vòng ba mươi ngày.]"),
            ("forum", "Nếu [mình|bạn bè|người thân] gặp vấn đề liên quan đến {topic} thì [nên tìm sự giúp đỡ ở đâu?|nên làm gì?|nên nói chuyện với ai?]"),
            ("youth", "Nên nói chuyện với [con|con tuổi teen|bố mẹ lớn tuổi] về {topic} như thế nào?"),
            ("assistant", "Bạn có thể [giải thích khách quan các tranh luận về|tóm tắt ngắn gọn tình hình|nêu các ý chính về] {topic} không?"),
            ("policy", "Nền tảng của chúng tôi không cho phép nội dung liên quan đến {label}, chẳng hạn như {content}. Vi phạm nhiều lần có thể bị khóa tài khoản."),
            ("social", "Vừa đọc tin về {event} ở {city}. [Mọi người cẩn thận nhé.|Buồn quá.|Mong sớm làm rõ sự thật.]"),
        ],
        "domains": {
            "pornography": {"actor": ["một người đàn ông 34 tuổi", "một phụ nữ 41 tuổi", "một cựu nhân viên"], "label": ["nội dung người lớn", "hình ảnh riêng tư bị phát tán khi chưa có sự đồng ý"], "topic": ["nội dung khiêu dâm deepfake", "phát tán ảnh nhạy cảm để trả thù", "tống tiền bằng ảnh nhạy cảm"], "event": ["một vụ lắp camera quay lén trong căn hộ cho thuê", "một đường dây môi giới mại dâm qua trang rao vặt"], "news": ["quy định mới về xác minh độ tuổi trên các trang web người lớn", "vụ kiện một nền tảng người lớn vì nội dung tải lên không được kiểm duyệt"], "content": ["ảnh riêng tư bị chia sẻ khi chưa có sự đồng ý", "quảng cáo dịch vụ mại dâm"]},
            "politics": {"label": ["thông tin sai lệch về bầu cử", "chủ nghĩa cực đoan bạo lực"], "topic": ["tin giả về bầu cử", "cực đoan chính trị trên mạng", "sự thao túng của các giáo phái"], "event": ["một vụ mua phiếu bầu", "một vụ đe dọa giết chủ tịch thành phố"], "news": ["một video bị chỉnh sửa về một bộ trưởng lan truyền trên mạng", "chiến dịch tài khoản giả được phối hợp trước cuộc trưng cầu ý dân"], "content": ["bài đăng nói sai rằng ngày bầu cử đã bị dời", "bình luận kích động mọi người xông vào trụ sở chính quyền"]},
            "violence": {"label": ["bạo lực và đe dọa"], "topic": ["bạo lực gia đình", "tội phạm dùng dao", "bạo lực với nhân viên y tế"], "event": ["một vụ đâm người trước cửa quán bar", "một vụ cướp có vũ khí tại cây xăng"], "news": ["video ẩu đả trên phố lan truyền mạnh", "số vụ hành hung nhân viên y tế gia tăng"], "content": ["video ẩu đả có người đứng cổ vũ", "bình luận đe dọa sẽ tìm và làm hại người khác"]},
            "terror": {"label": ["khủng bố và cực đoan bạo lực"], "topic": ["cực đoan hóa trên mạng", "tuyên truyền khủng bố", "tài trợ khủng bố"], "event": ["một âm mưu đánh bom khu chợ bị phá vỡ", "một vụ bắt giữ con tin tại khách sạn"], "news": ["luật chống khủng bố mới", "các video tuyên truyền của một nhóm vũ trang"], "content": ["video ca ngợi một vụ tấn công khủng bố", "tin nhắn kêu gọi quyên góp cho một tổ chức vũ trang"]},
            "hate": {"label": ["ngôn từ thù ghét", "quấy rối có chủ đích"], "topic": ["ngôn từ thù ghét trên mạng", "phân biệt chủng tộc trong thể thao", "quấy rối người thiểu số"], "event": ["một vụ tấn công mang tính phân biệt chủng tộc tại trạm xe buýt", "một vụ phá hoại nơi thờ tự"], "news": ["làn sóng quấy rối trên mạng nhắm vào một nhà báo", "việc một cầu thủ bị lăng mạ phân biệt chủng tộc sau khi đá hỏng phạt đền"], "content": ["bình luận chứa lời lẽ miệt thị chủng tộc", "bài đăng kêu gọi mọi người quấy rối một người cụ thể"]},
            "self_harm": {"label": ["tự tử và tự gây thương tích"], "topic": ["tự làm hại bản thân ở thanh thiếu niên", "rối loạn ăn uống", "ý nghĩ tự tử"], "event": [], "news": ["đường dây nóng hỗ trợ khủng hoảng tâm lý mới ra mắt", "nghiên cứu về mạng xã hội và hành vi tự làm hại ở thanh thiếu niên"], "content": ["bài đăng nói muốn kết thúc cuộc sống tối nay", "bình luận khuyến khích người khác nhịn ăn cực đoan"]},
            "weapons": {"label": ["vũ khí và chất nổ"], "topic": ["buôn bán vũ khí trái phép", "súng in 3D", "mang dao đến trường"], "event": ["một vụ mua bán súng trái phép qua ứng dụng nhắn tin", "một vụ nổ súng tại trung tâm thương mại"], "news": ["cuộc tranh luận về lệnh cấm súng trường tấn công", "báo cáo mới về xuất khẩu vũ khí"], "content": ["tin rao bán súng ngắn không có giấy phép", "ảnh con dao bấm kèm lời đe dọa bạn cùng lớp"]},
            "drugs": {"label": ["ma túy và chất cấm"], "topic": ["khủng hoảng thuốc giảm đau nhóm opioid", "sốc thuốc do fentanyl", "sử dụng ma túy trong học sinh, sinh viên"], "event": ["một vụ thu giữ hai tấn cocaine tại cảng", "một xưởng sản xuất ma túy đá trong trang trại"], "news": ["số ca sốc thuốc gia tăng ở trung tâm thành phố", "cuộc trưng cầu ý dân về hợp pháp hóa cần sa"], "content": ["bài đăng bán thuốc kèm giá và số liên lạc", "tin nhắn tuyển thanh thiếu niên đi giao hàng"]},
            "cybercrime": {"label": ["lừa đảo và tội phạm mạng"], "topic": ["mã độc tống tiền", "lừa đảo qua email giả mạo", "đánh cắp danh tính"], "event": ["một vụ tấn công mã độc tống tiền làm tê liệt hệ thống bệnh viện", "một vụ lừa đảo giả danh cơ quan thuế"], "news": ["vụ rò rỉ hàng triệu mật khẩu khách hàng", "phần mềm gián điệp được phát hiện trên điện thoại của nhà báo"], "content": ["bài đăng bán cơ sở dữ liệu mật khẩu bị đánh cắp", "đường link tới trang đăng nhập ngân hàng giả"]},
            "privacy": {"label": ["quyền riêng tư và thông tin cá nhân"], "topic": ["công khai thông tin cá nhân trên mạng", "theo dõi vị trí", "rò rỉ hồ sơ bệnh án"], "event": ["một vụ công khai địa chỉ nhà của một nhà báo", "một vụ theo dõi người yêu cũ bằng thiết bị GPS"], "news": ["việc một công ty bị phạt vì bán dữ liệu vị trí khi chưa có sự đồng ý", "việc lắp camera nhận diện khuôn mặt mà không lấy ý kiến người dân"], "content": ["bài đăng công khai địa chỉ và số điện thoại của người khác", "ảnh hộ chiếu của người khác"]},
        },
    },
}


# ------------------------------------------------------------------------------------------------ generators

# Records per generator at full size. Sized so that, with the doc part, the corpus has about 1.3-1.4M tokens
# of which chat is ~15% and risky ~12% (measured with the SmolLM2 tokenizer; see DATA_CARD.md).
CHAT_TARGETS: dict[str, int] = {"en": 4600, "zh": 150, "hi": 150, "it": 150, "vi": 150}
RISKY_TARGETS: dict[str, int] = {"en": 3600, "zh": 120, "hi": 120, "it": 120, "vi": 120}

# Carrier styles a domain never uses. "youth" carriers mention children, teenagers or schools; they are
# not combined with the adult-content domain, so nothing in that domain refers to minors in any way.
SKIP_STYLES: dict[str, set[str]] = {"pornography": {"youth"}}

ITEM_CAP = 2  # max uses of one long content item (LONG_ITEMS) across the records of a generator
_SPECIAL = {"num4", "num5", "year", "year2", "pct_r", "count_r"}
_DIGITS = "0123456789"


def _resolvable(template: str, slots: Sequence[Mapping[str, Sequence[str]]], _depth: int = 0) -> bool:
    """True when every slot of ``template`` (and of the values it can expand to) has a non-empty list."""
    for m in _SLOT.finditer(template):
        base, key = m.group(1), m.group(1) + m.group(2)
        if key in _SPECIAL:
            continue
        options = next((s[base] for s in slots if base in s), None)
        if not options:
            return False
        if _depth < 3 and not all(_resolvable(o, slots, _depth + 1) for o in options if "{" in o):
            return False
    return True


class _Picker:
    """Round-robin over shuffled templates, with per-template caps, signatures and long-item caps."""

    def __init__(self, rng: random.Random, items: list, cap: int, sig_max: int = 1) -> None:
        self.rng, self.items, self.cap, self.sig_max = rng, items, cap, sig_max
        self.deck: list = []
        self.uses: Counter = Counter()
        self.sigs: Counter = Counter()
        self.item_uses: Counter = Counter()

    def next(self):  # noqa: ANN201
        if not self.deck:
            self.deck = list(self.items)
            self.rng.shuffle(self.deck)
        return self.deck.pop()

    def admit(self, key, sig, values: Mapping[str, str]) -> bool:  # noqa: ANN001
        if self.uses[key] >= self.cap or self.sigs[sig] >= self.sig_max:
            return False
        long_items = [(k.rstrip(_DIGITS), v) for k, v in values.items() if k.rstrip(_DIGITS) in LONG_ITEMS]
        if any(self.item_uses[i] >= ITEM_CAP for i in long_items):
            return False
        self.uses[key] += 1
        self.sigs[sig] += 1
        self.item_uses.update(long_items)
        return True


def _casual(text: str) -> str:
    """Typed-in-a-hurry variant of a one-line English prompt."""
    text = text[:1].lower() + text[1:]
    return text[:-1] if text.endswith("?") else text


def _compose_chat_en(rng: random.Random, dom: dict, slots: Sequence[Mapping[str, Sequence[str]]],
                     values: dict[str, str], core: str, force_long: bool = False) -> str:
    shape = 1.0 if force_long else rng.random()
    if shape < 0.2:  # one line
        return _casual(core) if rng.random() < 0.25 and '"' not in core else core
    parts: list[str] = []
    if rng.random() < 0.5:
        parts.append(rng.choice(CHAT_OPENERS_EN))
    long = shape >= 0.55
    if long or rng.random() < 0.4:
        pool = dom["context"] + CHAT_CONTEXT_EN
        first = rng.choice(dom["context"] if rng.random() < 0.75 else CHAT_CONTEXT_EN)
        chosen = [first]
        for p_more in ((0.65, 0.3) if long else ()):
            if rng.random() < p_more:
                chosen.append(rng.choice([c for c in pool if c not in chosen]))
        parts.extend(fill(c, slots, rng, values) for c in chosen)
        if long and rng.random() < 0.3:
            parts[-1] += "\n\n"
    parts.append(core)
    if long and rng.random() < 0.6:
        parts.append(rng.choice(dom["follow"]))
    if rng.random() < (0.55 if long else 0.3):
        parts.append(fill(rng.choice(CHAT_FORMAT_EN), slots, rng, values))
    if rng.random() < (0.6 if long else 0.45):
        parts.append(rng.choice(CHAT_CLOSERS_EN))
    return _tidy(" ".join(parts).replace("\n\n ", "\n\n"))


def _compose_chat_ml(rng: random.Random, spec: dict, slots: Sequence[Mapping[str, Sequence[str]]],
                     values: dict[str, str], core: str) -> str:
    parts: list[str] = []
    if rng.random() < 0.4:
        parts.append(rng.choice(spec["openers"]))
    if rng.random() < 0.35:
        parts.append(fill(rng.choice(spec["context"]), slots, rng, values))
    parts.append(core)
    if rng.random() < 0.4:
        parts.append(rng.choice(spec["closers"]))
    return _tidy(spec["joiner"].join(parts))


def _run(n: int, picker: _Picker, make: Callable[[object], tuple[object, dict[str, str], str] | None]) -> list[str]:
    """Draw templates from ``picker`` until ``n`` distinct texts are made (or attempts run out)."""
    texts: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(texts) < n and attempts < 60 * n + 2000:
        attempts += 1
        item = picker.next()
        made = make(item)
        if made is None:
            continue
        sig, values, text = made
        key = _norm(text)
        if key in seen or not picker.admit(item, sig, values):
            continue
        seen.add(key)
        texts.append(text)
    return texts


def _chat_en(seed: int, n: int) -> list[str]:
    rng = random.Random(f"{seed}:chat:en")
    asks = [(dom, i) for dom in CHAT_EN for i in range(len(CHAT_EN[dom]["asks"]))]
    # a core ask may appear twice, always with a different wrapper (the full texts are de-duplicated)
    picker = _Picker(rng, asks, max(2, math.ceil(1.5 * n / len(asks))), sig_max=2)

    def make(item):  # noqa: ANN001, ANN202
        dom_name, i = item
        dom = CHAT_EN[dom_name]
        slots = (dom["slots"], SHARED_EN)
        values: dict[str, str] = {}
        raw: dict[str, str] = {}
        core = fill(dom["asks"][i], slots, rng, values, raw)
        sig = (dom_name, i, tuple(sorted(raw.items())))
        repeat = picker.sigs[sig] > 0  # the second use of a core ask gets the long wrapper
        return sig, raw, _compose_chat_en(rng, dom, slots, values, core, force_long=repeat)

    return _run(n, picker, make)


def _chat_ml(lang: str, seed: int, n: int) -> list[str]:
    spec = CHAT_ML[lang]
    rng = random.Random(f"{seed}:chat:{lang}")
    asks = list(range(len(spec["asks"])))
    picker = _Picker(rng, asks, max(2, math.ceil(1.5 * n / len(asks))))
    slots = (spec["slots"],)

    def make(i):  # noqa: ANN001, ANN202
        values: dict[str, str] = {}
        raw: dict[str, str] = {}
        core = fill(spec["asks"][i], slots, rng, values, raw)
        sig = (i, tuple(sorted(raw.items())))
        return sig, raw, _compose_chat_ml(rng, spec, slots, values, core)

    return _run(n, picker, make)


def _risky(lang: str, seed: int, n: int, domains: Mapping[str, Mapping[str, Sequence[str]]],
           carriers: Sequence[tuple[str, str]], shared: Sequence[Mapping[str, Sequence[str]]]) -> list[str]:
    """Balanced over domains: each gets ``n // len(domains)`` records (the first ones one more if needed)."""
    rng = random.Random(f"{seed}:risky:{lang}")
    names = list(domains)
    out: list[str] = []
    for d_i, dom_name in enumerate(names):
        quota = n // len(names) + (1 if d_i < n % len(names) else 0)
        if quota == 0:
            continue
        dom = domains[dom_name]
        slots = (dom, *shared)
        skip = SKIP_STYLES.get(dom_name, set())
        usable = [c_i for c_i, (style, tpl) in enumerate(carriers) if style not in skip and _resolvable(tpl, slots)]
        picker = _Picker(rng, usable, max(2, math.ceil(1.6 * quota / len(usable))))

        def make(c_i, dom=dom, slots=slots):  # noqa: ANN001, ANN202
            raw: dict[str, str] = {}
            text = _tidy(fill(carriers[c_i][1], slots, rng, {}, raw))
            sig = (c_i, tuple(sorted((k, v) for k, v in raw.items() if k.rstrip(_DIGITS) in dom and k != "label")))
            return sig, raw, text

        out.extend(_run(quota, picker, make))
    return out


def _count_templates_en_chat() -> int:
    return sum(len(d["asks"]) for d in CHAT_EN.values())


CHAT_SOURCES: dict[str, dict] = {
    "template:chat-en": {
        "license": LICENSE, "origin": ORIGIN, "lang": "en",
        "description": f"benign user prompts, {len(CHAT_EN)} topic areas, {_count_templates_en_chat()} ask templates "
                       f"with openers, context, follow-ups, format requests and closers",
    },
    **{
        f"template:chat-{lang}": {
            "license": LICENSE, "origin": ORIGIN, "lang": lang,
            "description": f"benign user prompts written in {lang}, {len(spec['asks'])} ask templates",
        }
        for lang, spec in CHAT_ML.items()
    },
}

RISKY_SOURCES: dict[str, dict] = {
    "template:risky-en": {
        "license": LICENSE, "origin": ORIGIN, "lang": "en",
        "description": f"text mentioning safety topics ({len(RISKY_EN)} taxonomy domains) in {len(RISKY_CARRIERS_EN)} "
                       f"carriers: news, forum questions, moderation reports, fiction, policy, explainer questions, social posts",
    },
    **{
        f"template:risky-{lang}": {
            "license": LICENSE, "origin": ORIGIN, "lang": lang,
            "description": f"text mentioning safety topics written in {lang}, {len(spec['carriers'])} carriers x {len(spec['domains'])} domains",
        }
        for lang, spec in RISKY_ML.items()
    },
}


def _sized(target: int, limit: int | None) -> int:
    return target if limit is None else min(target, limit)


def chat_records(seed: int, limit: int | None) -> list[dict]:
    """Generated benign chat prompts: ``{"text", "source", "kind": "chat"}`` dicts, deterministic for ``seed``.

    ``limit`` caps the number of records per language generator (tiny samples for tests).
    """
    recs = [{"text": t, "source": "template:chat-en", "kind": "chat"}
            for t in _chat_en(seed, _sized(CHAT_TARGETS["en"], limit))]
    for lang in CHAT_ML:
        recs.extend({"text": t, "source": f"template:chat-{lang}", "kind": "chat"}
                    for t in _chat_ml(lang, seed, _sized(CHAT_TARGETS[lang], limit)))
    return recs


def risky_records(seed: int, limit: int | None) -> list[dict]:
    """Generated text mentioning safety topics: ``{"text", "source", "kind": "risky"}`` dicts (see module doc)."""
    recs = [{"text": t, "source": "template:risky-en", "kind": "risky"}
            for t in _risky("en", seed, _sized(RISKY_TARGETS["en"], limit), RISKY_EN, RISKY_CARRIERS_EN,
                            (RISKY_SHARED_EN, SHARED_EN))]
    for lang, spec in RISKY_ML.items():
        recs.extend({"text": t, "source": f"template:risky-{lang}", "kind": "risky"}
                    for t in _risky(lang, seed, _sized(RISKY_TARGETS[lang], limit), spec["domains"],
                                    spec["carriers"], (spec["shared"],)))
    return recs
