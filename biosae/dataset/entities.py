"""Entity pools and templates: plain files under ``data/``, validated with one-line errors.

Layout (all UTF-8, one value a line, ``#`` starts a comment line):
    entities/first_names.txt, middle_names.txt, last_names.txt
    entities/cities.txt, universities.txt, majors.txt
    entities/employers.tsv           employer<TAB>headquarters city
    templates/<rule>.txt             biography sentences with {name} and {<rule>}; "extended: <sentence>"
                                     marks a sentence of the extended set ("wide: " of the
                                     wide one; BIOGRAPHY_SETS)
    qa_templates/<rule>.txt          >= 4 question wordings with {name}, each "<family>: <wording>"
    qa_templates/hard/<rule>.txt     biography-wording questions with {name} (>= 1)
Question files may mark a wording's family (biosae.dataset.question_templates); an unmarked line is a
wording of no family.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from biosae.dataset.question_templates import FAMILIES, SEED_WORDINGS, split_family
from biosae.errors import BiosaeError
from biosae.rules import RULES

# A biography file's unmarked sentences are the seed's, used in every run; a sentence marked
# "extended: " joins them with dataset.biography_templates: extended, and one marked "wide: " with
# wide (which keeps the extended ones too: each set holds the ones before it). The sampler draws
# uniformly from the sentences it is given, so a sentence added to a set would change every
# person's biographies under it: added phrases get a new mark, and each set's corpus stays as it was.
BIOGRAPHY_SETS = ("seed", "extended", "wide")
_BIOGRAPHY_MARKS = BIOGRAPHY_SETS[1:]


@dataclass(frozen=True)
class EntityPools:
    first_names: tuple[str, ...]
    middle_names: tuple[str, ...]
    last_names: tuple[str, ...]
    cities: tuple[str, ...]
    universities: tuple[str, ...]
    majors: tuple[str, ...]
    employers: tuple[str, ...]
    employer_city: dict  # employer -> headquarters city (= the person's work city)

    @property
    def max_unique_names(self) -> int:
        return len(self.first_names) * len(self.middle_names) * len(self.last_names)


@dataclass(frozen=True)
class Templates:
    biography: dict  # rule -> tuple of the chosen set's sentence templates (file order)
    questions: dict  # rule -> tuple of >= 4 question wordings (index = template_idx)
    hard_questions: dict  # rule -> tuple of biography-wording question templates
    question_families: dict  # rule -> tuple of each question wording's family (None: unmarked)
    left_out_biography: dict  # rule -> tuple of the file's sentence templates the chosen set leaves out


def _read_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise BiosaeError(f"{path}: file not found")
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append((number, line))
    if not lines:
        raise BiosaeError(f"{path}: file is empty")
    return lines


def _unique_values(path: Path) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    for number, value in _read_lines(path):
        if value in seen:
            raise BiosaeError(f"{path}:{number}: duplicate value {value!r} (first on line {seen[value]})")
        if any(ch in value for ch in "{}\t"):
            raise BiosaeError(f"{path}:{number}: value {value!r} contains a brace or tab")
        seen[value] = number
    return tuple(seen)


def load_entity_pools(entities_dir) -> EntityPools:
    root = Path(entities_dir)
    pools = {
        name: _unique_values(root / f"{name}.txt")
        for name in ("first_names", "middle_names", "last_names", "cities", "universities", "majors")
    }
    employer_file = root / "employers.tsv"
    employer_city: dict[str, str] = {}
    first_line: dict[str, int] = {}
    city_set = set(pools["cities"])
    for number, line in _read_lines(employer_file):
        parts = line.split("\t")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise BiosaeError(f"{employer_file}:{number}: expected 'employer<TAB>headquarters city', got {line!r}")
        employer, city = (p.strip() for p in parts)
        if employer in employer_city:
            raise BiosaeError(
                f"{employer_file}:{number}: duplicate employer {employer!r} (first on line {first_line[employer]})"
            )
        if city not in city_set:
            raise BiosaeError(f"{employer_file}:{number}: headquarters city {city!r} is not in cities.txt")
        employer_city[employer] = city
        first_line[employer] = number
    return EntityPools(employers=tuple(employer_city), employer_city=employer_city, **pools)


def _placeholders(template: str) -> set[str]:
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as error:
        raise BiosaeError(f"malformed placeholder ({error})") from None


def _templates(path: Path, required: set[str], minimum: int | None = None, marks=(), kind="", distinct=False):
    """The file's (mark, template) pairs. ``marks``: the known line marks, named ``kind`` in errors
    (question files: the wording families; biography files: BIOGRAPHY_SETS' marks); ``distinct``:
    a template may not repeat (question files, where a wording is its index)."""
    pairs, first_line = [], {}
    for number, line in _read_lines(path):
        try:
            family, template = split_family(line, marks, kind) if marks else (None, line)
            fields = _placeholders(template)
        except (BiosaeError, ValueError) as error:
            raise BiosaeError(f"{path}:{number}: {error}") from None
        missing = required - fields
        if missing:
            raise BiosaeError(f"{path}:{number}: template lacks placeholder {{{sorted(missing)[0]}}}: {template!r}")
        unknown = fields - required
        if unknown:
            raise BiosaeError(f"{path}:{number}: unknown placeholder {{{sorted(unknown)[0]}}}: {template!r}")
        if distinct and template in first_line:
            raise BiosaeError(f"{path}:{number}: duplicate wording {template!r} (first on line {first_line[template]})")
        first_line.setdefault(template, number)
        pairs.append((family, template))
    if minimum is not None and len(pairs) < minimum:
        raise BiosaeError(
            f"{path}: a rule needs at least {minimum} question templates (the seed's 1 trained + 3 held out), "
            f"found {len(pairs)}"
        )
    return tuple(pairs)


def _wordings(pairs) -> tuple[str, ...]:
    return tuple(template for _, template in pairs)


def load_templates(templates_dir, qa_templates_dir, biography_templates: str = "seed") -> Templates:
    """The templates of every rule; ``biography_templates`` picks the biography set (BIOGRAPHY_SETS)."""
    if biography_templates not in BIOGRAPHY_SETS:
        raise BiosaeError(
            f"config key dataset.biography_templates: {biography_templates!r} is not one of {', '.join(BIOGRAPHY_SETS)}"
        )
    bio_root, qa_root = Path(templates_dir), Path(qa_templates_dir)
    biography_lines = {
        rule: _templates(bio_root / f"{rule}.txt", {"name", rule}, marks=_BIOGRAPHY_MARKS, kind="biography set")
        for rule in RULES
    }
    chosen = {None, *BIOGRAPHY_SETS[1 : BIOGRAPHY_SETS.index(biography_templates) + 1]}
    wordings = dict(marks=FAMILIES, kind="wording family", distinct=True)
    questions = {rule: _templates(qa_root / f"{rule}.txt", {"name"}, SEED_WORDINGS, **wordings) for rule in RULES}
    hard = {rule: _wordings(_templates(qa_root / "hard" / f"{rule}.txt", {"name"}, **wordings)) for rule in RULES}
    return Templates(
        biography={rule: tuple(t for mark, t in lines if mark in chosen) for rule, lines in biography_lines.items()},
        questions={rule: _wordings(pairs) for rule, pairs in questions.items()},
        hard_questions=hard,
        question_families={rule: tuple(family for family, _ in pairs) for rule, pairs in questions.items()},
        left_out_biography={
            rule: tuple(t for mark, t in lines if mark not in chosen) for rule, lines in biography_lines.items()
        },
    )
