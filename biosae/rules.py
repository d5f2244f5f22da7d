"""The six question rules and the evaluation cells: the vocabulary every stage shares."""

# Rule index = position in this tuple = SAE slot index it is supervised to use.
RULES = ("birth_date", "birth_city", "university", "major", "employer", "work_city")

# How the shared training frame names each rule ("What is the <word> of <name>?").
RULE_ATTRIBUTE_WORDS = {
    "birth_date": "birth date",
    "birth_city": "birth city",
    "university": "university",
    "major": "major",
    "employer": "employer",
    "work_city": "work city",
}

# The four cells of person (seen in QA training or not) x question template (trained or held out).
EVALUATION_CELLS = ("train", "ood_template", "ood_person", "ood_both")
OOD_CELLS = ("ood_template", "ood_person", "ood_both")

# The shipped biography-wording set, evaluated as two cells of its own.
HARD_CELLS = ("hard_seen_person", "hard_unseen_person")
