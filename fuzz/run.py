"""Coverage-guided fuzzing of the PROXY decoder and the config reader with atheris.

    python fuzz/run.py proxy -runs=200000
    python fuzz/run.py config -max_total_time=120

The first argument names the target (see :mod:`targets`); the rest go to libFuzzer. The
seed corpus is generated into ``fuzz/corpus/TARGET/`` (not committed; libFuzzer adds the
inputs it finds interesting there), the dictionary into ``fuzz/corpus/TARGET.dict``, and a
crashing input is written to ``fuzz/artifacts/TARGET/``. Re-run one input with
``python fuzz/run.py TARGET fuzz/artifacts/TARGET/crash-...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

with atheris.instrument_imports(include=["tunnel"]):
    import targets


def prepare(target: str) -> list[str]:
    """Write the seeds and the dictionary; the libFuzzer arguments that use them."""
    corpus = HERE / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(targets.seeds(target)):
        (corpus / f"seed-{i:03d}").write_bytes(seed)
    dict_path = HERE / "corpus" / f"{target}.dict"
    lines = [
        '"' + "".join(f"\\x{b:02x}" for b in word) + '"' for word in targets.dictionary(target)
    ]
    dict_path.write_text("\n".join(lines) + "\n")
    artifacts = HERE / "artifacts" / target
    artifacts.mkdir(parents=True, exist_ok=True)
    return [f"-dict={dict_path}", f"-artifact_prefix={artifacts}/", str(corpus)]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(targets.TARGETS)}}} [libFuzzer options]")
    target, options = sys.argv[1], sys.argv[2:]
    replay = [o for o in options if not o.startswith("-")]
    args = [sys.argv[0], *options, *([] if replay else prepare(target))]
    atheris.Setup(args, targets.TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
