"""Each conda env's pip half, built as ``snakemake --use-conda`` builds it, runs its rules' commands alone.

Conda cannot be reached here, so each env is a plain venv standing in for conda's ``python=3.11 pip``:

1. Snakemake copies ``envs/<name>.yaml`` to ``.snakemake/conda/<hash>_.yaml`` (``deployment/conda.py``,
   ``create_env``); conda writes the env's ``pip:`` lines to ``condaenv.*.requirements.txt`` in that copy's
   folder and runs ``python -m pip install -U -r <it> --exists-action=b`` from there
   (``conda/env/installers/pip.py``). We do the same.
2. Snakemake copies ``envs/<name>.post-deploy.sh`` to ``.snakemake/conda/<hash>_.post-deploy.sh`` and runs
   ``sh <that copy>`` in the activated env from its working directory, with its own environment (the
   Snakefile's ``RANKCLIP_REPO`` included). We run it from a working directory outside the checkout.
3. The rules' commands then run with only the env's ``bin/`` on PATH and no PYTHONPATH.

One shortcut, for time: torch, torchvision, triton and the CUDA wheels (5.5 GB) of this test's own
environment are put on each venv's path (a ``.pth`` file to a folder of symlinks to them) before step 1
when their versions are the lock's, so pip finds them installed at the locked version instead of
unpacking them again. scripts/setup.sh installs those same lock
lines with ``--require-hashes`` in CI. Everything else is installed by pip from the env file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from http_server import serve_directory
from synthetic_results import BACKBONE, DATA_SIZE, ROLES, RUNS, write_synthetic_results
from test_data_captions import tiny_blip, write_web_shards  # noqa: F401  (tiny_blip is a fixture)

from tests.conftest import write_colour_shards

# 4.5 minutes on 2 cores with pip's cache warm, about 17 with a cold one (pip installs most of each env's
# packages afresh, as on a clean CI machine): over CI's budget, opt-in.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("RANKCLIP_TEST_ENVS") != "1",
        reason="builds every conda env's pip half: RANKCLIP_TEST_ENVS=1",
    ),
]

REPO = Path(__file__).resolve().parents[2]
HEAVY = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")
KEEP_ENV = (
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_specs(env_file: Path) -> list[str]:
    deps = yaml.safe_load(env_file.read_text())["dependencies"]
    return next(item["pip"] for item in deps if isinstance(item, dict))


def clean_environment(prefix: Path, **extra: str) -> dict[str, str]:
    """The env activated and nothing of ours: no PYTHONPATH, no other venv, the machine's pip settings."""
    env = {key: os.environ[key] for key in KEEP_ENV if key in os.environ}
    env |= {key: value for key, value in os.environ.items() if key.startswith("PIP_")}
    return env | {"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "VIRTUAL_ENV": str(prefix)} | extra


@pytest.fixture(scope="session")
def heavy_packages(tmp_path_factory) -> Path:
    """A folder of symlinks to this environment's torch family, for the venvs' ``.pth`` (module docstring)."""
    folder = tmp_path_factory.mktemp("torch-family")
    for dist in metadata.distributions():
        if not HEAVY.match(normalise(dist.metadata["Name"])):
            continue
        for top in {file.parts[0] for file in dist.files or [] if ".." not in file.parts}:
            if not (folder / top).exists():
                (folder / top).symlink_to(Path(dist.locate_file(top)))
    return folder


def seed_heavy_packages(prefix: Path, specs: list[str], heavy: Path) -> None:
    """Put the torch family on the venv's path when this environment has the locked versions."""
    pins = {normalise(spec.split("==", 1)[0]): spec.split(" ", 1)[0].split("==")[1] for spec in specs}
    wanted = {name: version for name, version in pins.items() if HEAVY.match(name)}
    have = {normalise(d.metadata["Name"]): d.version for d in metadata.distributions(path=[str(heavy)])}
    if wanted and all(have.get(name) == version for name, version in wanted.items()):
        site = next((prefix / "lib").glob("python3.*/site-packages"))
        (site / "torch_family.pth").write_text(f"{heavy}\n")


def run(command: list[str] | str, prefix: Path, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command,
        cwd=cwd,
        env=clean_environment(prefix, **kwargs.pop("env", {})),
        capture_output=True,
        text=True,
        shell=isinstance(command, str),
        **kwargs,
    )
    assert done.returncode == 0, (
        f"{command} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def build_env(name: str, workdir: Path, heavy: Path) -> Path:
    """``snakemake --use-conda``'s build of ``envs/<name>.yaml``, pip half only; returns the env's prefix."""
    env_file = REPO / "envs" / f"{name}.yaml"
    post_deploy = env_file.with_suffix(".post-deploy.sh")
    digest = hashlib.md5(post_deploy.read_bytes() + env_file.read_bytes(), usedforsecurity=False).hexdigest()
    prefix = workdir / ".snakemake" / "conda" / f"{digest}_"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(env_file, f"{prefix}.yaml")
    subprocess.run([sys.executable, "-m", "venv", str(prefix)], check=True)  # conda's "python=3.11 pip"
    specs = pip_specs(Path(f"{prefix}.yaml"))
    seed_heavy_packages(prefix, specs, heavy)
    with tempfile.NamedTemporaryFile(
        "w", prefix="condaenv.", suffix=".requirements.txt", dir=prefix.parent, delete=False
    ) as requirements:
        requirements.write("\n".join(specs))
    command = ["python", "-m", "pip", "install", "-U", "-r", requirements.name, "--exists-action=b"]
    run(command + ["--quiet", "--disable-pip-version-check"], prefix, cwd=prefix.parent)
    os.remove(requirements.name)
    shutil.copyfile(post_deploy, f"{prefix}.post-deploy.sh")
    outside = workdir / "snakemake-workdir"  # Snakemake's working directory, not the checkout
    outside.mkdir(exist_ok=True)
    run(["/bin/sh", f"{prefix}.post-deploy.sh"], prefix, cwd=outside, env={"RANKCLIP_REPO": str(REPO)})
    listed = run(["python", "-m", "pip", "list", "--format", "json"], prefix, cwd=outside).stdout
    installed = {normalise(item["name"]) for item in json.loads(listed)} - {"pip", "setuptools"}
    expected = {normalise(spec.split("==", 1)[0]) for spec in specs} | {"rankclip-repro"}
    expected |= {"img2dataset"} if name == "web" else set()
    assert installed == expected - {"setuptools"}, f"{name}: env holds {installed ^ expected}"
    return prefix


@pytest.fixture
def env(request, tmp_path, heavy_packages):
    """Build the env named by the test's parameter; remove it afterwards (disk)."""
    workdir = tmp_path / "work"
    prefix = build_env(request.param, workdir, heavy_packages)
    yield prefix, workdir / "snakemake-workdir"
    shutil.rmtree(workdir / ".snakemake")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo corpus and eval sets, as the data env's rule writes them (made here with this env)."""
    root = tmp_path_factory.mktemp("demo")
    from rankclip.demo_data.shapes import make_demo

    make_demo(root, seed=0, num_train=64, num_eval=16, image_size=32, shard_size=32)
    return root


@pytest.mark.parametrize("env", ["data"], indirect=True)
def test_data_env_makes_the_demo_and_eval_sets(env, tmp_path):
    prefix, cwd = env
    out = tmp_path / "demo"
    run(
        ["rankclip", "data", "make-demo", "--out", str(out), "--num-train", "32", "--num-eval", "8"],
        prefix,
        cwd,
    )
    shards = write_colour_shards(tmp_path / "colour", num_samples=16, num_shards=2)
    run(
        ["rankclip", "data", "subsets", "--shards", shards, "--sizes", "8", "--out", str(tmp_path / "s")],
        prefix,
        cwd,
    )
    assert (out / "eval" / "zeroshot" / "classnames.txt").exists()


@pytest.mark.parametrize("env", ["web"], indirect=True)
def test_web_env_downloads_a_url_list(env, tmp_path):
    prefix, cwd = env
    site = tmp_path / "site"
    site.mkdir()
    from PIL import Image

    for index in range(3):
        Image.new("RGB", (48, 40), (index * 80, 90, 40)).save(site / f"{index}.jpg")
    with serve_directory(site) as server:
        urls = tmp_path / "urls.tsv"
        urls.write_text(
            "url\tcaption\n" + "".join(f"{server.url(f'{i}.jpg')}\tpicture {i}\n" for i in range(3))
        )
        out = tmp_path / "web"
        run(["rankclip", "data", "web", "--url-list", str(urls), "--out", str(out), "--image-size", "32",
             "--processes", "1", "--column-names", "caption", "url"], prefix, cwd)  # fmt: skip
    assert list(out.glob("*.tar")), "no shards written"


@pytest.mark.parametrize("env", ["captions"], indirect=True)
def test_captions_env_captions_with_a_model(env, tiny_blip, tmp_path):  # noqa: F811
    prefix, cwd = env
    shards = write_web_shards(tmp_path / "shards", shards=1, per_shard=3)
    run(["rankclip", "data", "captions", "--shards", str(shards[0]), "--out", str(tmp_path / "out"),
         "--source", "model", "--model", str(tiny_blip), "--device", "cpu", "--max-new-tokens", "4",
         "--no-progress"], prefix, cwd)  # fmt: skip
    assert (tmp_path / "out" / shards[0].name).exists()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("run")


@pytest.mark.parametrize("env", ["train"], indirect=True)
def test_train_env_trains(env, demo, checkpoint):
    prefix, cwd = env
    run(["rankclip", "train", "--train-data", str(demo / "train" / "shard-{000000..000001}.tar"),
         "--train-num-samples", "64", "--output-dir", str(checkpoint), "--batch-size", "32", "--epochs", "1",
         "--workers", "0", "--shuffle-buffer", "16", "--progress", "false", "--tensorboard", "true"],
        prefix, cwd)  # fmt: skip
    assert (checkpoint / "model.pt").exists() and list((checkpoint / "tensorboard").iterdir())


@pytest.mark.parametrize("env", ["eval"], indirect=True)
def test_eval_env_evaluates_the_checkpoint(env, demo, checkpoint, tmp_path):
    prefix, cwd = env
    model = checkpoint / "model.pt"
    if not model.exists():
        pytest.skip("needs test_train_env_trains's checkpoint")
    for task, dataset in (("zeroshot", "zeroshot"), ("linear_probe", "linear_probe")):
        out = tmp_path / f"{task}.json"
        run(["rankclip", "eval", task, "--checkpoint", str(model), "--dataset", str(demo / "eval" / dataset),
             "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--workers", "0"],
            prefix, cwd)  # fmt: skip
        assert json.loads(out.read_text())["task"]


@pytest.mark.parametrize("env", ["report"], indirect=True)
def test_report_env_makes_tables_and_runs_a_notebook(env, tmp_path):
    prefix, cwd = env
    results = tmp_path / "eval"
    write_synthetic_results(results)
    tables = tmp_path / "tables"
    run(["rankclip", "report", "tables", "--results-dir", str(results), "--out-dir", str(tables),
         "--backbone", BACKBONE, "--data-size", str(DATA_SIZE), "--zeroshot", ROLES["zeroshot"],
         "--retrieval", ROLES["retrieval"]], prefix, cwd)  # fmt: skip
    notebook, ipynb, out_dir = REPO / "notebooks" / "tables.py", tmp_path / "tables.ipynb", tmp_path / "out"
    parameters = shlex.quote(json.dumps({"runs": RUNS, "roles": ROLES}))
    # the notebook rule's shell command (workflow/rules/report.smk)
    run(f"jupytext --to ipynb -o - {notebook} | papermill - {ipynb} -k python3 --no-progress-bar "
        f"-p results_csv {tables / 'results.csv'} -p results_dir {results} -p out_dir {out_dir} "
        f"-y {parameters} && jupyter nbconvert --to html --no-input {ipynb}", prefix, cwd)  # fmt: skip
    assert (out_dir / "index.json").exists() and ipynb.with_suffix(".html").exists()
