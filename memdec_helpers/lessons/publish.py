"""Where the course is published: its repository address (the one place to change), the Colab
badge of a lesson and the setup cell every lesson opens with.

To publish under another address, change REPO_URL (or run
`python scripts/set_repo_url.py https://github.com/<owner>/<name>`, which edits it here), then
`python scripts/set_repo_url.py` rewrites the README, the notebooks and pyproject.toml from it.
This module imports nothing from the package, so the script loads it without torch.
"""
from __future__ import annotations

import re

REPO_URL = "https://github.com/memdec-course/memory-decoder-course"
BRANCH = "main"

GITHUB = re.compile(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")

# The first code cell of every lesson. It runs before the package is installed, so it cannot
# import memdec_helpers: plain Python, installs only what is missing, pip's output only on failure.
SETUP_CELL = '''\
# Setup: in Colab, install what is missing (faiss, this course's package); pip is quiet unless it fails.
import importlib, importlib.util, subprocess, sys, time
NEEDED = {"faiss": "faiss-cpu",  # module -> pip requirement
          "memdec_helpers": "git+{repo_url}"}
missing = [req for module, req in NEEDED.items() if importlib.util.find_spec(module) is None]
if missing and "google.colab" in sys.modules:
    print("installing", ", ".join(missing), "(about a minute) ...")
    start = time.time()
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        print(pip.stdout[-5000:], pip.stderr[-5000:], sep="\\n")
        raise RuntimeError("pip install failed: its output is above")
    importlib.invalidate_caches()
    missing = [req for module, req in NEEDED.items() if importlib.util.find_spec(module) is None]
    print(f"installed in {time.time() - start:.0f} s")
if missing:
    raise ModuleNotFoundError(f"missing {missing}: outside Colab, install the course first "
                              "(bash scripts/env.sh, see the README)")
print("ready: faiss and memdec_helpers are installed")'''


def github_repo(repo_url: str = REPO_URL) -> tuple[str, str]:
    """(owner, name) of a https://github.com/<owner>/<name> address, else ValueError."""
    match = GITHUB.match(repo_url.strip())
    if not match:
        raise ValueError(f"repo_url={repo_url!r} must look like https://github.com/<owner>/<name>")
    return match.group(1), match.group(2)


def colab_url(notebook: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """The Colab address that opens notebooks/<notebook> of the repository."""
    owner, name = github_repo(repo_url)
    return f"https://colab.research.google.com/github/{owner}/{name}/blob/{branch}/notebooks/{notebook}"


def colab_badge(notebook: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """The markdown 'Open In Colab' badge of a lesson."""
    return ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook, repo_url, branch)})")


def setup_cell(repo_url: str = REPO_URL) -> str:
    """The source of every lesson's first code cell, for this repository."""
    owner, name = github_repo(repo_url)
    return SETUP_CELL.replace("{repo_url}", f"https://github.com/{owner}/{name}")


def rewrite_repo_urls(text: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """`text` with every Colab badge link, `git+https://github.com/…` requirement and
    pyproject `Repository = "…"` pointing at `repo_url` (idempotent; other links untouched)."""
    owner, name = github_repo(repo_url)
    url = f"https://github.com/{owner}/{name}"
    colab = "https://colab.research.google.com/github/"
    text = re.sub(re.escape(colab) + r"[\w.-]+/[\w.-]+/blob/[\w./-]+?/notebooks/",
                  f"{colab}{owner}/{name}/blob/{branch}/notebooks/", text)
    text = re.sub(r"git\+https://github\.com/[\w.-]+/[\w.-]+", f"git+{url}", text)
    return re.sub(r'(?m)^(Repository = ")https://github\.com/[^"]*(")', rf"\g<1>{url}\g<2>", text)
