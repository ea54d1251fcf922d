"""mlctr: mutual learning for click-through-rate prediction in JAX/Flax."""
import setuptools

setuptools.setup(
    name="mlctr",
    version="0.1.0",
    description="Mutual learning between peer CTR models (DeepFM, DCN, PNN, FiBiNET, ...) in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["mlctr", "mlctr.*"]),
    install_requires=[
        "jax>=0.4.35,<0.12",  # 0.10.2 (CPU, CI) and 0.11.2 (CUDA 13, H200) run here
        "flax>=0.10.0,<0.13",
        "optax>=0.2.3,<0.3",
        "orbax-checkpoint>=0.10,<0.13",
        "tensorflow-datasets>=4.9.6,<5",
        "array_record>=0.5",
        "numpy>=1.26,<3",
        "scipy>=1.10",
        "tensorboardX>=2.6,<3",
        "absl-py>=2.1",
        "ml_collections>=0.1.1",
    ],
    extras_require={
        # Tests (tensorboard: its event reader checks the files we write) and the figures.
        "test": ["pytest>=8", "matplotlib>=3.8", "tensorboard>=2.15"],
        "plots": ["matplotlib>=3.8"],
        # Accelerator builds of jaxlib, installed by `launch.sh slurm` / `launch.sh tpu`
        # (MLCTR_EXTRAS overrides; MLCTR_NO_VENV=1 uses a cluster's own environment).
        "cuda12": ["jax[cuda12]>=0.4.35,<0.12"],
        "cuda13": ["jax[cuda13]>=0.7.0,<0.12"],  # CUDA 13 drivers (e.g. driver 580+)
        "tpu": ["jax[tpu]>=0.4.35,<0.12"],
        # `python -m mlctr.export --format=onnx` (jax2onnx converts, onnxruntime checks and
        # serves). jax2onnx pins orbax-checkpoint<0.11.37 (mlctr uses 0.12): install it with
        # `pip install --no-deps jax2onnx` (README.md, dependencies), then this extra: its
        # other requirements bar orbax-export (which the conversion does not import).
        "onnx": ["onnx>=1.20", "onnx-ir>=0.2", "onnxruntime>=1.24", "einops>=0.8",
                 "equinox>=0.13", "dm-pix>=0.4.4"],
        # `--format=savedmodel`: TensorFlow for jax2tf and tf.saved_model (~600 MB).
        "savedmodel": ["tensorflow>=2.16"],
    },
)
