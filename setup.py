"""llada-jax: pre-train, fine-tune, sample from, evaluate and export LLaDA masked diffusion LMs."""

from setuptools import find_packages, setup

setup(
    name="llada-jax",
    version="0.1.0",
    description="JAX/Flax framework for LLaDA-style masked diffusion language models",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["llada_jax", "llada_jax.*"]),
    python_requires=">=3.11",
    # Ranges: the lower bound is the release the suite passes with (requirements/lock.txt pins
    # exactly what CI installs), the upper one is below the next minor (0.x) or major release after
    # the newest one `make test-latest` passes with, so an installed CUDA or TPU JAX is kept.
    install_requires=[
        "jax>=0.10.2,<0.13",
        "jaxlib>=0.10.2,<0.13",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "grain>=0.2.18,<0.3",
        "sentencepiece>=0.2.3,<0.3",
        "tensorboardX>=2.6.5,<3",
        "ml-collections>=1.1.0,<2",
        "absl-py>=2.5.1,<3",
        "safetensors>=0.8.0,<0.9",
        "tokenizers>=0.23.3,<0.24",
        "pyarrow>=26.0.1,<27",  # Parquet inputs of llada_jax.prepare_data
        "numpy>=2.4.6,<3",
        "tqdm>=4.70.1,<5",
        "fastapi>=0.165.0,<0.166",  # the serving engine's HTTP API
        "uvicorn>=0.54.0,<0.55",
        "prometheus-client>=0.26.0,<0.27",
    ],
    # lm-eval 0.4 discovers no model plugins: this runs its CLI with `llada_jax` registered.
    # Every command, also as `python -m llada_jax.<name>` (the README's spelling).
    entry_points={"console_scripts": [
        "llada-demo = llada_jax.demo:main",
        "llada-train = llada_jax.training.loop:run_cli",
        "llada-rl = llada_jax.rl.__main__:main",
        "llada-rl-pairs = llada_jax.rl.sample_pairs:main",
        "llada-generate = llada_jax.generate:main",
        "llada-serve = llada_jax.serve:main",
        "llada-lm-eval = llada_jax.evaluation:main",
        "llada-prepare-data = llada_jax.data.prepare:main",
        "llada-import-hf = llada_jax.interop.import_hf:main",
        "llada-export = llada_jax.interop.export:main",
        "llada-repoint = llada_jax.checkpoint.repoint:main",
        "llada-plan = llada_jax.plan:main",
        "llada-config = llada_jax.config.__main__:main",
    ]},
    extras_require={
        "test": ["pytest>=9.2.0,<10", "pytest-xdist>=3.8.0,<4", "matplotlib>=3.11.2,<4",
                 "lm-eval>=0.4.13,<0.5", "nbclient>=0.11.0,<0.12", "nbformat>=5.11.1,<6",
                 "ipykernel>=7.4.0,<8",
                 "psutil>=7.2.2,<8",  # benchmarks/data.py: peak RSS of a process tree
                 "openai>=3.57.0,<4", "httpx>=0.28.1,<0.29"],  # clients of the serving API
        # Parity and export tests only; never imported by training or sampling.
        # 2.13.0 is the CPU build that lies on disk, so no multi-GB CUDA build is pulled.
        "torch": ["torch==2.13.0", "transformers==5.23.0",
                  "peft>=0.21.2,<0.22"],  # the LoRA adapters' PEFT round trip (needs torch)
        # `make tensorboard`: a viewer of the tensorboard/ logs of a workdir; training writes them without it.
        "tensorboard": ["tensorboard>=2.21.0,<3"],
    },
)
