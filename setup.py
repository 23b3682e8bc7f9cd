"""llada-jax: pre-train, fine-tune, sample from, evaluate and export LLaDA masked diffusion LMs."""

from setuptools import find_packages, setup

setup(
    name="llada-jax",
    version="0.1.0",
    description="JAX/Flax framework for LLaDA-style masked diffusion language models",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["llada_jax", "llada_jax.*"]),
    python_requires=">=3.10",
    # Pinned to the releases tested together; CI installs exactly these.
    install_requires=[
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "grain==0.2.18",
        "sentencepiece==0.2.3",
        "tensorboardX==2.6.5",
        "ml-collections==1.1.0",
        "absl-py==2.5.1",
        "safetensors==0.8.0",
        "tokenizers==0.23.3",
        "pyarrow==26.0.1",  # Parquet inputs of llada_jax.prepare_data
        "numpy>=1.26",
        "tqdm>=4.66",
    ],
    # lm-eval 0.4 discovers no model plugins: this runs its CLI with `llada_jax` registered.
    # The commands (llada_jax.commands), also run as `python -m llada_jax.NAME`.
    entry_points={"console_scripts": [f"llada-{name.replace('_', '-')} = llada_jax.commands.{module}:main"
                                      for name, module in [("train", "train"), ("rl", "rl"), ("plan", "plan"),
                                                           ("generate", "generate"), ("export", "export"),
                                                           ("import_hf", "import_hf"), ("prepare_data", "prepare_data"),
                                                           ("eval", "evaluation"), ("lm_eval", "evaluation"),
                                                           ("demo", "demo")]]},
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "matplotlib==3.11.2", "lm-eval==0.4.13",
                 "nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0",
                 "psutil==7.2.2",  # benchmarks/data.py: peak RSS of a process tree
                 "peft==0.21.2"],  # the LoRA adapters' PEFT round trip (with the torch extra)
        # Parity and export tests only; never imported by training or sampling.
        # 2.13.0 is the CPU build that lies on disk, so no multi-GB CUDA build is pulled.
        "torch": ["torch==2.13.0", "transformers==5.23.0"],
    },
)
