"""Label-shift correction of the network's logits: from the training prior's defect rates to
the rates expected in the micrographs being analysed.

A network trained by cross-entropy on sites drawn at the training prior estimates posteriors
p_train(c | x). On sites that follow another prior π_target, Bayes' rule gives
p_target(c | x) ∝ p_train(c | x) · π_target(c) / π_train(c) (Saerens, Latinne & Decaestecker,
Neural Comput. 14, 21 (2002)): add log(π_target(c) / π_train(c)) to the logit of class c.
The wse2te training prior oversamples the rare classes (VW 156×, DV 171×, 2TeW 83× the
realistic rate) so that the network sees them; without the shift a realistic micrograph is
scored as if they were that common, and their false alarms grow in proportion.

π(c) is the per-site concentration of class c on its sublattice (the class's target pixels scale
with it). The background channel also covers every pixel between the columns, whose share of the
image does not change with the rates, so its offset is 0. Loss class weights
(`loss.weight_power`) rescale each class's odds by a constant the shift does not undo;
the decoding threshold is chosen after the shift (experiments/wse2te/threshold_study.py).
"""

from __future__ import annotations

import numpy as np


def prior_shift_offsets(train_table, target_table, names=None) -> np.ndarray:
    """Logit offsets (C,) float32 that move class posteriors from one site prior to another.

    train_table / target_table: (num_sublattices, C) per-site class probabilities on each
    sublattice (`stemjax.specimen.registry.prior_tables`; column 0 = 'none'). Offset 0 for
    'none', log(target / train) for each defect class (its concentration on its sublattice).
    names: class names for error messages. Raises ValueError for a class the training prior
    never drew (the network cannot have learnt it) or that the target prior forbids (a
    concentration of 0 is an infinite offset: give a small positive rate instead).
    """
    train = np.asarray(train_table, np.float64)
    target = np.asarray(target_table, np.float64)
    if train.shape != target.shape or train.ndim != 2:
        raise ValueError(
            f"prior tables must have the same (num_sublattices, num_classes) shape, got "
            f"{train.shape} and {target.shape}"
        )
    names = names or [f"class {c}" for c in range(train.shape[1])]
    conc_train = train[:, 1:].sum(axis=0)  # each defect class lives on one sublattice
    conc_target = target[:, 1:].sum(axis=0)
    for c, (a, b) in enumerate(zip(conc_train, conc_target, strict=True), start=1):
        if a <= 0:
            raise ValueError(
                f"{names[c]}: the training prior's concentration is 0; the network never saw "
                f"this class, so no prior shift can be applied to it"
            )
        if b <= 0:
            raise ValueError(
                f"{names[c]}: target concentration {b} must be > 0 (0 is an infinite logit "
                f"offset; give a small positive rate)"
            )
    return np.concatenate([[0.0], np.log(conc_target / conc_train)]).astype(np.float32)
