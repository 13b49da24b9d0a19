"""Does extract's stop list, now the lexical channel's plus its own, change any answer of the
answer benches? A line's span eligibility depends on its words only through (a) the question's
content words, (b) the words it shares with them and (c) the names of its best lines. So the
answers are unchanged when no question holds a word whose status changed, and no memory line
holds one written as a name (capitalised where no sentence starts).

    python docs/results/stop-words-unify-check.py > docs/results/stop-words-unify-check.json
"""
import json

from msa_agent.bench.tasks import build
from msa_agent.runtime import extract
from msa_agent.runtime.extract import _names, content_words

NOW = extract._STOP

BEFORE = frozenset("""a an the and or but of in on at to for from with by about as is are was
were be been being am do does did have has had i me my mine we us our ours you your yours he
him his she her they them their it its this that these those what which who whom whose where
when why how there here not no yes can could will would should may might must shall just
also so than then too very tell know any some""".split())
changed = frozenset(w for w in BEFORE ^ NOW if len(w) >= 3)  # content words need 3+ letters
out = {"changed_words": sorted(changed), "tasks": {}}
for name in ("sessions", "facts"):
    task = build(name, "full")
    stage = task.stages[-1]
    questions = [q for q in stage.queries if q.split in ("val", "test")]
    asked = sorted({w for q in questions for w in content_words(q.text) | (
        frozenset(q.text.lower().split()) & changed) if w in changed})
    lines = [line.split() for m in stage.memories for line in m.text.splitlines()]
    new = [_names(words) for words in lines]
    extract._STOP = BEFORE  # content_words reads the module's list when called
    old = [_names(words) for words in lines]
    extract._STOP = NOW
    differ = [" ".join(w) for w, a, b in zip(lines, old, new, strict=True) if a != b]
    out["tasks"][name] = {"questions": len(questions), "memories": len(stage.memories),
                          "changed_words_in_questions": asked,
                          "lines": len(lines),
                          "lines_whose_names_differ": differ}
print(json.dumps(out, indent=1))
