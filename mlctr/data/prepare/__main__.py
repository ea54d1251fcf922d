"""The prepare CLI: `python -m mlctr.data.prepare --dataset=... --raw=... --out=...`
(mlctr.data.prepare for the flags' meaning). Bad input prints one line and exits 1."""
import sys

from absl import app, flags

from mlctr import locking
from mlctr.data import hashing
from mlctr.data.errors import DataError
from mlctr.data.prepare import prepare
from mlctr.data.prepare.options import ALL_PROTOCOLS, DATASETS, VOCAB_MODES


def main(argv) -> None:
    """CLI entry point: prepare from the flags; bad input -> one line, exit code 1."""
    del argv
    FLAGS = flags.FLAGS
    for name in ("hash_buckets", "field_buckets"):
        if FLAGS[name].present and FLAGS.vocab_mode != "hash":
            print(f"error: --{name} is for --vocab_mode=hash (a fitted vocabulary has no "
                  "buckets): pass --vocab_mode=hash, or drop it", file=sys.stderr)
            sys.exit(1)
    try:
        feature_map = prepare(
            FLAGS.dataset, FLAGS.raw, FLAGS.out, protocol=FLAGS.protocol,
            skip_bad_rows=FLAGS.skip_bad_rows, seed=FLAGS.seed, num_rows=FLAGS.num_rows,
            synthetic_format=FLAGS.synthetic_format, overwrite=FLAGS.overwrite,
            feature_spec=FLAGS.feature_spec, vocab_mode=FLAGS.vocab_mode,
            hash_buckets=FLAGS.hash_buckets, field_buckets=FLAGS.field_buckets,
            max_rows=FLAGS.max_rows, process_index=FLAGS.process_index,
            process_count=FLAGS.process_count)
    except (DataError, locking.LockedError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:  # an input that cannot be read (permissions, a directory)
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: cannot read {where}{e.strerror or e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # the build is removed on the way out (swap.build_and_swap)
        print(f"error: interrupted (Ctrl-C); {FLAGS.out} is as it was before this prepare "
              "(the partial build was removed)", file=sys.stderr)
        sys.exit(130)
    splits = ", ".join(f"{k} {v['num_examples']}" for k, v in feature_map["splits"].items())
    print(f"prepared {FLAGS.out}: {feature_map['num_fields']} fields, vocab_size "
          f"{feature_map['vocab_size']}, {splits}")
    bad = feature_map["bad_rows"]
    if bad["skipped"]:
        print(f"skipped {bad['skipped']} bad rows: " +
              ", ".join(f"{k} {v}" for k, v in bad["by_reason"].items()))
    if "bayes" in feature_map:
        print("Bayes-optimal: " + ", ".join(
            f"{k} auc {v['auc']:.4f} logloss {v['logloss']:.4f}"
            for k, v in feature_map["bayes"].items() if v["auc"] is not None))


def _define_flags() -> None:
    flags.DEFINE_string("dataset", None, f"Raw dataset kind: one of {', '.join(DATASETS)}.")
    flags.DEFINE_string("raw", None, "Raw file (synthetic: where it is generated; csv "
                        "datasets: the directory of train.csv, valid.csv, test.csv; "
                        "criteo_1tb: the directory of day_0 .. day_23).")
    flags.DEFINE_string("out", None, "Output directory of the prepared dataset.")
    flags.DEFINE_enum("protocol", "x4_001", list(ALL_PROTOCOLS),
                      "BARS x4 variant (min_count) of a raw file; x1 (BARS x1) or csv for "
                      "the csv datasets, which record it.")
    flags.DEFINE_bool("skip_bad_rows", False, "Skip and count bad rows instead of failing.")
    flags.DEFINE_bool("overwrite", False, "Replace a prepared dataset already in --out.")
    flags.DEFINE_string("feature_spec", None, "--dataset=csv: JSON file naming the label and "
                        "feature columns (mlctr.data.bars_csv).")
    flags.DEFINE_integer("seed", 2018, "Split seed (and synthetic generator seed).")
    flags.DEFINE_integer("num_rows", None, "Synthetic: rows to generate.")
    flags.DEFINE_enum("synthetic_format", "criteo", ["avazu", "criteo"],
                      "Synthetic: raw format to generate.")
    flags.DEFINE_enum("vocab_mode", "fit", list(VOCAB_MODES), "fit: vocabularies fit on "
                      "train (min_count, OOV); hash: values hashed into buckets, one pass.")
    flags.DEFINE_integer("hash_buckets", hashing.DEFAULT_BUCKETS,
                         "--vocab_mode=hash: buckets per field.")
    flags.DEFINE_string("field_buckets", None, "--vocab_mode=hash: per-field buckets, "
                        "e.g. I1=64,C3=100000.")
    flags.DEFINE_integer("max_rows", 0, "Cap on every field's table rows (0: none; "
                         "MLPerf Criteo 1TB: 40000000).")
    flags.DEFINE_integer("process_index", 0, "criteo_1tb: this process (its train days).")
    flags.DEFINE_integer("process_count", 1, "criteo_1tb: processes sharing the train days.")
    flags.mark_flags_as_required(["dataset", "raw", "out"])


if __name__ == "__main__":
    _define_flags()
    app.run(main)
