"""The training methods: one spelling each, their parts, and their display labels.

Every place that names a method (config ``models.<name>.methods``, ``workflow.methods``,
``workflow.ensemble_method``, run directories ``<model>_<method>``, score/metrics meta, the
``--method`` option of :mod:`m3em.train`, the tables) uses :class:`Method`'s values. Torch-free,
so the workflow and the table code import it without loading torch.

=============  ===========  ====  ====  ================================================
value          late fusion  SMR   CMC   network
=============  ===========  ====  ====  ================================================
source_only    no           no    no    one TA3N branch on concatenated pooled inputs, no domain terms
ta3n           no           no    no    one TA3N branch on concatenated pooled inputs
ta3n_late      yes          no    no    M3EM's late-fusion TA3N branches, SMR and CMC off
m3em_smr       yes          yes   no    ... with SMR only (every modality average pooled)
m3em_cmc       yes          no    yes   ... with CMC only (SMR's gates fixed at 1)
m3em           yes          yes   yes   TA3N + M3EM (the report's method)
=============  ===========  ====  ====  ================================================

``ta3n_late``, ``m3em_smr`` and ``m3em_cmc`` have the same TA3N branches, heads and
discriminators as ``m3em`` (same parameter names and shapes), so a difference between them and
``m3em`` is SMR's or CMC's; ``ta3n`` vs ``ta3n_late`` measures late fusion and the extra
discriminators.
"""

from __future__ import annotations

import enum


class Method(str, enum.Enum):
    """How a model is trained (declaration order = table row order)."""

    SOURCE_ONLY = "source_only"  # TA3N network, every domain term off
    TA3N = "ta3n"  # TA3N on early-fused (concatenated, pooled) modalities
    TA3N_LATE = "ta3n_late"  # M3EM's late-fusion TA3N branches, SMR and CMC off
    M3EM_SMR = "m3em_smr"  # late fusion + SMR
    M3EM_CMC = "m3em_cmc"  # late fusion + CMC
    M3EM = "m3em"  # late fusion + SMR + CMC (TA3N + M3EM)

    @property
    def late_fusion(self) -> bool:
        """One TA3N branch per ``models.<name>.branches`` entry (else one branch over all modalities)."""
        return self in (Method.TA3N_LATE, Method.M3EM_SMR, Method.M3EM_CMC, Method.M3EM)

    @property
    def smr(self) -> bool:
        """SMR's learned gates (off: both gates are 1, ``Fr = concat(F, F)``)."""
        return self in (Method.M3EM_SMR, Method.M3EM)

    @property
    def cmc(self) -> bool:
        """CMC's consensus-weighted pooling of the consensus pair (off: average pooling)."""
        return self in (Method.M3EM_CMC, Method.M3EM)

    @property
    def label(self) -> str:
        """Display name in tables and figures."""
        return METHOD_LABELS[self]


#: Display names, the single source of the tables' row labels (order: :class:`Method`'s).
METHOD_LABELS: dict[Method, str] = {
    Method.SOURCE_ONLY: "Source-only",
    Method.TA3N: "TA3N",
    Method.TA3N_LATE: "TA3N late fusion",
    Method.M3EM_SMR: "M3EM (SMR only)",
    Method.M3EM_CMC: "M3EM (CMC only)",
    Method.M3EM: "TA3N + M3EM",
}

#: The report's Table 1 rows (``workflow.methods`` in config.yaml; the others are ablations).
REPORT_METHODS: tuple[Method, ...] = (Method.SOURCE_ONLY, Method.TA3N, Method.M3EM)
