"""Default config: the embedded synthetic dataset, 4 paper peers, finetune study.

Command (what `bash launch.sh` runs):
  python -m mlctr.main --config=mlctr/configs/default.py --workdir=runs/default

It generates a synthetic Criteo-format dataset of 100k rows with known click
probabilities (docs/synthetic.md), pretrains DeepFM, DCN, IPNN and FiBiNET
independently with the BARS schedule until each early-stops, finetunes them
from their best weights independently (the control) and mutually, and writes
results.json / results.md to the workdir. Runtime: under 10 minutes on 2 CPU
cores (see experiments/README.md for the measured run).

The paper's protocol: finetuning starts from peers trained to their early
stopping point. So the pretraining follows BARS (Adam lr 1e-3, lr x0.1 after a
non-improving evaluation, early stop after 2 of them) with an epoch cap of 8
that is not the binding limit: 100k rows (80k train, 78 updates of 1024 per
epoch) are few enough that the peers' embeddings overfit the long-tail values
after 2-4 epochs, and the validation AUC is evaluated twice per epoch
(train.eval_steps = 39), so the stop comes one epoch after each peer's best
evaluation rather than two. The log shows it: "(stopped)" beside a peer, then
"every peer has stopped early". Expected test AUC of the peers about 0.78-0.79
(Bayes-optimal about 0.81), the ensemble slightly above the best peer.

Every field is explicit; the config is locked, so a misspelled key (on the
command line, `--config.mutual.alpah=0.5`) fails loudly.

Config variants by argument (mlctr.configs.args):
`--config=mlctr/configs/default.py:peers=deepfm+dcn` (`+` or `,` separate peers,
`deepfm*4` repeats one).
"""
import ml_collections

from mlctr.configs import args

# CPU-sized versions of the BARS hyperparameter sets (BARS: embedding 16, DNN 1000x5 and
# more, batch 10000; see mlctr/configs/bars_table.py). Same structures, narrower, so the
# default job runs in ~10 minutes on 2 CPU cores. FiBiNET's bilinear output is
# 741 pairs x 8 dims x 2 = 11,856 wide, so its DNN is a single 64-unit layer.
DEFAULT_PEERS = "deepfm,dcn,ipnn,fibinet"
ARG_KEYS = {"peers": "SPEC"}  # peers=deepfm+dcn, peers=deepfm*4


