"""Measure a zip bomb against the importer (docs/reliability.md, item 6).

A bundle whose memories.jsonl is 315 MB of JSON deflated to under 1 MB (the issue's bomb
was 760 KB -> 315 MB). Prints the refusal, the max RSS before and after the import attempt
and the bytes in the target space. Run: ``python tests/measure_zip_bomb.py [WORKDIR]``.
"""

import json
import resource
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bundle_helpers import FP, SPECS, import_into, make_space  # noqa: E402

from msa_agent.errors import MsaError  # noqa: E402
from msa_agent.runtime import bundle  # noqa: E402
from msa_agent.store import Space  # noqa: E402

root = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()) / "zip-bomb"
shutil.rmtree(root, ignore_errors=True)
root.mkdir(parents=True)
with make_space(root / "src", n=5) as s:
    bundle.export_space(s, None, root / "b")
bomb = root / "bomb.zip"
line = json.dumps({"pad": "x" * 1000}) + "\n"
with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for p in sorted((root / "b").rglob("*")):
        if p.is_file() and p.name != "memories.jsonl":
            z.write(p, p.relative_to(root / "b").as_posix())
    with z.open("memories.jsonl", "w", force_zip64=True) as f:
        block = line.encode() * 1000
        for _ in range(315_000_000 // len(block)):
            f.write(block)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with Space.create(root / "dst", FP, SPECS, durable=False) as space:
    before = sum(p.stat().st_size for p in (root / "dst").rglob("*") if p.is_file())
    try:
        import_into(space, bomb)
        print("IMPORTED?!")
    except MsaError as e:
        print("refused:", type(e).__name__, str(e)[:160])
    written = sum(p.stat().st_size for p in (root / "dst").rglob("*") if p.is_file())
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
declared = zipfile.ZipFile(bomb).getinfo("memories.jsonl").file_size
print(f"bomb zip {bomb.stat().st_size:,} bytes; declared {declared:,}")
print(f"max RSS before {rss0 / 1024:.0f} MiB, after {rss1 / 1024:.0f} MiB; "
      f"space folder {before:,} bytes before, {written:,} after")
shutil.rmtree(root)
