from setuptools import find_packages, setup

setup(
    name="ofasys-fairseq",
    version="0.1.0",
    description="Multimodal multitask learning with one-line instructions, as a fairseq plugin",
    packages=find_packages(include=["ofasys_fairseq", "ofasys_fairseq.*"]),
    python_requires=">=3.10",
    # fairseq-fixed (fairseq 0.12 that builds on Python 3.11) compiles against the torch
    # already installed: install torch first and this package with --no-build-isolation
    # (README "Installation"; the Makefile installs fairseq with --no-deps before it).
    install_requires=[
        "fairseq-fixed==0.12.3.1",
        "torch==2.14.1",
        "torchvision==0.29.1",
        "torchaudio==2.11.0",
        "cffi",
        "cython",
        "hydra-core==1.3.2",
        "omegaconf==2.3.0",
        "numpy",
        "regex",
        "sacrebleu>=2.0",
        "rouge-score",
        "tqdm",
        "bitarray",
        "scikit-learn",
        "packaging",
        "sentencepiece",
        "pillow",
        "webdataset",  # tar shards: reading them as a stream, writing them
        # AUDIO: reading sounds, the wer metric (fairseq's --scoring wer needs editdistance),
        # and eSpeak NG's library and voices (speech synthesis, grapheme-to-phoneme)
        "soundfile",
        "jiwer",
        "editdistance",
        "espeakng-loader",
        # fairseq's --tensorboard-logdir (fairseq only warns when it is missing)
        "tensorboardX",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "hypothesis", "pycocoevalcap"],
        # the demo's real tables (scripts/demo_tables.py) and its report's curves
        "demo": ["statsmodels==0.15.0", "vega-datasets", "matplotlib"],
        "wandb": ["wandb"],  # --wandb-project
    },
    entry_points={
        "console_scripts": [
            "ofasys-train=ofasys_fairseq.cli:train",
            "ofasys-generate=ofasys_fairseq.cli:generate",
            "ofasys-hydra-train=ofasys_fairseq.cli:hydra_train",
            "ofasys-validate=ofasys_fairseq.validate:cli",
            "ofasys-predict=ofasys_fairseq.predict:main",
            "ofasys-train-cpu=ofasys_fairseq.distributed_cpu:main",
            "ofasys-phonemize=ofasys_fairseq.modalities.phone.convert:main",
            "ofasys-prepare=ofasys_fairseq.prepare:main",
        ]
    },
)