def model_sets() -> ml_collections.ConfigDict:
    """Hyperparameter sets addressable by peer specs (key -> hyperparameters)."""
    common = dict(embedding_dim=8, dnn_hidden_units=(128, 128), net_dropout=0.0,
                  batch_norm=False, embedding_regularizer=1e-5, net_regularizer=0.0)
    return ml_collections.ConfigDict({
        "lr": dict(model="lr", embedding_regularizer=1e-5),
        "fm": dict(model="fm", embedding_dim=8, embedding_regularizer=1e-5),
        "deepfm": dict(model="deepfm", **common),
        "dcn": dict(model="dcn", num_cross_layers=3, **common),
        "ipnn": dict(model="pnn", product_type="inner", **common),
        "opnn": dict(model="pnn", product_type="outer", **common),
        "fibinet": dict(model="fibinet", reduction_ratio=3, bilinear_type="field_interaction",
                        **{**common, "dnn_hidden_units": (64,)}),
        "wide_deep": dict(model="wide_deep", **common),
        "dcnv2": dict(model="dcnv2", model_structure="parallel", num_cross_layers=3,
                      parallel_dnn_hidden_units=(128, 128), stacked_dnn_hidden_units=(),
                      embedding_dim=8, net_dropout=0.0, batch_norm=False,
                      embedding_regularizer=1e-5, net_regularizer=0.0),
        "xdeepfm": dict(model="xdeepfm", cin_hidden_units=(16, 16), **common),
        "autoint": dict(model="autoint", embedding_dim=8, attention_layers=2, num_heads=2,
                        attention_dim=8, use_residual=True, dnn_hidden_units=(),
                        net_dropout=0.0, batch_norm=False, embedding_regularizer=1e-5,
                        net_regularizer=0.0),
        # Small-capacity variant, e.g. for weaker companions.
        "deepfm_small": dict(model="deepfm", embedding_dim=4, dnn_hidden_units=(32,),
                             net_dropout=0.0, batch_norm=False, embedding_regularizer=1e-5,
                             net_regularizer=0.0),
    })


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the default config, locked; `arg` may set the peers, e.g. 'peers=deepfm*4'
    (the argument convention: mlctr.configs.args)."""
    options = args.parse(arg, "mlctr/configs/default.py", ARG_KEYS)
    config = ml_collections.ConfigDict()
    # 'train': one training run (independent when mutual.alpha = 0).
    # 'finetune_study': pretrain -> independent finetune (control) and mutual
    # finetune from the same checkpoints -> table of gains vs the control.
    config.mode = "finetune_study"
    config.seed = 0  # init keys, dropout and the training data order
    config.data = data_config()
    config.vocab = vocab_config()
    config.peers = options.get("peers", DEFAULT_PEERS)
    config.models = model_sets()
    # Compute dtype of the models (params, optimizer state and losses stay float32):
    # float32 on CPU (no fast bfloat16 there); bfloat16 is the choice on GPU/TPU.
    config.compute_dtype = "float32"
    config.mutual = mutual_config()
    config.optimizer = optimizer_config()
    config.train = train_config()
    config.checkpoint = checkpoint_config()
    config.mesh = mesh_config()
    config.finetune = finetune_config()
    config.init_from = ""         # run dir whose best peer weights initialise the peers
    config.lock()
    return config


def data_config() -> ml_collections.ConfigDict:
    """config.data: which dataset, where, its split."""
    return ml_collections.ConfigDict(dict(
        dataset="synthetic",      # criteo | avazu | synthetic | criteo_1tb (raw: its day_* dir)
        raw="",                   # raw file (criteo/avazu); synthetic: generated there if empty
        data_dir="",              # prepared dataset dir; default <workdir>/data (prepared there when missing)
        protocol="x4_001",        # BARS x4_001 (min_count 10/2) or x4_002 (2/1)
        split_seed=2018,          # BARS split seed
        num_rows=100_000,         # synthetic only (overfits in a few epochs: early stop)
        skip_bad_rows=False,
    ))


def vocab_config() -> ml_collections.ConfigDict:
    """config.vocab: fitted or hashed vocabularies, QR embeddings."""
    # Vocabularies (docs/data.md): fit on train (min_count, OOV), or hash every value into
    # per-field buckets in one pass (unbounded id spaces, criteo_1tb; mlctr/data/hashing.py).
    return ml_collections.ConfigDict(dict(
        mode="fit",               # fit | hash
        hash_buckets=1 << 20,     # hash: buckets per field (+1 id reserved for missing)
        field_buckets="",         # hash: per-field overrides, e.g. "I1=64,C3=100000"
        max_rows=0,               # > 0: cap on every field's table rows (MLPerf 1TB: 40000000)
        # Quotient-remainder embeddings (mlctr/models/qr.py): m >= 2 ids per quotient row, a
        # field's V ids in ceil(V/m) + m rows instead of V; 0: one row per id.
        qr_collisions=0,
        qr_combiner="product",    # product | sum: how a field's two embeddings combine
    ))


def mutual_config() -> ml_collections.ConfigDict:
    """config.mutual: the mutual term and how peers run."""
    return ml_collections.ConfigDict(dict(
        alpha=1.0,                # weight of the mutual term (0: independent peers)
        divergence="mse",         # mse (Yilmaz & Aldemir 2024) | kl (Deep Mutual Learning)
        transfer="pairwise",      # pairwise: sum of the divergence over companions | ektf:
                                  # EKTF's teacher and examined-peer terms (mutual.ektf_terms)
        stop_gradient=True,       # companions' predictions are constants
        warmup_steps=0,           # updates with alpha = 0 first
        same_init=False,          # True: peers of one architecture start identical
        frozen_peers="",          # peers never updated (teachers: one-way distillation)
        peer_execution="auto",    # auto (unroll on CPU, vmap on GPU/TPU) | vmap | unroll
    ))


def optimizer_config() -> ml_collections.ConfigDict:
    """config.optimizer: Adam (BARS), clipping, lr decay, embedding optimizer."""
    return ml_collections.ConfigDict(dict(
        learning_rate=1e-3,       # Adam, BARS
        b1=0.9, b2=0.999, eps=1e-8,
        grad_clip_norm=10.0,      # FuxiCTR's hidden default, made explicit (0: off)
        lr_decay_factor=0.1,      # lr x0.1 after a non-improving evaluation (BARS)
        min_learning_rate=1e-6,   # floor of that decay
        # Embedding tables: dense (optax Adam over every row, FuxiCTR) | lazy_adam |
        # adagrad (row-wise) | sgd: sparse updates of only the batch's rows, with the
        # embedding L2 on those rows only (mlctr/sparse.py). The rest is always Adam.
        embedding_optimizer="dense",
    ))


def train_config() -> ml_collections.ConfigDict:
    """config.train: batches, epochs, evaluation and early stopping."""
    return ml_collections.ConfigDict(dict(
        batch_size=1024,          # global batch (BARS x4_001 uses 10000; CPU-sized here)
        num_epochs=8,             # a cap; early stopping ends the pretraining first
        max_steps=0,              # > 0: stop after this many updates
        eval_steps=39,            # twice per epoch of 78 updates (0: at the end of each epoch)
        eval_batch_size=4096,     # peak memory: FiBiNET at 16384 holds ~0.8 GB per eval batch
        patience=2,               # early stop after this many non-improving evaluations
        monitor="auc",            # auc | auc-logloss (BARS x4)
        log_steps=50,
        test_at_end=True,         # evaluate the best parameters on the test split
    ))


def checkpoint_config() -> ml_collections.ConfigDict:
    """config.checkpoint: resumable checkpoints."""
    # Resumable checkpoints in <workdir>/checkpoints (also written at the end and on
    # SIGTERM); rerunning the same command resumes from the newest one.
    return ml_collections.ConfigDict(dict(
        ckpt_steps=1000,          # save every this many updates (0: only at the end / SIGTERM)
        keep=2,                   # newest checkpoints kept (>= 2 keeps one if the last is bad)
    ))


def mesh_config() -> ml_collections.ConfigDict:
    """config.mesh: the device mesh."""
    # Device mesh (mlctr/sharding.py): data x peer x table devices, -1 = all remaining devices.
    # Default: data-parallel over every device of every process, all peers on each.
    return ml_collections.ConfigDict(dict(
        data=-1,                  # devices that split each batch
        peer=1,                   # devices that split each group of stacked peers
        table=1,                  # devices that split the rows of every embedding table
    ))


def finetune_config() -> ml_collections.ConfigDict:
    """config.finetune: the finetune study's phases after pretraining."""
    # Finetune study: the phases after pretraining. Pretraining uses
    # config.train / config.optimizer with alpha = 0.
    return ml_collections.ConfigDict(dict(
        learning_rate=1e-4,       # the paper does not state it; explicit here
        num_epochs=1,
        max_steps=0,              # > 0: stop after this many updates
        eval_steps=20,            # 4 evaluations in the epoch of 78 updates
        patience=2,
    ))
