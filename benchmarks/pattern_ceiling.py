"""How high can accuracy go on handwritten at entry rate 0.5? A per-pattern SVM reference.

For every test sample, an RBF SVM trained on exactly the views the sample holds predicts it
(63 patterns, one SVM each; features standardised on the training rows). Two trainings:

- complete: on every training + validation row (all views known): an optimistic reference,
  since under the protocol half of the training entries are missing too;
- masked: on the training + validation rows that hold all of the pattern's views under the
  same entry-rate masks as the methods get (the classical "per-pattern" baseline).

Usage: python benchmarks/pattern_ceiling.py [--seeds 0,1,2,3,4] [--rate 0.5]
Prints per seed the accuracy of both, and the share of test samples holding none of the three
strong views (fac, kar, pix). Not a test.
"""

import argparse

import numpy as np
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mlmm.data.registry import load_dataset
from mlmm.data.splits import make_splits
from mlmm.missing import Scenario, make_protocol


def pattern_accuracy(train_x, train_y, train_mask, test_x, test_y, test_mask, names) -> float:
    correct = 0
    for pattern in {tuple(row) for row in test_mask.tolist()}:
        views = [m for m, keep in zip(names, pattern) if keep]
        rows = train_mask[:, [names.index(v) for v in views]].all(axis=1)
        test_rows = (test_mask == np.array(pattern)).all(axis=1)
        xtr = np.concatenate([train_x[v][rows] for v in views], axis=1)
        xte = np.concatenate([test_x[v][test_rows] for v in views], axis=1)
        scaler = StandardScaler().fit(xtr)
        model = SVC(C=10).fit(scaler.transform(xtr), train_y[rows])
        correct += int((model.predict(scaler.transform(xte)) == test_y[test_rows]).sum())
    return correct / len(test_y)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--rate", type=float, default=0.5)
    args = parser.parse_args()
    data = load_dataset("handwritten")
    names = list(data.spec.modality_names)
    protocol = make_protocol("entry", rate=args.rate)
    scenario = Scenario(train=protocol, val=protocol, test=protocol)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        train, val, test = make_splits(data, "random", seed)
        masked = {role: scenario.apply(part, role, seed)[0] for role, part in
                  (("train", train), ("val", val), ("test", test))}
        fit_x = {m: np.concatenate([np.asarray(train.inputs[m]), np.asarray(val.inputs[m])]) for m in names}
        fit_y = np.concatenate([train.labels, val.labels])
        fit_mask = np.concatenate([masked["train"].mask.numpy(), masked["val"].mask.numpy()])
        test_x = {m: np.asarray(test.inputs[m]) for m in names}
        test_mask = masked["test"].mask.numpy()
        complete = pattern_accuracy(fit_x, fit_y, np.ones_like(fit_mask), test_x, test.labels, test_mask, names)
        per_pattern = pattern_accuracy(fit_x, fit_y, fit_mask, test_x, test.labels, test_mask, names)
        weak_only = float((~test_mask[:, [names.index(v) for v in ("fac", "kar", "pix")]].any(axis=1)).mean())
        results.append((complete, per_pattern))
        print(f"seed {seed}: complete-train SVM per pattern {100 * complete:.2f} | masked-train "
              f"{100 * per_pattern:.2f} | test samples with only fou/zer/mor views {100 * weak_only:.1f}%", flush=True)
    mean = np.mean(results, axis=0) * 100
    print(f"mean: complete-train {mean[0]:.2f} | masked-train {mean[1]:.2f}")


if __name__ == "__main__":
    main()
